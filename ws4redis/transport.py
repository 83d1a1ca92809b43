"""The raw connection after the 101, as the WebSocket loop reads and writes it."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any


class SocketTransport:
    """A connected socket (a stdlib or a gevent one) seen as the loop's transport.

    ``reader`` replaces ``sock.recv`` when the server already wraps the socket in a buffered
    reader that may hold bytes read ahead (the development server does).
    """

    def __init__(self, sock: Any, reader: Callable[[int], bytes] | None = None) -> None:
        self._sock = sock
        self._read = reader or sock.recv

    def recv(self, size: int) -> bytes:
        """Read up to ``size`` bytes; ``b""`` when the peer has gone."""
        return self._read(size)

    def sendall(self, data: bytes) -> None:
        """Write all of ``data``."""
        self._sock.sendall(data)

    def set_timeout(self, seconds: float | None) -> None:
        """Bound later reads to ``seconds`` (``None``: wait forever)."""
        self._sock.settimeout(seconds)

    def finish_writing(self) -> None:
        """Send FIN after the close frame: the peer may still answer, then sees the end."""
        self._shutdown(socket.SHUT_WR)

    def shutdown(self) -> None:
        """End the connection in both directions, waking a blocked ``recv``."""
        self._shutdown(socket.SHUT_RDWR)

    def detach(self) -> None:
        """Forget the descriptor without closing it (its server closes it)."""
        self._sock.detach()

    def _shutdown(self, how: int) -> None:
        try:
            self._sock.shutdown(how)
        except OSError:
            pass  # already gone

"""The raw connection after the 101, as the WebSocket loop reads and writes it."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any


class SocketTransport:
    """A connected socket (a stdlib or a gevent one) seen as the loop's transport.

    ``reader`` replaces ``sock.recv`` when the server already wraps the socket in a buffered
    reader that may hold bytes read ahead (the development server does).  ``raw``, the same
    descriptor as a plain non-blocking socket (the uWSGI binding gives it), adds
    :meth:`send_nowait`.
    """

    def __init__(
        self,
        sock: Any,
        reader: Callable[[int], bytes] | None = None,
        *,
        raw: Any = None,
    ) -> None:
        self._sock = sock
        self._read = reader or sock.recv
        self._raw = raw
        #: Whether :meth:`send_nowait` is available.
        self.can_send_nowait = raw is not None
        if raw is not None:
            self._raw_send = raw.send

    def send_nowait(self, data: bytes) -> int:
        """Write what the socket takes now, without waiting; how many bytes that was.

        Only with a ``raw`` socket (uWSGI under gevent): the loop then writes a delivery from
        the task that received it instead of waking the connection's writer task.
        """
        try:
            return self._raw_send(data)  # type: ignore[no-any-return]
        except BlockingIOError:
            return 0

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

    def close(self) -> None:
        """Close the descriptor (the ``raw`` socket given with it is only detached)."""
        if self._raw is not None:
            self._raw.detach()
        self._sock.close()

    def detach(self) -> None:
        """Forget the descriptor without closing it (its server closes it)."""
        self._sock.detach()
        if self._raw is not None:
            self._raw.detach()

    def _shutdown(self, how: int) -> None:
        try:
            self._sock.shutdown(how)
        except OSError:
            pass  # already gone

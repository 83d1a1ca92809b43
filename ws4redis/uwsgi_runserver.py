"""The WebSocket loop under uWSGI with gevent (``uwsgi --gevent N --http-websockets``).

uWSGI writes the 101 response (``uwsgi.websocket_handshake``); from then on ws4redis reads and
writes the raw connection (``uwsgi.connection_fd()``) itself, cooperatively under gevent, with
its own RFC 6455 codec: uWSGI's C WebSocket functions are never called with client input.

Importing this module makes the ``socket`` module cooperative (``gevent.monkey.patch_socket``),
so that redis-py — for the pub/sub hub, publishing, and Django's Redis cache or session backend —
never blocks the worker.
"""

from __future__ import annotations

import socket as _stdlib_socket
from collections.abc import Callable
from typing import Any

from gevent import monkey

monkey.patch_socket()

import gevent.socket  # noqa: E402

from ws4redis.runtime import gevent_runtime  # noqa: E402
from ws4redis.websocket import Handshake  # noqa: E402
from ws4redis.wsgi_server import WebSocketServer  # noqa: E402


class GeventFdTransport:
    """uWSGI's client connection, driven through a gevent socket on its file descriptor."""

    def __init__(self, fd: int) -> None:
        self._sock = gevent.socket.socket(fileno=fd)

    def recv(self, size: int) -> bytes:
        """Read up to ``size`` bytes, waiting cooperatively."""
        return self._sock.recv(size)

    def sendall(self, data: bytes) -> None:
        """Write all of ``data``, waiting cooperatively."""
        self._sock.sendall(data)

    def set_timeout(self, seconds: float | None) -> None:
        """Bound later reads."""
        self._sock.settimeout(seconds)

    def shutdown(self) -> None:
        """Shut the connection down in both directions."""
        try:
            self._sock.shutdown(_stdlib_socket.SHUT_RDWR)
        except OSError:
            pass

    def release(self) -> None:
        """Hand the descriptor back to uWSGI, which closes it."""
        self._sock.detach()


class uWSGIWebSocketServer(WebSocketServer):  # noqa: N801 - the documented name
    """The WSGI application that serves WebSockets under uWSGI + gevent."""

    runtime = gevent_runtime()

    def upgrade(
        self,
        environ: dict[str, Any],
        start_response: Callable[..., Any],
        handshake: Handshake,
        subprotocol: str | None,
    ) -> GeventFdTransport:
        """Let uWSGI send the 101, then take the raw connection."""
        import uwsgi

        uwsgi.websocket_handshake(handshake.key, "", subprotocol or "")
        return GeventFdTransport(uwsgi.connection_fd())

    def release_transport(self, transport: Any) -> None:
        """Detach from the descriptor; uWSGI closes it when the request ends."""
        transport.release()


#: The spelling of ws4redis 0.5 and earlier.
uWSGIWebsocketServer = uWSGIWebSocketServer  # noqa: N816

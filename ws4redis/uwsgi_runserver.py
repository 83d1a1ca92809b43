"""The WebSocket loop under uWSGI with gevent (``uwsgi --gevent N --http-websockets``).

uWSGI writes the 101 response (``uwsgi.websocket_handshake``); from then on ws4redis reads and
writes the raw connection (``uwsgi.connection_fd()``) itself, cooperatively under gevent, with
its own RFC 6455 codec: uWSGI's C WebSocket functions are never called with client input.

Importing this module makes the ``socket`` module cooperative (``gevent.monkey.patch_socket``),
so that redis-py — for the pub/sub hub, publishing, and Django's Redis cache or session backend —
never blocks the worker.
"""

from __future__ import annotations

import socket as _socket
from collections.abc import Callable
from typing import Any

from gevent import monkey

monkey.patch_socket()

import gevent.socket  # noqa: E402

from ws4redis.runtime import gevent_runtime  # noqa: E402
from ws4redis.transport import SocketTransport  # noqa: E402
from ws4redis.websocket import Handshake  # noqa: E402
from ws4redis.wsgi_server import WebSocketServer  # noqa: E402


class uWSGIWebSocketServer(WebSocketServer):  # noqa: N801 - the documented name
    """The WSGI application that serves WebSockets under uWSGI + gevent."""

    runtime = gevent_runtime()

    def upgrade(
        self,
        environ: dict[str, Any],
        start_response: Callable[..., Any],
        handshake: Handshake,
        subprotocol: str | None,
    ) -> SocketTransport:
        """Let uWSGI send the 101, then take the raw connection as a gevent socket."""
        import uwsgi

        uwsgi.websocket_handshake(handshake.key, "", subprotocol or "")
        sock = gevent.socket.socket(fileno=uwsgi.connection_fd())
        try:  # small frames go out at once instead of waiting for the client's delayed ACK
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
        except OSError:
            pass  # a unix socket (behind a proxy) has no Nagle to switch off
        return SocketTransport(sock)

    def release_transport(self, transport: Any) -> None:
        """Detach from the descriptor; uWSGI closes it when the request ends."""
        transport.detach()


#: The spelling of ws4redis 0.5 and earlier.
uWSGIWebsocketServer = uWSGIWebSocketServer  # noqa: N816

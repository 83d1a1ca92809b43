"""The WebSocket loop under uWSGI with gevent (``uwsgi --gevent N --http-websockets``).

uWSGI writes the 101 response (``uwsgi.websocket_handshake``); from then on ws4redis reads and
writes the raw connection (``uwsgi.connection_fd()``) itself, cooperatively under gevent, with
its own RFC 6455 codec: uWSGI's C WebSocket functions are never called with client input.

The connection is taken over on a duplicate of that descriptor and served by a greenlet of
ws4redis's own, and the request ends for uWSGI right after the 101: uWSGI closes its copy of the
descriptor and frees the async core (``--gevent N``) and the request greenlet at once.  An open
WebSocket then costs a few KiB (one greenlet with a shallow stack, a socket, the loop's state)
instead of a whole uWSGI request, and ``--gevent N`` bounds the handshakes in progress, not the
open WebSockets.

Importing this module makes the ``socket`` module cooperative (``gevent.monkey.patch_socket``),
so that redis-py — for the pub/sub hub, publishing, and Django's Redis cache or session backend —
never blocks the worker.
"""

from __future__ import annotations

import logging
import os
import socket as _socket
from collections.abc import Callable, Iterable
from typing import Any

from gevent import monkey

monkey.patch_socket()
_stdlib_socket = monkey.get_original("socket", "socket")

import gevent  # noqa: E402
import gevent.socket  # noqa: E402

from ws4redis.runtime import gevent_runtime  # noqa: E402
from ws4redis.transport import SocketTransport  # noqa: E402
from ws4redis.websocket import Handshake  # noqa: E402
from ws4redis.wsgi_server import WebSocketServer  # noqa: E402

logger = logging.getLogger("ws4redis")


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
        fd = os.dup(uwsgi.connection_fd())  # ours: open after uWSGI closes its own copy
        try:
            sock = gevent.socket.socket(fileno=fd)
        except BaseException:
            os.close(fd)
            raise
        try:  # small frames go out at once instead of waiting for the client's delayed ACK
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
        except OSError:
            pass  # a unix socket (behind a proxy) has no Nagle to switch off
        # The same descriptor as a plain non-blocking socket: deliveries are written with one
        # send() from the hub's greenlet, without a switch to this connection's greenlet.
        raw = _stdlib_socket(fileno=fd)
        raw.setblocking(False)
        return SocketTransport(sock, raw=raw)

    def serve(self, run: Callable[[], None]) -> Iterable[bytes]:
        """Serve the WebSocket in a greenlet of its own and end uWSGI's request now."""
        gevent.spawn(_run_logged, run)
        return []

    def release_transport(self, transport: Any) -> None:
        """Close the duplicated descriptor once the WebSocket is over."""
        transport.close()


def _run_logged(run: Callable[[], None]) -> None:
    try:
        run()
    except Exception:
        logger.exception("WebSocket connection failed")


#: The spelling of ws4redis 0.5 and earlier.
uWSGIWebsocketServer = uWSGIWebSocketServer  # noqa: N816

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

Before a worker exits, every open WebSocket gets a close frame 1001 (going away): on a graceful
reload (``SIGHUP`` to the master, ``--touch-reload``, an emperor reloading its vassal), a brutal
reload (``SIGTERM`` without ``--die-on-term``), a shutdown (``SIGINT``, ``SIGQUIT``) and a recycle
(``--max-requests``, ``--reload-on-rss``) alike.  uWSGI's gevent loop ends each of these the same
way: it stops accepting, waits for the requests in progress (handshakes only: an open WebSocket
is no uWSGI request any more) and calls ``uwsgi.atexit`` in the worker's main greenlet, while
gevent's hub still runs.  That hook sends the close frames and waits for the clients' answers,
up to ``CLOSE_TIMEOUT`` (2 s) of :mod:`ws4redis.wsgi_server`; a function the application set as
``uwsgi.atexit`` before is called after it.  Python's own ``atexit`` handlers are no use here:
uWSGI's gevent workers never run them.
"""

from __future__ import annotations

import logging
import os
import socket as _socket
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from gevent import monkey

monkey.patch_socket()
_stdlib_socket = monkey.get_original("socket", "socket")

import gevent  # noqa: E402
import gevent.socket  # noqa: E402

from ws4redis import metrics  # noqa: E402
from ws4redis.runtime import gevent_runtime  # noqa: E402
from ws4redis.transport import SocketTransport  # noqa: E402
from ws4redis.websocket import Handshake  # noqa: E402
from ws4redis.wsgi_server import WebSocketServer  # noqa: E402

logger = logging.getLogger("ws4redis")


class uWSGIWebSocketServer(WebSocketServer):  # noqa: N801 - the documented name
    """The WSGI application that serves WebSockets under uWSGI + gevent."""

    runtime = gevent_runtime()

    def __init__(self, redis_connection: Any = None) -> None:
        super().__init__(redis_connection)
        _servers.add(self)
        _close_websockets_at_exit()

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


#: The servers of this process, closed with 1001 before it exits.
_servers: weakref.WeakSet[uWSGIWebSocketServer] = weakref.WeakSet()


def _close_websockets_at_exit() -> None:
    """Make ``uwsgi.atexit`` close the open WebSockets first (installed once per process)."""
    try:
        import uwsgi
    except ImportError:  # imported outside uWSGI: a management command, a test
        return
    previous = getattr(uwsgi, "atexit", None)
    if previous is _close_websockets or getattr(previous, "closes_websockets", False):
        return
    if previous is None:
        uwsgi.atexit = _close_websockets
        return

    def close_websockets_then_previous() -> None:
        try:
            _close_websockets()
        finally:
            previous()

    close_websockets_then_previous.closes_websockets = True  # type: ignore[attr-defined]
    uwsgi.atexit = close_websockets_then_previous


def _close_websockets() -> None:
    """Close every open WebSocket of this process with 1001 and wait for them to end."""
    closed = sum(server.close_all() for server in list(_servers))
    metrics.stop_reporter()  # this worker's report goes now, not after its time-to-live
    if closed:
        logger.info("Closed %d WebSocket(s) with 1001: this uWSGI worker is going away", closed)


def _run_logged(run: Callable[[], None]) -> None:
    try:
        run()
    except Exception:
        logger.exception("WebSocket connection failed")


#: The spelling of ws4redis 0.5 and earlier.
uWSGIWebsocketServer = uWSGIWebSocketServer  # noqa: N816

"""WebSockets under ``manage.py runserver``, for development.

Set ``WSGI_APPLICATION = "ws4redis.django_runserver.application"``: ordinary requests go to
Django as usual, requests below ``WEBSOCKET_URL`` are served by the same WebSocket loop as under
uWSGI, on the thread Django's threaded development server started for the request (so
breakpoints work), with a second thread writing to the client.

How the connection is reached: the development server wraps ``wsgi.input`` in a
``LimitedStream`` that hides the socket, so the binding takes the request handler from the
WSGI ``start_response`` (a bound method of Django's ``ServerHandler``, which keeps a reference
to its ``WSGIRequestHandler``), writes the 101 on the handler's socket itself, and marks the
handler's response as sent so that nothing but WebSocket frames goes on the wire.  Nothing of
Django is patched.

When the autoreloader restarts the server (or the process exits), every open WebSocket is
closed with 1001 (going away), so clients reconnect to the new process.
"""

from __future__ import annotations

import atexit
import logging
from collections.abc import Callable, Iterable
from typing import Any

from django.core.wsgi import get_wsgi_application

from ws4redis import metrics, settings
from ws4redis.runtime import thread_runtime
from ws4redis.transport import SocketTransport
from ws4redis.websocket import Handshake, handshake_response_headers
from ws4redis.wsgi_server import WebSocketServer

logger = logging.getLogger("ws4redis")


class DevelopmentWebSocketServer(WebSocketServer):
    """The WebSocket loop on threads, inside Django's development server."""

    runtime = thread_runtime()

    def upgrade(
        self,
        environ: dict[str, Any],
        start_response: Callable[..., Any],
        handshake: Handshake,
        subprotocol: str | None,
    ) -> SocketTransport:
        """Write the 101 on the request handler's socket and take the connection over."""
        server_handler = getattr(start_response, "__self__", None)
        request_handler = getattr(server_handler, "request_handler", None)
        if request_handler is None:
            raise RuntimeError("ws4redis.django_runserver needs Django's development server")
        lines = ["HTTP/1.1 101 Switching Protocols"]
        lines += [
            f"{name}: {value}" for name, value in handshake_response_headers(handshake, subprotocol)
        ]
        request_handler.connection.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        # The response is ours from here on: wsgiref must add no headers and no body, and the
        # handler must not read another request from this connection.
        server_handler.status = "101 Switching Protocols"
        server_handler.headers_sent = True
        request_handler.close_connection = True
        return SocketTransport(request_handler.connection, reader=request_handler.rfile.read1)


_django_app = get_wsgi_application()
_websocket_app = DevelopmentWebSocketServer()


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """``WSGI_APPLICATION`` for development: WebSockets below ``WEBSOCKET_URL``, else Django."""
    if environ.get("PATH_INFO", "").startswith(settings.get("WEBSOCKET_URL")):
        return _websocket_app(environ, start_response)
    return _django_app(environ, start_response)


def _close_websockets() -> None:
    """At exit (an autoreload restart included): close open WebSockets with 1001."""
    count = _websocket_app.close_all()
    metrics.stop_reporter()
    if count:
        logger.info("Closed %d WebSocket(s): the development server is going away", count)


atexit.register(_close_websockets)


__all__ = ["DevelopmentWebSocketServer", "application"]

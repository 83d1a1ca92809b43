"""Template context for pages that open WebSockets."""

from __future__ import annotations

import json

from django.http import HttpRequest
from django.utils.safestring import SafeString, mark_safe

from ws4redis import settings


def default(request: HttpRequest) -> dict[str, str | SafeString]:
    """Add ``WEBSOCKET_URI`` (``ws://`` or ``wss://`` + host + ``WEBSOCKET_URL``) and
    ``WS4REDIS_HEARTBEAT`` (a JavaScript literal: a quoted string, or ``null``)."""
    scheme = "wss" if request.is_secure() else "ws"
    heartbeat = json.dumps(settings.get("WS4REDIS_HEARTBEAT"))
    heartbeat = heartbeat.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return {
        "WEBSOCKET_URI": f"{scheme}://{request.get_host()}{settings.get('WEBSOCKET_URL')}",
        "WS4REDIS_HEARTBEAT": mark_safe(heartbeat),
    }

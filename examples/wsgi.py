"""Standalone uWSGI entry point: WebSocket requests to ws4redis, everything else to Django.

uwsgi --http-socket :9090 --gevent 1000 --http-websockets --module wsgi
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatserver.settings")

from django.conf import settings  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402

from ws4redis.uwsgi_runserver import uWSGIWebSocketServer  # noqa: E402

_django_app = get_wsgi_application()
_websocket_app = uWSGIWebSocketServer()


def application(environ, start_response):
    """Dispatch on the path: ``WEBSOCKET_URL`` goes to the WebSocket loop."""
    if environ.get("PATH_INFO", "").startswith(settings.WEBSOCKET_URL):
        return _websocket_app(environ, start_response)
    return _django_app(environ, start_response)

"""The WebSocket loop, for a uWSGI instance of its own (``--gevent N --http-websockets``)."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatserver.settings")

from ws4redis.uwsgi_runserver import uWSGIWebSocketServer  # noqa: E402

application = uWSGIWebSocketServer()

"""The WebSocket loop of the stress-test server.

In this directory::

    uwsgi --http-socket :8000 --gevent 1000 --http-websockets --master --workers 2 \
        --module wsgi_websocket

Redis comes from ``WS4REDIS_STRESS_REDIS`` (see ``stress_settings.py``).
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "stress_settings")

from ws4redis.uwsgi_runserver import uWSGIWebSocketServer  # noqa: E402

application = uWSGIWebSocketServer()

"""``uwsgi --http-socket … --gevent N --http-websockets --module bench_ws4redis.wsgi``."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench_ws4redis.settings")

from ws4redis.uwsgi_runserver import uWSGIWebSocketServer  # noqa: E402

application = uWSGIWebSocketServer()

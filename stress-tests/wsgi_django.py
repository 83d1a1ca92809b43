"""The Django loop of the stress-test server: publishes what it is sent to WebSocket clients.

In this directory (a port other than the WebSocket loop's)::

    uwsgi --http-socket :8001 --master --workers 2 --module wsgi_django
    curl -d 'hello' http://localhost:8001/publish/FACILITY/

Each ``POST /publish/<facility>/`` broadcasts its body to ``ws://…/ws/<facility>?subscribe-
broadcast`` through Redis, as a view of a real site would (``RedisPublisher``).
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "stress_settings")

from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()

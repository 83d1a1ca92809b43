"""Django settings of the stress-test server (``wsgi_websocket.py`` and ``wsgi_django.py``).

No database: sessions are signed cookies, and the WebSocket loop takes the user from the
session.  The environment says where Redis is:

``WS4REDIS_STRESS_REDIS``  the Redis server (default ``redis://127.0.0.1:6379/0``)
"""

import os

SECRET_KEY = os.environ.get("WS4REDIS_STRESS_SECRET_KEY", "stress-tests-only")
DEBUG = False
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "ws4redis",
]
MIDDLEWARE = ["django.contrib.sessions.middleware.SessionMiddleware"]
ROOT_URLCONF = "stress_urls"
DATABASES = {}
SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
USE_TZ = True

WEBSOCKET_URL = "/ws/"
WS4REDIS_CONNECTION = os.environ.get("WS4REDIS_STRESS_REDIS", "redis://127.0.0.1:6379/0")
WS4REDIS_EXPIRE = 0  # every run uses facilities of its own; nothing to persist

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"ws4redis": {"handlers": ["console"], "level": "WARNING"}},
}

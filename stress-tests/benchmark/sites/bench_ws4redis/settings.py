"""Minimal settings for the benchmark's ws4redis worker.

No database, signed-cookie sessions (a client without a cookie costs no lookup), messages not
persisted (``WS4REDIS_EXPIRE = 0``), no heartbeat: the same work per connection and per message
as the Channels consumer the benchmark compares it with.
"""

import os

SECRET_KEY = "benchmark-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "ws4redis"]
DATABASES = {}
SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
USE_TZ = True
WEBSOCKET_URL = "/ws/"
WS4REDIS_CONNECTION = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
WS4REDIS_EXPIRE = 0
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"ws4redis": {"handlers": ["console"], "level": "WARNING"}},
}

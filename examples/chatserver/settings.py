"""Settings of the ws4redis example project (the chat server).

Everything that differs between machines comes from the environment:

``CHATSERVER_REDIS_URL``    the Redis server (default ``redis://127.0.0.1:6379/0``)
``CHATSERVER_DB``           the SQLite file (default ``examples/chatserver.sqlite3``)
``CHATSERVER_DEBUG``        ``1`` (default) or ``0``
``CHATSERVER_STATIC_ROOT``  ``STATIC_ROOT``, where ``collectstatic`` puts the static files
                            (default ``examples/staticfiles``)

Sessions live in Redis through Django's own Redis cache backend, never in the database: the
WebSocket loop reads the session of every connecting client, and a database query there would
block all other WebSockets of the worker.
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("CHATSERVER_SECRET_KEY", "insecure-demo-key-change-me-in-production")
DEBUG = os.environ.get("CHATSERVER_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]", *os.environ.get("CHATSERVER_HOSTS", "").split()]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "ws4redis",  # before staticfiles: its runserver adds the handshake deadline
    "django.contrib.staticfiles",
    "chatserver",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "chatserver.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.static",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "ws4redis.context_processors.default",
            ],
        },
    },
]

# `manage.py runserver` serves WebSockets too (production servers import their own module).
WSGI_APPLICATION = "ws4redis.django_runserver.application"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("CHATSERVER_DB", str(BASE_DIR / "chatserver.sqlite3")),
    }
}

REDIS_URL = os.environ.get("CHATSERVER_REDIS_URL", "redis://127.0.0.1:6379/0")

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "chatserver",
        # waits cooperatively in the WebSocket worker, and bounds its Redis connections
        "OPTIONS": {
            "pool_class": "ws4redis.connection.CooperativeConnectionPool",
            "max_connections": 8,
        },
    }
}
SESSION_ENGINE = "django.contrib.sessions.backends.cache"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = os.environ.get("CHATSERVER_STATIC_ROOT", str(BASE_DIR / "staticfiles"))
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"

# ws4redis
WEBSOCKET_URL = "/ws/"
WS4REDIS_CONNECTION = REDIS_URL
WS4REDIS_EXPIRE = 7200
WS4REDIS_PREFIX = "ws"
WS4REDIS_HEARTBEAT = "--heartbeat--"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"ws4redis": {"handlers": ["console"], "level": "INFO"}},
}

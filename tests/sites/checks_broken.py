"""The example project with two mistakes the system checks must report."""

from chatserver.settings import *  # noqa: F403

WEBSOCKET_URL = "/ws"
SESSION_ENGINE = "django.contrib.sessions.backends.db"

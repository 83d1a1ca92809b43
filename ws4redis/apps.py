"""Django app configuration for ws4redis."""

from __future__ import annotations

from django.apps import AppConfig


class WS4RedisConfig(AppConfig):
    """Connects the login signal handler that keeps the user's name and groups in the session."""

    name = "ws4redis"
    verbose_name = "WebSockets for Redis"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_in

        from ws4redis import checks  # noqa: F401 - registers the system checks
        from ws4redis.auth import store_user_in_session

        user_logged_in.connect(store_user_in_session, dispatch_uid="ws4redis.store_user_in_session")

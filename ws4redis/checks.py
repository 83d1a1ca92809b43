"""System checks for ws4redis (``manage.py check``; ``--deploy`` adds the production ones).

=================  =====================================================================
id                 problem
=================  =====================================================================
ws4redis.E001      ``WEBSOCKET_URL`` does not start and end with ``/``
ws4redis.E002      ``WS4REDIS_CONNECTION`` cannot be understood
ws4redis.E003      a callback or class setting names something that does not import
ws4redis.E004      another ws4redis setting has an invalid value
ws4redis.W001      sessions live in the database: the WebSocket loop would block on it
ws4redis.W002      (deploy) origin checking is switched off
ws4redis.W003      (deploy) Redis cannot be reached
ws4redis.W004      ``runserver`` serves WebSockets without the handshake deadline
=================  =====================================================================
"""

from __future__ import annotations

from typing import Any

from django.conf import settings as django_settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.core.exceptions import ImproperlyConfigured

from ws4redis import settings

CALLABLE_SETTINGS = ("WS4REDIS_ALLOWED_CHANNELS", "WS4REDIS_PROCESS_REQUEST", "WS4REDIS_SUBSCRIBER")
DATABASE_SESSION_ENGINES = (
    "django.contrib.sessions.backends.db",
    "django.contrib.sessions.backends.cached_db",
)
#: Seconds the deploy check waits for Redis to answer PING.
PING_TIMEOUT = 2.0


@register(Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Validate the ws4redis settings and the session engine."""
    messages: list[CheckMessage] = []
    url = getattr(django_settings, "WEBSOCKET_URL", "/ws/")
    if not isinstance(url, str) or not (url.startswith("/") and url.endswith("/")):
        messages.append(
            Error(
                f"WEBSOCKET_URL must start and end with '/', not {url!r}.",
                hint="Use a path prefix such as '/ws/'.",
                id="ws4redis.E001",
            )
        )
    messages += _check_connection()
    messages += _check_other_settings()
    messages += _check_runserver_command()
    engine = getattr(django_settings, "SESSION_ENGINE", "")
    if engine in DATABASE_SESSION_ENGINES:
        messages.append(
            Warning(
                f"SESSION_ENGINE is {engine!r}: the WebSocket loop would block on the database "
                "for every handshake, stalling all WebSockets of the worker.",
                hint="Use 'django.contrib.sessions.backends.cache' on a Redis cache, or "
                "'django.contrib.sessions.backends.signed_cookies'.",
                id="ws4redis.W001",
            )
        )
    return messages


def _check_connection() -> list[CheckMessage]:
    from ws4redis.connection import ClusterConfig, SentinelConfig, parse_connection, pool_spec

    try:
        spec = parse_connection(settings.get("WS4REDIS_CONNECTION"))
        if not isinstance(spec, (SentinelConfig, ClusterConfig)):
            pool_spec(spec)
    except (ImproperlyConfigured, ValueError, TypeError) as exc:
        return [
            Error(
                f"WS4REDIS_CONNECTION cannot be used: {exc}",
                hint="Give a dict of redis-py connection arguments (host, port, db, password, "
                "unix_socket_path, ssl…) or a redis://, rediss:// or unix:// URL; for Sentinel "
                "redis+sentinel://host:26379[,host:port…]/service_name[/db] or a dict with "
                "sentinels and service_name; for Cluster redis+cluster://host:port[,host:port…] "
                "or a dict with cluster_nodes.",
                id="ws4redis.E002",
            )
        ]
    return []


def _check_runserver_command() -> list[CheckMessage]:
    """ws4redis's ``runserver`` (with the handshake deadline) runs only if listed first."""
    wsgi_application = getattr(django_settings, "WSGI_APPLICATION", None)
    apps = list(getattr(django_settings, "INSTALLED_APPS", ()))
    staticfiles = "django.contrib.staticfiles"
    if (
        wsgi_application != "ws4redis.django_runserver.application"
        or staticfiles not in apps
        or "ws4redis" not in apps
        or apps.index("ws4redis") < apps.index(staticfiles)
    ):
        return []
    return [
        Warning(
            "'ws4redis' comes after 'django.contrib.staticfiles' in INSTALLED_APPS, so "
            "manage.py runserver is staticfiles' command: it serves WebSockets without "
            "WS4REDIS_HANDSHAKE_TIMEOUT, and a client that never finishes its handshake holds "
            "a thread for good.",
            hint="Move 'ws4redis' above 'django.contrib.staticfiles'; static files are still "
            "served, ws4redis's runserver extends staticfiles' one.",
            id="ws4redis.W004",
        )
    ]


def _check_other_settings() -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    for name in settings.NAMES:
        if name in ("WEBSOCKET_URL", "WS4REDIS_CONNECTION"):
            continue
        try:
            settings.get(name)
        except ImproperlyConfigured as exc:
            check_id = "ws4redis.E003" if name in CALLABLE_SETTINGS else "ws4redis.E004"
            messages.append(Error(str(exc), id=check_id))
    return messages


@register(Tags.security, deploy=True)
def check_deployment(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Production advice: origin checking on, Redis reachable."""
    messages: list[CheckMessage] = []
    try:
        origins = settings.get("WS4REDIS_ALLOWED_ORIGINS")
    except ImproperlyConfigured:
        origins = None  # reported by check_settings
    if origins is not None and "*" in origins:
        messages.append(
            Warning(
                "WS4REDIS_ALLOWED_ORIGINS accepts every origin: any web page a logged-in user "
                "visits can open WebSockets with the user's cookies (cross-site WebSocket "
                "hijacking).",
                hint="List the origins of your site, or remove the setting to derive them from "
                "CSRF_TRUSTED_ORIGINS.",
                id="ws4redis.W002",
            )
        )
    messages += _check_redis()
    return messages


def _check_redis() -> list[CheckMessage]:
    from redis.exceptions import RedisError

    from ws4redis.connection import make_client

    try:
        client = make_client(socket_timeout=PING_TIMEOUT)
        client.ping()
        client.close()
    except (RedisError, OSError, ImproperlyConfigured, ValueError, TypeError) as exc:
        return [
            Warning(
                f"Redis cannot be reached with WS4REDIS_CONNECTION: {exc}",
                hint="Start Redis, or correct WS4REDIS_CONNECTION.",
                id="ws4redis.W003",
            )
        ]
    return []

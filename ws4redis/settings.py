"""The documented settings of ws4redis, read lazily from ``django.conf.settings``.

Read them as attributes of this module (``ws4redis.settings.WS4REDIS_EXPIRE``): every read goes
through :func:`get`, which validates the value and caches it until Django's ``setting_changed``
signal says otherwise, so ``override_settings`` works in tests.  An invalid value raises
``ImproperlyConfigured`` naming the setting.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured

_MISSING = object()


def _url(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ImproperlyConfigured(
            "WEBSOCKET_URL must be a path starting with '/', such as '/ws/'."
        )
    return value


def _connection(value: Any) -> dict[str, Any] | str:
    from ws4redis.connection import parse_connection

    schemes = ("redis", "rediss", "unix", "redis+sentinel", "redis+cluster")
    if (isinstance(value, str) and value.split("://", 1)[0] in schemes) or isinstance(value, dict):
        try:
            parse_connection(value)  # the Sentinel and Cluster forms are checked here
        except ValueError as exc:
            raise ImproperlyConfigured(f"WS4REDIS_CONNECTION is malformed: {exc}.") from None
        return value if isinstance(value, str) else dict(value)
    raise ImproperlyConfigured(
        "WS4REDIS_CONNECTION must be a dict (host, port, db, password, unix_socket_path, ssl…; "
        "sentinels and service_name for Sentinel; cluster_nodes for Cluster) or a redis://, "
        "rediss://, unix://, redis+sentinel://host:port[,…]/service_name[/db] or "
        "redis+cluster://host:port[,…] URL."
    )


def _expire(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ImproperlyConfigured(
            "WS4REDIS_EXPIRE must be a number of seconds (0 or None: do not persist messages)."
        )
    return value


def _prefix(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ImproperlyConfigured("WS4REDIS_PREFIX must be a string.")
    return value


def _heartbeat(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if not isinstance(value, str) or not value:
        raise ImproperlyConfigured("WS4REDIS_HEARTBEAT must be a non-empty string or None.")
    return value


def _origins(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    try:
        origins = None if isinstance(value, (str, bytes)) else tuple(value)
    except TypeError:
        origins = None
    if origins is None or not all(isinstance(item, str) for item in origins):
        raise ImproperlyConfigured(
            "WS4REDIS_ALLOWED_ORIGINS must be a list of origins such as 'https://example.com' "
            "(['*'] accepts every origin), or None to derive it from CSRF_TRUSTED_ORIGINS."
        )
    return origins


def _positive_int(name: str) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ImproperlyConfigured(f"{name} must be a positive integer.")
        return value

    return check


def _positive_number(name: str, unit: str = "seconds") -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ImproperlyConfigured(f"{name} must be a positive number of {unit}.")
        return float(value)

    return check


def _optional(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def optional(value: Any) -> Any:
        return None if value is None else check(value)

    return optional


def _dotted_or_callable(name: str, default: str | None = None) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        return resolve_callable(name, default if value is None else value)

    return check


def resolve_callable(name: str, value: Any) -> Any:
    """Return ``value`` itself when callable, else import the dotted path it names.

    Raises ``ImproperlyConfigured`` naming the setting ``name`` when neither works.
    """
    if value is None or callable(value):
        return value
    if isinstance(value, str) and "." in value:
        module_name, _, attribute = value.rpartition(".")
        try:
            resolved = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            raise ImproperlyConfigured(f"{name}: cannot import {value!r} ({exc}).") from exc
        if not callable(resolved):
            raise ImproperlyConfigured(f"{name}: {value!r} is not callable.")
        return resolved
    raise ImproperlyConfigured(f"{name} must be a callable or the dotted path to one.")


def _secret(name: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise ImproperlyConfigured(f"{name} must be a non-empty string or None.")
        return value

    return check


def _history(value: Any) -> dict[str, int] | None:
    from ws4redis.history import validate

    return validate(value)


# name: (default, validator)
_SCHEMA: dict[str, tuple[Any, Callable[[Any], Any]]] = {
    "WEBSOCKET_URL": ("/ws/", _url),
    "WS4REDIS_CONNECTION": ({}, _connection),
    "WS4REDIS_EXPIRE": (3600, _expire),
    "WS4REDIS_PREFIX": ("", _prefix),
    "WS4REDIS_SUBSCRIBER": (
        "ws4redis.subscriber.RedisSubscriber",
        _dotted_or_callable("WS4REDIS_SUBSCRIBER", "ws4redis.subscriber.RedisSubscriber"),
    ),
    "WS4REDIS_HEARTBEAT": (None, _heartbeat),
    "WS4REDIS_ALLOWED_CHANNELS": (None, _dotted_or_callable("WS4REDIS_ALLOWED_CHANNELS")),
    "WS4REDIS_PROCESS_REQUEST": (
        "ws4redis.auth.default_process_request",
        _dotted_or_callable("WS4REDIS_PROCESS_REQUEST", "ws4redis.auth.default_process_request"),
    ),
    "WS4REDIS_ALLOWED_ORIGINS": (None, _origins),
    "WS4REDIS_MAX_MESSAGE_SIZE": (1 << 20, _positive_int("WS4REDIS_MAX_MESSAGE_SIZE")),
    "WS4REDIS_SOCKET_TIMEOUT": (5.0, _positive_number("WS4REDIS_SOCKET_TIMEOUT")),
    "WS4REDIS_HEARTBEAT_INTERVAL": (4.0, _positive_number("WS4REDIS_HEARTBEAT_INTERVAL")),
    "WS4REDIS_SEND_QUEUE_SIZE": (
        1000,
        _positive_int("WS4REDIS_SEND_QUEUE_SIZE"),
    ),
    "WS4REDIS_MAX_MESSAGES_PER_SECOND": (
        100,
        _optional(
            _positive_number("WS4REDIS_MAX_MESSAGES_PER_SECOND", "messages (or None: no limit)")
        ),
    ),
    "WS4REDIS_MAX_CONNECTIONS": (None, _optional(_positive_int("WS4REDIS_MAX_CONNECTIONS"))),
    "WS4REDIS_HANDSHAKE_TIMEOUT": (10.0, _positive_number("WS4REDIS_HANDSHAKE_TIMEOUT")),
    "WS4REDIS_METRICS_INTERVAL": (5.0, _positive_number("WS4REDIS_METRICS_INTERVAL")),
    "WS4REDIS_METRICS_TOKEN": (None, _optional(_secret("WS4REDIS_METRICS_TOKEN"))),
    "WS4REDIS_HISTORY": (None, _history),
}

NAMES = tuple(_SCHEMA)
_cache: dict[str, Any] = {}


def get(name: str) -> Any:
    """Return the validated value of setting ``name`` (its default when unset)."""
    value = _cache.get(name, _MISSING)
    if value is _MISSING:
        default, validate = _SCHEMA[name]
        value = validate(getattr(django_settings, name, default))
        _cache[name] = value
    return value


def clear_cache(*, setting: str | None = None, **kwargs: Any) -> None:
    """Forget cached values; connected to Django's ``setting_changed`` signal."""
    if setting is None or setting in _SCHEMA:
        _cache.clear()


def __getattr__(name: str) -> Any:
    if name in _SCHEMA:
        return get(name)
    raise AttributeError(f"module 'ws4redis.settings' has no attribute {name!r}")


def _connect_signal() -> None:
    from django.core.signals import setting_changed

    setting_changed.connect(clear_cache, dispatch_uid="ws4redis.settings.clear_cache")


_connect_signal()

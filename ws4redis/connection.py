"""Redis clients built from ``WS4REDIS_CONNECTION``.

The setting is either a dict of redis-py connection arguments (``host``, ``port``, ``db``,
``password``, ``username``, ``unix_socket_path``, ``ssl`` and the ``ssl_*`` options; give only
what differs from the defaults) or a ``redis://``, ``rediss://`` or ``unix://`` URL.

Two kinds of connection come from it: a shared, pooled client for commands (PUBLISH, SET … EX,
GET) and single dedicated connections for the per-process pub/sub hub.
"""

from __future__ import annotations

import threading
from typing import Any

import redis
from django.core.signals import setting_changed

from ws4redis import settings
from ws4redis.runtime import Runtime

#: Commands never wait longer than this many seconds for a free pooled connection.
POOL_WAIT_TIMEOUT = 5.0
#: Connections kept by the Django loop's command pool; well below redis-py 8's default cap of 100.
POOL_MAX_CONNECTIONS = 32
#: Connections kept by a WebSocket worker's command pool: its greenlets take turns on them, so
#: a worker holding thousands of WebSockets needs only a handful of Redis connections.
LOOP_POOL_MAX_CONNECTIONS = 4

_shared_client: redis.Redis | None = None


def pool_spec(config: dict[str, Any] | str) -> tuple[type[redis.Connection], dict[str, Any]]:
    """Return the connection class and keyword arguments that ``config`` describes."""
    if isinstance(config, str):
        pool = redis.ConnectionPool.from_url(config)
    else:
        pool = redis.Redis(**config).connection_pool
    kwargs = dict(pool.connection_kwargs)
    pool.disconnect()
    if not isinstance(config, str):
        # redis.Redis() fills in its own defaults (5 s timeouts, 10 retries with backoff);
        # keep only what the setting names, so WS4REDIS_SOCKET_TIMEOUT applies as with a URL.
        for key in _LIBRARY_DEFAULTS:
            if key not in config:
                kwargs.pop(key, None)
    return pool.connection_class, kwargs


_LIBRARY_DEFAULTS = ("socket_timeout", "socket_connect_timeout", "retry")


def make_client(
    config: dict[str, Any] | str | None = None,
    *,
    socket_timeout: float | None = None,
    runtime: Runtime | None = None,
) -> redis.Redis:
    """Build a pooled client for ``config`` (default: the ``WS4REDIS_CONNECTION`` setting).

    Its commands fail with ``redis.exceptions.ConnectionError`` or ``TimeoutError`` within
    ``socket_timeout`` seconds (default: ``WS4REDIS_SOCKET_TIMEOUT``) instead of hanging.  A
    command waits up to :data:`POOL_WAIT_TIMEOUT` for a free connection; give the ``runtime``
    of the calling code (greenlets) so that this wait does not freeze the whole thread.
    """
    if config is None:
        config = settings.get("WS4REDIS_CONNECTION")
    timeout = settings.get("WS4REDIS_SOCKET_TIMEOUT") if socket_timeout is None else socket_timeout
    connection_class, kwargs = pool_spec(config)
    kwargs.setdefault("socket_timeout", timeout)
    kwargs.setdefault("socket_connect_timeout", timeout)
    pool: redis.ConnectionPool
    if runtime is None:
        pool = redis.BlockingConnectionPool(
            connection_class=connection_class,
            max_connections=POOL_MAX_CONNECTIONS,
            timeout=POOL_WAIT_TIMEOUT,
            **kwargs,
        )
    else:
        pool = CooperativeConnectionPool(
            gate=runtime.semaphore(LOOP_POOL_MAX_CONNECTIONS),
            connection_class=connection_class,
            max_connections=LOOP_POOL_MAX_CONNECTIONS,
            **kwargs,
        )
    return redis.Redis(connection_pool=pool)


class CooperativeConnectionPool(redis.ConnectionPool):
    """A bounded connection pool whose callers wait their turn without freezing gevent.

    redis-py's ``BlockingConnectionPool`` waits on a thread lock, which under gevent would stop
    every greenlet of the worker.  This pool waits on a semaphore of the caller's kind: a gevent
    one where the ``socket`` module is patched by gevent (a WebSocket worker), a thread one
    elsewhere.  Use it for Django's Redis cache too, so that loading sessions in the WebSocket
    loop stays within ``max_connections``::

        CACHES = {"default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://localhost:6379/0",
            "OPTIONS": {"pool_class": "ws4redis.connection.CooperativeConnectionPool",
                        "max_connections": 4},
        }}
    """

    def __init__(
        self, *, max_connections: int = LOOP_POOL_MAX_CONNECTIONS, gate: Any = None, **kwargs: Any
    ) -> None:
        super().__init__(max_connections=max_connections, **kwargs)
        self._gate = gate if gate is not None else _semaphore(max_connections)
        self._gated: set[int] = set()  # connections handed out while holding the gate

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        if not self._gate.acquire(timeout=POOL_WAIT_TIMEOUT):
            raise redis.exceptions.ConnectionError("No Redis connection free in the pool")
        try:
            connection = super().get_connection(*args, **kwargs)
        except BaseException:
            self._gate.release()  # redis-py released the failed connection, not our gate
            raise
        self._gated.add(id(connection))
        return connection

    def release(self, connection: Any) -> None:
        try:
            super().release(connection)
        finally:
            if id(connection) in self._gated:
                self._gated.discard(id(connection))
                self._gate.release()


def _semaphore(size: int) -> Any:
    from gevent import monkey

    if monkey.is_module_patched("socket"):
        from ws4redis.runtime import gevent_runtime

        return gevent_runtime().semaphore(size)
    return threading.BoundedSemaphore(size)


def make_connection(config: dict[str, Any] | str | None = None) -> redis.Connection:
    """Build one unpooled connection that blocks on reads, as pub/sub needs.

    Connecting still times out after ``WS4REDIS_SOCKET_TIMEOUT`` seconds.
    """
    if config is None:
        config = settings.get("WS4REDIS_CONNECTION")
    connection_class, kwargs = pool_spec(config)
    kwargs["socket_timeout"] = None
    kwargs.setdefault("socket_connect_timeout", settings.get("WS4REDIS_SOCKET_TIMEOUT"))
    if not issubclass(connection_class, redis.UnixDomainSocketConnection):
        kwargs["socket_keepalive"] = True  # TCP only: unix sockets take no such option
    return connection_class(**kwargs)


def get_redis_client() -> redis.Redis:
    """The process-wide pooled client for ``WS4REDIS_CONNECTION``."""
    global _shared_client
    if _shared_client is None:
        _shared_client = make_client()
    return _shared_client


def _forget_client(*, setting: str, **kwargs: Any) -> None:
    global _shared_client
    if setting in ("WS4REDIS_CONNECTION", "WS4REDIS_SOCKET_TIMEOUT") and _shared_client:
        _shared_client.connection_pool.disconnect()
        _shared_client = None


setting_changed.connect(_forget_client)

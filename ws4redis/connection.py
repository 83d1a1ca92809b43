"""Redis clients built from ``WS4REDIS_CONNECTION``.

The setting describes one of three topologies:

- a single server: a dict of redis-py connection arguments (``host``, ``port``, ``db``,
  ``password``, ``username``, ``unix_socket_path``, ``ssl`` and the ``ssl_*`` options; give only
  what differs from the defaults) or a ``redis://``, ``rediss://`` or ``unix://`` URL;
- Redis Sentinel: ``redis+sentinel://[:password@]host:port[,host:port…]/service_name[/db]`` or
  a dict with ``sentinels`` and ``service_name`` (see :class:`SentinelConfig`);
- Redis Cluster: ``redis+cluster://[:password@]host:port[,host:port…]`` or a dict with
  ``cluster_nodes`` (see :class:`ClusterConfig`).

Two kinds of connection come from it: a shared, pooled client for commands (PUBLISH or
SPUBLISH, SET … EX, GET) and single dedicated connections for the per-process pub/sub hub.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import redis
import redis.cluster
import redis.sentinel
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

#: Seconds between two checks that the Sentinel master is still the one connected to: by the
#: hub (which then moves its pub/sub connection) and by the command pools (which then drop
#: connections to the old master).  Sentinel reconfigures a demoted master only about ten
#: seconds after a failover; until then the old master accepts everything silently.
SENTINEL_CHECK_INTERVAL = 1.0
#: The client name of the hub's pub/sub connections (``CLIENT LIST``), followed by the pid.
HUB_CLIENT_NAME = "ws4redis-hub"
#: The client name of the command connections of a WebSocket worker, followed by the pid.
LOOP_CLIENT_NAME = "ws4redis-loop"
SENTINEL_SCHEME = "redis+sentinel"
CLUSTER_SCHEME = "redis+cluster"
DEFAULT_SENTINEL_PORT = 26379
DEFAULT_REDIS_PORT = 6379

_shared_client: redis.Redis | None = None


# -- the setting ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SentinelConfig:
    """A master found through Redis Sentinel.

    ``connection_kwargs`` are redis-py arguments for the data connections (``ssl``,
    ``username``, …); ``password`` is the master's, ``sentinel_password`` the sentinels'.
    """

    sentinels: tuple[tuple[str, int], ...]
    service_name: str
    db: int = 0
    password: str | None = None
    sentinel_password: str | None = None
    connection_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ClusterConfig:
    """A Redis Cluster, found from any of ``nodes``; pub/sub is sharded (Redis ≥ 7)."""

    nodes: tuple[tuple[str, int], ...]
    password: str | None = None
    connection_kwargs: dict[str, Any] = field(default_factory=dict)


def parse_connection(
    config: dict[str, Any] | str,
) -> dict[str, Any] | str | SentinelConfig | ClusterConfig:
    """Read ``WS4REDIS_CONNECTION``: a Sentinel or Cluster configuration, else ``config`` itself.

    Raises ``ValueError`` with a one-line reason when a Sentinel or Cluster form is malformed.
    Single-server values are returned unchanged (redis-py checks them when connecting).
    """
    if isinstance(config, str):
        scheme = config.split("://", 1)[0]
        if scheme == SENTINEL_SCHEME:
            return _sentinel_from_url(config)
        if scheme == CLUSTER_SCHEME:
            return _cluster_from_url(config)
        return config
    if "sentinels" in config or "service_name" in config:
        return _sentinel_from_dict(config)
    if "cluster_nodes" in config:
        return _cluster_from_dict(config)
    return config


def _split_url(url: str, scheme: str) -> tuple[str | None, str | None, list[tuple[str, int]], str]:
    """``(username, password, hosts, path)`` of a URL naming several ``host:port``."""
    rest = url[len(scheme) + 3 :]
    if "?" in rest:
        raise ValueError(f"{scheme}:// URLs take no query string; use the dict form for options")
    netloc, _, path = rest.partition("/")
    username = password = None
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        user, _, secret = userinfo.partition(":")
        username, password = unquote(user) or None, unquote(secret) or None
    default = DEFAULT_SENTINEL_PORT if scheme == SENTINEL_SCHEME else DEFAULT_REDIS_PORT
    hosts = [_address(item, default) for item in netloc.split(",") if item]
    return username, password, hosts, path


def _address(value: Any, default_port: int) -> tuple[str, int]:
    if isinstance(value, str):
        host, _, port = value.rpartition(":") if ":" in value else (value, "", str(default_port))
        value = (host, port)
    try:
        host, port = value
        port = int(port)
    except (TypeError, ValueError):
        raise ValueError(f"{value!r} is not a host and port such as ['127.0.0.1', 6379]") from None
    if not isinstance(host, str) or not host or not 0 < port < 65536:
        raise ValueError(f"{value!r} is not a host and port such as ['127.0.0.1', 6379]")
    return host, port


def _sentinel_from_url(url: str) -> SentinelConfig:
    username, password, hosts, path = _split_url(url, SENTINEL_SCHEME)
    parts = [part for part in path.split("/") if part]
    if not hosts:
        raise ValueError(f"{SENTINEL_SCHEME}:// needs at least one sentinel host:port")
    if not parts or len(parts) > 2:
        raise ValueError(
            f"{SENTINEL_SCHEME}:// needs the service name as its path: "
            f"{SENTINEL_SCHEME}://host:26379/mymaster[/db]"
        )
    kwargs = {"username": username} if username else {}
    return SentinelConfig(
        tuple(hosts), parts[0], _db(parts[1] if len(parts) > 1 else 0), password, None, kwargs
    )


def _sentinel_from_dict(config: dict[str, Any]) -> SentinelConfig:
    rest = dict(config)
    sentinels = rest.pop("sentinels", None)
    service_name = rest.pop("service_name", None)
    if not isinstance(sentinels, (list, tuple)) or not sentinels:
        raise ValueError('"sentinels" must be a non-empty list of [host, port] pairs')
    if not isinstance(service_name, str) or not service_name:
        raise ValueError('"service_name" must name the monitored master, e.g. "mymaster"')
    return SentinelConfig(
        tuple(_address(item, DEFAULT_SENTINEL_PORT) for item in sentinels),
        service_name,
        _db(rest.pop("db", 0)),
        rest.pop("password", None),
        rest.pop("sentinel_password", None),
        rest,
    )


def _cluster_from_url(url: str) -> ClusterConfig:
    username, password, hosts, path = _split_url(url, CLUSTER_SCHEME)
    if not hosts:
        raise ValueError(f"{CLUSTER_SCHEME}:// needs at least one node host:port")
    if path.strip("/") not in ("", "0"):
        raise ValueError(f"{CLUSTER_SCHEME}:// takes no database: a cluster has only db 0")
    kwargs = {"username": username} if username else {}
    return ClusterConfig(tuple(hosts), password, kwargs)


def _cluster_from_dict(config: dict[str, Any]) -> ClusterConfig:
    rest = dict(config)
    nodes = rest.pop("cluster_nodes")
    if not isinstance(nodes, (list, tuple)) or not nodes:
        raise ValueError('"cluster_nodes" must be a non-empty list of [host, port] pairs')
    if rest.pop("db", 0) != 0:
        raise ValueError('"db" cannot be used with "cluster_nodes": a cluster has only db 0')
    password = rest.pop("password", None)
    return ClusterConfig(
        tuple(_address(item, DEFAULT_REDIS_PORT) for item in nodes), password, rest
    )


def _db(value: Any) -> int:
    try:
        db = int(value)
    except (TypeError, ValueError):
        db = -1
    if db < 0:
        raise ValueError(f"the database must be a number >= 0, not {value!r}")
    return db


def is_cluster(client: Any) -> bool:
    """Whether ``client`` talks to a Redis Cluster (sharded pub/sub, no cross-slot MGET)."""
    return isinstance(client, redis.cluster.RedisCluster)


# -- single server ----------------------------------------------------------------------------


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
    of the calling code (greenlets) so that this wait does not freeze the whole thread.  For a
    Sentinel configuration the client follows the current master; for a Cluster one it is a
    ``redis.cluster.RedisCluster`` whose pool per node is bounded the same way.
    """
    if config is None:
        config = settings.get("WS4REDIS_CONNECTION")
    timeout = settings.get("WS4REDIS_SOCKET_TIMEOUT") if socket_timeout is None else socket_timeout
    spec = parse_connection(config)
    if isinstance(spec, SentinelConfig):
        return _sentinel_client(spec, timeout, runtime)
    if isinstance(spec, ClusterConfig):
        return _cluster_client(spec, timeout, runtime)  # type: ignore[return-value]
    connection_class, kwargs = pool_spec(spec)
    kwargs = {**_pool_options(timeout, runtime), **kwargs}  # the URL's own options win
    pool: redis.ConnectionPool
    if runtime is None:
        pool = redis.BlockingConnectionPool(
            connection_class=connection_class, timeout=POOL_WAIT_TIMEOUT, **kwargs
        )
    else:
        gate = runtime.semaphore(kwargs["max_connections"])
        pool = CooperativeConnectionPool(gate=gate, connection_class=connection_class, **kwargs)
    return redis.Redis(connection_pool=pool)


def _client_name(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}"


def _pool_options(timeout: float, runtime: Runtime | None) -> dict[str, Any]:
    """Timeouts, bound and client name of a command pool of the Django or WebSocket loop."""
    options: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if runtime is None:
        options["max_connections"] = POOL_MAX_CONNECTIONS
    else:
        options["max_connections"] = LOOP_POOL_MAX_CONNECTIONS
        options["client_name"] = _client_name(LOOP_CLIENT_NAME)
    return options


class _GatedPool:
    """Makes a redis-py pool's callers wait for a free connection on a semaphore (the gate)."""

    def __init__(
        self,
        *args: Any,
        max_connections: int = LOOP_POOL_MAX_CONNECTIONS,
        gate: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, max_connections=max_connections, **kwargs)  # type: ignore[call-arg]
        self._gate = gate if gate is not None else _semaphore(max_connections)
        self._gated: set[int] = set()  # connections handed out while holding the gate

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        if not self._gate.acquire(timeout=POOL_WAIT_TIMEOUT):
            raise redis.exceptions.ConnectionError("No Redis connection free in the pool")
        try:
            connection = super().get_connection(*args, **kwargs)  # type: ignore[misc]
        except BaseException:
            self._gate.release()  # redis-py released the failed connection, not our gate
            raise
        self._gated.add(id(connection))
        return connection

    def release(self, connection: Any) -> None:
        try:
            super().release(connection)  # type: ignore[misc]
        finally:
            if id(connection) in self._gated:
                self._gated.discard(id(connection))
                self._gate.release()


class CooperativeConnectionPool(_GatedPool, redis.ConnectionPool):
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


class CooperativeSentinelPool(_GatedPool, redis.sentinel.SentinelConnectionPool):
    """A bounded, cooperative pool of connections to the master a Sentinel names.

    redis-py asks Sentinel for the master only when a connection is opened; connections already
    open keep talking to the old master until it is demoted.  This pool asks again at most every
    :data:`SENTINEL_CHECK_INTERVAL` seconds when a connection is taken, and drops connections to
    a master that is no longer the one Sentinel names.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._checked_at = time.monotonic()

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        connection = super().get_connection(*args, **kwargs)
        now = time.monotonic()
        if now - self._checked_at >= SENTINEL_CHECK_INTERVAL:
            self._checked_at = now
            try:
                master = self.get_master_address()  # disconnects idle connections on a change
            except redis.exceptions.ConnectionError:
                return connection  # no sentinel answers: keep what works
            if (connection.host, connection.port) != tuple(master):
                # redis-py reconnects a dropped connection to its old address on the next
                # command: connect() here, which asks Sentinel for the master.
                connection.disconnect()
                try:
                    connection.connect()
                except BaseException:
                    self.release(connection)
                    raise
        return connection


def _sentinel_client(spec: SentinelConfig, timeout: float, runtime: Runtime | None) -> redis.Redis:
    options = _pool_options(timeout, runtime)
    if runtime is not None:
        options["gate"] = runtime.semaphore(options["max_connections"])
    client: redis.Redis = _sentinel_manager(spec, timeout).master_for(
        spec.service_name,
        connection_pool_class=CooperativeSentinelPool,
        db=spec.db,
        password=spec.password,
        **{**spec.connection_kwargs, **options},
    )
    return client


def _sentinel_manager(spec: SentinelConfig, timeout: float) -> redis.sentinel.Sentinel:
    sentinel_kwargs = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if spec.sentinel_password is not None:
        sentinel_kwargs["password"] = spec.sentinel_password
    return redis.sentinel.Sentinel(list(spec.sentinels), sentinel_kwargs=sentinel_kwargs)


def _cluster_client(
    spec: ClusterConfig, timeout: float, runtime: Runtime | None
) -> redis.cluster.RedisCluster:
    kwargs = {**spec.connection_kwargs, **_pool_options(timeout, runtime)}
    if spec.password is not None:
        kwargs["password"] = spec.password
    host, port = spec.nodes[0]
    scheme = "rediss" if kwargs.get("ssl") else "redis"
    # Given a URL, redis-py builds each node's pool from connection_pool_class: ours waits for
    # a free connection (bounded per node) instead of failing with "Too many connections".
    client = redis.cluster.RedisCluster(
        url=f"{scheme}://{host}:{port}",
        startup_nodes=[redis.cluster.ClusterNode(h, p) for h, p in spec.nodes],
        connection_pool_class=CooperativeConnectionPool,
        **kwargs,
    )
    if runtime is not None and runtime.name == "gevent":
        import gevent.lock

        # redis-py holds this thread lock across the network I/O of a topology refresh: under
        # gevent a second greenlet refreshing at the same time would freeze the whole worker.
        client.nodes_manager._initialization_lock = gevent.lock.RLock()
    return client


def _semaphore(size: int) -> Any:
    from gevent import monkey

    if monkey.is_module_patched("socket"):
        from ws4redis.runtime import gevent_runtime

        return gevent_runtime().semaphore(size)
    return threading.BoundedSemaphore(size)


def make_connection(config: dict[str, Any] | str | None = None) -> redis.Connection:
    """Build one unpooled connection that blocks on reads, as pub/sub needs.

    Connecting still times out after ``WS4REDIS_SOCKET_TIMEOUT`` seconds.  For a single server
    only: the hub reaches Sentinel and Cluster masters through :class:`SentinelMaster` and
    :class:`ClusterNodes`.
    """
    if config is None:
        config = settings.get("WS4REDIS_CONNECTION")
    connection_class, kwargs = pool_spec(config)
    return connection_class(**_pubsub_options(kwargs, connection_class))


def _pubsub_options(
    kwargs: dict[str, Any], connection_class: type[redis.Connection] = redis.Connection
) -> dict[str, Any]:
    kwargs = dict(kwargs)
    kwargs["socket_timeout"] = None
    kwargs.setdefault("socket_connect_timeout", settings.get("WS4REDIS_SOCKET_TIMEOUT"))
    kwargs.setdefault("client_name", _client_name(HUB_CLIENT_NAME))
    if not issubclass(connection_class, redis.UnixDomainSocketConnection):
        kwargs["socket_keepalive"] = True  # TCP only: unix sockets take no such option
    return kwargs


def _data_connection(address: tuple[str, int], kwargs: dict[str, Any]) -> redis.Connection:
    connection_class = redis.SSLConnection if kwargs.get("ssl") else redis.Connection
    kwargs = {k: v for k, v in kwargs.items() if k != "ssl"}
    return connection_class(host=address[0], port=address[1], **_pubsub_options(kwargs))


class SentinelMaster:
    """The hub's way to the master of a Sentinel configuration.

    :meth:`connect` asks the sentinels for the master each time, and refuses a server that does
    not say it is a master (``ROLE``), so a reconnect never lands on a demoted master;
    :meth:`is_current` tells the hub whether its connection still goes to the master.
    """

    def __init__(self, spec: SentinelConfig) -> None:
        self._spec = spec
        self._sentinel = _sentinel_manager(spec, settings.get("WS4REDIS_SOCKET_TIMEOUT"))
        self._kwargs = {**spec.connection_kwargs, "db": spec.db, "password": spec.password}

    def address(self) -> tuple[str, int]:
        """The master's address as the sentinels see it; ``ConnectionError`` when none knows."""
        host, port = self._sentinel.discover_master(self._spec.service_name)
        return host, int(port)

    def connect(self) -> redis.Connection:
        """A connected pub/sub connection to the current master."""
        connection = _data_connection(self.address(), self._kwargs)
        connection.connect()
        try:
            connection.send_command("ROLE", check_health=False)
            role = connection.read_response()
        except BaseException:
            connection.disconnect()
            raise
        if role[0] not in (b"master", "master"):
            connection.disconnect()
            raise redis.exceptions.ConnectionError(
                f"{connection.host}:{connection.port} is not a master (yet)"
            )
        return connection

    def is_current(self, connection: redis.Connection) -> bool:
        """Whether ``connection`` goes to the master Sentinel names (``True`` if none answers)."""
        try:
            return (connection.host, connection.port) == self.address()
        except redis.exceptions.ConnectionError:
            return True


class ClusterNodes:
    """The hub's view of a Redis Cluster: who owns which slot, and connections to the masters."""

    def __init__(self, spec: ClusterConfig) -> None:
        self._seeds = list(spec.nodes)
        self._known: list[tuple[str, int]] = []
        self._kwargs = dict(spec.connection_kwargs)
        if spec.password is not None:
            self._kwargs["password"] = spec.password

    def slot_table(self) -> list[tuple[int, int, tuple[str, int]]]:
        """``(first slot, last slot, master)`` ranges from the first node that answers.

        Raises ``redis.exceptions.ConnectionError`` when no node does.
        """
        errors = []
        for address in dict.fromkeys(self._known + self._seeds):
            connection = _data_connection(address, self._kwargs)
            connection.socket_timeout = connection.socket_connect_timeout
            try:
                connection.send_command("CLUSTER SLOTS")
                table = [
                    (int(entry[0]), int(entry[1]), _node_address(entry[2], address))
                    for entry in connection.read_response()
                ]
            except (redis.exceptions.RedisError, OSError) as exc:
                errors.append(f"{address[0]}:{address[1]}: {exc}")
                continue
            finally:
                connection.disconnect()
            self._known = list(dict.fromkeys(master for _, _, master in table))
            return table
        raise redis.exceptions.ConnectionError(f"No cluster node answers: {'; '.join(errors)}")

    def connect(self, address: tuple[str, int]) -> redis.Connection:
        """An unconnected pub/sub connection to the node at ``address``."""
        return _data_connection(address, self._kwargs)


def _node_address(entry: Any, asked: tuple[str, int]) -> tuple[str, int]:
    host = entry[0].decode() if isinstance(entry[0], bytes) else entry[0]
    return (host or asked[0]), int(entry[1])  # an empty host: the node asked


def hub_connection_source(
    config: dict[str, Any] | str | None = None,
) -> Callable[[], redis.Connection] | SentinelMaster | ClusterNodes:
    """What the hub connects with: ``make_connection``, a :class:`SentinelMaster` or
    :class:`ClusterNodes`, as ``config`` (default: ``WS4REDIS_CONNECTION``) asks."""
    spec = parse_connection(settings.get("WS4REDIS_CONNECTION") if config is None else config)
    if isinstance(spec, SentinelConfig):
        return SentinelMaster(spec)
    if isinstance(spec, ClusterConfig):
        return ClusterNodes(spec)
    return make_connection


def get_redis_client() -> redis.Redis:
    """The process-wide pooled client for ``WS4REDIS_CONNECTION``."""
    global _shared_client
    if _shared_client is None:
        _shared_client = make_client()
    return _shared_client


def _forget_client(*, setting: str, **kwargs: Any) -> None:
    global _shared_client
    if setting in ("WS4REDIS_CONNECTION", "WS4REDIS_SOCKET_TIMEOUT") and _shared_client:
        _shared_client.close()  # every pool (one per node for a cluster)
        _shared_client = None


setting_changed.connect(_forget_client)

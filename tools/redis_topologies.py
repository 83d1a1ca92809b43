"""Real Redis topologies on loopback ports: Sentinel (master, replica, three sentinels) and Cluster.

Each node is a ``redis-server`` of its own (see :class:`tools.servers.RedisServer`), configured
by a file in its temporary directory, so that Sentinel can rewrite its configuration as it
must.  Both topologies need Redis ≥ 7 (sharded pub/sub; ``CLUSTER ADDSLOTSRANGE``): the binary
comes from :func:`require_redis_7`, which fails with what to install when there is none.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from pathlib import Path

from tools.servers import RedisServer, find_redis_server, free_port, redis_version, wait_until

#: How long topologies may take to settle (replication link up, cluster state ok).
READY_TIMEOUT = 30.0
CLUSTER_SLOTS = 16384
#: A cluster node also listens on its port + 10000 (the cluster bus).
BUS_PORT_OFFSET = 10000
SERVICE_NAME = "mymaster"

MISSING_REDIS_7 = (
    "Redis >= 7.0 is needed for the Sentinel and Cluster tests (sharded pub/sub), and the "
    "redis-server found ({found}) is {version}: install Debian's redis-server "
    "(apt-get install redis-server) so that /usr/bin/redis-server is on the PATH."
)


def require_redis_7() -> str:
    """The path of a ``redis-server`` ≥ 7.0; ``RuntimeError`` saying what to install otherwise."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(binary).exists():
        binary = find_redis_server()
    version = redis_version(binary)
    if version < (7, 0):
        raise RuntimeError(
            MISSING_REDIS_7.format(found=binary, version=".".join(map(str, version)))
        )
    return binary


class ConfiguredRedis(RedisServer):
    """A ``redis-server`` started from a configuration file (``--sentinel`` for a sentinel)."""

    def __init__(
        self,
        binary: str,
        options: dict[str, str],
        *,
        sentinel: bool = False,
        port: int | None = None,
    ) -> None:
        super().__init__(port, binary)
        self.options = options
        self.sentinel = sentinel

    def start(self) -> ConfiguredRedis:
        """Write the configuration and start the server; wait until it answers PING."""
        config = {
            "port": str(self.port),
            "bind": "127.0.0.1",
            "dir": str(self.workdir),
            "save": '""',
            "appendonly": "no",
            "maxclients": "10000",
            **self.options,
        }
        path = self.workdir / "redis.conf"
        if not path.exists():  # a restart keeps what Sentinel or Cluster wrote into it
            path.write_text("".join(f"{key} {value}\n" for key, value in config.items()))
        args = [self.binary, str(path)] + (["--sentinel"] if self.sentinel else [])
        with open(self.workdir / "redis.log", "ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        wait_until(self._answers, 10, f"redis-server on port {self.port}")
        return self

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)


def _stop_all(nodes: list[ConfiguredRedis]) -> None:
    for node in nodes:
        node.stop()


# -- Sentinel -------------------------------------------------------------------------------


class SentinelTopology:
    """A master, one replica and three sentinels monitoring them as ``mymaster``.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.  ``url`` is the
    ``redis+sentinel://`` URL of ``WS4REDIS_CONNECTION``.
    """

    def __init__(self, binary: str | None = None) -> None:
        self.binary = binary or require_redis_7()
        self.master = ConfiguredRedis(self.binary, {})
        self.replica = ConfiguredRedis(self.binary, {})
        self.sentinels: list[ConfiguredRedis] = []

    @property
    def servers(self) -> list[ConfiguredRedis]:
        return [self.master, self.replica]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE_NAME}/0"

    def start(self) -> SentinelTopology:
        """Start everything and wait until the sentinels agree and see the replica."""
        try:
            self.master.start()
            self.replica.options = {"replicaof": f"127.0.0.1 {self.master.port}"}
            self.replica.start()
            wait_until(self._replica_in_sync, READY_TIMEOUT, "the replica's link to the master")
            for _ in range(3):
                sentinel = ConfiguredRedis(self.binary, self._sentinel_options(), sentinel=True)
                self.sentinels.append(sentinel.start())
            wait_until(self._sentinels_ready, READY_TIMEOUT, "three sentinels and a replica")
        except BaseException:
            self.stop()
            raise
        return self

    def _sentinel_options(self) -> dict[str, str]:
        return {
            "sentinel monitor": f"{SERVICE_NAME} 127.0.0.1 {self.master.port} 2",
            "sentinel down-after-milliseconds": f"{SERVICE_NAME} 1000",
            "sentinel failover-timeout": f"{SERVICE_NAME} 5000",
            "sentinel parallel-syncs": f"{SERVICE_NAME} 1",
        }

    def _replica_in_sync(self) -> bool:
        info = self.replica.client().info("replication")
        return info.get("master_link_status") == "up"

    def _sentinels_ready(self) -> bool:
        for sentinel in self.sentinels:
            state = sentinel.client().sentinel_master(SERVICE_NAME)
            if state["num-other-sentinels"] < 2 or state["num-slaves"] < 1:
                return False
        return True

    def master_address(self) -> tuple[str, int]:
        """The master's address as the first sentinel sees it."""
        return self._master_seen_by(self.sentinels[0])

    @staticmethod
    def _master_seen_by(sentinel: ConfiguredRedis) -> tuple[str, int]:
        host, port = sentinel.client().sentinel_get_master_addr_by_name(SERVICE_NAME)
        return (host.decode() if isinstance(host, bytes) else host), int(port)

    def server_at(self, address: tuple[str, int]) -> ConfiguredRedis:
        return next(s for s in self.servers if s.address == (address[0], int(address[1])))

    def failover(self, timeout: float = READY_TIMEOUT) -> tuple[str, int]:
        """``SENTINEL FAILOVER mymaster``; waits until every sentinel names the new master."""
        old = self.master_address()
        command(self.sentinels[0], "SENTINEL FAILOVER", SERVICE_NAME)

        def switched() -> bool:
            addresses = {self._master_seen_by(s) for s in self.sentinels}
            return len(addresses) == 1 and addresses != {old}

        wait_until(switched, timeout, "every sentinel to name the new master")
        new = self.master_address()
        wait_until(
            lambda: command(self.server_at(new), "ROLE")[0] == b"master",
            timeout,
            "the promoted replica to act as master",
        )
        return new

    def stop(self) -> None:
        _stop_all(self.sentinels + self.servers)

    def __enter__(self) -> SentinelTopology:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# -- Cluster --------------------------------------------------------------------------------


class ClusterTopology:
    """``masters`` Redis Cluster masters (the slots split evenly), each with ``replicas``.

    Built by hand with ``CLUSTER ADDSLOTSRANGE``, ``CLUSTER MEET`` and ``CLUSTER REPLICATE``;
    ready when every node reports ``cluster_state:ok`` and every replica is attached.
    """

    def __init__(self, masters: int = 3, replicas: int = 1, binary: str | None = None) -> None:
        self.binary = binary or require_redis_7()
        options = {
            "cluster-enabled": "yes",
            "cluster-config-file": "nodes.conf",
            "cluster-node-timeout": "2000",
            "cluster-require-full-coverage": "no",
        }
        ports = cluster_ports(masters * (1 + replicas))
        self.masters = [
            ConfiguredRedis(self.binary, options, port=ports.pop()) for _ in range(masters)
        ]
        self.replicas = [
            [ConfiguredRedis(self.binary, options, port=ports.pop()) for _ in range(replicas)]
            for _ in self.masters
        ]

    @property
    def nodes(self) -> list[ConfiguredRedis]:
        return self.masters + [r for group in self.replicas for r in group]

    @property
    def url(self) -> str:
        """``redis+cluster://`` naming every master (any one would do)."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{m.port}" for m in self.masters)

    def start(self) -> ClusterTopology:
        try:
            for node in self.nodes:
                node.start()
            self._assign_slots()
            for node in self.nodes[1:]:
                command(self.masters[0], "CLUSTER MEET", "127.0.0.1", node.port)
            wait_until(self._all_known, READY_TIMEOUT, "every node to know every other")
            for master, group in zip(self.masters, self.replicas, strict=True):
                master_id = node_id(master)
                for replica in group:
                    command(replica, "CLUSTER REPLICATE", master_id)
            wait_until(self.ready, READY_TIMEOUT, "cluster_state:ok with replicas attached")
        except BaseException:
            self.stop()
            raise
        return self

    def _assign_slots(self) -> None:
        count = len(self.masters)
        for index, master in enumerate(self.masters):
            start = index * CLUSTER_SLOTS // count
            end = (index + 1) * CLUSTER_SLOTS // count - 1
            command(master, "CLUSTER ADDSLOTSRANGE", start, end)

    def _all_known(self) -> bool:
        return all(
            len(command(node, "CLUSTER NODES").splitlines()) == len(self.nodes)
            for node in self.nodes
        )

    def ready(self) -> bool:
        """Every node says ``cluster_state:ok`` and sees every replica in its slot table."""
        replicas = sum(len(group) for group in self.replicas)
        for node in self.nodes:
            if b"cluster_state:ok" not in command(node, "CLUSTER INFO"):
                return False
            slots = command(node, "CLUSTER SLOTS")
            if sum(len(entry) - 3 for entry in slots) != replicas:
                return False
        return True

    def owner_of(self, key: str) -> ConfiguredRedis:
        """The node that is master of ``key``'s slot now (asked from that node's view)."""
        from redis.crc import key_slot

        slot = key_slot(key.encode())
        for entry in command(self.nodes[0], "CLUSTER SLOTS"):
            if entry[0] <= slot <= entry[1]:
                port = int(entry[2][1])
                return next(node for node in self.nodes if node.port == port)
        raise LookupError(f"no node owns slot {slot}")

    def current_masters(self) -> list[ConfiguredRedis]:
        """The nodes that act as masters now."""
        return [n for n in self.nodes if command(n, "ROLE")[0] == b"master"]

    def failover(self, master: ConfiguredRedis, timeout: float = READY_TIMEOUT) -> ConfiguredRedis:
        """Promote a replica of ``master`` with ``CLUSTER FAILOVER``; returns the new master."""
        replica = next(node for node in self.nodes if replica_of(node) == master.port)
        command(replica, "CLUSTER FAILOVER")

        def promoted() -> bool:
            if command(replica, "ROLE")[0] != b"master":
                return False
            return self.ready()

        wait_until(promoted, timeout, f"the replica on port {replica.port} to take over")
        return replica

    def move_slot(
        self, slot: int, source: ConfiguredRedis, target: ConfiguredRedis, timeout: float = 30
    ) -> None:
        """Migrate ``slot`` with its keys from master ``source`` to master ``target``.

        The steps of a resharding: IMPORTING on the target, MIGRATING on the source, MIGRATE
        of the keys, then ``CLUSTER SETSLOT … NODE`` on the target, the source and the other
        masters; returns once every node sees the target as the owner.
        """
        source_id, target_id = node_id(source), node_id(target)
        command(target, "CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        command(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        while keys := command(source, "CLUSTER", "GETKEYSINSLOT", slot, 100):
            command(source, "MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
        for node in [
            target,
            source,
            *(m for m in self.current_masters() if m not in (source, target)),
        ]:
            command(node, "CLUSTER", "SETSLOT", slot, "NODE", target_id)

        def settled() -> bool:
            return all(self._owner_port(node, slot) == target.port for node in self.nodes)

        wait_until(settled, timeout, f"every node to see slot {slot} on port {target.port}")

    @staticmethod
    def _owner_port(node: ConfiguredRedis, slot: int) -> int | None:
        for entry in command(node, "CLUSTER SLOTS"):
            if entry[0] <= slot <= entry[1]:
                return int(entry[2][1])
        return None

    def stop(self) -> None:
        _stop_all(self.nodes)

    def __enter__(self) -> ClusterTopology:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def cluster_ports(count: int) -> list[int]:
    """``count`` free ports whose cluster bus ports (port + 10000) are valid and free too."""
    ports: list[int] = []
    while len(ports) < count:
        with contextlib.ExitStack() as stack:
            port = free_port()
            if port + BUS_PORT_OFFSET > 65535 or port in ports:
                continue
            try:
                bus = stack.enter_context(socket.socket())
                bus.bind(("127.0.0.1", port + BUS_PORT_OFFSET))
            except OSError:
                continue
        ports.append(port)
    return ports


def command(node: RedisServer, *args: object) -> object:
    """Run one command on ``node`` and return its raw reply (no redis-py parsing)."""
    import redis

    connection = redis.Connection(port=node.port, socket_timeout=5, protocol=2)
    try:
        connection.send_command(*args)
        return connection.read_response()
    finally:
        connection.disconnect()


def replica_of(node: RedisServer) -> int | None:
    """The port of the master ``node`` replicates (``None`` for a master)."""
    role = command(node, "ROLE")
    return int(role[2]) if role[0] == b"slave" else None


def node_id(node: RedisServer) -> str:
    """The cluster node id of ``node``."""
    return command(node, "CLUSTER MYID").decode()


def connections_named(node: RedisServer, name_prefix: str = "") -> list[dict[str, str]]:
    """``CLIENT LIST`` entries of ``node`` whose name starts with ``name_prefix``."""
    clients = node.client().client_list()
    return [c for c in clients if c.get("name", "").startswith(name_prefix)]


def wait_for(condition, timeout: float, what: str) -> float:  # noqa: ANN001
    """:func:`tools.servers.wait_until` returning how long it took."""
    started = time.monotonic()
    wait_until(condition, timeout, what)
    return time.monotonic() - started

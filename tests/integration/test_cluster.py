"""Redis Cluster with sharded pub/sub: WebSockets on one uWSGI worker, channels on three shards.

A three-master cluster with one replica each runs on loopback ports
(``tools/redis_topologies.py``); the example runs under uWSGI with ``WS4REDIS_CONNECTION`` set to
the ``redis+cluster://`` URL (``tests/sites/cluster.py``) and this process publishes through
``RedisPublisher`` with the same URL (``SPUBLISH``).  The worker names its connections
(``ws4redis-hub-PID`` for pub/sub, ``ws4redis-loop-PID`` for commands), which is how the tests
count them with ``CLIENT LIST``.  Figures are printed: run with ``-s``.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from tests.integration.test_redis_outage import Crowd
from tools.redis_topologies import ClusterTopology, ConfiguredRedis, command
from tools.servers import UwsgiServer, raise_fd_limit, wait_until
from ws4redis.connection import (
    HUB_CLIENT_NAME,
    LOOP_CLIENT_NAME,
    LOOP_POOL_MAX_CONNECTIONS,
    make_client,
)
from ws4redis.metrics import merge_snapshots, read_snapshots, stats_key
from ws4redis.publisher import RedisPublisher

PREFIX = "ws"  # the example's WS4REDIS_PREFIX
FACILITIES = 24
CLIENTS_PER_FACILITY = 3
TIMEOUT = 10.0
#: After a shard failover, the hub subscribes on the new master within this.
RESUBSCRIBE_BOUND = 5.0
MANY_CLIENTS = 1000


class CountingMessages(dict):
    """A client's ``messages`` that also counts how often each payload arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[bytes] = Counter()

    def setdefault(self, key, default=None):  # noqa: ANN001, ANN201
        self.counts[key] += 1
        return super().setdefault(key, default)


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterTopology]:
    with ClusterTopology(masters=3, replicas=1) as topology:
        yield topology


@pytest.fixture
def cluster_env(cluster: ClusterTopology, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WS4REDIS_TEST_CLUSTER_URL", cluster.url)


@pytest.fixture
def cluster_server(
    cluster_env: None, start_uwsgi: Callable[..., UwsgiServer]
) -> Iterator[UwsgiServer]:
    server = start_uwsgi("tests.sites.cluster")
    yield server
    server.stop()


@pytest.fixture
def publisher_settings(settings, cluster: ClusterTopology):  # noqa: ANN001, ANN201
    """This process publishes to the cluster like a Django view of the example."""
    settings.WS4REDIS_CONNECTION = cluster.url
    settings.WS4REDIS_PREFIX = PREFIX
    settings.WS4REDIS_EXPIRE = 600
    return settings


def channel_of(facility: str) -> str:
    return f"{PREFIX}:broadcast:{facility}"


def spread_facilities(cluster: ClusterTopology, count: int) -> dict[str, ConfiguredRedis]:
    """``count`` new facilities, as many on each master as can be, with their owners."""
    masters = cluster.current_masters()
    share, extra = divmod(count, len(masters))
    wanted = {master.port: share + (index < extra) for index, master in enumerate(masters)}
    chosen: dict[str, ConfiguredRedis] = {}
    while len(chosen) < count:
        facility = f"cluster-{uuid.uuid4().hex[:10]}"
        owner = cluster.owner_of(channel_of(facility))
        if wanted.get(owner.port, 0) > 0:
            wanted[owner.port] -= 1
            chosen[facility] = owner
    return chosen


def shardnumsub(node: ConfiguredRedis, channel: str) -> int:
    return int(command(node, "PUBSUB", "SHARDNUMSUB", channel)[1])  # type: ignore[index]


def worker_connections(cluster: ClusterTopology, pid: int) -> dict[str, int]:
    """The worker's connections over all nodes: pub/sub (hub) and commands (loop)."""
    counts = {"hub": 0, "loop": 0}
    for node in cluster.nodes:
        for client in node.client().client_list():
            name = client.get("name", "")
            if name == f"{HUB_CLIENT_NAME}-{pid}":
                counts["hub"] += 1
            elif name == f"{LOOP_CLIENT_NAME}-{pid}":
                counts["loop"] += 1
    return counts


def reported_connections(cluster: ClusterTopology) -> int:
    """The open WebSockets the workers' metrics reports in the cluster add up to."""
    client = make_client(cluster.url)
    try:
        return merge_snapshots(read_snapshots(client, PREFIX))["connections"]
    finally:
        client.close()


def copy_report(cluster: ClusterTopology, worker: str) -> None:
    """Store a copy of the (only) worker's report as the report of ``worker``."""
    client = make_client(cluster.url)
    try:
        [key] = client.scan_iter(match=stats_key("*", PREFIX))
        report = json.loads(client.get(key))
        report["id"] = worker
        client.set(stats_key(worker, PREFIX), json.dumps(report), px=60_000)
    finally:
        client.close()


def test_sharded_delivery_persistence_and_shard_failover(
    cluster, cluster_server, publisher_settings
):
    raise_fd_limit(FACILITIES * CLIENTS_PER_FACILITY + 1024)
    facilities = spread_facilities(cluster, FACILITIES)
    for facility in facilities:  # persisted before anyone connects
        RedisPublisher(facility=facility, broadcast=True).publish_message(f"kept {facility}")
    crowds = {
        facility: Crowd(
            cluster_server.port, f"/ws/{facility}?subscribe-broadcast", CLIENTS_PER_FACILITY
        )
        for facility in facilities
    }
    try:
        for facility, crowd in crowds.items():
            kept = f"kept {facility}".encode()
            assert crowd.wait(lambda c=crowd, k=kept: all(k in x.messages for x in c.clients), 5)
            with crowd.condition:
                for client in crowd.clients:
                    client.messages = CountingMessages()

        for facility, owner in facilities.items():
            channel = channel_of(facility)
            for node in cluster.current_masters():
                assert shardnumsub(node, channel) == (1 if node is owner else 0), (facility, node)

        for facility in facilities:
            RedisPublisher(facility=facility, broadcast=True).publish_message(f"live {facility}")
        for facility in facilities:  # a last one per channel: the live one must come before
            RedisPublisher(facility=facility, broadcast=True).publish_message(b"last")
        for facility, crowd in crowds.items():
            assert crowd.wait(lambda c=crowd: all(b"last" in x.messages for x in c.clients), 10)
            with crowd.condition:
                for client in crowd.clients:
                    assert client.messages.counts == {f"live {facility}".encode(): 1, b"last": 1}

        pid = cluster_server.process.pid
        connections = worker_connections(cluster, pid)
        shards = len(cluster.masters)
        print(f"\nworker {pid}, {len(facilities)} facilities on {shards} shards: {connections}")
        assert connections["hub"] == shards
        assert connections["loop"] <= shards * LOOP_POOL_MAX_CONNECTIONS

        victim = next(iter(facilities.values()))
        moved = [f for f, owner in facilities.items() if owner is victim]
        started = time.monotonic()
        promoted = cluster.failover(victim)
        failed_over = time.monotonic()
        for facility in moved:
            wait_until(
                lambda f=facility: shardnumsub(promoted, channel_of(f)) == 1,
                RESUBSCRIBE_BOUND + TIMEOUT,
                f"the hub to subscribe {facility} on the new master",
            )
        resubscribed = time.monotonic()
        published = time.monotonic()
        for facility in moved:
            RedisPublisher(facility=facility, broadcast=True).publish_message(b"after failover")
        arrivals = []
        for facility in moved:
            crowd = crowds[facility]
            crowd.wait(lambda c=crowd: all(b"after failover" in x.messages for x in c.clients), 10)
            arrivals += crowd.arrivals(b"after failover")
        open_clients = sum(x.open for c in crowds.values() for x in c.clients)
    finally:
        for crowd in crowds.values():
            crowd.close()

    delays = sorted(a - published for a in arrivals if a is not None) or [float("nan")]
    print(
        f"shard failover {victim.port} -> {promoted.port} ({len(moved)} facilities): "
        f"CLUSTER FAILOVER done in {failed_over - started:.2f} s, the hub resubscribed "
        f"{resubscribed - failed_over:.2f} s later; delivery after the failover: median "
        f"{delays[len(delays) // 2] * 1000:.0f} ms, max {delays[-1] * 1000:.0f} ms; "
        f"CLUSTER FAILOVER to the last delivery {delays[-1] + published - started:.2f} s"
    )
    assert arrivals.count(None) == 0, f"{arrivals.count(None)} clients missed the message"
    assert open_clients == FACILITIES * CLIENTS_PER_FACILITY
    assert resubscribed - failed_over <= RESUBSCRIBE_BOUND
    assert "Traceback" not in cluster_server.log(), cluster_server.log()


def test_a_slot_moved_to_another_master_is_followed(cluster, cluster_server, publisher_settings):
    """A resharding moves a channel's slot (and its persisted key) to another master: the old
    owner drops the subscription (``sunsubscribe``), the hub subscribes on the new owner, and
    messages published afterwards reach every client once."""
    from redis.crc import key_slot

    [(facility, source)] = spread_facilities(cluster, 1).items()
    channel = channel_of(facility)
    target = next(m for m in cluster.current_masters() if m is not source)
    RedisPublisher(facility=facility, broadcast=True).publish_message("kept")
    with Crowd(cluster_server.port, f"/ws/{facility}?subscribe-broadcast", 10) as crowd:
        assert crowd.wait(lambda: all(b"kept" in c.messages for c in crowd.clients), TIMEOUT)
        assert shardnumsub(source, channel) == 1
        started = time.monotonic()
        cluster.move_slot(key_slot(channel.encode()), source, target)
        moved = time.monotonic()
        wait_until(
            lambda: shardnumsub(target, channel) == 1,
            RESUBSCRIBE_BOUND,
            "the hub to subscribe on the slot's new owner",
        )
        resubscribed = time.monotonic()
        with crowd.condition:
            for client in crowd.clients:
                client.messages = CountingMessages()
        RedisPublisher(facility=facility, broadcast=True).publish_message("after the move")
        assert crowd.wait(
            lambda: all(b"after the move" in c.messages for c in crowd.clients), TIMEOUT
        )
        with crowd.condition:
            counts = [client.messages.counts[b"after the move"] for client in crowd.clients]
    print(
        f"\nslot move {source.port} -> {target.port}: migrated in {moved - started:.2f} s, "
        f"the hub subscribed on the new owner {resubscribed - moved:.2f} s later"
    )
    assert counts == [1] * 10
    assert shardnumsub(source, channel) == 0
    assert "Traceback" not in cluster_server.log(), cluster_server.log()


def test_a_thousand_clients_need_a_connection_per_shard(
    cluster, cluster_env, start_uwsgi, publisher_settings
):
    raise_fd_limit(2 * MANY_CLIENTS + 2048)
    facilities = spread_facilities(cluster, 25)
    server = start_uwsgi(
        "tests.sites.cluster", args=["--gevent", "2000", "--http-websockets", "--module", "wsgi"]
    )
    per_facility = MANY_CLIENTS // len(facilities)
    crowds = []
    try:
        started = time.monotonic()
        for facility in facilities:
            path = f"/ws/{facility}?subscribe-broadcast"
            crowds.append(Crowd(server.port, path, per_facility))
        connected = time.monotonic() - started
        clients = sum(len(c.clients) for c in crowds)
        for facility in facilities:
            RedisPublisher(facility=facility, broadcast=True).publish_message(b"to all")
        for crowd in crowds:
            assert crowd.wait(lambda c=crowd: all(b"to all" in x.messages for x in c.clients), 20)
        connections = worker_connections(cluster, server.process.pid)
        # The worker's metrics report lives in the cluster too, and the reports of several
        # workers (in different slots: here a copy under another worker id) are all read.
        wait_until(
            lambda: reported_connections(cluster) >= clients, 15, f"a report of {clients} clients"
        )
        copy_report(cluster, "elsewhere:1")
        assert reported_connections(cluster) >= 2 * clients
    finally:
        for crowd in crowds:
            crowd.close()
        server.stop()
    shards = len(cluster.current_masters())
    print(
        f"\n{clients} clients on {len(facilities)} facilities, {shards} shards, connected in "
        f"{connected:.1f} s: Redis connections of the worker: {connections['hub']} pub/sub + "
        f"{connections['loop']} command = {sum(connections.values())}"
    )
    assert connections["hub"] <= shards
    assert connections["loop"] <= shards * LOOP_POOL_MAX_CONNECTIONS


def test_missed_messages_are_recovered_from_the_channels_own_shard(
    cluster, cluster_env, start_uwsgi, publisher_settings
):
    """With ``WS4REDIS_HISTORY`` on a cluster, each channel's stream lives in the channel's own
    slot (so on its shard), and a reconnecting client gets what it missed, once and in order."""
    from tests.integration.test_history import HistoryClient
    from ws4redis import history

    publisher_settings.WS4REDIS_HISTORY = {"size": 100, "ttl": 120}
    server = start_uwsgi("tests.sites.cluster_history")
    try:
        facilities = spread_facilities(cluster, 3)  # one on each shard
        for facility, owner in facilities.items():
            first = HistoryClient(server.port, facility, "subscribe-broadcast")
            assert first.protocol == history.SUBPROTOCOL
            first.recv_until_sync()
            publish = RedisPublisher(facility=facility, broadcast=True).publish_message
            publish("seen")
            assert first.recv_envelope()[1] == b"seen"
            first.sock.close()
            sent = [f"missed {facility} {n}".encode() for n in range(50)]
            for message in sent:
                publish(message)
            stream = history.stream_key(channel_of(facility))
            assert owner.client().xlen(stream) == 51, "the stream is not on the channel's shard"
            again = HistoryClient(
                server.port, facility, "subscribe-broadcast", last_id=first.last_id
            )
            assert [payload for _, payload in again.recv_until_sync()] == sent
            publish("live")
            assert again.recv_envelope()[1] == b"live"
            again.sock.close()
    finally:
        server.stop()

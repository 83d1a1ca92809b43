"""The per-process pub/sub hub against a real Redis: one subscription per channel, fan-out of
one encoded frame, reference counting, and recovery after Redis crashes.

The hub runs on threads (``thread_runtime``), as under the development server.  Every wait is a
condition with a deadline.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from pytest_django import Settings

from tools.servers import RedisServer, find_redis_server, wait_until
from ws4redis.connection import make_connection
from ws4redis.exceptions import HandshakeError, RedisUnavailableError
from ws4redis.hub import PubSubHub
from ws4redis.runtime import thread_runtime

WAIT = 5.0


class Collector:
    """A listener that records what the hub delivers to it."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[str, bytes, bytes]] = []
        self._condition = threading.Condition()

    def deliver(self, channel: str, payload: bytes, frame: bytes) -> None:
        with self._condition:
            self.deliveries.append((channel, payload, frame))
            self._condition.notify_all()

    def wait_for(self, count: int, timeout: float = WAIT) -> list[tuple[str, bytes, bytes]]:
        """The first ``count`` deliveries; fails when they have not all come within ``timeout``."""
        with self._condition:
            if not self._condition.wait_for(lambda: len(self.deliveries) >= count, timeout):
                raise AssertionError(
                    f"{len(self.deliveries)} of {count} messages delivered within {timeout} s"
                )
            return list(self.deliveries[:count])

    def payloads(self) -> list[bytes]:
        with self._condition:
            return [payload for _, payload, _ in self.deliveries]


class Exploding:
    """A listener whose delivery always fails."""

    def __init__(self) -> None:
        self.calls = 0

    def deliver(self, channel: str, payload: bytes, frame: bytes) -> None:
        self.calls += 1
        raise RuntimeError("this listener is broken")


def numsub(client: redis.Redis, channel: str) -> int:
    """How many Redis connections are subscribed to ``channel`` (``PUBSUB NUMSUB``)."""
    ((name, count),) = client.pubsub_numsub(channel)
    assert name == channel.encode()
    return int(count)


def pubsub_clients(client: redis.Redis) -> list[dict]:
    """The Redis clients that hold channel subscriptions (``CLIENT LIST``)."""
    return [entry for entry in client.client_list() if int(entry["sub"]) > 0]


def make_hub(url: str) -> PubSubHub:
    return PubSubHub(lambda: make_connection(url), thread_runtime())


@pytest.fixture
def hub(
    ws_settings: Settings, redis_server: RedisServer, redis_client: redis.Redis
) -> Iterator[PubSubHub]:
    hub = make_hub(redis_server.url)
    yield hub
    hub.close()


@pytest.fixture
def throwaway_redis() -> Iterator[list[RedisServer]]:
    """Throw-away Redis servers (first one started); all are stopped at the end."""
    servers = [RedisServer().start()]
    yield servers
    for server in servers:
        server.stop()


class TestSharedSubscription:
    def test_two_listeners_share_one_redis_subscription(
        self,
        hub: PubSubHub,
        redis_client: redis.Redis,
    ) -> None:
        first, second = Collector(), Collector()
        hub.subscribe(first, ["broadcast:chat"])
        hub.subscribe(second, ["broadcast:chat"])
        assert numsub(redis_client, "broadcast:chat") == 1
        assert hub.listener_count("broadcast:chat") == 2
        assert hub.channels == ["broadcast:chat"]
        assert len(pubsub_clients(redis_client)) == 1

    def test_one_message_reaches_both_with_the_same_frame(
        self,
        hub: PubSubHub,
        redis_client: redis.Redis,
    ) -> None:
        first, second = Collector(), Collector()
        hub.subscribe(first, ["broadcast:chat"])
        hub.subscribe(second, ["broadcast:chat"])
        assert redis_client.publish("broadcast:chat", b"Hello World") == 1
        ((channel_a, payload_a, frame_a),) = first.wait_for(1)
        ((channel_b, payload_b, frame_b),) = second.wait_for(1)
        assert (channel_a, payload_a) == ("broadcast:chat", b"Hello World")
        assert (channel_b, payload_b) == ("broadcast:chat", b"Hello World")
        assert frame_a == b"\x81\x0bHello World"
        assert frame_a is frame_b

    def test_one_connection_for_many_channels(
        self,
        hub: PubSubHub,
        redis_client: redis.Redis,
    ) -> None:
        listeners = [Collector() for _ in range(5)]
        for index, listener in enumerate(listeners):
            hub.subscribe(listener, [f"user:u{index}:chat", "broadcast:chat"])
        (client,) = pubsub_clients(redis_client)
        assert int(client["sub"]) == 6
        assert numsub(redis_client, "broadcast:chat") == 1

    def test_listener_gets_only_its_channels(
        self,
        hub: PubSubHub,
        redis_client: redis.Redis,
    ) -> None:
        john, mary = Collector(), Collector()
        hub.subscribe(john, ["user:john:chat"])
        hub.subscribe(mary, ["user:mary:chat"])
        redis_client.publish("user:john:chat", b"for john")
        redis_client.publish("user:mary:chat", b"for mary")
        assert mary.wait_for(1) == [("user:mary:chat", b"for mary", b"\x81\x08for mary")]
        assert john.wait_for(1) == [("user:john:chat", b"for john", b"\x81\x08for john")]
        redis_client.publish("user:mary:chat", b"again")
        mary.wait_for(2)
        assert john.payloads() == [b"for john"]


class TestReferenceCounting:
    def test_last_listener_leaving_unsubscribes(
        self,
        hub: PubSubHub,
        redis_client: redis.Redis,
    ) -> None:
        first, second = Collector(), Collector()
        hub.subscribe(first, ["broadcast:chat"])
        hub.subscribe(second, ["broadcast:chat"])

        hub.unsubscribe(first, ["broadcast:chat"])
        assert hub.listener_count("broadcast:chat") == 1
        assert numsub(redis_client, "broadcast:chat") == 1
        assert redis_client.publish("broadcast:chat", b"still here") == 1
        assert second.wait_for(1)[0][1] == b"still here"

        hub.unsubscribe(second, ["broadcast:chat"])
        assert hub.channels == []
        assert hub.listener_count("broadcast:chat") == 0
        wait_until(
            lambda: numsub(redis_client, "broadcast:chat") == 0, WAIT, "PUBSUB NUMSUB to be 0"
        )
        assert first.payloads() == []

    def test_unsubscribe_only_the_channels_left(
        self,
        hub: PubSubHub,
        redis_client: redis.Redis,
    ) -> None:
        first, second = Collector(), Collector()
        hub.subscribe(first, ["broadcast:chat", "user:john:chat"])
        hub.subscribe(second, ["broadcast:chat"])
        hub.unsubscribe(first, ["broadcast:chat", "user:john:chat"])
        wait_until(
            lambda: numsub(redis_client, "user:john:chat") == 0, WAIT, "user channel unsubscribed"
        )
        assert numsub(redis_client, "broadcast:chat") == 1
        assert hub.channels == ["broadcast:chat"]

    def test_unsubscribe_unknown_listener_is_harmless(
        self,
        hub: PubSubHub,
        redis_client: redis.Redis,
    ) -> None:
        listener = Collector()
        hub.subscribe(listener, ["broadcast:chat"])
        hub.unsubscribe(Collector(), ["broadcast:chat", "never:subscribed"])
        assert numsub(redis_client, "broadcast:chat") == 1
        assert redis_client.publish("broadcast:chat", b"x") == 1
        listener.wait_for(1)

    def test_subscribe_again_right_after_leaving(
        self,
        hub: PubSubHub,
        redis_client: redis.Redis,
    ) -> None:
        listener = Collector()
        for round_ in range(20):
            hub.subscribe(listener, ["broadcast:chat"])
            assert redis_client.publish("broadcast:chat", str(round_)) == 1
            assert listener.wait_for(round_ + 1)[-1][1] == str(round_).encode()
            hub.unsubscribe(listener, ["broadcast:chat"])
        wait_until(lambda: numsub(redis_client, "broadcast:chat") == 0, WAIT, "NUMSUB 0")


class TestDelivery:
    def test_subscribe_returns_after_redis_confirmed(
        self,
        hub: PubSubHub,
        redis_client: redis.Redis,
    ) -> None:
        for index in range(50):
            listener = Collector()
            channel = f"session:s{index}:chat"
            hub.subscribe(listener, [channel])
            assert redis_client.publish(channel, b"right away") == 1
            assert listener.wait_for(1)[0][1] == b"right away"

    def test_burst_of_500_in_one_pipeline_arrives_complete_and_in_order(
        self,
        hub: PubSubHub,
        redis_client: redis.Redis,
    ) -> None:
        listener = Collector()
        hub.subscribe(listener, ["broadcast:chat"])
        pipe = redis_client.pipeline(transaction=False)
        for index in range(500):
            pipe.publish("broadcast:chat", f"message {index}")
        assert pipe.execute() == [1] * 500
        listener.wait_for(500, timeout=10)
        assert listener.payloads() == [f"message {index}".encode() for index in range(500)]

    def test_failing_listener_does_not_stop_the_others(
        self,
        hub: PubSubHub,
        redis_client: redis.Redis,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        caplog.set_level(logging.ERROR, logger="ws4redis")
        broken, good = Exploding(), Collector()
        hub.subscribe(broken, ["broadcast:chat"])
        hub.subscribe(good, ["broadcast:chat"])
        for index in range(3):
            redis_client.publish("broadcast:chat", f"m{index}")
        good.wait_for(3)
        assert good.payloads() == [b"m0", b"m1", b"m2"]
        wait_until(lambda: broken.calls == 3, WAIT, "three failed deliveries")

        def failures() -> list[logging.LogRecord]:
            return [r for r in caplog.records if r.name == "ws4redis" and r.exc_info]

        wait_until(lambda: len(failures()) == 3, WAIT, "three logged failures")
        assert all("broadcast:chat" in record.getMessage() for record in failures())

        hub.subscribe(Collector(), ["user:john:chat"])  # the reader still works
        assert redis_client.publish("broadcast:chat", b"later") == 1
        assert good.wait_for(4)[-1][1] == b"later"

    @pytest.mark.parametrize(
        ("payload", "frame"),
        [
            pytest.param(b"hello", b"\x81\x05hello", id="ascii-text"),
            pytest.param("héllo ☃".encode(), b"\x81\x0a" + "héllo ☃".encode(), id="utf8-text"),
            pytest.param(b"", b"\x81\x00", id="empty-text"),
            pytest.param(b"\xff\xfe", b"\x82\x02\xff\xfe", id="binary"),
            pytest.param(b"caf\xe9", b"\x82\x04caf\xe9", id="latin1-is-binary"),
            pytest.param(b"\xed\xa0\x80", b"\x82\x03\xed\xa0\x80", id="surrogate-is-binary"),
        ],
    )
    def test_frame_opcode_follows_utf8_validity(
        self,
        hub: PubSubHub,
        redis_client: redis.Redis,
        payload: bytes,
        frame: bytes,
    ) -> None:
        listener = Collector()
        hub.subscribe(listener, ["broadcast:chat"])
        redis_client.publish("broadcast:chat", payload)
        assert listener.wait_for(1) == [("broadcast:chat", payload, frame)]

    def test_large_message_frame_length(
        self,
        hub: PubSubHub,
        redis_client: redis.Redis,
    ) -> None:
        listener = Collector()
        hub.subscribe(listener, ["broadcast:chat"])
        payload = b"x" * 70000
        redis_client.publish("broadcast:chat", payload)
        ((_, received, frame),) = listener.wait_for(1)
        assert received == payload
        assert frame == b"\x81\x7f" + (70000).to_bytes(8, "big") + payload


class TestRedisFailures:
    def test_unreachable_redis_at_subscribe(
        self,
        ws_settings: Settings,
        throwaway_redis: list[RedisServer],
    ) -> None:
        (server,) = throwaway_redis
        server.kill()
        hub = make_hub(server.url)
        try:
            started = time.monotonic()
            with pytest.raises(RedisUnavailableError) as info:
                hub.subscribe(Collector(), ["broadcast:chat"])
            assert time.monotonic() - started < 3
            assert isinstance(info.value, HandshakeError)
            assert info.value.status == 503
            assert info.value.status_line == "503 Service Unavailable"
            assert hub.channels == []

            replacement = RedisServer(port=server.port).start()
            throwaway_redis.append(replacement)
            listener = Collector()
            hub.subscribe(listener, ["broadcast:chat"])
            client = replacement.client()
            try:
                assert client.publish("broadcast:chat", b"up again") == 1
                assert listener.wait_for(1)[0][1] == b"up again"
            finally:
                client.close()
        finally:
            hub.close()

    def test_reconnects_and_resubscribes_after_redis_crash(
        self,
        ws_settings: Settings,
        throwaway_redis: list[RedisServer],
    ) -> None:
        (server,) = throwaway_redis
        hub = make_hub(server.url)
        try:
            listener, other = Collector(), Collector()
            hub.subscribe(listener, ["broadcast:chat"])
            hub.subscribe(other, ["user:john:chat"])
            client = server.client()
            assert client.publish("broadcast:chat", b"before") == 1
            listener.wait_for(1)
            client.close()

            server.kill()
            with pytest.raises(RedisUnavailableError):
                hub.subscribe(Collector(), ["group:late:chat"])  # fails fast while Redis is away
            replacement = RedisServer(port=server.port).start()
            throwaway_redis.append(replacement)
            client = replacement.client()
            try:
                # Until the hub has resubscribed, a publish reaches nobody (returns 0).
                wait_until(
                    lambda: client.publish("broadcast:chat", b"after") == 1,
                    5,
                    "a message delivered within 5 s of the restart",
                )
                listener.wait_for(2)
                assert listener.payloads() == [b"before", b"after"]
                assert client.publish("user:john:chat", b"john too") == 1
                assert other.wait_for(1)[0][1] == b"john too"
                assert numsub(client, "broadcast:chat") == 1
                assert numsub(client, "user:john:chat") == 1
                assert numsub(client, "group:late:chat") == 0
                assert len(pubsub_clients(client)) == 1
                assert sorted(hub.channels) == ["broadcast:chat", "user:john:chat"]
            finally:
                client.close()
        finally:
            hub.close()


@pytest.fixture
def unix_redis() -> Iterator[Path]:
    """A throw-away Redis server listening only on a unix socket; yields the socket path."""
    workdir = Path(tempfile.mkdtemp(prefix="ws4redis-unix-"))
    path = workdir / "redis.sock"
    args = [find_redis_server(), "--port", "0", "--unixsocket", str(path), "--save", ""]
    args += ["--appendonly", "no", "--dir", str(workdir)]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    def answers() -> bool:
        try:
            return bool(redis.Redis(unix_socket_path=str(path), socket_timeout=1).ping())
        except redis.exceptions.ConnectionError:
            return False

    try:
        wait_until(answers, 10, "redis-server on a unix socket")
        yield path
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.parametrize(
    "config",
    [
        pytest.param(lambda path: {"unix_socket_path": str(path)}, id="dict"),
        pytest.param(lambda path: f"unix://{path}", id="url"),
    ],
)
def test_hub_over_a_unix_socket(
    settings: Settings,
    unix_redis: Path,
    config: Callable[[Path], object],
) -> None:
    settings.WS4REDIS_CONNECTION = config(unix_redis)
    hub = PubSubHub(make_connection, thread_runtime())
    client = redis.Redis(unix_socket_path=str(unix_redis), socket_timeout=5)
    try:
        listener = Collector()
        hub.subscribe(listener, ["broadcast:chat"])
        assert client.publish("broadcast:chat", b"over the socket") == 1
        assert listener.wait_for(1)[0][1] == b"over the socket"
    finally:
        client.close()
        hub.close()

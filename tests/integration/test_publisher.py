"""``RedisPublisher`` against a real Redis server: what a Django view relies on.

Messages are received by a plain redis-py ``PubSub`` client, persisted copies are read back with
``GET`` and ``TTL``.  Every wait has a deadline.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis
from django.contrib.auth.models import AnonymousUser
from django.contrib.sessions.backends.signed_cookies import SessionStore
from django.http import HttpRequest
from django.test import RequestFactory
from pytest_django import Settings

from tools.servers import RedisServer
from ws4redis.auth import SessionUser
from ws4redis.publisher import RedisPublisher
from ws4redis.redis_store import SELF, RedisMessage

SESSION_KEY = "wnqd0gbw5obpnj50zwh6yaq2yz4o8g9x"
WAIT = 5.0


def stored_keys(client: redis.Redis) -> list[bytes]:
    """The keys in the test Redis, leaving out the metrics reports of the test servers."""
    return [key for key in client.keys("*") if b"ws4redis:stats:" not in key]


def make_request(
    user: Any = None,
    session_key: str | None = SESSION_KEY,
    session_data: dict[str, Any] | None = None,
) -> HttpRequest:
    """A request as a view sees it: ``.user`` and ``.session`` attached."""
    request = RequestFactory().get("/chat/")
    request.user = user if user is not None else AnonymousUser()
    request.session = SessionStore(session_key)
    for key, value in (session_data or {}).items():
        request.session[key] = value
    return request


def john_request(groups: tuple[str, ...] = ("chatters", "admins")) -> HttpRequest:
    """John, logged in, member of ``groups`` as the login signal stored them."""
    return make_request(
        SessionUser(7, "john", list(groups), {}),
        SESSION_KEY,
        {"_auth_user_id": "7", "ws4redis:username": "john", "ws4redis:memberof": list(groups)},
    )


@contextmanager
def listening(client: redis.Redis, *channels: str) -> Iterator[redis.client.PubSub]:
    """A redis-py subscriber on ``channels``, returned once Redis confirmed every one."""
    pubsub = client.pubsub()
    pubsub.subscribe(*channels)
    confirmed: set[str] = set()
    deadline = time.monotonic() + WAIT
    while confirmed != set(channels):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"subscriptions to {channels} not confirmed within {WAIT} s")
        message = pubsub.get_message(timeout=left)
        if message is not None and message["type"] == "subscribe":
            confirmed.add(message["channel"].decode())
    try:
        yield pubsub
    finally:
        pubsub.close()


def next_message(pubsub: redis.client.PubSub, timeout: float = WAIT) -> tuple[str, bytes]:
    """The next published message as ``(channel, data)``; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=left)
        if message is not None:
            return message["channel"].decode(), message["data"]
    raise AssertionError(f"no message received within {timeout} s")


def received(pubsub: redis.client.PubSub, count: int) -> list[tuple[str, bytes]]:
    return [next_message(pubsub) for _ in range(count)]


def assert_nothing_more(pubsub: redis.client.PubSub, client: redis.Redis, channel: str) -> None:
    """Nothing else was published on ``channel``: the next message is our own sentinel."""
    client.publish(channel, b"-- sentinel --")
    assert next_message(pubsub) == (channel, b"-- sentinel --")


@pytest.fixture
def redis_settings(ws_settings: Settings, redis_client: redis.Redis) -> Settings:
    """Settings pointed at the session's Redis, which is empty."""
    return ws_settings


class TestBroadcast:
    def test_spec_example_reaches_a_subscriber(
        self, redis_settings: Settings, redis_client: redis.Redis
    ) -> None:
        with listening(redis_client, "broadcast:foobar") as pubsub:
            publisher = RedisPublisher(facility="foobar", broadcast=True)
            assert publisher.publish_message(RedisMessage("Hello World")) == 1
            assert next_message(pubsub) == ("broadcast:foobar", b"Hello World")
            assert_nothing_more(pubsub, redis_client, "broadcast:foobar")

    @pytest.mark.parametrize(
        ("message", "expected"),
        [
            ("Hello", b"Hello"),
            ("Grüße ☃", "Grüße ☃".encode()),
            (b"Hello", b"Hello"),
            (b"\xff\xfe\x00binary", b"\xff\xfe\x00binary"),
            (RedisMessage("Hello"), b"Hello"),
        ],
    )
    def test_str_bytes_and_redis_message(
        self,
        redis_settings: Settings,
        redis_client: redis.Redis,
        message: Any,
        expected: bytes,
    ) -> None:
        with listening(redis_client, "broadcast:foobar") as pubsub:
            RedisPublisher(facility="foobar", broadcast=True).publish_message(message)
            assert next_message(pubsub) == ("broadcast:foobar", expected)

    def test_prefix_from_settings(
        self, redis_settings: Settings, redis_client: redis.Redis
    ) -> None:
        redis_settings.WS4REDIS_PREFIX = "ws"
        with listening(redis_client, "ws:broadcast:foobar", "broadcast:foobar") as pubsub:
            RedisPublisher(facility="foobar", broadcast=True).publish_message("Hello")
            assert next_message(pubsub) == ("ws:broadcast:foobar", b"Hello")
            assert_nothing_more(pubsub, redis_client, "broadcast:foobar")
        assert stored_keys(redis_client) == [b"ws:broadcast:foobar"]

    def test_returns_how_many_subscribers_got_it(
        self, redis_settings: Settings, redis_client: redis.Redis
    ) -> None:
        publisher = RedisPublisher(facility="foobar", broadcast=True)
        assert publisher.publish_message("nobody listens") == 0
        with (
            listening(redis_client, "broadcast:foobar"),
            listening(redis_client, "broadcast:foobar"),
        ):
            assert publisher.publish_message("two listen") == 2

    def test_other_facility_is_not_reached(
        self, redis_settings: Settings, redis_client: redis.Redis
    ) -> None:
        with listening(redis_client, "broadcast:other") as pubsub:
            assert RedisPublisher(facility="foobar", broadcast=True).publish_message("x") == 0
            assert_nothing_more(pubsub, redis_client, "broadcast:other")


class TestAudiences:
    def test_users_groups_and_sessions_lists(
        self, redis_settings: Settings, redis_client: redis.Redis
    ) -> None:
        channels = [
            "user:john:foobar",
            "user:mary:foobar",
            "group:chatters:foobar",
            "group:admins:foobar",
            f"session:{SESSION_KEY}:foobar",
        ]
        with listening(redis_client, *channels) as pubsub:
            publisher = RedisPublisher(
                facility="foobar",
                users=["john", "mary"],
                groups=["chatters", "admins"],
                sessions=[SESSION_KEY],
            )
            assert publisher.publish_channels == channels
            assert publisher.publish_message("Hello World") == 5
            assert received(pubsub, 5) == [(channel, b"Hello World") for channel in channels]

    def test_single_user_name(self, redis_settings: Settings, redis_client: redis.Redis) -> None:
        with listening(redis_client, "user:john:foobar") as pubsub:
            assert RedisPublisher(facility="foobar", users="john").publish_message("hi") == 1
            assert next_message(pubsub) == ("user:john:foobar", b"hi")

    def test_self_resolves_from_the_request(
        self, redis_settings: Settings, redis_client: redis.Redis
    ) -> None:
        channels = [
            "user:john:foobar",
            "group:chatters:foobar",
            "group:admins:foobar",
            f"session:{SESSION_KEY}:foobar",
        ]
        with listening(redis_client, *channels) as pubsub:
            publisher = RedisPublisher(
                facility="foobar",
                users=[SELF],
                groups=[SELF],
                sessions=[SELF],
                request=john_request(),
            )
            assert publisher.publish_message("for me") == 4
            assert received(pubsub, 4) == [(channel, b"for me") for channel in channels]

    def test_self_of_an_anonymous_request_publishes_nothing(
        self,
        redis_settings: Settings,
        redis_client: redis.Redis,
    ) -> None:
        request = make_request(session_key=None, session_data={"ws4redis:memberof": ["chatters"]})
        with listening(redis_client, "user:SELF:foobar", "user:None:foobar") as pubsub:
            publisher = RedisPublisher(
                facility="foobar", users=[SELF], groups=[SELF], sessions=[SELF], request=request
            )
            assert publisher.publish_channels == []
            assert publisher.publish_message("secret") == 0
            assert_nothing_more(pubsub, redis_client, "user:SELF:foobar")
        assert stored_keys(redis_client) == []

    def test_self_session_of_an_anonymous_visitor(
        self, redis_settings: Settings, redis_client: redis.Redis
    ) -> None:
        with listening(redis_client, f"session:{SESSION_KEY}:foobar") as pubsub:
            RedisPublisher(
                facility="foobar", sessions=[SELF], request=make_request()
            ).publish_message("your cart")
            assert next_message(pubsub) == (f"session:{SESSION_KEY}:foobar", b"your cart")


class TestPersistence:
    def test_default_expire_is_an_hour(
        self, redis_settings: Settings, redis_client: redis.Redis
    ) -> None:
        RedisPublisher(facility="foobar", broadcast=True).publish_message("kept")
        assert redis_client.get("broadcast:foobar") == b"kept"
        assert redis_client.ttl("broadcast:foobar") == 3600

    def test_ttl_is_ws4redis_expire(
        self, redis_settings: Settings, redis_client: redis.Redis
    ) -> None:
        redis_settings.WS4REDIS_EXPIRE = 7200
        publisher = RedisPublisher(facility="foobar", users=["john"], groups=["chatters"])
        publisher.publish_message("kept")
        for key in ("user:john:foobar", "group:chatters:foobar"):
            assert redis_client.get(key) == b"kept"
            assert redis_client.ttl(key) == 7200

    def test_expire_argument_wins(
        self, redis_settings: Settings, redis_client: redis.Redis
    ) -> None:
        redis_settings.WS4REDIS_EXPIRE = 7200
        RedisPublisher(facility="foobar", broadcast=True).publish_message("kept", expire=60)
        assert redis_client.ttl("broadcast:foobar") == 60

    def test_latest_message_is_persisted(
        self, redis_settings: Settings, redis_client: redis.Redis
    ) -> None:
        publisher = RedisPublisher(facility="foobar", broadcast=True)
        publisher.publish_message("first")
        publisher.publish_message("second")
        assert redis_client.get("broadcast:foobar") == b"second"

    def test_expire_zero_stores_nothing_but_publishes(
        self, redis_settings: Settings, redis_client: redis.Redis
    ) -> None:
        with listening(redis_client, "broadcast:foobar") as pubsub:
            publisher = RedisPublisher(facility="foobar", broadcast=True)
            assert publisher.publish_message("fleeting", expire=0) == 1
            assert next_message(pubsub) == ("broadcast:foobar", b"fleeting")
        assert stored_keys(redis_client) == []

    @pytest.mark.parametrize("expire", [None, 0])
    def test_setting_none_or_zero_stores_nothing(
        self,
        redis_settings: Settings,
        redis_client: redis.Redis,
        expire: int | None,
    ) -> None:
        redis_settings.WS4REDIS_EXPIRE = expire
        with listening(redis_client, "broadcast:foobar") as pubsub:
            assert RedisPublisher(facility="foobar", broadcast=True).publish_message("x") == 1
            assert next_message(pubsub) == ("broadcast:foobar", b"x")
        assert stored_keys(redis_client) == []


class TestPublishMessages:
    def test_several_messages_in_order(
        self, redis_settings: Settings, redis_client: redis.Redis
    ) -> None:
        messages = ["one", b"two", RedisMessage("three"), "four"]
        with listening(redis_client, "broadcast:foobar") as pubsub:
            publisher = RedisPublisher(facility="foobar", broadcast=True)
            assert publisher.publish_messages(messages) == 4
            assert [data for _, data in received(pubsub, 4)] == [b"one", b"two", b"three", b"four"]
            assert_nothing_more(pubsub, redis_client, "broadcast:foobar")
        assert redis_client.get("broadcast:foobar") == b"four"

    def test_several_channels_keep_the_order_on_each(
        self, redis_settings: Settings, redis_client: redis.Redis
    ) -> None:
        with (
            listening(redis_client, "user:john:foobar") as john,
            listening(redis_client, "user:mary:foobar") as mary,
        ):
            publisher = RedisPublisher(facility="foobar", users=["john", "mary"])
            assert publisher.publish_messages([str(i) for i in range(100)]) == 200
            expected = [str(i).encode() for i in range(100)]
            assert [data for _, data in received(john, 100)] == expected
            assert [data for _, data in received(mary, 100)] == expected

    def test_nothing_to_publish(self, redis_settings: Settings, redis_client: redis.Redis) -> None:
        assert RedisPublisher(facility="foobar", broadcast=True).publish_messages([]) == 0
        assert stored_keys(redis_client) == []


class TestHeartbeat:
    def test_heartbeat_is_not_published(
        self, redis_settings: Settings, redis_client: redis.Redis
    ) -> None:
        redis_settings.WS4REDIS_HEARTBEAT = "--heartbeat--"
        with listening(redis_client, "broadcast:foobar") as pubsub:
            publisher = RedisPublisher(facility="foobar", broadcast=True)
            assert publisher.publish_message("--heartbeat--") == 0
            assert stored_keys(redis_client) == []
            publisher.publish_message("real")
            assert next_message(pubsub) == ("broadcast:foobar", b"real")

    def test_heartbeat_is_skipped_among_messages(
        self, redis_settings: Settings, redis_client: redis.Redis
    ) -> None:
        redis_settings.WS4REDIS_HEARTBEAT = "--heartbeat--"
        with listening(redis_client, "broadcast:foobar") as pubsub:
            publisher = RedisPublisher(facility="foobar", broadcast=True)
            assert publisher.publish_messages(["a", b"--heartbeat--", "b", "--heartbeat--"]) == 2
            assert received(pubsub, 2) == [("broadcast:foobar", b"a"), ("broadcast:foobar", b"b")]
            assert_nothing_more(pubsub, redis_client, "broadcast:foobar")
        assert redis_client.get("broadcast:foobar") == b"b"


class TestFetchMessage:
    @pytest.fixture
    def persisted(self, redis_settings: Settings) -> None:
        """One persisted message per audience of facility ``foobar``."""
        RedisPublisher(facility="foobar", broadcast=True).publish_message("to all")
        RedisPublisher(facility="foobar", groups=["admins"]).publish_message("to admins")
        RedisPublisher(facility="foobar", users=["john"]).publish_message("to john")
        RedisPublisher(facility="foobar", sessions=[SESSION_KEY]).publish_message("to session")

    @pytest.mark.parametrize(
        ("audience", "expected"),
        [
            ("broadcast", b"to all"),
            ("group", b"to admins"),
            ("user", b"to john"),
            ("session", b"to session"),
            ("any", b"to session"),
        ],
    )
    def test_each_audience(self, persisted: None, audience: str, expected: bytes) -> None:
        message = RedisPublisher().fetch_message(john_request(), "foobar", audience)
        assert message == expected
        assert isinstance(message, RedisMessage)

    def test_default_audience_is_any(self, persisted: None) -> None:
        assert RedisPublisher().fetch_message(john_request(), "foobar") == b"to session"

    def test_any_looks_in_order_session_user_group_broadcast(
        self,
        persisted: None,
        redis_client: redis.Redis,
    ) -> None:
        publisher = RedisPublisher()
        request = john_request()
        assert publisher.fetch_message(request, "foobar", "any") == b"to session"
        redis_client.delete(f"session:{SESSION_KEY}:foobar")
        assert publisher.fetch_message(request, "foobar", "any") == b"to john"
        redis_client.delete("user:john:foobar")
        assert publisher.fetch_message(request, "foobar", "any") == b"to admins"
        redis_client.delete("group:admins:foobar")
        assert publisher.fetch_message(request, "foobar", "any") == b"to all"
        redis_client.delete("broadcast:foobar")
        assert publisher.fetch_message(request, "foobar", "any") is None

    @pytest.mark.parametrize("audience", ["broadcast", "group", "user", "session", "any"])
    def test_none_when_nothing_persisted(self, redis_settings: Settings, audience: str) -> None:
        assert RedisPublisher().fetch_message(john_request(), "foobar", audience) is None

    def test_other_users_message_is_not_fetched(self, persisted: None) -> None:
        mary = make_request(
            SessionUser(8, "mary", ["chatters"], {}),
            "another-session-key",
            {"_auth_user_id": "8", "ws4redis:username": "mary", "ws4redis:memberof": ["chatters"]},
        )
        publisher = RedisPublisher()
        assert publisher.fetch_message(mary, "foobar", "user") is None
        assert publisher.fetch_message(mary, "foobar", "group") is None
        assert publisher.fetch_message(mary, "foobar", "session") is None
        assert publisher.fetch_message(mary, "foobar", "any") == b"to all"

    def test_anonymous_request_gets_broadcast_only(self, persisted: None) -> None:
        request = make_request(session_key=None)
        publisher = RedisPublisher()
        assert publisher.fetch_message(request, "foobar", "user") is None
        assert publisher.fetch_message(request, "foobar", "group") is None
        assert publisher.fetch_message(request, "foobar", "any") == b"to all"

    def test_prefix_is_used(self, redis_settings: Settings, redis_client: redis.Redis) -> None:
        redis_settings.WS4REDIS_PREFIX = "ws"
        RedisPublisher(facility="foobar", users=["john"]).publish_message("prefixed")
        assert stored_keys(redis_client) == [b"ws:user:john:foobar"]
        assert RedisPublisher().fetch_message(john_request(), "foobar", "user") == b"prefixed"

    def test_message_published_without_persisting(self, redis_settings: Settings) -> None:
        RedisPublisher(facility="foobar", broadcast=True).publish_message("gone", expire=0)
        assert RedisPublisher().fetch_message(john_request(), "foobar", "broadcast") is None

    @pytest.mark.parametrize("audience", ["everybody", "users", "", "ANY"])
    def test_invalid_audience(self, redis_settings: Settings, audience: str) -> None:
        with pytest.raises(ValueError, match="audience"):
            RedisPublisher().fetch_message(john_request(), "foobar", audience)


CONNECTION_FORMS = [
    pytest.param(lambda port: f"redis://127.0.0.1:{port}/0", id="url"),
    pytest.param(lambda port: {"host": "127.0.0.1", "port": port}, id="dict"),
]


def publish_in_thread(publisher: RedisPublisher, limit: float) -> tuple[float, BaseException]:
    """Publish from a helper thread; ``(elapsed, exception)``, or fail when it takes > limit."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        started = time.monotonic()
        try:
            publisher.publish_message("lost?")
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            outcome["exception"] = exc
        outcome["elapsed"] = time.monotonic() - started

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(limit)
    if thread.is_alive():
        raise AssertionError(f"publish_message still blocked after {limit} s")
    assert "exception" in outcome, "publish_message did not fail although Redis is down"
    return outcome["elapsed"], outcome["exception"]


@pytest.fixture
def dead_redis() -> Iterator[RedisServer]:
    """A throw-away Redis server that has crashed (SIGKILL): its port refuses connections."""
    server = RedisServer().start()
    server.kill()
    yield server
    server.stop()


@pytest.fixture
def frozen_redis() -> Iterator[RedisServer]:
    """A throw-away Redis server stopped with SIGSTOP: it accepts connections, never answers."""
    server = RedisServer().start()
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        yield server
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
        server.stop()


class TestRedisDown:
    @pytest.mark.parametrize("config", CONNECTION_FORMS)
    def test_crashed_redis_raises_connection_error_quickly(
        self,
        settings: Settings,
        dead_redis: RedisServer,
        config: Any,
    ) -> None:
        settings.WS4REDIS_CONNECTION = config(dead_redis.port)
        settings.WS4REDIS_SOCKET_TIMEOUT = 1
        publisher = RedisPublisher(facility="foobar", broadcast=True)
        elapsed, exception = publish_in_thread(publisher, limit=10)
        assert isinstance(exception, redis.exceptions.ConnectionError)
        assert elapsed < 3

    @pytest.mark.parametrize("config", CONNECTION_FORMS)
    def test_unresponsive_redis_times_out_within_socket_timeout(
        self,
        settings: Settings,
        frozen_redis: RedisServer,
        config: Any,
    ) -> None:
        settings.WS4REDIS_CONNECTION = config(frozen_redis.port)
        settings.WS4REDIS_SOCKET_TIMEOUT = 1
        publisher = RedisPublisher(facility="foobar", broadcast=True)
        elapsed, exception = publish_in_thread(publisher, limit=10)
        assert isinstance(
            exception, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
        )
        assert elapsed < 3

    def test_publisher_works_again_when_redis_is_back(
        self,
        settings: Settings,
        dead_redis: RedisServer,
    ) -> None:
        settings.WS4REDIS_CONNECTION = dead_redis.url
        settings.WS4REDIS_SOCKET_TIMEOUT = 1
        publisher = RedisPublisher(facility="foobar", broadcast=True)
        with pytest.raises(redis.exceptions.ConnectionError):
            publisher.publish_message("lost")
        dead_redis.start()
        client = dead_redis.client()
        try:
            with listening(client, "broadcast:foobar") as pubsub:
                assert publisher.publish_message("back") == 1
                assert next_message(pubsub) == ("broadcast:foobar", b"back")
        finally:
            client.close()

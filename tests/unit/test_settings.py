"""The documented settings: defaults, validation, laziness, and the Redis connection they describe.

No server is needed: building a Redis client or connection object does not connect.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis
from django.core.exceptions import ImproperlyConfigured
from django.test import SimpleTestCase, override_settings
from pytest_django import Settings

import ws4redis.settings
from ws4redis import settings as ws_settings
from ws4redis.auth import default_process_request
from ws4redis.connection import get_redis_client, make_client, make_connection, pool_spec
from ws4redis.subscriber import RedisSubscriber

DEFAULTS = {
    "WEBSOCKET_URL": "/ws/",
    "WS4REDIS_CONNECTION": {},
    "WS4REDIS_EXPIRE": 3600,
    "WS4REDIS_PREFIX": "",
    "WS4REDIS_SUBSCRIBER": RedisSubscriber,
    "WS4REDIS_HEARTBEAT": None,
    "WS4REDIS_ALLOWED_CHANNELS": None,
    "WS4REDIS_PROCESS_REQUEST": default_process_request,
    "WS4REDIS_ALLOWED_ORIGINS": None,
    "WS4REDIS_MAX_MESSAGE_SIZE": 1048576,
    "WS4REDIS_SOCKET_TIMEOUT": 5.0,
    "WS4REDIS_HEARTBEAT_INTERVAL": 4.0,
    "WS4REDIS_SEND_QUEUE_SIZE": 1000,
    "WS4REDIS_MAX_MESSAGES_PER_SECOND": 100.0,
    "WS4REDIS_MAX_CONNECTIONS": None,
    "WS4REDIS_HANDSHAKE_TIMEOUT": 10.0,
    "WS4REDIS_METRICS_INTERVAL": 5.0,
    "WS4REDIS_METRICS_TOKEN": None,
    "WS4REDIS_HISTORY": None,
}


def allow_broadcast(request: Any, channels: Any) -> set[str]:
    """A WS4REDIS_ALLOWED_CHANNELS callback, named by dotted path in the tests below."""
    return set(channels) & {"subscribe-broadcast"}


NOT_CALLABLE = ("subscribe-broadcast",)


class CustomSubscriber(RedisSubscriber):
    """A WS4REDIS_SUBSCRIBER replacement, named by dotted path in the tests below."""


@pytest.fixture(autouse=True)
def _unset_ws4redis_settings(settings: Settings) -> None:
    """Start every test from the documented defaults, whatever tests.settings holds."""
    for name in ws_settings.NAMES:
        if hasattr(settings, name):
            delattr(settings, name)


class TestDefaults:
    def test_every_documented_setting_is_known(self) -> None:
        assert set(ws_settings.NAMES) == set(DEFAULTS)

    @pytest.mark.parametrize("name", sorted(DEFAULTS))
    def test_default_through_get(self, name: str) -> None:
        assert ws_settings.get(name) == DEFAULTS[name]

    @pytest.mark.parametrize("name", sorted(DEFAULTS))
    def test_default_as_module_attribute(self, name: str) -> None:
        assert getattr(ws4redis.settings, name) == DEFAULTS[name]

    def test_dotted_path_defaults_resolve_to_the_objects(self) -> None:
        assert ws_settings.WS4REDIS_SUBSCRIBER is RedisSubscriber
        assert ws_settings.WS4REDIS_PROCESS_REQUEST is default_process_request

    def test_unknown_attribute_raises_attribute_error(self) -> None:
        with pytest.raises(AttributeError, match="WS4REDIS_NO_SUCH_SETTING"):
            ws4redis.settings.WS4REDIS_NO_SUCH_SETTING  # noqa: B018


class TestValidValues:
    @pytest.mark.parametrize(
        ("name", "value", "expected"),
        [
            ("WEBSOCKET_URL", "/websocket/", "/websocket/"),
            ("WS4REDIS_CONNECTION", "redis://127.0.0.1:6380/2", "redis://127.0.0.1:6380/2"),
            ("WS4REDIS_CONNECTION", "rediss://redis.example.com", "rediss://redis.example.com"),
            ("WS4REDIS_CONNECTION", "unix:///tmp/redis.sock", "unix:///tmp/redis.sock"),
            ("WS4REDIS_CONNECTION", {"host": "h", "db": 3}, {"host": "h", "db": 3}),
            ("WS4REDIS_EXPIRE", 7200, 7200),
            ("WS4REDIS_EXPIRE", 0, 0),
            ("WS4REDIS_EXPIRE", None, 0),
            ("WS4REDIS_PREFIX", "ws", "ws"),
            ("WS4REDIS_PREFIX", None, ""),
            ("WS4REDIS_HEARTBEAT", "--heartbeat--", "--heartbeat--"),
            ("WS4REDIS_HEARTBEAT", b"--heartbeat--", "--heartbeat--"),
            ("WS4REDIS_HEARTBEAT", None, None),
            ("WS4REDIS_ALLOWED_ORIGINS", ["https://a.example"], ("https://a.example",)),
            ("WS4REDIS_ALLOWED_ORIGINS", ("*",), ("*",)),
            ("WS4REDIS_ALLOWED_ORIGINS", [], ()),
            ("WS4REDIS_MAX_MESSAGE_SIZE", 1, 1),
            ("WS4REDIS_SOCKET_TIMEOUT", 1, 1.0),
            ("WS4REDIS_SOCKET_TIMEOUT", 0.25, 0.25),
            ("WS4REDIS_HEARTBEAT_INTERVAL", 10, 10.0),
            ("WS4REDIS_SEND_QUEUE_SIZE", 5, 5),
            ("WS4REDIS_MAX_MESSAGES_PER_SECOND", 20, 20.0),
            ("WS4REDIS_MAX_MESSAGES_PER_SECOND", 0.5, 0.5),
            ("WS4REDIS_MAX_MESSAGES_PER_SECOND", None, None),
            ("WS4REDIS_MAX_CONNECTIONS", 1, 1),
            ("WS4REDIS_MAX_CONNECTIONS", None, None),
            ("WS4REDIS_HANDSHAKE_TIMEOUT", 2, 2.0),
        ],
    )
    def test_value(self, settings: Settings, name: str, value: Any, expected: Any) -> None:
        setattr(settings, name, value)
        result = ws_settings.get(name)
        assert result == expected
        assert type(result) is type(expected)
        assert getattr(ws4redis.settings, name) == expected

    def test_expire_none_means_do_not_persist(self, settings: Settings) -> None:
        settings.WS4REDIS_EXPIRE = None
        assert ws_settings.WS4REDIS_EXPIRE == 0

    def test_connection_dict_is_a_copy(self, settings: Settings) -> None:
        config = {"host": "redis.example.com"}
        settings.WS4REDIS_CONNECTION = config
        ws_settings.get("WS4REDIS_CONNECTION")["host"] = "changed"
        assert config == {"host": "redis.example.com"}


class TestCallableOrDottedPath:
    @pytest.mark.parametrize(
        ("name", "dotted", "expected"),
        [
            ("WS4REDIS_ALLOWED_CHANNELS", f"{__name__}.allow_broadcast", allow_broadcast),
            ("WS4REDIS_PROCESS_REQUEST", f"{__name__}.allow_broadcast", allow_broadcast),
            ("WS4REDIS_SUBSCRIBER", f"{__name__}.CustomSubscriber", CustomSubscriber),
        ],
    )
    def test_dotted_path_is_imported(
        self, settings: Settings, name: str, dotted: str, expected: Any
    ) -> None:
        setattr(settings, name, dotted)
        assert ws_settings.get(name) is expected

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("WS4REDIS_ALLOWED_CHANNELS", allow_broadcast),
            ("WS4REDIS_PROCESS_REQUEST", allow_broadcast),
            ("WS4REDIS_SUBSCRIBER", CustomSubscriber),
        ],
    )
    def test_callable_is_used_as_is(self, settings: Settings, name: str, value: Any) -> None:
        setattr(settings, name, value)
        assert ws_settings.get(name) is value

    def test_lambda_is_accepted(self, settings: Settings) -> None:
        def hook(request: Any, channels: Any) -> list[str]:
            return []

        settings.WS4REDIS_ALLOWED_CHANNELS = hook
        assert ws_settings.WS4REDIS_ALLOWED_CHANNELS is hook

    def test_allowed_channels_none_means_no_restriction(self, settings: Settings) -> None:
        settings.WS4REDIS_ALLOWED_CHANNELS = None
        assert ws_settings.WS4REDIS_ALLOWED_CHANNELS is None


NAMED_ERRORS = [
    ("WEBSOCKET_URL", "ws/"),
    ("WEBSOCKET_URL", ""),
    ("WEBSOCKET_URL", None),
    ("WS4REDIS_CONNECTION", "http://redis.example.com"),
    ("WS4REDIS_CONNECTION", "redis.example.com:6379"),
    ("WS4REDIS_CONNECTION", 6379),
    ("WS4REDIS_CONNECTION", None),
    ("WS4REDIS_EXPIRE", -1),
    ("WS4REDIS_EXPIRE", "3600"),
    ("WS4REDIS_EXPIRE", 1.5),
    ("WS4REDIS_EXPIRE", True),
    ("WS4REDIS_PREFIX", 5),
    ("WS4REDIS_PREFIX", b"ws"),
    ("WS4REDIS_HEARTBEAT", ""),
    ("WS4REDIS_HEARTBEAT", 5),
    ("WS4REDIS_SUBSCRIBER", "NoDots"),
    ("WS4REDIS_SUBSCRIBER", "no_such_module.RedisSubscriber"),
    ("WS4REDIS_SUBSCRIBER", "ws4redis.subscriber.NoSuchClass"),
    ("WS4REDIS_SUBSCRIBER", 5),
    ("WS4REDIS_ALLOWED_CHANNELS", "no_such_module.get_allowed_channels"),
    ("WS4REDIS_ALLOWED_CHANNELS", "ws4redis.settings.no_such_function"),
    ("WS4REDIS_ALLOWED_CHANNELS", ["subscribe-broadcast"]),
    ("WS4REDIS_ALLOWED_CHANNELS", f"{__name__}.NOT_CALLABLE"),
    ("WS4REDIS_PROCESS_REQUEST", "no_such_module.process_request"),
    ("WS4REDIS_PROCESS_REQUEST", f"{__name__}.NOT_CALLABLE"),
    ("WS4REDIS_ALLOWED_ORIGINS", "*"),
    ("WS4REDIS_ALLOWED_ORIGINS", "https://example.com"),
    ("WS4REDIS_ALLOWED_ORIGINS", ["https://example.com", 5]),
    ("WS4REDIS_ALLOWED_ORIGINS", 5),
    ("WS4REDIS_ALLOWED_ORIGINS", True),
    ("WS4REDIS_MAX_MESSAGE_SIZE", 0),
    ("WS4REDIS_MAX_MESSAGE_SIZE", -1),
    ("WS4REDIS_MAX_MESSAGE_SIZE", 1.5),
    ("WS4REDIS_MAX_MESSAGE_SIZE", True),
    ("WS4REDIS_MAX_MESSAGE_SIZE", "1024"),
    ("WS4REDIS_SOCKET_TIMEOUT", 0),
    ("WS4REDIS_SOCKET_TIMEOUT", -1),
    ("WS4REDIS_SOCKET_TIMEOUT", "5"),
    ("WS4REDIS_SOCKET_TIMEOUT", None),
    ("WS4REDIS_SOCKET_TIMEOUT", False),
    ("WS4REDIS_HEARTBEAT_INTERVAL", 0),
    ("WS4REDIS_HEARTBEAT_INTERVAL", -4),
    ("WS4REDIS_SEND_QUEUE_SIZE", 0),
    ("WS4REDIS_SEND_QUEUE_SIZE", 10.0),
    ("WS4REDIS_MAX_MESSAGES_PER_SECOND", 0),
    ("WS4REDIS_MAX_MESSAGES_PER_SECOND", "100"),
    ("WS4REDIS_MAX_CONNECTIONS", 0),
    ("WS4REDIS_MAX_CONNECTIONS", 2.5),
    ("WS4REDIS_HANDSHAKE_TIMEOUT", None),
    ("WS4REDIS_HANDSHAKE_TIMEOUT", 0),
]


class TestInvalidValues:
    @pytest.mark.parametrize(("name", "value"), NAMED_ERRORS)
    def test_improperly_configured_names_the_setting(
        self, settings: Settings, name: str, value: Any
    ) -> None:
        setattr(settings, name, value)
        with pytest.raises(ImproperlyConfigured) as info:
            ws_settings.get(name)
        assert name in str(info.value)

    def test_module_attribute_raises_too(self, settings: Settings) -> None:
        settings.WS4REDIS_EXPIRE = -5
        with pytest.raises(ImproperlyConfigured, match="WS4REDIS_EXPIRE"):
            ws4redis.settings.WS4REDIS_EXPIRE  # noqa: B018

    def test_invalid_value_is_not_cached(self, settings: Settings) -> None:
        settings.WS4REDIS_PREFIX = 5
        with pytest.raises(ImproperlyConfigured):
            ws_settings.get("WS4REDIS_PREFIX")
        settings.WS4REDIS_PREFIX = "ws"
        assert ws_settings.get("WS4REDIS_PREFIX") == "ws"

    def test_import_error_is_named_in_message(self, settings: Settings) -> None:
        settings.WS4REDIS_SUBSCRIBER = "no_such_module.RedisSubscriber"
        with pytest.raises(ImproperlyConfigured, match="no_such_module.RedisSubscriber"):
            ws_settings.get("WS4REDIS_SUBSCRIBER")


class TestLaziness(SimpleTestCase):
    """Values are cached, and the cache is dropped when Django says a setting changed."""

    def test_override_settings_takes_effect_and_is_undone(self) -> None:
        assert ws_settings.WS4REDIS_PREFIX == ""
        with override_settings(WS4REDIS_PREFIX="ws"):
            assert ws_settings.WS4REDIS_PREFIX == "ws"
            with override_settings(WS4REDIS_PREFIX="inner"):
                assert ws_settings.WS4REDIS_PREFIX == "inner"
            assert ws_settings.WS4REDIS_PREFIX == "ws"
        assert ws_settings.WS4REDIS_PREFIX == ""

    @override_settings(WS4REDIS_EXPIRE=None, WS4REDIS_HEARTBEAT="--heartbeat--")
    def test_override_as_decorator(self) -> None:
        assert ws_settings.WS4REDIS_EXPIRE == 0
        assert ws_settings.WS4REDIS_HEARTBEAT == "--heartbeat--"

    def test_cached_value_replaced_after_change(self) -> None:
        with override_settings(WS4REDIS_EXPIRE=10):
            assert ws_settings.get("WS4REDIS_EXPIRE") == 10
            with override_settings(WS4REDIS_EXPIRE=20):
                assert ws_settings.get("WS4REDIS_EXPIRE") == 20
            assert ws_settings.get("WS4REDIS_EXPIRE") == 10
        assert ws_settings.get("WS4REDIS_EXPIRE") == 3600

    def test_invalid_override_raises_on_read(self) -> None:
        with override_settings(WEBSOCKET_URL="ws"):
            with self.assertRaisesMessage(ImproperlyConfigured, "WEBSOCKET_URL"):
                ws_settings.get("WEBSOCKET_URL")
        assert ws_settings.get("WEBSOCKET_URL") == "/ws/"

    def test_shared_client_follows_the_connection_setting(self) -> None:
        with override_settings(WS4REDIS_CONNECTION="redis://127.0.0.1:16001/3"):
            first = get_redis_client()
            assert get_redis_client() is first
            kwargs = first.connection_pool.connection_kwargs
            assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("127.0.0.1", 16001, 3)
            with override_settings(WS4REDIS_CONNECTION={"host": "127.0.0.1", "port": 16002}):
                second = get_redis_client()
                kwargs = second.connection_pool.connection_kwargs
                assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("127.0.0.1", 16002, 0)
            assert get_redis_client() is not second
            assert get_redis_client().connection_pool.connection_kwargs["port"] == 16001


def _connection_of(config: dict[str, Any] | str) -> redis.connection.AbstractConnection:
    """The redis-py connection ``pool_spec`` describes (built, not connected)."""
    connection_class, kwargs = pool_spec(config)
    return connection_class(**kwargs)


class TestConnectionSpec:
    """``WS4REDIS_CONNECTION`` as the spec's dict or as a URL, mapped to redis-py classes."""

    def test_default_is_localhost_6379_db0(self) -> None:
        connection = _connection_of({})
        assert type(connection) is redis.Connection
        assert (connection.host, connection.port, connection.db) == ("localhost", 6379, 0)
        assert connection.password is None

    def test_spec_dict_with_host_port_db_password(self) -> None:
        config = {"host": "redis.example.com", "port": 16379, "db": 17, "password": "verysecret"}
        connection_class, kwargs = pool_spec(config)
        assert connection_class is redis.Connection
        assert kwargs["host"] == "redis.example.com"
        assert kwargs["port"] == 16379
        assert kwargs["db"] == 17
        assert kwargs["password"] == "verysecret"

    def test_spec_dict_with_unix_socket_path(self) -> None:
        connection_class, kwargs = pool_spec({"unix_socket_path": "/tmp/redis.sock", "db": 5})
        assert connection_class is redis.UnixDomainSocketConnection
        assert kwargs["path"] == "/tmp/redis.sock"
        assert kwargs["db"] == 5
        assert "host" not in kwargs

    def test_dict_with_ssl(self) -> None:
        config = {"host": "redis.example.com", "port": 6380, "ssl": True, "ssl_cert_reqs": "none"}
        connection_class, kwargs = pool_spec(config)
        assert connection_class is redis.SSLConnection
        assert (kwargs["host"], kwargs["port"]) == ("redis.example.com", 6380)
        assert kwargs["ssl_cert_reqs"] == "none"

    def test_redis_url(self) -> None:
        connection_class, kwargs = pool_spec("redis://:verysecret@redis.example.com:16379/17")
        assert connection_class is redis.Connection
        assert kwargs["host"] == "redis.example.com"
        assert kwargs["port"] == 16379
        assert kwargs["db"] == 17
        assert kwargs["password"] == "verysecret"

    def test_redis_url_with_username_and_default_port(self) -> None:
        connection = _connection_of("redis://alice:verysecret@redis.example.com/2")
        assert type(connection) is redis.Connection
        assert (connection.username, connection.password) == ("alice", "verysecret")
        assert (connection.host, connection.port, connection.db) == ("redis.example.com", 6379, 2)

    def test_rediss_url_is_tls(self) -> None:
        connection_class, kwargs = pool_spec(
            "rediss://redis.example.com:6380/1?ssl_cert_reqs=required"
        )
        assert connection_class is redis.SSLConnection
        assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("redis.example.com", 6380, 1)
        assert kwargs["ssl_cert_reqs"] == "required"

    def test_unix_url(self) -> None:
        connection_class, kwargs = pool_spec("unix:///tmp/redis.sock?db=5")
        assert connection_class is redis.UnixDomainSocketConnection
        assert kwargs["path"] == "/tmp/redis.sock"
        assert kwargs["db"] == 5

    def test_pooled_client_uses_the_spec(self) -> None:
        tls = make_client("rediss://redis.example.com:6380/4").connection_pool
        assert tls.connection_class is redis.SSLConnection
        unix = make_client({"unix_socket_path": "/tmp/redis.sock", "db": 5}).connection_pool
        assert unix.connection_class is redis.UnixDomainSocketConnection
        assert unix.connection_kwargs["path"] == "/tmp/redis.sock"

    def test_pubsub_connection_over_tls(self) -> None:
        connection = make_connection("rediss://redis.example.com:6380/4")
        assert isinstance(connection, redis.SSLConnection)
        assert (connection.host, connection.port, connection.db) == ("redis.example.com", 6380, 4)

    @pytest.mark.parametrize(
        "config",
        [
            pytest.param("unix:///tmp/redis.sock?db=5", id="url"),
            pytest.param({"unix_socket_path": "/tmp/redis.sock", "db": 5}, id="dict"),
        ],
    )
    def test_pubsub_connection_over_unix_socket(self, config: Any) -> None:
        connection = make_connection(config)
        assert isinstance(connection, redis.UnixDomainSocketConnection)
        assert (connection.path, connection.db) == ("/tmp/redis.sock", 5)
        assert connection.socket_timeout is None


@pytest.mark.parametrize(
    "config",
    [
        pytest.param("redis://127.0.0.1:16003/0", id="url"),
        pytest.param({"host": "127.0.0.1", "port": 16003}, id="dict"),
        pytest.param("unix:///tmp/redis.sock", id="unix-url"),
        pytest.param({"unix_socket_path": "/tmp/redis.sock"}, id="unix-dict"),
    ],
)
class TestSocketTimeoutSetting:
    """``WS4REDIS_SOCKET_TIMEOUT`` bounds every command, whichever form the connection takes."""

    def test_pooled_client_uses_the_setting(self, settings: Settings, config: Any) -> None:
        settings.WS4REDIS_SOCKET_TIMEOUT = 1
        settings.WS4REDIS_CONNECTION = config
        kwargs = make_client().connection_pool.connection_kwargs
        assert kwargs["socket_timeout"] == 1.0
        assert kwargs["socket_connect_timeout"] == 1.0

    def test_explicit_timeout_argument(self, settings: Settings, config: Any) -> None:
        client = make_client(config, socket_timeout=0.5)
        kwargs = client.connection_pool.connection_kwargs
        assert kwargs["socket_timeout"] == 0.5
        assert kwargs["socket_connect_timeout"] == 0.5

    def test_pubsub_connection_blocks_on_reads_but_connects_within_timeout(
        self,
        settings: Settings,
        config: Any,
    ) -> None:
        settings.WS4REDIS_SOCKET_TIMEOUT = 2
        connection = make_connection(config)
        assert connection.socket_timeout is None
        assert connection.socket_connect_timeout == 2.0

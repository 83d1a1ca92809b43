"""``WS4REDIS_CONNECTION`` in its Sentinel and Cluster forms: parsing and validation, no server."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import SimpleTestCase, override_settings

from ws4redis import settings as ws_settings
from ws4redis.checks import check_settings
from ws4redis.connection import ClusterConfig, SentinelConfig, parse_connection


class TestSentinelUrl:
    def test_hosts_service_and_db(self) -> None:
        spec = parse_connection("redis+sentinel://:s3cret@10.0.0.1:26379,10.0.0.2:26380/mymaster/2")
        assert spec == SentinelConfig(
            sentinels=(("10.0.0.1", 26379), ("10.0.0.2", 26380)),
            service_name="mymaster",
            db=2,
            password="s3cret",
        )

    def test_defaults(self) -> None:
        spec = parse_connection("redis+sentinel://sentinel-host/mymaster")
        assert spec == SentinelConfig((("sentinel-host", 26379),), "mymaster")

    def test_username_and_escaped_password(self) -> None:
        spec = parse_connection("redis+sentinel://app:p%40ss@h:1/svc")
        assert isinstance(spec, SentinelConfig)
        assert spec.password == "p@ss"
        assert spec.connection_kwargs == {"username": "app"}

    @pytest.mark.parametrize(
        ("url", "reason"),
        [
            ("redis+sentinel://h:26379", "service name"),
            ("redis+sentinel://h:26379/", "service name"),
            ("redis+sentinel:///mymaster", "at least one sentinel"),
            ("redis+sentinel://h:26379/mymaster/x", "database"),
            ("redis+sentinel://h:port/mymaster", "host and port"),
            ("redis+sentinel://h:26379/mymaster/0/extra", "service name"),
            ("redis+sentinel://h:26379/mymaster?ssl=1", "query string"),
        ],
    )
    def test_malformed(self, url: str, reason: str) -> None:
        with pytest.raises(ValueError, match=reason):
            parse_connection(url)


class TestSentinelDict:
    def test_full(self) -> None:
        spec = parse_connection(
            {
                "sentinels": [["127.0.0.1", 26379], ("127.0.0.1", 26380)],
                "service_name": "mymaster",
                "db": 1,
                "password": "master-secret",
                "sentinel_password": "sentinel-secret",
                "ssl": True,
            }
        )
        assert spec == SentinelConfig(
            (("127.0.0.1", 26379), ("127.0.0.1", 26380)),
            "mymaster",
            1,
            "master-secret",
            "sentinel-secret",
            {"ssl": True},
        )

    @pytest.mark.parametrize(
        ("config", "reason"),
        [
            ({"sentinels": [], "service_name": "m"}, "non-empty list"),
            ({"sentinels": "h:26379", "service_name": "m"}, "non-empty list"),
            ({"sentinels": [["h", 26379]]}, "service_name"),
            ({"service_name": "m"}, "non-empty list"),
            ({"sentinels": [["h"]], "service_name": "m"}, "host and port"),
            ({"sentinels": [["h", 70000]], "service_name": "m"}, "host and port"),
            ({"sentinels": [["h", 1]], "service_name": "m", "db": -1}, "database"),
        ],
    )
    def test_malformed(self, config: dict, reason: str) -> None:
        with pytest.raises(ValueError, match=reason):
            parse_connection(config)


class TestCluster:
    def test_url(self) -> None:
        spec = parse_connection("redis+cluster://:pw@n1:7000,n2:7001,n3")
        assert spec == ClusterConfig((("n1", 7000), ("n2", 7001), ("n3", 6379)), "pw")

    def test_dict(self) -> None:
        spec = parse_connection({"cluster_nodes": [["n1", 7000]], "password": "pw", "ssl": True})
        assert spec == ClusterConfig((("n1", 7000),), "pw", {"ssl": True})

    @pytest.mark.parametrize(
        ("config", "reason"),
        [
            ("redis+cluster://", "at least one node"),
            ("redis+cluster://n1:7000/3", "no database"),
            ({"cluster_nodes": []}, "non-empty list"),
            ({"cluster_nodes": [["n1", 7000]], "db": 2}, "db"),
            ({"cluster_nodes": [["n1", "x"]]}, "host and port"),
        ],
    )
    def test_malformed(self, config: object, reason: str) -> None:
        with pytest.raises(ValueError, match=reason):
            parse_connection(config)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "config",
    ["redis://localhost:6379/0", "unix:///tmp/redis.sock", {"host": "h", "port": 1}, {}],
)
def test_single_server_forms_are_returned_unchanged(config: object) -> None:
    assert parse_connection(config) == config  # type: ignore[arg-type]


class TestSetting(SimpleTestCase):
    def tearDown(self) -> None:
        ws_settings.clear_cache()

    def test_sentinel_and_cluster_forms_are_accepted(self) -> None:
        for value in (
            "redis+sentinel://h:26379/mymaster",
            "redis+cluster://h:7000",
            {"sentinels": [["h", 26379]], "service_name": "m"},
            {"cluster_nodes": [["h", 7000]]},
        ):
            with self.subTest(value=value), override_settings(WS4REDIS_CONNECTION=value):
                assert ws_settings.get("WS4REDIS_CONNECTION") == value
                assert not [m for m in check_settings() if m.id == "ws4redis.E002"]

    def test_a_sentinel_url_without_service_name_is_refused(self) -> None:
        with override_settings(WS4REDIS_CONNECTION="redis+sentinel://h:26379"):
            with pytest.raises(ImproperlyConfigured, match="service name"):
                ws_settings.get("WS4REDIS_CONNECTION")
            (error,) = [m for m in check_settings() if m.id == "ws4redis.E002"]
            assert "service name" in error.msg

    def test_an_empty_node_list_is_refused(self) -> None:
        with override_settings(WS4REDIS_CONNECTION={"cluster_nodes": []}):
            with pytest.raises(ImproperlyConfigured, match="cluster_nodes"):
                ws_settings.get("WS4REDIS_CONNECTION")
            (error,) = [m for m in check_settings() if m.id == "ws4redis.E002"]
            assert "cluster_nodes" in error.msg

"""Missed-message recovery without servers: names, envelope, notices, positions, the setting."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings
from redis.crc import key_slot

from ws4redis import history, settings
from ws4redis.exceptions import HandshakeError


def test_the_stream_lives_in_the_channel_slot() -> None:
    for channel in ("ws:broadcast:chat", "user:john:chat", "a{b", "session:xyz:f"):
        key = history.stream_key(channel)
        assert key == "{" + channel + "}:history"
        assert key_slot(key.encode()) == key_slot(channel.encode())


def test_tags_are_short_stable_and_hide_the_channel() -> None:
    tag = history.channel_tag("ws:session:secret-key:chat")
    assert tag == history.channel_tag("ws:session:secret-key:chat")
    assert len(tag) == 12 and int(tag, 16) >= 0
    assert "secret" not in tag
    assert tag != history.channel_tag("ws:session:other-key:chat")


def test_envelope_round_trip_keeps_binary_payloads() -> None:
    data = history.envelope("0123456789ab", "1700000000000-3", b"\xff\x00x\ny")
    assert data == b"0123456789ab:1700000000000-3\n\xff\x00x\ny"
    assert history.split_envelope(data) == (b"0123456789ab:1700000000000-3", b"\xff\x00x\ny")


def test_notices() -> None:
    assert history.gap_notice(["aa", "bb"]) == b"gap\naa,bb"
    assert history.sync_notice({"aa": "1-0", "bb": "0-0"}) == b"sync\naa:1-0,bb:0-0"


def test_ids_compare_as_numbers() -> None:
    assert history.parse_id("10-0") > history.parse_id("9-99")
    assert history.parse_id(b"5-10") > history.parse_id("5-9")
    for bad in ("", "5", "5-", "a-1", "1-2-3", "-1-0"):
        with pytest.raises(ValueError):
            history.parse_id(bad)


def test_last_id_parsing() -> None:
    assert history.parse_last_id("subscribe-broadcast") is None
    assert history.parse_last_id("last-id=") == {}
    query = "subscribe-user&last-id=0123456789ab%3A17-2%2Cba9876543210:0-0"
    assert history.parse_last_id(query) == {"0123456789ab": "17-2", "ba9876543210": "0-0"}
    for bad in ("last-id=xyz", "last-id=0123456789ab:1", "last-id=0123456789AB:1-0"):
        with pytest.raises(HandshakeError) as info:
            history.parse_last_id(bad)
        assert info.value.status == 400
    many = ",".join(f"{n:012x}:1-0" for n in range(history.MAX_POSITIONS + 1))
    with pytest.raises(HandshakeError):
        history.parse_last_id("last-id=" + many)


def test_live_messages_already_replayed_are_dropped_once() -> None:
    cursor = history.HistoryCursor({})
    cursor._thresholds["k"] = (5, 1)
    assert cursor.admit("k", b"t:5-0\nold") is None
    assert cursor.admit("k", b"t:5-1\nold") is None
    assert cursor.admit("k", b"t:5-2\nnew") == b"new"
    assert cursor.admit("k", b"t:5-3\nnext") == b"next"
    assert cursor.admit("other", b"t:1-0\nany") == b"any"


@pytest.mark.parametrize(
    ("known", "backlog", "info", "expected"),
    [
        (None, [], {"last-generated-id": b"9-0"}, ("9-0", False)),
        (None, [], Exception("no such key"), ("0-0", False)),
        ("0-0", [], Exception("no such key"), ("0-0", False)),
        ("5-0", [], Exception("ERR no such key"), ("0-0", True)),
        ("5-0", [(b"6-0", {})], {"first-entry": (b"5-0", {})}, ("6-0", False)),
        ("5-0", [(b"9-0", {})], {"first-entry": (b"7-0", {})}, ("9-0", True)),
        ("5-0", [], {"first-entry": (b"4-0", {})}, ("5-0", False)),
    ],
)
def test_positions_and_gaps(known, backlog, info, expected) -> None:  # noqa: ANN001
    assert history._position(known, backlog, info) == expected


def test_subprotocol_selection() -> None:
    cursor = history.HistoryCursor(None)
    offered = ["chat", history.SUBPROTOCOL]
    assert history.select_subprotocol(offered, cursor) == history.SUBPROTOCOL
    assert history.select_subprotocol(offered, None) == "chat"
    assert history.select_subprotocol([history.SUBPROTOCOL], None) is None


def test_the_setting() -> None:
    assert settings.get("WS4REDIS_HISTORY") is None
    with override_settings(WS4REDIS_HISTORY={"size": 10, "ttl": 60}):
        assert settings.get("WS4REDIS_HISTORY") == {"size": 10, "ttl": 60}
        assert history.config() == {"size": 10, "ttl": 60}
    for bad in ({"size": 10}, {"size": 0, "ttl": 1}, {"size": 1, "ttl": True}, [1, 2], 5):
        with override_settings(WS4REDIS_HISTORY=bad):
            with pytest.raises(ImproperlyConfigured, match="WS4REDIS_HISTORY"):
                settings.get("WS4REDIS_HISTORY")


def test_opting_in_needs_the_setting_and_the_subprotocol() -> None:
    from ws4redis.subscriber import RedisSubscriber

    class Rewriting(RedisSubscriber):
        def parse_response(self):  # noqa: ANN202
            return None

    subscriber = RedisSubscriber.__new__(RedisSubscriber)
    offered = [history.SUBPROTOCOL]
    assert history.cursor_for(offered, "", subscriber) is None
    with override_settings(WS4REDIS_HISTORY={"size": 10, "ttl": 60}):
        assert history.cursor_for(["chat"], "", subscriber) is None
        cursor = history.cursor_for(offered, "last-id=0123456789ab:1-0", subscriber)
        assert cursor is not None and cursor.positions == {"0123456789ab": "1-0"}
        assert history.cursor_for(offered, "", Rewriting.__new__(Rewriting)) is None

"""``ws4redis.js`` with the option ``history``: a reconnection replays what was missed.

Headless Chromium against the example site under uWSGI with ``WS4REDIS_HISTORY`` on; the
server is stopped while messages are published, then started again on the same port.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import override_settings

from tests.browser.conftest import (
    FAILED_CONNECTION,
    HEARTBEAT,
    open_harness,
    snapshot,
    track,
    wait_js,
    ws_uri,
)
from tests.conftest import WS_SERVER_ARGS, server_env
from tools.servers import UwsgiServer

HISTORY = {"size": 100, "ttl": 120}


@pytest.fixture
def history_site(redis_server, example_db) -> Iterator[dict[str, Any]]:  # noqa: ANN001
    """The history site under a uWSGI of its own, which the test stops and starts again."""
    env = server_env(redis_server, example_db, "tests.sites.history")
    holder = {"server": UwsgiServer(WS_SERVER_ARGS, env).start(), "env": env}
    yield holder
    holder["server"].stop()


def miss_while_down(
    history_site: dict[str, Any], page: Any, publish: Any, missed: list[str]
) -> str:
    """Track a client with ``history`` on a new facility, publish "before", stop the server,
    publish ``missed``, start it again; return the facility."""
    server = history_site["server"]
    facility = f"history-{uuid.uuid4().hex[:10]}"
    options = {
        "uri": ws_uri(server, facility, "subscribe-broadcast"),
        "heartbeat_msg": HEARTBEAT,
        "history": True,
        "reconnect_base": 200,
        "reconnect_max": 500,
    }
    track(page, "main", options)
    wait_js(page, "c.connected === 1", "main")
    publish(facility, "before", broadcast=True)
    wait_js(page, "c.messages.length === 1", "main")
    server.stop()
    wait_js(page, "c.closes.length >= 1", "main")
    for text in missed:
        publish(facility, text, broadcast=True)
    history_site["server"] = UwsgiServer(
        WS_SERVER_ARGS, history_site["env"], port=server.port
    ).start()
    return facility


def test_a_reconnection_gets_the_missed_messages_once_in_order(
    history_site, open_page, publish, page_errors
):
    page_errors.expect(FAILED_CONNECTION)  # while the server is down
    page = open_harness(open_page(), history_site["server"])
    missed = [f"missed {n}" for n in range(30)]
    with override_settings(WS4REDIS_HISTORY=HISTORY):
        facility = miss_while_down(history_site, page, publish, missed)
        wait_js(page, "c.messages.length >= 31", "main", timeout=40_000)
        publish(facility, "live", broadcast=True)
        wait_js(page, "c.messages.length >= 32", "main")

    record = snapshot(page, "main")
    assert [m.get("text") for m in record["messages"]] == ["before", *missed, "live"]
    assert record["gaps"] == []
    page.evaluate("() => clients.main.client.close()")


def test_a_gap_beyond_the_history_calls_history_gap(history_site, open_page, publish, page_errors):
    page_errors.expect(FAILED_CONNECTION)  # while the server is down
    page = open_harness(open_page(), history_site["server"])
    missed = [f"lost {n}" for n in range(400)]  # the history keeps about 100
    with override_settings(WS4REDIS_HISTORY=HISTORY):
        facility = miss_while_down(history_site, page, publish, missed)
        wait_js(page, "c.gaps.length === 1", "main", timeout=40_000)
        publish(facility, "live", broadcast=True)
        wait_js(page, "c.messages.length > 0 && c.messages.at(-1).text === 'live'", "main")

    record = snapshot(page, "main")
    [tags] = record["gaps"]
    assert len(tags) == 1  # the one channel, by its tag
    texts = [m.get("text") for m in record["messages"]]
    kept = texts[1:-1]
    assert texts[0] == "before" and texts[-1] == "live"
    assert 100 <= len(kept) < 400
    assert kept == missed[-len(kept) :]  # the newest ones, in order, once
    page.evaluate("() => clients.main.client.close()")

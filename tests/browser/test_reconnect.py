"""How ``ws4redis.js`` keeps its connection: reconnects, backoff, heartbeats, ``close()``.

The client runs in headless Chromium.  Servers are real: the example site under uWSGI (one of
them stopped and started again on the same port), a port nothing listens on, and, for the close
code 1001 that ws4redis sends only when it goes away, a small RFC 6455 peer (``peer.py``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import (
    FAILED_CONNECTION,
    HEARTBEAT,
    TIMEOUT_MS,
    Frames,
    client_call,
    open_harness,
    snapshot,
    track,
    wait_js,
    ws_uri,
)
from tests.browser.peer import ClosingPeer
from tests.conftest import WS_SERVER_ARGS, server_env
from tools.servers import UwsgiServer, free_port

MISSED_HEARTBEATS_CODE = 4000


def new_facility() -> str:
    return f"reconnect-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def restartable_site(redis_server, example_db) -> Iterator[dict[str, Any]]:  # noqa: ANN001
    """The example under a uWSGI of its own, which the test may stop and start again.

    Yields ``{"server": UwsgiServer, "env": its environment}``; a test that starts a new
    process puts it under ``"server"``, so that it is the one stopped at the end.
    """
    env = server_env(redis_server, example_db)
    holder = {"server": UwsgiServer(WS_SERVER_ARGS, env).start(), "env": env}
    yield holder
    holder["server"].stop()


@pytest.fixture(scope="module")
def silent_site(start_uwsgi: Callable[..., UwsgiServer]) -> UwsgiServer:
    """The example whose server (practically) never sends a heartbeat."""
    return start_uwsgi("tests.sites.silent_heartbeat")


def test_chat_pages_reconnect_after_the_server_restarts(restartable_site, open_page, page_errors):
    # while the server is down, Chromium logs each failed attempt
    page_errors.expect(FAILED_CONNECTION)
    server = restartable_site["server"]
    john, mary = (open_page(u, user=u, server=server, path="/chat/") for u in ("john", "mary"))
    for page in (john, mary):
        expect(page.locator("#ws-state")).to_have_attribute("data-state", "connected")

    send(john, "before the restart")
    expect(message(mary, "before the restart")).to_be_visible()

    server.stop()
    for page in (john, mary):
        expect(page.locator("#ws-state")).to_have_attribute("data-state", "reconnecting")
    new_server = UwsgiServer(WS_SERVER_ARGS, restartable_site["env"], port=server.port)
    restartable_site["server"] = new_server.start()
    # the default backoff: each wait is below 1, 2, 4, 8 … s; uWSGI needs a second or two
    for page in (john, mary):
        expect(page.locator("#ws-state")).to_have_attribute(
            "data-state", "connected", timeout=40_000
        )

    send(mary, "after the restart")
    expect(message(john, "after the restart")).to_be_visible()
    mary.check("#via-websocket")
    send(mary, "through the new WebSocket")
    expect(message(john, "through the new WebSocket")).to_be_visible()


def test_missed_heartbeats_close_and_reopen_the_connection(silent_site, open_page, publish):
    page = open_harness(open_page(), silent_site)
    frames = Frames(page)
    facility = new_facility()
    track(
        page,
        "main",
        {
            "uri": ws_uri(silent_site, facility, "subscribe-broadcast"),
            "heartbeat_msg": HEARTBEAT,
            "heartbeat_interval": 200,
            "reconnect_base": 100,
            "reconnect_max": 100,
        },
    )
    # given up after 3 silent intervals, reopened, given up again, reopened again
    wait_js(page, "c.connected >= 3", "main")
    state = snapshot(page, "main")
    for close in state["closes"][:2]:
        assert (close["code"], close["reason"]) == (MISSED_HEARTBEATS_CODE, "missed 3 heartbeats")
    # reset after each successful open: every retry waits less than reconnect_base
    assert all(0 <= close["retry_in"] < 100 for close in state["closes"])

    # on the wire: two heartbeats sent on the first connection, none from the server, and the
    # connection closed by the client
    first = frames.sockets[0]
    frames.wait_until(lambda: first["closed"], "the first WebSocket to close")
    assert first["sent"] == [HEARTBEAT, HEARTBEAT]
    assert first["received"] == []

    # messages still flow (kept in Redis for a minute, so whichever connection is up gets it),
    # and the heartbeats never were messages
    publish(facility, "still here", broadcast=True, expire=60)
    wait_js(page, "c.messages.length >= 1", "main")
    client_call(page, "main", "close")
    wait_js(page, "c.is_closed", "main")
    messages = snapshot(page, "main")["messages"]
    assert {m["text"] for m in messages} == {"still here"}, messages


def test_close_stops_reconnecting_for_good(site, open_page, page_errors):
    page_errors.expect(FAILED_CONNECTION)
    page = open_harness(open_page(), site)
    fast = {"reconnect_base": 30, "reconnect_max": 30, "heartbeat_msg": HEARTBEAT}
    peer = ClosingPeer(close_code=1001).start()
    try:
        # "clock" is closed by its server right after each handshake and reconnects with the
        # same timing: it shows how many attempts the closed clients would have made by now
        track(page, "clock", {"uri": f"ws://127.0.0.1:{peer.port}/ws/clock", **fast})
        track(page, "open", {"uri": ws_uri(site, new_facility(), "subscribe-broadcast"), **fast})
        dead = ws_uri(free_port(), "nobody", "subscribe-broadcast")
        track(page, "retrying", {"uri": dead, **fast})
        wait_js(page, "c.connected === 1", "open")
        wait_js(page, "c.connecting >= 3", "retrying")

        client_call(page, "open", "close", 4001, "done here")
        client_call(page, "retrying", "close")
        client_call(page, "retrying", "close")  # twice is harmless
        wait_js(page, "c.is_closed", "open")
        wait_js(page, "c.is_closed", "retrying")
        attempts = snapshot(page, "retrying")["connecting"]
        clock = snapshot(page, "clock")["connecting"]
        wait_js(page, f"c.connecting >= {clock + 10}", "clock")
        client_call(page, "clock", "close")
    finally:
        peer.stop()

    opened, retrying = snapshot(page, "open"), snapshot(page, "retrying")
    assert (opened["connecting"], opened["connected"]) == (1, 1)
    assert [(c["code"], c["retry_in"]) for c in opened["closes"]] == [(4001, None)]
    assert opened["is_closed"] and retrying["is_closed"]
    assert (retrying["connecting"], retrying["connected"]) == (attempts, 0)
    # retries were planned only before close(); an attempt under way then ends without one
    assert all(close["retry_in"] is not None for close in retrying["closes"][:-1])


def test_backoff_grows_with_full_jitter_up_to_the_cap(open_page, site, page_errors):
    page_errors.expect(FAILED_CONNECTION)
    page = open_harness(open_page(), site)
    dead = ws_uri(free_port(), "nobody", "subscribe-broadcast")
    track(page, "fast", {"uri": dead, "reconnect_base": 10, "reconnect_max": 80})
    track(page, "defaults", {"uri": dead})
    # (Chromium itself slows down a page's failing attempts after about ten)
    wait_js(page, "c.closes.length >= 8", "fast")
    wait_js(page, "c.closes.length >= 1", "defaults")
    client_call(page, "fast", "close")
    client_call(page, "defaults", "close")

    delays = [close["retry_in"] for close in snapshot(page, "fast")["closes"][:8]]
    ceilings = [min(80, 10 * 2**n) for n in range(8)]  # 10, 20, 40, 80, 80, …
    assert all(0 <= delay < ceiling for delay, ceiling in zip(delays, ceilings, strict=True)), (
        delays
    )
    assert len(set(delays[3:])) > 1, delays  # random, not a fixed schedule
    # the documented default: the first retry comes within a second
    first = snapshot(page, "defaults")["closes"][0]
    assert first["code"] == 1006 and 0 <= first["retry_in"] < 1000


def test_server_going_away_with_1001_is_followed_by_a_reconnect(site, open_page, page_errors):
    page_errors.expect(FAILED_CONNECTION)
    peer = ClosingPeer(close_code=1001, reason="going away", refuse_first=3).start()
    try:
        page = open_harness(open_page(), site)
        track(
            page,
            "main",
            {"uri": f"ws://127.0.0.1:{peer.port}/ws/x", "reconnect_base": 40, "reconnect_max": 40},
        )
        # three failed attempts, then an open connection that the server closes with 1001,
        # then another attempt
        wait_js(page, "c.connected >= 2", "main")
        state = snapshot(page, "main")
        assert [close["code"] for close in state["closes"][:4]] == [1006, 1006, 1006, 1001]
        assert state["closes"][3]["reason"] == "going away"
        assert all(0 <= close["retry_in"] < 40 for close in state["closes"])
        client_call(page, "main", "close")
        wait_js(page, "c.is_closed", "main")
        assert peer.handshakes >= 2
    finally:
        peer.stop()


# -- helpers ----------------------------------------------------------------------------------


def send(page, text: str) -> None:  # noqa: ANN001
    page.fill("#text", text)
    page.press("#text", "Enter")
    expect(page.locator("#text")).to_have_value("", timeout=TIMEOUT_MS)


def message(page, text: str):  # noqa: ANN001, ANN201
    return page.locator("#messages li.message", has_text=text)

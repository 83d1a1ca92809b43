"""The JavaScript client ``ws4redis.js`` in headless Chromium, against the real example site.

Each test loads the client from the site's static files into a blank page of the site's origin
(with jQuery 3, jQuery 4 or no jQuery at all) and drives it through ``harness.js``, whose
callbacks record what the client reports.  Messages come from the test through Redis with
``RedisPublisher``, as from a Django view; heartbeats are observed on the wire through
Playwright's view of the page's WebSocket frames.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

import pytest

from tests.browser.conftest import (
    FAILED_CONNECTION,
    HEARTBEAT,
    Frames,
    client_call,
    open_harness,
    pump_until,
    snapshot,
    track,
    wait_js,
    ws_uri,
)
from tools.servers import UwsgiServer, free_port

WS_LOG = re.compile(r"^ws4redis: ")


@pytest.fixture(scope="module")
def heartbeat_site(start_uwsgi: Callable[..., UwsgiServer]) -> UwsgiServer:
    """The example sending a heartbeat after each half second of idleness."""
    return start_uwsgi("tests.sites.fast_heartbeat")


def new_facility() -> str:
    return f"client-{uuid.uuid4().hex[:10]}"


@pytest.mark.parametrize(
    ("jquery", "how"),
    [(None, "call"), (None, "new"), ("3", "jquery-ready"), ("4", "jquery-ready")],
    ids=["no-jquery", "no-jquery-new", "jquery-3", "jquery-4"],
)
def test_client_api_with_and_without_jquery(heartbeat_site, open_page, publish, jquery, how):
    page = open_harness(open_page(), heartbeat_site, jquery)
    assert page.evaluate("typeof window.jQuery") == ("undefined" if jquery is None else "function")
    if jquery:
        assert page.evaluate("jQuery.fn.jquery").startswith(jquery + ".")
    frames = Frames(page)
    facility = new_facility()
    track(
        page,
        "main",
        {
            "uri": ws_uri(heartbeat_site, facility, "subscribe-broadcast&publish-broadcast&echo"),
            "heartbeat_msg": HEARTBEAT,
            "heartbeat_interval": 500,
            # the server beats every 0.5 s: 8 × 0.5 s of silence leaves room for a busy machine
            "max_missed_heartbeats": 8,
        },
        how,
    )
    wait_js(page, "c.connected === 1", "main")
    state = snapshot(page, "main")
    assert state["connecting"] == 1
    assert state["this_is_client"] == [True, True]
    assert state["is_instance"] is True
    assert (state["state"], state["is_connected"]) == (1, True)
    assert not (state["is_connecting"] or state["is_closing"] or state["is_closed"])

    # heartbeats go both ways on the wire, but never reach receive_message
    frames.wait_until(
        lambda: (
            frames.sockets[0]["received"].count(HEARTBEAT) >= 3
            and frames.sockets[0]["sent"].count(HEARTBEAT) >= 2
        ),
        "3 heartbeats from the server and 2 from the client",
    )
    assert snapshot(page, "main")["messages"] == []

    publish(facility, "from Django", broadcast=True)
    wait_js(page, "c.messages.length === 1", "main")
    assert client_call(page, "main", "send_message", "from the browser") is True
    wait_js(page, "c.messages.length === 2", "main")
    state = snapshot(page, "main")
    assert state["messages"] == [
        {"type": "text", "text": "from Django"},
        {"type": "text", "text": "from the browser"},
    ]

    # methods are bound: close works as an event handler (and ignores the event)
    page.evaluate("() => { const close = clients.main.client.close; close(new Event('click')); }")
    wait_js(page, "c.closes.length === 1", "main")
    state = snapshot(page, "main")
    assert state["closes"] == [{"code": 1000, "reason": "", "retry_in": None}]
    assert (state["state"], state["is_closed"], state["is_connected"]) == (3, True, False)
    assert client_call(page, "main", "send_message", "too late") is False
    assert (state["connecting"], state["connected"]) == (1, 1)


@pytest.mark.parametrize("binary_type", ["arraybuffer", "blob"])
def test_binary_messages_arrive_as_binary(site, open_page, publish, binary_type):
    page = open_harness(open_page(), site)
    facility = new_facility()
    options = {
        "uri": ws_uri(site, facility, "subscribe-broadcast&publish-broadcast&echo"),
        "heartbeat_msg": HEARTBEAT,
    }
    if binary_type == "blob":
        options["binary_type"] = "blob"
    track(page, "main", options)
    wait_js(page, "c.connected === 1", "main")

    publish(facility, b"\x00\x80\xffnot utf-8", broadcast=True)
    assert page.evaluate("() => clients.main.client.send_message(new Uint8Array([1, 2, 254, 255]))")
    assert page.evaluate("() => clients.main.client.send_message('text stays text')")
    wait_js(page, "c.messages.length === 3", "main")
    messages = snapshot(page, "main")["messages"]
    if binary_type == "arraybuffer":  # the default
        assert messages == [
            {"type": "arraybuffer", "bytes": list(b"\x00\x80\xffnot utf-8")},
            {"type": "arraybuffer", "bytes": [1, 2, 254, 255]},
            {"type": "text", "text": "text stays text"},
        ]
    else:
        assert messages == [
            {"type": "blob", "size": 12},
            {"type": "blob", "size": 4},
            {"type": "text", "text": "text stays text"},
        ]
    client_call(page, "main", "close")


def test_invalid_options_throw(site, open_page):
    page = open_harness(open_page(), site)
    errors = page.evaluate(
        """() => [
            {},
            {uri: ""},
            {uri: "ws://127.0.0.1:1/ws/x", heartbeat_interval: 0},
            {uri: "ws://127.0.0.1:1/ws/x", reconnect_base: 2000, reconnect_max: 1000},
            {uri: "ws://127.0.0.1:1/ws/x", max_missed_heartbeats: 1.5},
            {uri: "ws://127.0.0.1:1/ws/x", binary_type: "text"},
            {uri: "ws://127.0.0.1:1/ws/x", receive_message: "not a function"},
            {uri: "ftp://127.0.0.1/ws/x"},
        ].map(options => {
            try { WS4Redis(options); return null; } catch (e) { return e.name; }
        })"""
    )
    assert errors == ["TypeError"] * 7 + ["SyntaxError"]


def test_one_console_line_per_state_change_and_a_way_to_silence_it(
    site, open_page, page_errors, publish
):
    page_errors.expect(FAILED_CONNECTION)
    noisy = open_harness(open_page("noisy"), site)
    console: list[str] = []
    noisy.on("console", lambda message: console.append(message.text))
    dead = ws_uri(free_port(), "nobody", "subscribe-broadcast")
    fast = {"reconnect_base": 20, "reconnect_max": 40}
    facility = new_facility()
    track(
        noisy,
        "up",
        {"uri": ws_uri(site, facility, "subscribe-broadcast"), "heartbeat_msg": HEARTBEAT},
    )
    track(noisy, "down", {"uri": dead, **fast})
    wait_js(noisy, "c.connected === 1", "up")
    wait_js(noisy, "c.connecting >= 3", "down")
    publish(facility, "a message is not a state change", broadcast=True)
    wait_js(noisy, "c.messages.length === 1", "up")
    client_call(noisy, "up", "close")
    client_call(noisy, "down", "close")
    wait_js(noisy, "c.is_closed && c.closes.length === 1", "up")
    wait_js(noisy, "c.is_closed", "down")
    down = snapshot(noisy, "down")
    retries = len([close for close in down["closes"] if close["retry_in"] is not None])
    # "up": connecting, connected, closed; "down": connecting per attempt, disconnected per
    # retry, closed
    expected = 3 + down["connecting"] + retries + 1
    pump_until(
        noisy,
        lambda: len([line for line in console if WS_LOG.match(line)]) >= expected,
        f"{expected} log lines",
    )
    lines = [line for line in console if WS_LOG.match(line)]
    assert len(lines) == expected, lines
    assert snapshot(noisy, "up")["closes"] == [{"code": 1000, "reason": "", "retry_in": None}]
    assert lines.count("ws4redis: closed") == 2
    assert f"ws4redis: connecting to {dead}" in lines

    quiet = open_harness(open_page("quiet"), site)
    quiet_console: list[str] = []
    quiet.on("console", lambda message: quiet_console.append(message.text))
    track(quiet, "off", {"uri": dead, "log": False, **fast})
    track(quiet, "redirected", {"uri": dead, "log": "record", **fast})
    wait_js(quiet, "c.connecting >= 3", "off")
    wait_js(quiet, "c.connecting >= 3", "redirected")
    client_call(quiet, "off", "close")
    client_call(quiet, "redirected", "close")
    wait_js(quiet, "c.is_closed", "off")
    wait_js(quiet, "c.is_closed", "redirected")
    assert not [line for line in quiet_console if WS_LOG.match(line)]
    log = snapshot(quiet, "redirected")["log"]
    assert log[0] == f"info connecting to {dead}"
    assert log[1].startswith("warn disconnected (1006), reconnecting in ")
    assert log[-1] == "info closed"

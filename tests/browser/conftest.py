"""Fixtures of the browser tests: headless Chromium driven by Playwright, the example site.

Chromium is Debian's ``chromium`` package, launched through Playwright's ``executable_path``
(no browser is downloaded).  Each test opens its pages in fresh browser contexts (separate
cookie jars, so separate users) with :func:`open_page`; every page records uncaught exceptions
and ``console.error`` lines, and a test fails at teardown when any was not expected.

Client tests run ``ws4redis.js`` in a blank page of the site's origin (:func:`open_harness`),
loaded from the site's static files like any page would, with ``harness.js`` recording what
its callbacks see.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, WebSocket, expect, sync_playwright

from tools.servers import ROOT, UwsgiServer

HERE = Path(__file__).resolve().parent
VENDOR = HERE / "vendor"
JQUERY = {"3": VENDOR / "jquery-3.8.0.min.js", "4": VENDOR / "jquery-4.0.0.min.js"}
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Milliseconds any single browser wait may take (the machine may be busy: be generous).
TIMEOUT_MS = 15_000
expect.set_options(timeout=TIMEOUT_MS)
HEARTBEAT = "--heartbeat--"
PREFIX = "ws"  # the example's WS4REDIS_PREFIX
#: Chromium's own console line for a WebSocket that could not connect (expected in some tests).
FAILED_CONNECTION = re.compile(r"^WebSocket connection to 'ws://[^']+' failed")


def chromium_path() -> str:
    """Debian's Chromium, or ``$WS4REDIS_CHROMIUM``."""
    path = os.environ.get("WS4REDIS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        raise RuntimeError("Chromium not found: apt-get install chromium (./dev.sh setup does)")
    return path


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the whole session."""
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def site(start_uwsgi: Callable[..., UwsgiServer]) -> UwsgiServer:
    """The example project under standalone uWSGI, shared by the tests that do not stop it."""
    return start_uwsgi()


def base_url(server: UwsgiServer) -> str:
    return f"http://127.0.0.1:{server.port}"


class PageErrors:
    """JavaScript errors seen in the pages of one test, and the patterns it expects."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.expected: list[re.Pattern[str]] = []

    def expect(self, pattern: re.Pattern[str]) -> None:
        """Do not fail the test for errors matching ``pattern``."""
        self.expected.append(pattern)

    def watch(self, page: Page, name: str) -> None:
        page.on("pageerror", lambda error: self.seen.append(f"{name}: uncaught {error}"))
        page.on(
            "console",
            lambda message: (
                self.seen.append(f"{name}: console.error {message.text}")
                if message.type == "error"
                else None
            ),
        )

    def unexpected(self) -> list[str]:
        return [
            line
            for line in self.seen
            if not any(p.search(line.split(" ", 2)[-1]) for p in self.expected)
        ]


@pytest.fixture
def page_errors() -> PageErrors:
    return PageErrors()


@pytest.fixture(scope="session")
def saved_logins() -> dict[str, Any]:
    """Cookies of the users once logged in through the login page, by username.

    Logging in costs a second or more of the server's CPU (the fixture users' password hashes
    are deliberately slow), so later contexts start with the saved session cookie; sessions
    live in the session-wide Redis, so they stay valid on every server of the test session.
    """
    return {}


@pytest.fixture
def open_page(
    browser: Browser, page_errors: PageErrors, saved_logins: dict[str, Any]
) -> Iterator[Callable[..., Page]]:
    """``open_page(name, user=None, server=None, path=None)``: a page in a new browser context.

    With ``user``, the page is logged in as that user (through the login page the first time);
    with ``server`` and ``path``, it is opened there.  No JavaScript errors are allowed.
    """
    contexts = []

    def open_(
        name: str = "page",
        *,
        user: str | None = None,
        server: UwsgiServer | None = None,
        path: str = "/",
    ) -> Page:
        context = browser.new_context(
            viewport={"width": 1000, "height": 720},
            locale="en-GB",
            timezone_id="UTC",
            storage_state=saved_logins.get(user) if user else None,
        )
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        page_errors.watch(page, name)
        if server is not None:
            page.goto(base_url(server) + path)
            if user is not None and logged_in_as(page) != user:
                log_in(page, server, user, next_path=path)
                saved_logins[user] = context.storage_state()
        return page

    yield open_
    for context in contexts:
        context.close()
    assert not page_errors.unexpected(), "JavaScript errors:\n" + "\n".join(
        page_errors.unexpected()
    )


def logged_in_as(page: Page) -> str | None:
    """The user named in the page's top bar, or ``None`` on an anonymous or login page."""
    whoami = page.locator("#whoami")
    return whoami.inner_text() if whoami.count() else None


def log_in(page: Page, server: UwsgiServer, username: str, *, next_path: str = "/") -> None:
    """Log in through the example's login page, then land on ``next_path``."""
    page.goto(f"{base_url(server)}/login/?next={next_path}")
    page.fill("#id_username", username)
    page.fill("#id_password", "secret")
    page.click("form.login button[type=submit]")
    page.wait_for_url(f"{base_url(server)}{next_path}")


def log_in_through_admin(
    page: Page, server: UwsgiServer, username: str, *, next_path: str = "/"
) -> None:
    """Log in through Django's admin login page, then land on ``next_path``."""
    page.goto(f"{base_url(server)}/admin/login/?next={next_path}")
    page.fill("#id_username", username)
    page.fill("#id_password", "secret")
    page.click("#login-form input[type=submit]")
    page.wait_for_url(f"{base_url(server)}{next_path}")


# -- the client in a blank page ---------------------------------------------------------------


def open_harness(page: Page, server: UwsgiServer, jquery: str | None = None) -> Page:
    """Turn ``page`` into a blank page of ``server``'s origin with ws4redis.js loaded.

    ``jquery`` ("3" or "4") loads that jQuery first, from ``vendor/``.
    """
    page.goto(base_url(server) + "/")
    page.set_content("<!DOCTYPE html><html><head><title>ws4redis.js</title></head><body></body>")
    if jquery is not None:
        page.add_script_tag(path=JQUERY[jquery])
    page.add_script_tag(url="/static/js/ws4redis.js")
    page.add_script_tag(path=HERE / "harness.js")
    return page


def ws_uri(server: UwsgiServer | int, facility: str, flags: str) -> str:
    port = server if isinstance(server, int) else server.port
    return f"ws://127.0.0.1:{port}/ws/{facility}?{flags}"


def track(page: Page, name: str, options: dict[str, Any], how: str = "call") -> None:
    """Create the client ``name`` in the harness page (see ``harness.js``)."""
    page.evaluate("([name, options, how]) => track(name, options, how)", [name, options, how])


def snapshot(page: Page, name: str) -> dict[str, Any]:
    """What the callbacks of client ``name`` recorded, and its state."""
    return page.evaluate("name => snapshot(name)", name)


def wait_js(page: Page, predicate: str, name: str, timeout: float = TIMEOUT_MS) -> None:
    """Wait until ``predicate`` (JavaScript of ``c``, the record of client ``name``) holds."""
    page.wait_for_function(
        f"name => {{ const c = snapshot(name); return {predicate}; }}", arg=name, timeout=timeout
    )


def client_call(page: Page, name: str, method: str, *args: Any) -> Any:
    """Call a method of client ``name``; returns its result."""
    return page.evaluate(
        "([name, method, args]) => clients[name].client[method](...args)",
        [name, method, list(args)],
    )


class Frames:
    """The WebSocket frames a page sent and received, as Chromium's network layer saw them."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.sockets: list[dict[str, Any]] = []
        page.on("websocket", self._opened)

    def _opened(self, socket: WebSocket) -> None:
        record: dict[str, Any] = {"url": socket.url, "sent": [], "received": [], "closed": False}
        self.sockets.append(record)
        socket.on("framesent", lambda payload: record["sent"].append(payload))
        socket.on("framereceived", lambda payload: record["received"].append(payload))
        socket.on("close", lambda _: record.update(closed=True))

    def wait_until(self, condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
        """Let Playwright deliver network events until ``condition`` holds."""
        pump_until(self.page, condition, what, timeout)


def pump_until(page: Page, condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    """Wait until ``condition`` holds, letting Playwright deliver the page's events meanwhile.

    Events (console lines, frames) reach Python only while a Playwright call runs, hence the
    short ``wait_for_timeout`` between two checks; ``AssertionError`` after ``timeout`` s.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        page.wait_for_timeout(20)


@pytest.fixture
def publish(ws_settings) -> Callable[..., None]:  # noqa: ANN001
    """``publish(facility, message, expire=None, **audience)``, as a Django view would.

    Messages are not persisted unless ``expire`` (seconds) says so.
    """
    from ws4redis.publisher import RedisPublisher

    ws_settings.WS4REDIS_PREFIX = PREFIX
    ws_settings.WS4REDIS_EXPIRE = 0

    def publish_(
        facility: str, message: str | bytes, expire: int | None = None, **audience: Any
    ) -> None:
        RedisPublisher(facility=facility, **audience).publish_message(message, expire=expire)

    return publish_

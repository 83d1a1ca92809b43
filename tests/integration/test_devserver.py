"""Development mode: WebSockets under ``manage.py runserver``, beyond the shared suites.

``test_end_to_end.py`` and ``test_conformance.py`` already run their cases against the
development server.  This module covers what only development mode has: plain Django pages and
``runserver``'s static files served beside open WebSockets, one thread per WebSocket in the
server process, heartbeats (the original ws4redis sent none in development mode), and the
autoreloader, which restarts the server when a module changes and must first close every open
WebSocket with 1001 (going away) so that clients reconnect to the new process.

Every server here is a real ``manage.py runserver`` of the example project
(``WSGI_APPLICATION = "ws4redis.django_runserver.application"``); nothing it logs may be a
traceback.
"""

from __future__ import annotations

import http.client
import os
import time
from collections.abc import Callable
from pathlib import Path

import django
import pytest

from tests.conftest import login, server_env
from tests.integration.test_conformance import (
    CLOSE,
    ECHO,
    HEARTBEAT,
    HOST,
    PING,
    SUBSCRIBE,
    TEXT,
    RawClient,
    unique,
)
from tools.devserver import DevServer
from tools.servers import ROOT, RedisServer, UwsgiServer, children_of, wait_until

TIMEOUT = 10.0
RELOAD_MODULE = ROOT / "tests" / "sites" / "dev_reload.py"
ADMIN_CSS = Path(django.__file__).parent / "contrib" / "admin" / "static" / "admin" / "css"


@pytest.fixture(scope="module")
def dev_server(start_uwsgi: Callable[..., UwsgiServer]) -> UwsgiServer:
    """``manage.py runserver --noreload`` of the example project."""
    return start_uwsgi(kind="runserver")


def http_get(
    port: int, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict, bytes]:
    """``GET path`` on a connection of its own: status, headers (lower-case names), body."""
    conn = http.client.HTTPConnection(HOST, port, timeout=TIMEOUT)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        conn.close()


def assert_echo(client: RawClient, message: bytes) -> None:
    """``client`` (connected with ``ECHO``) gets ``message`` back through Redis."""
    client.send(TEXT, message)
    assert client.recv_data() == (TEXT, message)


def assert_no_traceback(server: UwsgiServer) -> None:
    log = server.log()
    assert "Traceback" not in log, log


def thread_count(pid: int) -> int:
    """The number of threads of process ``pid``, from ``/proc/PID/status``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError(f"no Threads line for pid {pid}")


def close_cleanly(client: RawClient) -> None:
    """The client's close handshake: close 1000, the server's 1000, the end of TCP."""
    with client:
        client.send(CLOSE, (1000).to_bytes(2, "big"))
        assert client.recv_close() == 1000
        client.expect_eof()


# --------------------------------------------------------------------------------------------
# Plain Django beside WebSockets


def test_pages_and_static_files_are_served_beside_websockets(dev_server: UwsgiServer) -> None:
    with RawClient(dev_server.port, unique("pages"), ECHO) as client:
        assert_echo(client, b"before the pages")

        status, headers, body = http_get(dev_server.port, "/login/")
        assert status == 200
        assert headers["content-type"].startswith("text/html")
        assert b'name="csrfmiddlewaretoken"' in body

        status, headers, body = http_get(dev_server.port, "/static/admin/css/base.css")
        assert status == 200
        assert headers["content-type"].startswith("text/css")
        assert body == (ADMIN_CSS / "base.css").read_bytes()

        status, _, _ = http_get(dev_server.port, "/static/admin/css/no-such-file.css")
        assert status == 404

        # A whole login (a form POST with its CSRF token) works while the WebSocket is open.
        assert login(dev_server.port, "john").startswith("sessionid=")

        assert_echo(client, b"after the pages")
    assert_no_traceback(dev_server)


# --------------------------------------------------------------------------------------------
# One thread per WebSocket


def test_every_websocket_has_a_thread_of_its_own(dev_server: UwsgiServer) -> None:
    pid = dev_server.process.pid
    count = 5
    # The first WebSocket also starts the process's Redis pub/sub reader: open one beforehand.
    with RawClient(dev_server.port, unique("threads"), ECHO) as warm_up:
        assert_echo(warm_up, b"warm-up")
        baseline = thread_count(pid)
        clients = [RawClient(dev_server.port, unique("threads"), ECHO) for _ in range(count)]
        try:
            for client in clients:  # every one of them is served at the same time
                client.send(PING, b"served")
            for client in clients:
                client.expect_pong(b"served")
            wait_until(
                lambda: thread_count(pid) >= baseline + count,
                TIMEOUT,
                f"{count} more threads than {baseline}",
            )
            # At least one thread per WebSocket (its request's, which reads), at most two (and
            # the one that writes to the client).
            assert thread_count(pid) <= baseline + 2 * count
        finally:
            for client in clients:
                close_cleanly(client)
        wait_until(
            lambda: thread_count(pid) <= baseline,
            TIMEOUT,
            f"the threads of the closed WebSockets to end (back to {baseline})",
        )
        assert_echo(warm_up, b"still served")
    assert_no_traceback(dev_server)


# --------------------------------------------------------------------------------------------
# Heartbeats


def test_idle_websocket_receives_heartbeats(start_uwsgi: Callable[..., UwsgiServer]) -> None:
    server = start_uwsgi("tests.sites.fast_heartbeat", kind="runserver")  # every 0.5 s
    with RawClient(server.port, unique("heartbeat"), SUBSCRIBE) as client:
        frames = [client.recv_frame(timeout=3.0)]
        started = time.monotonic()
        frames += [client.recv_frame(timeout=3.0) for _ in range(3)]
        elapsed = time.monotonic() - started
        assert [(f.opcode, f.payload) for f in frames] == [(TEXT, HEARTBEAT)] * 4
        # Three more intervals of idleness, 0.5 s each (less a little jitter): never a burst.
        assert 1.2 <= elapsed < 3 * 3.0, elapsed
        client.send(PING, b"after the heartbeats")
        client.expect_pong(b"after the heartbeats")
    assert_no_traceback(server)


# --------------------------------------------------------------------------------------------
# Auto-reload


def connect_when_ready(port: int, facility: str, timeout: float) -> RawClient:
    """A WebSocket on ``port`` as soon as a server there accepts one."""
    clients: list[RawClient] = []

    def connected() -> bool:
        try:
            clients.append(RawClient(port, facility, ECHO))
        except (OSError, ConnectionError, AssertionError):  # not up yet, or 503: going away
            return False
        return True

    wait_until(connected, timeout, f"a WebSocket on port {port}")
    return clients[0]


def touch_until_closed(client: RawClient, deadline: float) -> int:
    """Touch the settings module (content unchanged) until ``client`` gets a close frame.

    The autoreloader compares modification times once a second against the ones it saw on
    its first scan; touching again covers a first touch that came before that scan.
    """
    while True:
        now = time.time()
        os.utime(RELOAD_MODULE, (now, now))
        try:
            return client.expect_close(timeout=min(2.5, deadline - time.monotonic()))
        except TimeoutError:
            if time.monotonic() >= deadline:
                raise


def test_autoreload_closes_websockets_with_1001(
    redis_server: RedisServer, example_db: Path
) -> None:
    env = server_env(redis_server, example_db, "tests.sites.dev_reload")
    server = DevServer(env, reload=True).start()
    clients: list[RawClient] = []
    try:
        wait_until(lambda: children_of(server.process.pid), TIMEOUT, "the autoreloader's child")
        [first_child] = children_of(server.process.pid)
        clients = [RawClient(server.port, unique("reload"), ECHO) for _ in range(3)]
        for i, client in enumerate(clients):
            assert_echo(client, b"before the reload %d" % i)

        deadline = time.monotonic() + 10.0
        codes = [touch_until_closed(clients[0], deadline)]
        codes += [
            c.expect_close(timeout=max(deadline - time.monotonic(), 0.1)) for c in clients[1:]
        ]
        assert codes == [1001, 1001, 1001]

        # The autoreloader starts a new server process on the same port: new WebSockets work.
        fresh = connect_when_ready(server.port, unique("reloaded"), 30.0)
        with fresh:
            assert_echo(fresh, b"after the reload")
        assert server.process.poll() is None  # the autoreloader itself
        [second_child] = children_of(server.process.pid)
        assert second_child != first_child
        log = server.log()
        assert f"{RELOAD_MODULE} changed, reloading." in log, log
        assert "Traceback" not in log, log
    finally:
        for client in clients:
            client.sock.close()
        server.stop()

"""Metrics end to end: real WebSocket servers report, ``manage.py ws4redis_stats`` and the
Prometheus view read the reports back.

The servers run the example with ``tests.sites.metrics``: reports every 0.5 s, under a prefix
of their own, and the view at ``/ws4redis/metrics``.  The command runs as a subprocess with the
same settings, exactly as an operator would run it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import websocket
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import login, server_env
from tests.integration.test_end_to_end import exchange, handshake_request, poll, receive_text
from tools.servers import EXAMPLES, RedisServer, UwsgiServer, wait_until
from ws4redis.metrics import Reporter, read_snapshots, stats_key
from ws4redis.runtime import thread_runtime

SITE = "tests.sites.metrics"
PREFIX = "metrics"
TOKEN = "metrics-test-token"
CLIENTS = 10
TIMEOUT = 10.0


@pytest.fixture(scope="module", params=["uwsgi", "runserver"])
def server(request: pytest.FixtureRequest, start_uwsgi: Callable[..., UwsgiServer]) -> UwsgiServer:
    """The example with metrics, under uWSGI + gevent and under ``manage.py runserver``."""
    return start_uwsgi(SITE, kind=request.param)


@pytest.fixture(scope="module")
def stats(redis_server: RedisServer, example_db: Path) -> Callable[..., str]:
    """Run ``manage.py ws4redis_stats`` with the server's settings; returns its output."""
    env = {**os.environ, **server_env(redis_server, example_db, SITE)}

    def run(*args: str) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", "ws4redis_stats", *args],
            cwd=EXAMPLES,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    return run


def stats_json(stats: Callable[..., str]) -> dict[str, Any]:
    """The ``--json`` output, which must be exactly one JSON object."""
    return json.loads(stats("--json"))


def wait_for_total(
    stats: Callable[..., str], check: Callable[[dict[str, Any]], bool], what: str
) -> dict[str, Any]:
    """Poll the command until ``check(report["total"])`` holds; return the whole report."""

    def report_if_checked() -> dict[str, Any] | None:
        report = stats_json(stats)
        return report if check(report["total"]) else None

    return poll(report_if_checked, TIMEOUT, what)  # type: ignore[return-value]


def connect(server: UwsgiServer, facility: str, query: str) -> websocket.WebSocket:
    return websocket.create_connection(
        f"ws://127.0.0.1:{server.port}/ws/{facility}?{query}", timeout=TIMEOUT
    )


def test_connections_and_messages_are_counted(server, stats, redis_server) -> None:
    facility = f"metrics-{uuid.uuid4().hex[:8]}"
    query = "subscribe-broadcast&publish-broadcast"
    clients = [connect(server, facility, query) for _ in range(CLIENTS)]
    try:
        report = wait_for_total(
            stats, lambda total: total["connections"] >= CLIENTS, f"{CLIENTS} connections"
        )
        assert report["total"]["workers"] == len(report["workers"]) >= 1
        assert {"id", "host", "pid", "connections"} <= set(report["workers"][0])

        clients[0].send("hello")  # to the nine others (no echo)
        for ws in clients[1:]:
            assert receive_text(ws) == "hello"
        redis_server.client().publish(f"{PREFIX}:broadcast:{facility}", "from redis")
        for ws in clients:
            assert receive_text(ws) == "from redis"
        wait_for_total(
            stats,
            lambda total: (
                total["messages_in"] >= 1
                and total["messages_out"] >= CLIENTS + 9
                and total["fanout_seconds"]["count"] >= 2
            ),  # the hub fanned out both messages
            "the messages and their fan-out to be counted",
        )
    finally:
        for ws in clients:
            ws.close()
    report = wait_for_total(stats, lambda total: total["connections"] == 0, "0 connections")
    assert report["total"]["handshakes_accepted"] >= CLIENTS
    assert report["total"]["bytes_out"] > 0


def test_refusals_and_limit_closes_are_counted(server, stats) -> None:
    before = stats_json(stats)["total"]
    response = exchange(server.port, handshake_request(server.port, "/ws/x", upgrade=False))
    assert response.status == 400
    ws = connect(server, f"metrics-{uuid.uuid4().hex[:8]}", "publish-broadcast")
    try:
        ws.send("x" * 2000)  # over the site's WS4REDIS_MAX_MESSAGE_SIZE of 1024
        with pytest.raises(websocket.WebSocketConnectionClosedException):
            while True:
                ws.recv()
    finally:
        ws.close()

    def counted(total: dict[str, Any]) -> bool:
        refused = total["handshakes_refused"].get("400", 0)
        closed = total["closed_by_limit"].get("1009", 0)
        return refused > before["handshakes_refused"].get("400", 0) and closed > before[
            "closed_by_limit"
        ].get("1009", 0)

    wait_for_total(stats, counted, "a 400 refusal and a 1009 close")


def test_table_has_a_row_per_worker_and_a_total(server, stats) -> None:
    ws = connect(server, f"metrics-{uuid.uuid4().hex[:8]}", "subscribe-broadcast")
    try:
        wait_for_total(stats, lambda total: total["connections"] >= 1, "a connection")
        table = stats()
    finally:
        ws.close()
    print(f"\n{table}")
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["WORKER", "CONN", "ACCEPTED"]
    assert set(lines[1]) <= {"-", " "}
    workers = stats_json(stats)["workers"]
    assert any(line.startswith(str(workers[0]["id"])) for line in lines[2:-2])
    assert lines[-1].startswith("TOTAL (")


# -- the Prometheus view ----------------------------------------------------------------------


def get_metrics(server: UwsgiServer, headers: dict[str, str]) -> tuple[int, str, str]:
    """``GET /ws4redis/metrics``: status, content type and body."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.port}/ws4redis/metrics", headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-token"}, {"Authorization": TOKEN}],
    ids=["anonymous", "wrong-token", "no-bearer"],
)
def test_metrics_view_refuses_strangers(server, headers) -> None:
    status, _, _ = get_metrics(server, headers)
    assert status == 403


@pytest.mark.parametrize("who", ["token", "staff"])
def test_metrics_view_serves_prometheus_text(server, stats, who) -> None:
    ws = connect(server, f"metrics-{uuid.uuid4().hex[:8]}", "subscribe-broadcast")
    try:
        wait_for_total(stats, lambda total: total["connections"] >= 1, "a connection")
        if who == "token":
            headers = {"Authorization": f"Bearer {TOKEN}"}
        else:
            headers = {"Cookie": login(server.port, "admin")}
        status, content_type, body = get_metrics(server, headers)
    finally:
        ws.close()
    assert status == 200, body
    assert content_type.startswith("text/plain; version=0.0.4")
    families = {family.name: family for family in text_string_to_metric_families(body)}
    assert families["ws4redis_connections"].samples[0].value >= 1
    workers = {s.labels["worker"] for s in families["ws4redis_worker_connections"].samples}
    assert workers
    assert "ws4redis_fanout_seconds" in families
    assert "ws4redis_messages_delivered" in families


# -- the report in Redis ----------------------------------------------------------------------


def test_a_report_expires_unless_renewed_and_goes_when_stopped(redis_server, settings) -> None:
    settings.WS4REDIS_PREFIX = prefix = f"expiry-{uuid.uuid4().hex[:8]}"
    client = redis_server.client()
    reporter = Reporter(thread_runtime(), client)
    reporter.report(interval=0.1)  # lives 0.3 s
    assert [s["id"] for s in read_snapshots(client, prefix)] == [reporter.worker]
    wait_until(lambda: not read_snapshots(client, prefix), TIMEOUT, "the report to expire")

    reporter.report(interval=60)
    key = stats_key(reporter.worker)
    assert key == f"{prefix}:ws4redis:stats:{reporter.worker}"
    assert 170_000 < client.pttl(key) <= 180_000
    reporter.stop()
    assert not client.exists(key)

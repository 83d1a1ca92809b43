"""Graceful reloads and shutdowns under uWSGI: every open WebSocket gets a 1001 close frame.

The WebSocket instance of the two-instance deployment (``wsgi_websocket.py`` under uWSGI with
``--master --gevent 1000 --http-websockets``) holds 100 clients.  A graceful reload (``SIGHUP`` to
the master, or a touch of its ``--touch-reload`` file) must send each of them a close frame
with code 1001 (going away) within 10 s, before its worker exits — a connection that just ends,
or a TCP reset, is a failure — and the reloaded instance must accept the clients again right
away: the master keeps the listening socket across the reload, so a client that reconnects
at once waits in its backlog until the new worker is up.  A shutdown (``SIGINT``) must close
every WebSocket with 1001 too.

What uWSGI 2.0 does (``plugins/gevent/gevent.c``): its gevent loop maps the worker's SIGHUP to a
graceful stop (stop accepting, wait for the *requests* in progress: the WebSockets are not
requests any more once ws4redis has taken them over) and SIGINT/SIGTERM to a brutal one; both
end by calling ``uwsgi.atexit`` in the worker's main greenlet while gevent's hub still runs,
then the worker exits.  The master answers ``SIGHUP`` and ``--touch-reload`` with a graceful
reload of every worker, then re-executes itself and forks new workers.

The clients are the :class:`~tests.integration.test_redis_outage.Crowd` of the outage tests:
raw sockets read by one thread, which answers a close frame at once, as a browser does.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.test_redis_outage import Client, Crowd, worker_pids
from tools.servers import UwsgiServer, raise_fd_limit, wait_until

CLIENTS = 100
PATH = "/ws/reload?subscribe-broadcast"
SERVER_ARGS = ["--master", "--gevent", "1000", "--http-websockets", "--module", "wsgi_websocket"]
#: Every client must have its close frame this many seconds after the reload was asked for.
CLOSE_DEADLINE = 10.0
#: After its close frame a client sees the end of the connection within the server's close
#: timeout (``wsgi_server.CLOSE_TIMEOUT``, 2 s); this leaves room for a loaded machine.
END_DEADLINE = 5.0
#: How long a client that reconnects right after its close frame may wait for its 101: the new
#: worker is up once the master has re-executed itself and loaded the application.
RECONNECT_DEADLINE = 15.0
GOING_AWAY = 1001


def send_sighup(server: UwsgiServer, touch_file: Path) -> None:
    os.kill(server.process.pid, signal.SIGHUP)


def touch(server: UwsgiServer, touch_file: Path) -> None:
    os.utime(touch_file)  # now: an hour after the time it was given at the start


def describe(clients: list[Client], since: float) -> str:
    """What the clients saw: close codes and how their connections ended, with timings."""
    outcomes = Counter((client.close_code, client.ended) for client in clients)
    closes = sorted(c.closed_at - since for c in clients if c.closed_at is not None)
    timing = f"; close frames {closes[0]:.2f}-{closes[-1]:.2f} s after the signal" if closes else ""
    seen = ", ".join(f"{n} × (close {code}, end {end})" for (code, end), n in outcomes.items())
    return seen + timing


def reload_instance(
    trigger: Callable[[UwsgiServer, Path], None], server: UwsgiServer, touch_file: Path
) -> None:
    """Reload ``server`` with ``trigger``; every client gets 1001, then reconnects at once."""
    with Crowd(server.port, PATH, CLIENTS) as crowd:
        assert not crowd.ping_all(), "not every WebSocket was being served before the reload"
        (old_worker,) = worker_pids(server)
        triggered_at = time.monotonic()
        trigger(server, touch_file)
        crowd.wait(lambda: all(not c.open for c in crowd.clients), CLOSE_DEADLINE)
        crowd.wait(lambda: all(c.ended for c in crowd.clients), END_DEADLINE)
        with crowd.condition:
            clients = list(crowd.clients)
            seen = describe(clients, triggered_at)
        reconnecting_at = time.monotonic()
        with Crowd(server.port, PATH, CLIENTS, timeout=RECONNECT_DEADLINE) as again:
            reconnected_at = time.monotonic()
            unanswered = again.ping_all()
            opened = sorted(c.opened_at - reconnecting_at for c in again.clients)
    print(
        f"\n{trigger.__name__}: {seen}; {CLIENTS} clients reconnected (101) "
        f"{opened[0]:.2f}-{opened[-1]:.2f} s after they started, "
        f"{reconnected_at - triggered_at:.2f} s after the signal"
    )
    went_away = [c for c in clients if c.close_code == GOING_AWAY]
    assert len(went_away) == CLIENTS, f"not every client got 1001: {seen}"
    assert all(c.closed_at - triggered_at <= CLOSE_DEADLINE for c in clients), seen
    assert all(c.ended == "eof" and c.frames_after_close == 0 for c in clients), seen
    assert not unanswered, f"{len(unanswered)} reconnected clients did not answer a ping"
    new_workers = worker_pids(server)[1:]
    assert new_workers and old_worker not in new_workers, server.log()


@pytest.fixture
def touch_file(tmp_path: Path) -> Path:
    """A ``--touch-reload`` file whose modification time lies an hour back."""
    path = tmp_path / "reload-me"
    path.write_text("")
    an_hour_ago = time.time() - 3600
    os.utime(path, (an_hour_ago, an_hour_ago))
    return path


@pytest.mark.parametrize(
    ("trigger", "extra_args"),
    [(send_sighup, []), (touch, ["--touch-reload", "{touch_file}"])],
    ids=["sighup", "touch-reload"],
)
def test_reload_closes_every_websocket_with_1001(trigger, extra_args, start_uwsgi, touch_file):
    raise_fd_limit(2 * CLIENTS + 1024)
    args = [*SERVER_ARGS, *(arg.format(touch_file=touch_file) for arg in extra_args)]
    server = start_uwsgi(args=args)
    try:
        reload_instance(trigger, server, touch_file)
    finally:
        server.stop()


def test_shutdown_closes_every_websocket_with_1001(start_uwsgi):
    raise_fd_limit(CLIENTS + 1024)
    server = start_uwsgi(args=SERVER_ARGS)
    try:
        with Crowd(server.port, PATH, CLIENTS) as crowd:
            assert not crowd.ping_all(), "not every WebSocket was being served"
            stopped_at = time.monotonic()
            os.kill(server.process.pid, signal.SIGINT)
            crowd.wait(lambda: all(not c.open for c in crowd.clients), CLOSE_DEADLINE)
            crowd.wait(lambda: all(c.ended for c in crowd.clients), END_DEADLINE)
            with crowd.condition:
                clients = list(crowd.clients)
                seen = describe(clients, stopped_at)
        wait_until(lambda: server.process.poll() is not None, CLOSE_DEADLINE, "uWSGI to exit")
    finally:
        server.stop()
    print(f"\nSIGINT: {seen}")
    assert all(c.close_code == GOING_AWAY for c in clients), f"not every client got 1001: {seen}"
    assert all(c.ended == "eof" and c.frames_after_close == 0 for c in clients), seen

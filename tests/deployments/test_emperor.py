"""The uWSGI emperor of ``uwsgi.ini``: one HTTP port whose internal router sends ``/ws/`` to the
WebSocket vassal (``vassals/wsserver.ini``), collected static files to uWSGI's static map and
everything else to the Django vassal (``vassals/runserver.ini``).  It is what ``./dev.sh demo``
starts (see ``test_demo``).

The emperor has no application of its own: a page or a WebSocket answered on its port proves
that the routes route.  Started from ``/``, with paths from the environment only.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deployments.checks import (
    NO_ROUTER,
    deployment_env,
    exercise,
    logs_on_failure,
    make_run_dir,
)
from tests.integration.test_graceful_reload import (
    CLIENTS,
    CLOSE_DEADLINE,
    END_DEADLINE,
    GOING_AWAY,
    PATH,
    RECONNECT_DEADLINE,
    describe,
)
from tests.integration.test_redis_outage import Crowd
from tools.servers import (
    ROOT,
    RedisServer,
    ServerProcess,
    free_port,
    http_answers,
    process_group_members,
    raise_fd_limit,
    unix_socket_ready,
    uwsgi_binary,
    wait_until,
)


class Emperor(ServerProcess):
    """``uwsgi --ini uwsgi.ini`` with its public port and its run directory."""

    def __init__(self, env: dict[str, str], port: int, run_dir: Path) -> None:
        self.port = port
        self.run_dir = run_dir
        super().__init__(
            "uwsgi-emperor",
            [uwsgi_binary(), "--ini", ROOT / "uwsgi.ini"],
            env={**env, "WS4REDIS_HTTP_SOCKET": f"127.0.0.1:{port}"},
            cwd=Path("/"),
        )

    def vassals_ready(self) -> bool:
        """Both vassals listen, and the emperor's port answers for Django and WebSockets."""
        return (
            unix_socket_ready(self.run_dir / "django.socket")
            and unix_socket_ready(self.run_dir / "web.socket")
            and http_answers(self.port, "/login/", timeout=60)
            and http_answers(self.port, "/ws/", timeout=60)
        )


@pytest.fixture(scope="module")
def emperor(redis_server: RedisServer, example_db: Path, static_root: Path) -> Iterator[Emperor]:
    run_dir = make_run_dir()
    env = deployment_env(redis_server, example_db, static_root, run_dir)
    server = Emperor(env, free_port(), run_dir)
    try:
        yield server.start(server.vassals_ready, timeout=120)
    finally:
        server.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


def test_the_emperor_has_its_routing_table(emperor: Emperor) -> None:
    log = emperor.log()
    assert NO_ROUTER not in log, "uWSGI without PCRE2 ignores the routes: see test_pcre"
    actions = re.findall(r"^\[rule: \d+\] .* action: (\w+):", log, re.MULTILINE)
    assert actions == ["addvar", "last", "uwsgi", "uwsgi"], log


def test_emperor_routes_django_static_files_and_websockets(
    emperor: Emperor, redis_client, static_root: Path
) -> None:
    with logs_on_failure(emperor):
        exercise(emperor.port, redis_client, static_root)
        # the routes were taken: the emperor's own worker offloaded the WebSockets ...
        assert re.search(r"\|app: -1\|.* GET /ws/\S+ => .* via offload\(\)", emperor.log())
        # ... and served the static file from the static map
        assert re.search(r"\|app: -1\|.* GET /static/\S+ => .* \(HTTP/1.1 200\)", emperor.log())


#: The emperor looks at its vassals' files every few seconds (``--emperor-freq``, 3 s).
EMPEROR_SCAN = 3.0


def test_vassal_reload_closes_every_websocket_with_1001(emperor: Emperor) -> None:
    """Touching the WebSocket vassal's file makes the emperor reload it gracefully: its clients,
    connected through the emperor's router, each get 1001 and can connect again at once."""
    raise_fd_limit(4 * CLIENTS + 1024)
    vassal = ROOT / "vassals" / "wsserver.ini"
    with logs_on_failure(emperor), Crowd(emperor.port, PATH, CLIENTS) as crowd:
        assert not crowd.ping_all(), "not every WebSocket was being served before the reload"
        touched_at = time.monotonic()
        os.utime(vassal)
        crowd.wait(lambda: all(not c.open for c in crowd.clients), EMPEROR_SCAN + CLOSE_DEADLINE)
        crowd.wait(lambda: all(c.ended for c in crowd.clients), END_DEADLINE)
        with crowd.condition:
            clients = list(crowd.clients)
            seen = describe(clients, touched_at)
        with Crowd(emperor.port, PATH, CLIENTS, timeout=RECONNECT_DEADLINE) as again:
            unanswered = again.ping_all()
    print(f"\nvassal reload: {seen}")
    assert all(c.close_code == GOING_AWAY for c in clients), f"not every client got 1001: {seen}"
    # The close frame came first; after it, the router may end a connection with a reset (it
    # closes its socket to the client while that client's answering close frame is unread).
    assert all(c.ended and c.frames_after_close == 0 for c in clients), seen
    assert not unanswered, f"{len(unanswered)} reconnected clients did not answer a ping"


def test_sigterm_stops_the_emperor_and_its_vassals(emperor: Emperor) -> None:
    """``die-on-term``: SIGTERM stops the emperor, which stops its vassals (the last test of
    this module: it ends the module's emperor)."""
    vassal_pids = [pid for pid in process_group_members(emperor.pid) if pid != emperor.pid]
    assert len(vassal_pids) >= 5  # emperor helper + 2 vassal masters + their workers
    emperor.process.send_signal(signal.SIGTERM)
    with logs_on_failure(emperor):
        emperor.process.wait(30)
        wait_until(lambda: not process_group_members(emperor.pid), 30, "the vassals to exit")
    assert emperor.process.returncode == 0, emperor.log()
    assert "[emperor] removed uwsgi instance wsserver.ini" in emperor.log()
    assert "[emperor] removed uwsgi instance runserver.ini" in emperor.log()

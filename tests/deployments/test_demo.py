"""The README's demo command: ``./dev.sh demo`` runs ``python -m tools.demo``, which starts an
embedded Redis, prepares the example (migrate, loaddata, collectstatic) and serves it with the
uWSGI emperor of ``uwsgi.ini``.

The demo is started as a user would, from the checkout, with its database, static files and
sockets moved to temporary places through the environment variables it passes on.  It must
serve the chat, and leave nothing behind when stopped with Ctrl-C (SIGINT to the terminal's
foreground process group) or SIGTERM.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.deployments.checks import exercise, logs_on_failure, make_run_dir
from tools.servers import (
    ROOT,
    ServerProcess,
    free_port,
    port_open,
    processes_with_environ,
    wait_until,
)


class Demo(ServerProcess):
    """``python -m tools.demo --port PORT`` with its files in ``workdir``."""

    def __init__(self, port: int, workdir: Path, run_dir: Path) -> None:
        self.port = port
        self.run_dir = run_dir
        self.static_root = workdir / "static"
        env = {
            "CHATSERVER_DB": str(workdir / "demo.sqlite3"),
            "CHATSERVER_STATIC_ROOT": str(self.static_root),
            "WS4REDIS_RUN_DIR": str(run_dir),
        }
        super().__init__(
            "demo", [sys.executable, "-m", "tools.demo", "--port", str(port)], env=env, cwd=ROOT
        )

    def serving(self) -> bool:
        """The demo printed its URL, which it does once the vassals answer."""
        return f"ws4redis demo: http://127.0.0.1:{self.port}/" in self.log()

    def redis_url(self) -> str:
        """The URL of the demo's Redis, as it printed it."""
        match = re.search(r"Redis: (redis://\S+/\d+)\.", self.log())
        assert match, self.log()
        return match.group(1)

    def processes(self) -> list[int]:
        """Every live process of the demo (uWSGI runs in a session of its own): those with
        this demo's run directory in their environment."""
        return processes_with_environ("WS4REDIS_RUN_DIR", str(self.run_dir))


@pytest.fixture
def demo() -> Iterator[Demo]:
    workdir = Path(tempfile.mkdtemp(prefix="ws4redis-demo-"))
    server = Demo(free_port(), workdir, make_run_dir())
    try:
        yield server.start(server.serving, timeout=180)
    finally:
        server.stop()
        for pid in server.processes():  # only if the test failed: it asserts there are none
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(server.run_dir, ignore_errors=True)


@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_demo_serves_the_chat_and_stops_cleanly(demo: Demo, stop: str) -> None:
    with logs_on_failure(demo):
        client = redis.Redis.from_url(demo.redis_url())
        try:
            exercise(demo.port, client, demo.static_root)
        finally:
            client.close()
        redis_port = int(demo.redis_url().rsplit(":", 1)[1].split("/")[0])
        assert len(demo.processes()) >= 6  # demo, emperor and its helper, vassals, workers

        if stop == "ctrl-c":
            os.killpg(demo.pid, signal.SIGINT)  # what the terminal does
        else:
            demo.process.send_signal(signal.SIGTERM)
        demo.process.wait(60)
        assert demo.process.returncode == 0
        wait_until(lambda: not demo.processes(), 10, "every uWSGI process of the demo to exit")
        assert not port_open(demo.port)
        assert not port_open(redis_port)

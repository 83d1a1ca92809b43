"""Fixtures of the deployment tests: collected static files, and the two uWSGI instances
(Django loop and WebSocket loop) that NGINX and Apache are put in front of."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from tests.conftest import server_env
from tests.deployments.checks import STATIC_FILE, deployment_env, make_run_dir, start_uwsgi_ini
from tools.servers import EXAMPLES, ROOT, RedisServer, ServerProcess


@pytest.fixture(scope="session")
def static_root(redis_server: RedisServer, example_db: Path) -> Iterator[Path]:
    """A ``STATIC_ROOT`` filled by the example's ``manage.py collectstatic``."""
    path = Path(tempfile.mkdtemp(prefix="ws4redis-static-"))
    path.chmod(0o755)  # readable by the web servers' workers
    env = {
        **os.environ,
        **server_env(redis_server, example_db),
        "CHATSERVER_STATIC_ROOT": str(path),
    }
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
        cwd=EXAMPLES,
        env=env,
        check=True,
        timeout=120,
    )
    assert (path / STATIC_FILE).is_file()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A client of the session's Redis (not emptied: the example keeps its sessions there)."""
    client = redis_server.client()
    yield client
    client.close()


@dataclass
class TwoLoops:
    """The Django loop and the WebSocket loop of ``deploy/uwsgi/``, sockets in ``run_dir``."""

    django: ServerProcess
    websocket: ServerProcess
    run_dir: Path


@pytest.fixture(scope="session")
def two_loops(redis_server: RedisServer, example_db: Path, static_root: Path) -> Iterator[TwoLoops]:
    """``uwsgi --ini deploy/uwsgi/django.ini`` and ``… websocket.ini``, for a web server.

    The sockets get the group of the web server's workers (www-data when the tests run as
    root), exactly as the ini files document with ``WS4REDIS_SOCKET_OWNER``.
    """
    run_dir = make_run_dir()
    env = deployment_env(redis_server, example_db, static_root, run_dir)
    if os.geteuid() == 0:
        env["WS4REDIS_SOCKET_OWNER"] = "root:www-data"
    servers: list[ServerProcess] = []
    try:
        for name in ("django", "websocket"):
            socket_name = "django.socket" if name == "django" else "web.socket"
            ini = ROOT / "deploy" / "uwsgi" / f"{name}.ini"
            servers.append(start_uwsgi_ini(f"uwsgi-{name}", ini, env, run_dir / socket_name))
        yield TwoLoops(servers[0], servers[1], run_dir)
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(run_dir, ignore_errors=True)

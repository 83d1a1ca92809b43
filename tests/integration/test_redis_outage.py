"""Redis outages: 200 WebSockets on one uWSGI worker ride through a Redis crash.

Each test owns a throw-away ``redis-server`` on a fixed free port and a uWSGI of its own
(``--master``, one worker, gevent) whose ``WS4REDIS_CONNECTION`` and session cache point at that
Redis (``tests/sites/outage.py``).  200 clients subscribe to a broadcast channel.  The test kills
Redis with SIGKILL, checks what must happen while it is down, starts it again on the same port
after 5 s (30 s in the second test), waits until the worker's hub has subscribed again (``PUBSUB
NUMSUB``, with a deadline) and publishes: every client must receive that message within 2 s of
the publish, all 200 WebSockets must still be open, and the worker must still be the one that
served them before.

While Redis is down:

- a new handshake is refused with 503, a ``Retry-After`` header and a one-line reason;
- a client that sends a message (``publish-broadcast``) is not silently dropped: it is closed
  with 1013 (try again later);
- ``RedisPublisher.publish_message()`` in this process raises ``redis.exceptions.ConnectionError``
  (or ``TimeoutError``) within ``WS4REDIS_SOCKET_TIMEOUT`` (5 s, the default);
- every client keeps getting heartbeats and answers a ping.

The clients are raw sockets read by one selector thread (:class:`Crowd`), which stamps every
frame with the time it arrived; the graceful reload tests use them too.  The figures (clients
kept, resubscription time, delivery delays) are printed: run with ``-s`` to see them.
"""

from __future__ import annotations

import base64
import os
import re
import selectors
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from tests.conftest import server_env
from tools.servers import RedisServer, UwsgiServer, raise_fd_limit
from ws4redis.publisher import RedisPublisher
from ws4redis.websocket import FrameDecoder, Opcode, encode_frame

CLIENTS = 200
PREFIX = "ws"  # the example's WS4REDIS_PREFIX
HEARTBEAT = b"--heartbeat--"  # tests/sites/outage.py: one after each second of idleness
#: ``WS4REDIS_SOCKET_TIMEOUT``'s default: the bound on a failing publish.
SOCKET_TIMEOUT = 5.0
#: After Redis is back (and the hub has resubscribed), a message reaches every client in this.
DELIVERY_BOUND = 2.0
#: The hub waits at most 1 s between reconnect attempts (``hub.RECONNECT_MAX_DELAY``, full
#: jitter); this leaves room for a loaded machine.
RESUBSCRIBE_DEADLINE = 15.0
TIMEOUT = 10.0
MASK = b"\x1f\x2e\x3d\x4c"
SERVER_ARGS = ["--master", "--gevent", "1000", "--http-websockets", "--module", "wsgi"]
WORKER_SPAWNED = re.compile(r"spawned uWSGI worker \d+ \(pid: (\d+)")


# -- clients ----------------------------------------------------------------------------------


@dataclass
class Response:
    """The answer to an opening handshake; ``sock`` and ``rest`` only after a 101."""

    status: int
    headers: dict[str, str]
    body: bytes = b""
    rest: bytes = b""
    sock: socket.socket | None = None


def handshake(port: int, path: str, timeout: float = TIMEOUT) -> Response:
    """Send an opening handshake on a new socket and read the answer.

    A 101 leaves the socket open (``response.sock``, blocking, with ``timeout``); any other
    answer is read to its ``Content-Length`` and the socket closed.
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        sock.sendall(request.encode("latin-1"))
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"connection closed during the handshake: {data!r}")
            data += chunk
        head, rest = data.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {name.lower(): value for name, value in (line.split(": ", 1) for line in lines)}
        response = Response(int(status_line.split()[1]), headers)
        if response.status == 101:
            response.rest, response.sock = rest, sock
            return response
        while len(rest) < int(headers.get("content-length", "0")):
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        response.body = rest
        sock.close()
        return response
    except BaseException:
        sock.close()
        raise


def open_websocket(port: int, path: str, timeout: float = TIMEOUT) -> tuple[socket.socket, bytes]:
    """A WebSocket on a raw socket, and the bytes that came right after the 101."""
    response = handshake(port, path, timeout)
    if response.sock is None:
        raise AssertionError(f"handshake of {path} answered {response.status}: {response.body!r}")
    return response.sock, response.rest


def client_frame(opcode: int, payload: bytes = b"") -> bytes:
    return encode_frame(opcode, payload, mask=MASK)


def close_code(payload: bytes) -> int:
    """The code of a close frame's payload (1005: none given)."""
    return int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005


@dataclass(eq=False)
class Client:
    """One WebSocket client and what it received, stamped with ``time.monotonic()``."""

    sock: socket.socket
    opened_at: float
    decoder: FrameDecoder = field(default_factory=lambda: FrameDecoder(require_mask=False))
    messages: dict[bytes, float] = field(default_factory=dict)
    heartbeats: int = 0
    pongs: set[bytes] = field(default_factory=set)
    close_code: int | None = None
    closed_at: float | None = None
    #: How the TCP connection ended: ``"eof"`` (a FIN) or ``"reset"``; ``None`` while open.
    ended: str | None = None
    ended_at: float | None = None
    frames_after_close: int = 0

    def receive(self, data: bytes | None, now: float) -> bytes:
        """Record what ``data`` brought (``b""``: EOF, ``None``: reset); returns a reply."""
        if not data:
            self.ended, self.ended_at = ("eof" if data == b"" else "reset"), now
            return b""
        self.decoder.feed(data)
        reply = b""
        while (frame := self.decoder.next_frame()) is not None:
            if self.close_code is not None:
                self.frames_after_close += 1
            elif frame.opcode == Opcode.TEXT and frame.payload == HEARTBEAT:
                self.heartbeats += 1
            elif frame.opcode in (Opcode.TEXT, Opcode.BINARY):
                self.messages.setdefault(frame.payload, now)
            elif frame.opcode == Opcode.PONG:
                self.pongs.add(frame.payload)
            elif frame.opcode == Opcode.CLOSE:
                self.close_code, self.closed_at = close_code(frame.payload), now
                reply = client_frame(Opcode.CLOSE, frame.payload[:2])  # as a browser answers
        return reply

    @property
    def open(self) -> bool:
        return self.close_code is None and self.ended is None


class Crowd:
    """WebSocket clients on raw sockets, all read by one selector thread.

    Everything received is recorded under one condition variable, so a test waits for a
    condition over all clients with one deadline.  A close frame is answered at once, as a
    browser does.  Use as a context manager: the sockets are closed at the end.
    """

    def __init__(self, port: int, path: str, count: int, timeout: float = TIMEOUT) -> None:
        self.condition = threading.Condition()
        self.error: BaseException | None = None
        self.clients: list[Client] = []
        self._send_lock = threading.Lock()
        self._selector = selectors.DefaultSelector()
        self._running = True

        def connect(_: int) -> Client:
            sock, rest = open_websocket(port, path, timeout)
            client = Client(sock, time.monotonic())
            if rest:
                client.receive(rest, client.opened_at)
            return client

        with ThreadPoolExecutor(max_workers=32) as pool:
            futures = [pool.submit(connect, index) for index in range(count)]
        try:
            self.clients = [future.result() for future in futures]
        except BaseException:
            for future in futures:
                if future.exception() is None:
                    future.result().sock.close()
            raise
        for client in self.clients:
            client.sock.setblocking(False)
            self._selector.register(client.sock, selectors.EVENT_READ, client)
        self._thread = threading.Thread(target=self._read, name="crowd", daemon=True)
        self._thread.start()

    def __enter__(self) -> Crowd:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop reading and close every socket."""
        self._running = False
        self._thread.join(TIMEOUT)
        self._selector.close()
        for client in self.clients:
            client.sock.close()

    def _read(self) -> None:
        try:
            while self._running:
                for key, _ in self._selector.select(0.05):
                    self._read_one(key.data)
        except BaseException as exc:  # shown by the next wait()
            with self.condition:
                self.error = exc
                self.condition.notify_all()

    def _read_one(self, client: Client) -> None:
        try:
            data: bytes | None = client.sock.recv(65536)
        except BlockingIOError:
            return
        except ConnectionResetError:
            data = None
        with self.condition:
            reply = client.receive(data, time.monotonic())
            self.condition.notify_all()
        if reply:
            self.send(client, reply)
        if client.ended:
            self._selector.unregister(client.sock)

    def send(self, client: Client, frame: bytes) -> bool:
        """Write one small frame; False when the connection is gone."""
        with self._send_lock:
            try:
                client.sock.sendall(frame)
            except OSError:
                return False
        return True

    def wait(self, condition: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``condition()`` (read under the lock) holds; False after ``timeout``."""
        with self.condition:
            held = self.condition.wait_for(lambda: self.error is not None or condition(), timeout)
            if self.error is not None:
                raise AssertionError("the clients' reader thread failed") from self.error
            return held

    def ping_all(self, timeout: float = TIMEOUT) -> list[Client]:
        """Ping every client; returns those whose pong did not come within ``timeout``."""
        tokens = {client: uuid.uuid4().hex[:16].encode() for client in self.clients}
        for client, token in tokens.items():
            self.send(client, client_frame(Opcode.PING, token))
        self.wait(lambda: all(tokens[c] in c.pongs for c in self.clients), timeout)
        with self.condition:
            return [c for c in self.clients if tokens[c] not in c.pongs]

    def arrivals(self, message: bytes) -> list[float | None]:
        """When each client received ``message`` (``None``: not yet)."""
        with self.condition:
            return [client.messages.get(message) for client in self.clients]


def worker_pids(server: UwsgiServer) -> list[int]:
    """The pids of the workers uWSGI's master spawned so far, from its log."""
    return [int(pid) for pid in WORKER_SPAWNED.findall(server.log())]


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A Redis of this test's own, on a port chosen once: it is started again on that port."""
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def outage_server(own_redis: RedisServer, example_db: Path) -> Iterator[UwsgiServer]:
    """The example under uWSGI (master, one gevent worker) using ``own_redis`` for everything."""
    env = server_env(own_redis, example_db, "tests.sites.outage")
    server = UwsgiServer(SERVER_ARGS, env).start()
    yield server
    server.stop()


@pytest.fixture
def publisher_settings(settings, own_redis: RedisServer):  # noqa: ANN001, ANN201
    """This process publishes to ``own_redis`` like a Django view of the example."""
    settings.WS4REDIS_CONNECTION = own_redis.url
    settings.WS4REDIS_PREFIX = PREFIX
    return settings


# -- while Redis is down ----------------------------------------------------------------------


def assert_handshake_refused(port: int, path: str) -> str:
    """A new handshake gets 503 with ``Retry-After`` and a one-line reason; returns the reason."""
    response = handshake(port, path)
    if response.sock is not None:
        response.sock.close()
    assert response.status == 503, response
    assert response.headers.get("retry-after", "").isdigit(), response.headers
    reason = response.body.decode("utf-8")
    assert reason.endswith("\n") and reason.count("\n") == 1 and reason.strip(), reason
    assert "traceback" not in reason.lower()
    return reason.strip()


def assert_client_message_closes_1013(sender: socket.socket) -> float:
    """A message sent over a publishing WebSocket gets a close frame 1013; returns the delay."""
    sent_at = time.monotonic()
    sender.sendall(client_frame(Opcode.TEXT, b"sent while Redis is down"))
    decoder = FrameDecoder(require_mask=False)
    deadline = sent_at + SOCKET_TIMEOUT + TIMEOUT
    while True:
        sender.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = sender.recv(65536)
        except TimeoutError:
            raise AssertionError(
                f"no close frame {deadline - sent_at:.0f} s after a message sent while Redis was "
                "down: the message was dropped silently"
            ) from None
        assert data, "the connection ended without a close frame"
        decoder.feed(data)
        while (frame := decoder.next_frame()) is not None:
            if frame.opcode == Opcode.CLOSE:
                assert close_code(frame.payload) == 1013, frame
                sender.sendall(client_frame(Opcode.CLOSE, frame.payload[:2]))
                return time.monotonic() - sent_at
            assert frame.opcode == Opcode.TEXT, frame  # heartbeats, the broadcast before


def assert_publish_fails_fast(facility: str) -> float:
    """``RedisPublisher.publish_message()`` raises within the socket timeout; returns how fast."""
    started = time.monotonic()
    with pytest.raises((redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
        RedisPublisher(facility=facility, broadcast=True).publish_message("lost in the outage")
    elapsed = time.monotonic() - started
    assert elapsed < SOCKET_TIMEOUT, elapsed
    return elapsed


# -- the test ---------------------------------------------------------------------------------


@pytest.mark.parametrize("outage", [5.0, 30.0], ids=["5s", "30s"])
def test_websockets_ride_through_a_redis_crash(
    outage, own_redis, outage_server, publisher_settings
):
    raise_fd_limit(CLIENTS + 1024)
    facility = f"outage-{uuid.uuid4().hex[:8]}"
    channel = f"{PREFIX}:broadcast:{facility}"
    path = f"/ws/{facility}?subscribe-broadcast"
    port = outage_server.port
    with Crowd(port, path, CLIENTS) as crowd:
        control = own_redis.client()
        assert control.pubsub_numsub(channel) == [(channel.encode(), 1)]
        assert control.publish(channel, b"before the outage") == 1
        assert crowd.wait(
            lambda: all(b"before the outage" in c.messages for c in crowd.clients), TIMEOUT
        )
        control.close()
        (worker,) = worker_pids(outage_server)
        sender, _ = open_websocket(port, f"/ws/{facility}?subscribe-broadcast&publish-broadcast")
        with crowd.condition:
            heartbeats = [client.heartbeats for client in crowd.clients]

        own_redis.kill()
        killed_at = time.monotonic()
        with sender:
            reason = assert_handshake_refused(port, path)
            closed_after = assert_client_message_closes_1013(sender)
        failed_after = assert_publish_fails_fast(facility)
        assert not crowd.ping_all(), "clients stopped answering pings while Redis was down"
        time.sleep(max(0.0, killed_at + outage - time.monotonic()))  # the outage itself
        with crowd.condition:
            silent = sum(c.heartbeats == n for c, n in zip(crowd.clients, heartbeats, strict=True))
        assert silent == 0, f"{silent} clients got no heartbeat while Redis was down"

        own_redis.start()
        back_at = time.monotonic()
        control = own_redis.client()
        deadline = back_at + RESUBSCRIBE_DEADLINE
        while control.pubsub_numsub(channel) != [(channel.encode(), 1)]:
            assert time.monotonic() < deadline, "the hub did not subscribe again"
            time.sleep(0.01)
        resubscribed_after = time.monotonic() - back_at
        control.close()

        message = f"after the outage {uuid.uuid4().hex}".encode()
        published_at = time.monotonic()
        assert RedisPublisher(facility=facility, broadcast=True).publish_message(message) == 1
        crowd.wait(
            lambda: all(message in c.messages for c in crowd.clients), DELIVERY_BOUND + TIMEOUT
        )
        arrivals = crowd.arrivals(message)
        delays = sorted(arrival - published_at for arrival in arrivals if arrival is not None)
        missing = arrivals.count(None)
        unanswered = crowd.ping_all()
        with crowd.condition:
            kept = sum(client.open for client in crowd.clients)

    log = outage_server.log()
    median = f"{delays[len(delays) // 2] * 1000:.0f} ms" if delays else "-"
    worst = f"{delays[-1] * 1000:.0f} ms" if delays else "-"
    print(
        f"\nRedis down {outage:.0f} s: {kept} of {CLIENTS} WebSockets kept; while down: 503 "
        f"({reason!r}), 1013 {closed_after * 1000:.0f} ms after the client's message, publish "
        f"failed after {failed_after * 1000:.0f} ms; the hub resubscribed "
        f"{resubscribed_after:.2f} s after Redis answered; the first message after the outage "
        f"reached {len(delays)} clients, delay median {median}, max {worst}"
    )
    assert kept == CLIENTS, f"{CLIENTS - kept} WebSockets lost"
    assert not unanswered, f"{len(unanswered)} clients did not answer a ping after the outage"
    assert missing == 0, f"{missing} clients never got the first message after the outage"
    assert delays[-1] <= DELIVERY_BOUND, f"delivered {delays[-1]:.2f} s after the publish"
    assert worker_pids(outage_server) == [worker] and process_alive(worker), log
    assert "DAMN" not in log and "Respawned" not in log, log
    assert "Traceback" not in log, log

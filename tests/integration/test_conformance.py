"""RFC 6455 over raw sockets against real uWSGI workers running ws4redis's own framing.

uWSGI 2.0.31's C WebSocket core crashes on a stray continuation frame, shares one fragment
buffer between clients and validates nothing, so ws4redis frames the raw connection itself.
Every case here drives a real uWSGI worker (``--gevent 1000 --http-websockets``) with
hand-built frames, asserts the exact close code the server sends, and then proves that an
idle bystander WebSocket on the same worker still receives a message published afterwards
and that the worker process is the one that started (no crash, no respawn).

The core cases also run behind uWSGI's own HTTP router (``--http``), which relays the frames
between the client and the worker unchanged.
"""

from __future__ import annotations

import base64
import os
import re
import socket
import string
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from tools.servers import RedisServer, UwsgiServer, wait_until
from ws4redis.websocket import Frame, FrameDecoder, Opcode, accept_key, encode_frame

HOST = "127.0.0.1"
TIMEOUT = 10.0
MASK = b"\x01\x02\x03\x04"
PREFIX = "ws"  # WS4REDIS_PREFIX of the example project
HEARTBEAT = b"--heartbeat--"  # WS4REDIS_HEARTBEAT of the example project
MAX_MESSAGE_SIZE = 1 << 20  # WS4REDIS_MAX_MESSAGE_SIZE default
FRAGMENT = 64 * 1024
CRASH_LINES = re.compile(r"DAMN ! worker|segmentation fault|SIGSEGV|\bcore dumped", re.IGNORECASE)
WORKER_PID = re.compile(r"spawned uWSGI worker \d+ .*?\(pid: (\d+)")

TEXT, BINARY, CONT = Opcode.TEXT, Opcode.BINARY, Opcode.CONTINUATION
CLOSE, PING, PONG = Opcode.CLOSE, Opcode.PING, Opcode.PONG


# --------------------------------------------------------------------------------------------
# A raw client


def unique(name: str) -> str:
    """A facility no other test uses (so no persisted message from elsewhere shows up)."""
    return f"{name}-{uuid.uuid4().hex[:12]}"


def broadcast_key(facility: str) -> str:
    return f"{PREFIX}:broadcast:{facility}"


def _recv(sock: socket.socket, deadline: float, what: str) -> bytes:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError(f"timed out waiting for {what}")
    sock.settimeout(remaining)
    try:
        return sock.recv(65536)
    except TimeoutError:
        raise TimeoutError(f"timed out waiting for {what}") from None


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str]
    rest: bytes  # what followed the header block (a body, or the first frames after a 101)


def read_http_head(sock: socket.socket, timeout: float = TIMEOUT) -> HttpResponse:
    """Read a status line and headers from ``sock``; keep whatever bytes followed them."""
    deadline = time.monotonic() + timeout
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = _recv(sock, deadline, "the HTTP response head")
        if not chunk:
            raise ConnectionError(f"connection closed inside the HTTP response head: {buffer!r}")
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return HttpResponse(int(status_line.split()[1]), headers, rest)


def handshake_request(
    path: str,
    port: int,
    *,
    method: str = "GET",
    http_version: str = "HTTP/1.1",
    key: str | None = None,
    version: str = "13",
) -> tuple[bytes, str]:
    """An opening handshake request (and its key), with the given parts spoilt at will."""
    key = key if key is not None else base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"{method} {path} {http_version}",
        f"Host: {HOST}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        f"Sec-WebSocket-Version: {version}",
    ]
    if method != "GET":
        lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"), key


def refused_handshake(port: int, **spoilt: str) -> HttpResponse:
    """Send a handshake that must be refused; return the full HTTP response."""
    request, _ = handshake_request(f"/ws/{unique('refused')}?subscribe-broadcast", port, **spoilt)
    with socket.create_connection((HOST, port), timeout=TIMEOUT) as sock:
        sock.sendall(request)
        response = read_http_head(sock)
        length = int(response.headers.get("content-length", "0"))
        deadline = time.monotonic() + TIMEOUT
        while len(response.rest) < length:
            chunk = _recv(sock, deadline, "the HTTP response body")
            if not chunk:
                break
            response.rest += chunk
    return response


class RawClient:
    """A WebSocket client made of a TCP socket, hand-built masked frames and ws4redis's decoder."""

    def __init__(self, port: int, facility: str, flags: str = "subscribe-broadcast") -> None:
        self.sock = socket.create_connection((HOST, port), timeout=TIMEOUT)
        request, key = handshake_request(f"/ws/{facility}?{flags}", port)
        self.sock.sendall(request)
        response = read_http_head(self.sock)
        assert response.status == 101, response
        assert response.headers["sec-websocket-accept"] == accept_key(key)
        self.decoder = FrameDecoder(require_mask=False)
        self.decoder.feed(response.rest)

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0) -> None:
        """Send one masked frame (valid or not)."""
        self.sendall(encode_frame(opcode, payload, fin=fin, rsv=rsv, mask=MASK))

    def sendall(self, data: bytes) -> None:
        self.sock.settimeout(TIMEOUT)
        self.sock.sendall(data)

    def recv_frame(self, timeout: float = TIMEOUT) -> Frame:
        """The next frame from the server, heartbeats included."""
        deadline = time.monotonic() + timeout
        while (frame := self.decoder.next_frame()) is None:
            data = _recv(self.sock, deadline, "a frame from the server")
            if not data:
                raise ConnectionError("the server closed the TCP connection without a frame")
            self.decoder.feed(data)
        assert frame.fin and not frame.masked and not frame.rsv, frame
        return frame

    def recv_significant(self, timeout: float = TIMEOUT) -> Frame:
        """The next frame that is not one of the server's idle heartbeats."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self.recv_frame(max(deadline - time.monotonic(), 0.001))
            if not (frame.opcode == TEXT and frame.payload == HEARTBEAT):
                return frame

    def recv_message(self, timeout: float = TIMEOUT) -> bytes:
        """The payload of the next data message."""
        frame = self.recv_significant(timeout)
        assert frame.opcode in (TEXT, BINARY), f"expected a data message, got {frame}"
        return frame.payload

    def expect_pong(self, payload: bytes) -> None:
        frame = self.recv_significant()
        assert (frame.opcode, frame.payload) == (PONG, payload)

    def expect_close(self, timeout: float = TIMEOUT) -> int:
        """Read the server's close frame (nothing else may come first); answer it; its code."""
        frame = self.recv_significant(timeout)
        assert frame.opcode == CLOSE, f"expected a close frame, got {frame}"
        assert len(frame.payload) >= 2, f"close frame without a status code: {frame}"
        code = int.from_bytes(frame.payload[:2], "big")
        frame.payload[2:].decode("utf-8")  # the reason must be UTF-8
        try:
            self.send(CLOSE, frame.payload[:2])
        except OSError:
            pass  # the server may already have gone; the close frame is what counts
        return code

    def expect_eof(self, timeout: float = TIMEOUT) -> None:
        """The server ends the TCP connection, sending nothing more."""
        deadline = time.monotonic() + timeout
        data = _recv(self.sock, deadline, "the end of the TCP connection")
        assert data == b""


# --------------------------------------------------------------------------------------------
# A worker and its bystander


@dataclass
class Worker:
    """A uWSGI server with one worker and an idle bystander WebSocket connected to it."""

    server: UwsgiServer
    redis: object  # redis.Redis
    bystander_facility: str = field(default_factory=lambda: unique("bystander"))
    pids: list[str] = field(default_factory=list)
    bystander: RawClient | None = None

    @property
    def port(self) -> int:
        return self.server.port

    def start(self) -> Worker:
        # The port accepts connections before the worker is spawned: wait for the log line.
        wait_until(lambda: WORKER_PID.search(self.server.log()), 30, "the uWSGI worker")
        self.pids = WORKER_PID.findall(self.server.log())
        assert len(self.pids) == 1, self.server.log()
        self.bystander = RawClient(self.port, self.bystander_facility)
        return self

    def client(self, facility: str, flags: str = "subscribe-broadcast") -> RawClient:
        return RawClient(self.port, facility, flags)

    def publish(self, facility: str, message: bytes) -> None:
        self.redis.publish(broadcast_key(facility), message)

    def assert_intact(self) -> None:
        """The worker did not crash or respawn, and the idle bystander still gets messages."""
        assert self.server.process is not None and self.server.process.poll() is None
        log = self.server.log()
        assert not CRASH_LINES.search(log), log
        assert WORKER_PID.findall(log) == self.pids, log
        os.kill(int(self.pids[0]), 0)
        marker = f"still-alive {uuid.uuid4().hex}".encode()
        self.publish(self.bystander_facility, marker)
        assert self.bystander.recv_message() == marker

    def assert_next_message(self, subscriber: RawClient, facility: str, *expected: bytes) -> None:
        """``subscriber`` receives exactly ``expected`` and then a marker published now."""
        received = [subscriber.recv_message() for _ in expected]
        assert received == list(expected)
        marker = f"marker {uuid.uuid4().hex}".encode()
        self.publish(facility, marker)
        assert subscriber.recv_message() == marker

    def close(self) -> None:
        if self.bystander is not None:
            self.bystander.sock.close()
        self.redis.close()


def _worker(start: Callable[..., UwsgiServer], redis_server: RedisServer, option: str) -> Worker:
    return Worker(start(socket_option=option), redis_server.client()).start()


@pytest.fixture(scope="module")
def socket_worker(
    start_uwsgi: Callable[..., UwsgiServer], redis_server: RedisServer
) -> Iterator[Worker]:
    """The example under ``--http-socket``: the worker speaks HTTP to the clients itself."""
    worker = _worker(start_uwsgi, redis_server, "--http-socket")
    yield worker
    worker.close()


@pytest.fixture(scope="module")
def router_worker(
    start_uwsgi: Callable[..., UwsgiServer], redis_server: RedisServer
) -> Iterator[Worker]:
    """The example behind uWSGI's ``--http`` router, which relays frames to the worker."""
    worker = _worker(start_uwsgi, redis_server, "--http")
    yield worker
    worker.close()


@pytest.fixture(params=["--http-socket", "--http"])
def worker(request: pytest.FixtureRequest) -> Worker:
    """Each core case runs under both ways of serving HTTP."""
    name = "socket_worker" if request.param == "--http-socket" else "router_worker"
    return request.getfixturevalue(name)


def text(size: int) -> bytes:
    """``size`` bytes of ASCII text that are not all alike."""
    alphabet = (string.ascii_letters + string.digits).encode()
    return (alphabet * (size // len(alphabet) + 1))[:size]


# --------------------------------------------------------------------------------------------
# The core cases, under --http-socket and under --http


def test_stray_continuation_frame_closes_1002(worker: Worker) -> None:
    with worker.client(unique("stray"), "publish-broadcast") as client:
        client.send(CONT, b"nothing to continue", fin=True)
        assert client.expect_close() == 1002
    with worker.client(unique("stray"), "publish-broadcast") as client:
        client.send(CONT, b"nothing to continue either", fin=False)
        assert client.expect_close() == 1002
    worker.assert_intact()


def test_failing_server_ends_the_tcp_connection(socket_worker: Worker) -> None:
    # RFC 6455 §5.5.1 and §7.1.1: once it has sent and received a close frame, the server MUST
    # close the TCP connection (and it closes first). The client here answers the server's
    # 1002 and then waits, as browsers do, so the server has to end the connection itself;
    # CLOSE_TIMEOUT (2 s) in ws4redis/wsgi_server.py is only the fallback for a silent client.
    with socket_worker.client(unique("fail-close"), "publish-broadcast") as client:
        client.send(CONT, b"nothing to continue")
        assert client.expect_close() == 1002
        client.expect_eof(timeout=1.0)
    socket_worker.assert_intact()


def test_interleaved_fragments_of_two_clients_do_not_mix(worker: Worker) -> None:
    facility = unique("interleaved")
    with (
        worker.client(facility) as subscriber,
        worker.client(facility, "publish-broadcast") as a,
        worker.client(facility, "publish-broadcast") as b,
    ):
        # A ping after each fragment: its pong proves the worker has read the fragment, so the
        # worker really holds two half-messages at once.
        a.send(TEXT, b"aaa", fin=False)
        a.send(PING, b"a1")
        a.expect_pong(b"a1")
        b.send(TEXT, b"bbb", fin=False)
        b.send(PING, b"b1")
        b.expect_pong(b"b1")
        a.send(CONT, b"AAA", fin=True)
        assert subscriber.recv_message() == b"aaaAAA"
        b.send(CONT, b"BBB", fin=True)
        worker.assert_next_message(subscriber, facility, b"bbbBBB")
    worker.assert_intact()


def test_fragmented_message_is_delivered_once_and_whole(worker: Worker) -> None:
    facility = unique("fragments")
    with worker.client(facility) as subscriber, worker.client(facility, "publish-broadcast") as c:
        c.send(TEXT, b"one,", fin=False)
        c.send(CONT, b"two,", fin=False)
        c.send(PING, b"between fragments")
        c.send(CONT, b"", fin=False)
        c.send(CONT, b"three", fin=True)
        c.expect_pong(b"between fragments")
        # No fake b"\x00" message per fragment: the whole message, then the marker.
        worker.assert_next_message(subscriber, facility, b"one,two,three")
        # UTF-8 split inside a character across fragments is fine.
        euro = "€".encode()
        c.send(TEXT, b"price " + euro[:1], fin=False)
        c.send(CONT, euro[1:], fin=True)
        worker.assert_next_message(subscriber, facility, b"price " + euro)
    worker.assert_intact()


@pytest.mark.parametrize(
    "frames",
    [
        pytest.param([(TEXT, b"caf\xe9", True)], id="one-frame"),
        pytest.param([(TEXT, b"\xed\xa0\x80 surrogate", True)], id="surrogate"),
        pytest.param([(TEXT, b"abc\xe2\x82", False), (CONT, b"(abc", True)], id="split"),
        pytest.param([(TEXT, b"abc\xe2\x82", False), (CONT, b"", True)], id="truncated"),
    ],
)
def test_invalid_utf8_closes_1007(worker: Worker, frames: list[tuple[int, bytes, bool]]) -> None:
    facility = unique("utf8")
    with worker.client(facility) as subscriber, worker.client(facility, "publish-broadcast") as c:
        for opcode, payload, fin in frames:
            c.send(opcode, payload, fin=fin)
        assert c.expect_close() == 1007
        worker.assert_next_message(subscriber, facility)  # nothing was published
    worker.assert_intact()


def test_over_limit_fragmented_message_closes_1009(worker: Worker) -> None:
    facility = unique("too-big")
    fragments = MAX_MESSAGE_SIZE // FRAGMENT
    with worker.client(facility) as subscriber, worker.client(facility, "publish-broadcast") as c:
        # 16 fragments of 64 KiB make exactly 1 MiB; one more byte is over the limit.
        chunk = text(FRAGMENT)
        frames = [encode_frame(TEXT, chunk, fin=False, mask=MASK)]
        frames += [encode_frame(CONT, chunk, fin=False, mask=MASK)] * (fragments - 1)
        frames.append(encode_frame(CONT, b"!", fin=True, mask=MASK))
        c.sendall(b"".join(frames))
        assert c.expect_close() == 1009
        worker.assert_next_message(subscriber, facility)  # nothing was published
    worker.assert_intact()


def test_message_of_exactly_the_limit_is_accepted(worker: Worker) -> None:
    facility = unique("limit")
    payload = text(MAX_MESSAGE_SIZE)
    with worker.client(facility) as subscriber, worker.client(facility, "publish-broadcast") as c:
        pieces = [payload[i : i + FRAGMENT] for i in range(0, MAX_MESSAGE_SIZE, FRAGMENT)]
        c.sendall(
            b"".join(
                encode_frame(TEXT if i == 0 else CONT, p, fin=i == len(pieces) - 1, mask=MASK)
                for i, p in enumerate(pieces)
            )
        )
        worker.assert_next_message(subscriber, facility, payload)
        c.send(PING, b"still open")
        c.expect_pong(b"still open")
    worker.assert_intact()


# --------------------------------------------------------------------------------------------
# Frame-level violations and control frames (--http-socket)


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(encode_frame(TEXT, b"not masked"), id="unmasked"),
        pytest.param(encode_frame(TEXT, b"rsv1", rsv=4, mask=MASK), id="rsv1"),
        pytest.param(encode_frame(TEXT, b"rsv3", rsv=1, mask=MASK), id="rsv3"),
        pytest.param(encode_frame(3, b"opcode 3", mask=MASK), id="opcode-3"),
        pytest.param(encode_frame(0xB, b"opcode 11", mask=MASK), id="opcode-11"),
        pytest.param(encode_frame(PING, b"p" * 126, mask=MASK), id="ping-126"),
        pytest.param(encode_frame(PING, b"frag", fin=False, mask=MASK), id="fragmented-ping"),
        pytest.param(encode_frame(TEXT, b"x", fin=False, mask=MASK) * 2, id="text-in-text"),
    ],
)
def test_protocol_violation_closes_1002(socket_worker: Worker, frame: bytes) -> None:
    facility = unique("violation")
    with socket_worker.client(facility) as subscriber:
        with socket_worker.client(facility, "publish-broadcast") as client:
            client.sendall(frame)
            assert client.expect_close() == 1002
        socket_worker.assert_next_message(subscriber, facility)  # nothing was published
    socket_worker.assert_intact()


def test_ping_is_answered_with_its_payload(socket_worker: Worker) -> None:
    with socket_worker.client(unique("ping")) as client:
        client.send(PING, b"hello")
        client.expect_pong(b"hello")
        client.send(PING, b"")
        client.expect_pong(b"")
        client.send(PING, b"\x00\xff" * 62 + b"!")  # 125 bytes: the largest allowed
        client.expect_pong(b"\x00\xff" * 62 + b"!")
        client.send(PONG, b"unsolicited")  # ignored
        client.send(CLOSE, (1000).to_bytes(2, "big") + b"bye")
        frame = client.recv_significant()
        assert (frame.opcode, frame.payload[:2]) == (CLOSE, (1000).to_bytes(2, "big"))
        client.expect_eof()
    socket_worker.assert_intact()


@pytest.mark.parametrize("payload", [b"\x03\xed", b"\x03\xe7", b"\x03\xee", b"\x0b\xb8"[:1]])
def test_close_with_invalid_code_closes_1002(socket_worker: Worker, payload: bytes) -> None:
    # 1005, 999, 1006 (never on the wire) and a 1-byte close payload.
    with socket_worker.client(unique("bad-close")) as client:
        client.send(CLOSE, payload)
        assert client.expect_close() == 1002
    socket_worker.assert_intact()


# --------------------------------------------------------------------------------------------
# The opening handshake, checked by ws4redis before uWSGI writes any 101 (--http-socket)


@pytest.mark.parametrize(
    ("spoilt", "status"),
    [
        pytest.param({"method": "POST"}, 405, id="post"),
        pytest.param({"http_version": "HTTP/1.0"}, 400, id="http-1.0"),
        pytest.param({"key": "not-a-key"}, 400, id="key-not-base64"),
        pytest.param({"key": base64.b64encode(b"15 bytes only!!").decode()}, 400, id="key-15"),
        pytest.param({"key": ""}, 400, id="key-empty"),
        pytest.param({"version": "12"}, 426, id="version-12"),
    ],
)
def test_invalid_handshake_is_refused(
    socket_worker: Worker, spoilt: dict[str, str], status: int
) -> None:
    response = refused_handshake(socket_worker.port, **spoilt)
    assert response.status == status, response
    assert "sec-websocket-accept" not in response.headers
    body = response.rest.decode("utf-8")
    assert body.strip() and "\n" not in body.strip() and "Traceback" not in body
    if status == 405:
        assert response.headers.get("allow") == "GET"
    if status == 426:
        assert response.headers.get("sec-websocket-version") == "13"
    socket_worker.assert_intact()

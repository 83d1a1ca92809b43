"""RFC 6455 conformance over raw sockets, on every server ws4redis runs under.

The categories of the Autobahn test suite, driven with hand-built frames against three real
servers of the example project, one of each kind for the whole module:

* ``http-socket``: a uWSGI worker speaking HTTP itself (``--http-socket``, ``--gevent 1000``);
* ``http-router``: uWSGI's HTTP router (``--http``), relaying the frames to such a worker;
* ``runserver``: Django's development server (``manage.py runserver --noreload``) with
  ``WSGI_APPLICATION = "ws4redis.django_runserver.application"``, one thread per WebSocket.

Every case asserts one exact outcome: the message as it comes back through Redis to a client
connected with ``?subscribe-broadcast&publish-broadcast&echo``, the code of the server's close
frame, or an HTTP status.  Cases that fail a connection also prove, with a second subscriber,
what was published before the violation and that nothing was published from it.  Then every
case checks that the server survived: an idle bystander WebSocket connected before the first
case still receives a marker published afterwards, the server process (for uWSGI: the same
worker, never respawned) is alive, and its log holds no crash line and no traceback.

Redis carries no frame type, so the server picks it by content: valid UTF-8 goes out as text,
anything else as binary.  A binary message that happens to be valid UTF-8 (the empty one, say)
therefore comes back as text.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import os
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
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
ECHO = "subscribe-broadcast&publish-broadcast&echo"
PUBLISH = "publish-broadcast"
SUBSCRIBE = "subscribe-broadcast"
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
    drop: Iterable[str] = (),
) -> tuple[bytes, str]:
    """An opening handshake request (and its key), with the given parts spoilt at will.

    ``drop`` names headers to leave out altogether.
    """
    key = key if key is not None else base64.b64encode(os.urandom(16)).decode()
    headers = {
        "Host": f"{HOST}:{port}",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": key,
        "Sec-WebSocket-Version": version,
    }
    if method != "GET":
        headers["Content-Length"] = "0"
    for name in drop:
        del headers[name]
    lines = [f"{method} {path} {http_version}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"), key


def refused_handshake(port: int, **spoilt: object) -> HttpResponse:
    """Send a handshake that must be refused; return the full HTTP response."""
    request, _ = handshake_request(f"/ws/{unique('refused')}?{SUBSCRIBE}", port, **spoilt)
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


def digest(payload: bytes) -> bytes | str:
    """``payload`` itself when short; its length and hash otherwise (readable failures)."""
    if len(payload) <= 256:
        return payload
    return f"{len(payload)} bytes, sha1 {hashlib.sha1(payload).hexdigest()}"


class RawClient:
    """A WebSocket client made of a TCP socket, hand-built masked frames and ws4redis's decoder.

    ``TCP_NODELAY`` is on, so each ``sendall`` leaves as its own TCP segment.
    """

    def __init__(
        self, port: int, facility: str, flags: str = SUBSCRIBE, *, receive_buffer: int = 0
    ) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if receive_buffer:  # before connecting: it sets the window the server may fill
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect((HOST, port))
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

    def send_in_pieces(self, data: bytes, sizes: Iterable[int]) -> int:
        """Write ``data`` in consecutive pieces of the given sizes; return how many writes."""
        sizes = iter(sizes)
        offset = writes = 0
        while offset < len(data):
            step = next(sizes)
            self.sendall(data[offset : offset + step])
            offset += step
            writes += 1
        return writes

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

    def recv_data(self, timeout: float = TIMEOUT) -> tuple[int, bytes]:
        """The next data message as ``(opcode, payload)``."""
        frame = self.recv_significant(timeout)
        assert frame.opcode in (TEXT, BINARY), f"expected a data message, got {frame}"
        return frame.opcode, frame.payload

    def recv_message(self, timeout: float = TIMEOUT) -> bytes:
        """The payload of the next data message."""
        return self.recv_data(timeout)[1]

    def expect_pong(self, payload: bytes) -> None:
        frame = self.recv_significant()
        assert (frame.opcode, frame.payload) == (PONG, payload)

    def recv_close(self, timeout: float = TIMEOUT) -> int:
        """Read the server's close frame (nothing else may come first); return its code."""
        frame = self.recv_significant(timeout)
        assert frame.opcode == CLOSE, f"expected a close frame, got {frame}"
        assert len(frame.payload) >= 2, f"close frame without a status code: {frame}"
        frame.payload[2:].decode("utf-8")  # the reason must be UTF-8
        return int.from_bytes(frame.payload[:2], "big")

    def expect_close(self, timeout: float = TIMEOUT) -> int:
        """Read the server's close frame, answer it as a client does; return its code."""
        code = self.recv_close(timeout)
        try:
            self.send(CLOSE, code.to_bytes(2, "big"))
        except OSError:
            pass  # the server may already have gone; the close frame is what counts
        return code

    def expect_eof(self, timeout: float = TIMEOUT, *, reset_allowed: bool = False) -> None:
        """The server ends the TCP connection, sending nothing more.

        ``reset_allowed``: a reset counts as the end too (for a peer that closed its socket
        outright while our last frame was on its way).
        """
        deadline = time.monotonic() + timeout
        try:
            data = _recv(self.sock, deadline, "the end of the TCP connection")
        except ConnectionResetError:
            if not reset_allowed:
                raise
            data = b""
        assert data == b""


# --------------------------------------------------------------------------------------------
# A server and its bystander


@dataclass
class Site:
    """A server of the example project with an idle bystander WebSocket connected to it."""

    kind: str
    server: UwsgiServer
    redis: object  # redis.Redis
    bystander_facility: str = field(default_factory=lambda: unique("bystander"))
    pids: list[str] = field(default_factory=list)
    bystander: RawClient | None = None

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def is_uwsgi(self) -> bool:
        return self.kind != "runserver"

    def start(self) -> Site:
        if self.is_uwsgi:
            # The port accepts connections before the worker is spawned: wait for the log line.
            wait_until(lambda: WORKER_PID.search(self.server.log()), 30, "the uWSGI worker")
            self.pids = WORKER_PID.findall(self.server.log())
            assert len(self.pids) == 1, self.server.log()
        else:
            self.pids = [str(self.server.process.pid)]
        self.bystander = RawClient(self.port, self.bystander_facility)
        return self

    def client(self, facility: str, flags: str = SUBSCRIBE) -> RawClient:
        return RawClient(self.port, facility, flags)

    def publish(self, facility: str, message: bytes) -> None:
        self.redis.publish(broadcast_key(facility), message)

    def assert_intact(self) -> None:
        """The server did not crash or respawn, and the idle bystander still gets messages."""
        process = self.server.process
        assert process is not None and process.poll() is None, self.server.log()
        log = self.server.log()
        assert not CRASH_LINES.search(log), log
        assert "Traceback" not in log, log
        if self.is_uwsgi:
            assert WORKER_PID.findall(log) == self.pids, log
        os.kill(int(self.pids[0]), 0)
        marker = f"still-alive {uuid.uuid4().hex}".encode()
        self.publish(self.bystander_facility, marker)
        assert self.bystander.recv_message() == marker

    def assert_next_message(self, subscriber: RawClient, facility: str, *expected: bytes) -> None:
        """``subscriber`` receives exactly ``expected`` and then a marker published now."""
        received = [subscriber.recv_message() for _ in expected]
        assert received == list(expected)
        self.assert_nothing_more(subscriber, facility)

    def assert_echoes(self, client: RawClient, facility: str, *expected: tuple[int, bytes]) -> None:
        """``client`` receives exactly the messages ``(opcode, payload)``, then a marker."""
        received = [client.recv_data() for _ in expected]
        assert [(Opcode(op), digest(p)) for op, p in received] == [
            (Opcode(op), digest(p)) for op, p in expected
        ]
        self.assert_nothing_more(client, facility)

    def assert_nothing_more(self, subscriber: RawClient, facility: str) -> None:
        """The next message ``subscriber`` receives is a marker published now.

        Redis delivers a subscriber's messages in publication order: anything published
        before the marker would arrive first.
        """
        marker = f"marker {uuid.uuid4().hex}".encode()
        self.publish(facility, marker)
        assert subscriber.recv_data() == (TEXT, marker)

    def assert_violation(self, data: bytes, code: int) -> None:
        """A client sends a valid message and then ``data``: the server closes with ``code``.

        Both go in one TCP write.  The valid message is published, nothing of ``data`` is.
        """
        facility = unique("violation")
        before = f"before {uuid.uuid4().hex}".encode()
        with self.client(facility) as subscriber:
            with self.client(facility, PUBLISH) as client:
                client.sendall(encode_frame(TEXT, before, mask=MASK) + data)
                assert client.expect_close() == code
            self.assert_next_message(subscriber, facility, before)
        self.assert_intact()

    def close(self) -> None:
        if self.bystander is not None:
            self.bystander.sock.close()
        self.redis.close()


SETTINGS = "tests.sites.unthrottled"  # bursts of 1000 messages: no message rate limit
SERVERS = {
    "http-socket": {"socket_option": "--http-socket", "settings_module": SETTINGS},
    "http-router": {"socket_option": "--http", "settings_module": SETTINGS},
    "runserver": {"kind": "runserver", "settings_module": SETTINGS},
}


@pytest.fixture(scope="module", params=list(SERVERS))
def site(
    request: pytest.FixtureRequest,
    start_uwsgi: Callable[..., UwsgiServer],
    redis_server: RedisServer,
) -> Iterator[Site]:
    """Every case runs against each kind of server, one server per kind for the module."""
    server = start_uwsgi(**SERVERS[request.param])
    site = Site(request.param, server, redis_server.client()).start()
    yield site
    site.close()


def text(size: int) -> bytes:
    """``size`` bytes of valid UTF-8 text, mostly ASCII with 2-, 3- and 4-byte characters."""
    unit = "ws4redis: é ß € 中 𝄞 — ".encode()
    data = (unit * (size // len(unit) + 1))[:size]
    valid = data.decode("utf-8", "ignore").encode("utf-8")  # drop a character cut in two
    return valid + b"x" * (size - len(valid))


def binary(size: int) -> bytes:
    """``size`` bytes that are not UTF-8 (every byte value, starting with 0xFF)."""
    return (bytes(range(255, -1, -1)) * (size // 256 + 1))[:size]


def pieces(frame_size: int) -> Iterator[int]:
    """Write sizes for sending a frame in small TCP chunks: 1 or 7 bytes, or 1 to 4 KiB."""
    if frame_size < 14:  # an empty message: header and mask split byte by byte
        return itertools.repeat(1)
    if frame_size < 1024:
        return itertools.repeat(7)
    return itertools.cycle((1024, 4096, 2048, 3072))


# --------------------------------------------------------------------------------------------
# Framing (Autobahn 1.x): text and binary messages of every length encoding, whole and chunked

SIZES = [0, 125, 126, 127, 65535, 65536, MAX_MESSAGE_SIZE]


@pytest.mark.parametrize("delivery", ["whole", "chunked"])
@pytest.mark.parametrize("kind", ["text", "binary"])
@pytest.mark.parametrize("size", SIZES, ids=[f"{size}B" for size in SIZES])
def test_message_is_echoed_exactly(site: Site, size: int, kind: str, delivery: str) -> None:
    facility = unique("framing")
    payload = text(size) if kind == "text" else binary(size)
    # Binary comes back binary because it is not UTF-8; the empty payload is, so: text.
    expected = BINARY if kind == "binary" and size else TEXT
    frame = encode_frame(TEXT if kind == "text" else BINARY, payload, mask=MASK)
    with site.client(facility, ECHO) as client:
        if delivery == "whole":
            client.sendall(frame)
        else:
            writes = client.send_in_pieces(frame, pieces(len(frame)))
            assert writes > 1
        site.assert_echoes(client, facility, (expected, payload))
    site.assert_intact()


def test_frame_length_with_its_most_significant_bit_set_closes_1002(site: Site) -> None:
    header = bytes((0x80 | TEXT, 0x80 | 127)) + (1 << 63 | 5).to_bytes(8, "big")
    site.assert_violation(header + MASK + b"hello", 1002)


# --------------------------------------------------------------------------------------------
# Ping and pong (Autobahn 2.x)


@pytest.mark.parametrize("size", [0, 1, 125])
def test_ping_payload_is_echoed_in_the_pong(site: Site, size: int) -> None:
    facility = unique("ping")
    payload = binary(size)
    with site.client(facility, ECHO) as client:
        client.send(PING, payload)
        client.expect_pong(payload)
        client.send(TEXT, b"after the ping")
        site.assert_echoes(client, facility, (TEXT, b"after the ping"))
    site.assert_intact()


def test_ping_is_answered_with_its_payload(site: Site) -> None:
    with site.client(unique("ping")) as client:
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
    site.assert_intact()


def test_unsolicited_pong_is_ignored(site: Site) -> None:
    facility = unique("pong")
    with site.client(facility, ECHO) as client:
        client.send(PONG, b"unsolicited")
        client.send(PONG, b"")
        client.send(TEXT, b"still usable")
        site.assert_echoes(client, facility, (TEXT, b"still usable"))
        client.send(PING, b"and pings")
        client.expect_pong(b"and pings")
    site.assert_intact()


def test_many_pings_in_one_write_are_answered_in_order(site: Site) -> None:
    with site.client(unique("pings")) as client:
        client.sendall(b"".join(encode_frame(PING, b"%d" % i, mask=MASK) for i in range(10)))
        for i in range(10):
            client.expect_pong(b"%d" % i)
    site.assert_intact()


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(encode_frame(PING, b"p" * 126, mask=MASK), id="ping-126"),
        pytest.param(encode_frame(PONG, b"p" * 126, mask=MASK), id="pong-126"),
        pytest.param(encode_frame(PING, b"p" * 65536, mask=MASK), id="ping-64k"),
        pytest.param(encode_frame(PING, b"frag", fin=False, mask=MASK), id="fragmented-ping"),
        pytest.param(encode_frame(PONG, b"frag", fin=False, mask=MASK), id="fragmented-pong"),
    ],
)
def test_invalid_control_frame_closes_1002(site: Site, frame: bytes) -> None:
    site.assert_violation(frame, 1002)


# --------------------------------------------------------------------------------------------
# Reserved bits (Autobahn 3.x) and reserved opcodes (Autobahn 4.x)


@pytest.mark.parametrize(
    ("opcode", "rsv"),
    [
        pytest.param(TEXT, 4, id="rsv1-text"),
        pytest.param(TEXT, 2, id="rsv2-text"),
        pytest.param(TEXT, 1, id="rsv3-text"),
        pytest.param(BINARY, 5, id="rsv1+3-binary"),
        pytest.param(PING, 3, id="rsv2+3-ping"),
        pytest.param(CLOSE, 7, id="rsv1+2+3-close"),
    ],
)
def test_reserved_bits_close_1002(site: Site, opcode: int, rsv: int) -> None:
    payload = (1000).to_bytes(2, "big") if opcode == CLOSE else b"reserved bits"
    site.assert_violation(encode_frame(opcode, payload, rsv=rsv, mask=MASK), 1002)


def test_reserved_bit_on_a_continuation_closes_1002(site: Site) -> None:
    data = encode_frame(TEXT, b"first", fin=False, mask=MASK)
    data += encode_frame(CONT, b"second", rsv=4, mask=MASK)
    site.assert_violation(data, 1002)


RESERVED_OPCODES = [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF]


@pytest.mark.parametrize(
    "opcode", RESERVED_OPCODES, ids=[f"opcode-{op}" for op in RESERVED_OPCODES]
)
def test_reserved_opcode_closes_1002(site: Site, opcode: int) -> None:
    site.assert_violation(encode_frame(opcode, b"reserved opcode", mask=MASK), 1002)


# --------------------------------------------------------------------------------------------
# Fragmentation (Autobahn 5.x)


def test_fragmented_message_is_delivered_once_and_whole(site: Site) -> None:
    facility = unique("fragments")
    with site.client(facility) as subscriber, site.client(facility, PUBLISH) as c:
        c.send(TEXT, b"one,", fin=False)
        c.send(CONT, b"two,", fin=False)
        c.send(PING, b"between fragments")
        c.send(CONT, b"", fin=False)
        c.send(CONT, b"three", fin=True)
        c.expect_pong(b"between fragments")
        # No fake b"\x00" message per fragment: the whole message, then the marker.
        site.assert_next_message(subscriber, facility, b"one,two,three")
        # UTF-8 split inside a character across fragments is fine.
        euro = "€".encode()
        c.send(TEXT, b"price " + euro[:1], fin=False)
        c.send(CONT, euro[1:], fin=True)
        site.assert_next_message(subscriber, facility, b"price " + euro)
    site.assert_intact()


def test_control_frames_between_fragments_are_answered(site: Site) -> None:
    facility = unique("interleaved-control")
    with site.client(facility, ECHO) as client:
        client.sendall(
            encode_frame(TEXT, b"frag1 ", fin=False, mask=MASK)
            + encode_frame(PING, b"ping 1", mask=MASK)
            + encode_frame(CONT, b"frag2 ", fin=False, mask=MASK)
            + encode_frame(PONG, b"unsolicited", mask=MASK)
            + encode_frame(CONT, b"frag3 ", fin=False, mask=MASK)
            + encode_frame(PING, b"ping 2", mask=MASK)
            + encode_frame(CONT, b"end", fin=True, mask=MASK)
        )
        # The pongs come at once, before the message has made its round trip through Redis.
        client.expect_pong(b"ping 1")
        client.expect_pong(b"ping 2")
        site.assert_echoes(client, facility, (TEXT, b"frag1 frag2 frag3 end"))
    site.assert_intact()


def test_fragmented_binary_message_stays_binary(site: Site) -> None:
    facility = unique("binary-fragments")
    payload = binary(3000)
    with site.client(facility, ECHO) as client:
        client.send(BINARY, payload[:1000], fin=False)
        client.send(CONT, payload[1000:2000], fin=False)
        client.send(CONT, payload[2000:], fin=True)
        site.assert_echoes(client, facility, (BINARY, payload))
    site.assert_intact()


def test_text_split_inside_characters_is_assembled(site: Site) -> None:
    facility = unique("multibyte-fragments")
    message = "é€𝄞中 κόσμε".encode()
    with site.client(facility, ECHO) as client:
        # one byte per fragment: every multibyte character is cut, the 4-byte one three times
        for i, byte in enumerate(message):
            last = i == len(message) - 1
            client.send(TEXT if i == 0 else CONT, bytes([byte]), fin=last)
        site.assert_echoes(client, facility, (TEXT, message))
    site.assert_intact()


def test_stray_continuation_frame_closes_1002(site: Site) -> None:
    with site.client(unique("stray"), PUBLISH) as client:
        client.send(CONT, b"nothing to continue", fin=True)
        assert client.expect_close() == 1002
    with site.client(unique("stray"), PUBLISH) as client:
        client.send(CONT, b"nothing to continue either", fin=False)
        assert client.expect_close() == 1002
    site.assert_intact()


@pytest.mark.parametrize(
    "frames",
    [
        pytest.param([(CONT, b"alone", True)], id="continuation-alone"),
        pytest.param([(CONT, b"first", False), (CONT, b"last", True)], id="continuations-alone"),
        pytest.param([(TEXT, b"x", False), (TEXT, b"x", False)], id="text-in-text"),
        pytest.param([(TEXT, b"x", False), (TEXT, b"y", True)], id="final-text-in-text"),
        pytest.param([(TEXT, b"x", False), (BINARY, b"y", True)], id="binary-in-text"),
        pytest.param([(BINARY, b"x", False), (TEXT, b"y", False)], id="text-in-binary"),
    ],
)
def test_broken_fragment_sequence_closes_1002(
    site: Site, frames: list[tuple[int, bytes, bool]]
) -> None:
    data = b"".join(encode_frame(op, p, fin=fin, mask=MASK) for op, p, fin in frames)
    site.assert_violation(data, 1002)


def test_interleaved_fragments_of_two_clients_do_not_mix(site: Site) -> None:
    facility = unique("interleaved")
    with (
        site.client(facility) as subscriber,
        site.client(facility, PUBLISH) as a,
        site.client(facility, PUBLISH) as b,
    ):
        # A ping after each fragment: its pong proves the server has read the fragment, so it
        # really holds two half-messages at once.
        a.send(TEXT, b"aaa", fin=False)
        a.send(PING, b"a1")
        a.expect_pong(b"a1")
        b.send(TEXT, b"bbb", fin=False)
        b.send(PING, b"b1")
        b.expect_pong(b"b1")
        a.send(CONT, b"AAA", fin=True)
        assert subscriber.recv_message() == b"aaaAAA"
        b.send(CONT, b"BBB", fin=True)
        site.assert_next_message(subscriber, facility, b"bbbBBB")
    site.assert_intact()


# --------------------------------------------------------------------------------------------
# UTF-8 (Autobahn 6.x)

VALID_UTF8 = {
    "2-byte": "Hello-µ@ßöäüàá-UTF-8!!",
    "3-byte": "κόσμε € 中文 \ufeff \uffff",
    "4-byte": "𝄞 😀 \U00010000 \U0010ffff",
    "boundaries": "\x00 \x7f \x80 \u07ff \u0800 \ud7ff \ue000 \ufffd",
}


@pytest.mark.parametrize("message", list(VALID_UTF8.values()), ids=list(VALID_UTF8))
def test_valid_utf8_is_echoed_as_text(site: Site, message: str) -> None:
    facility = unique("utf8-valid")
    with site.client(facility, ECHO) as client:
        client.send(TEXT, message.encode())
        site.assert_echoes(client, facility, (TEXT, message.encode()))
    site.assert_intact()


INVALID_UTF8 = {
    # in one frame
    "one-frame": [(TEXT, b"caf\xe9", True)],
    "lone-continuation-byte": [(TEXT, b"\x80", True)],
    "byte-fe": [(TEXT, b"ok \xfe", True)],
    "byte-ff": [(TEXT, b"ok \xff", True)],
    "truncated-at-end": [(TEXT, b"abc\xe2\x82", True)],
    "overlong-2-byte": [(TEXT, b"\xc0\xaf", True)],
    "overlong-3-byte": [(TEXT, b"\xe0\x80\xaf", True)],
    "overlong-4-byte": [(TEXT, b"\xf0\x80\x80\xaf", True)],
    "overlong-nul": [(TEXT, b"\xc0\x80", True)],
    "surrogate": [(TEXT, b"\xed\xa0\x80 surrogate", True)],
    "low-surrogate": [(TEXT, b"\xed\xbf\xbf", True)],
    "surrogate-pair": [(TEXT, b"\xed\xa0\x80\xed\xb0\x80", True)],
    "above-10ffff": [(TEXT, b"\xf4\x90\x80\x80", True)],
    "byte-f5": [(TEXT, b"\xf5\x80\x80\x80", True)],
    # across fragments
    "split": [(TEXT, b"abc\xe2\x82", False), (CONT, b"(abc", True)],
    "truncated": [(TEXT, b"abc\xe2\x82", False), (CONT, b"", True)],
    "overlong-split": [(TEXT, b"ok \xe0", False), (CONT, b"\x80\xaf", True)],
    "surrogate-split": [(TEXT, b"ok \xed", False), (CONT, b"\xa0\x80", True)],
    "invalid-in-last-fragment": [(TEXT, b"fine ", False), (CONT, b"\xc3\x28", True)],
    # failed at once, from the first fragment alone: no final fragment is ever sent
    "fail-fast-above-10ffff": [(TEXT, b"ok \xf4\x90", False)],
    "fail-fast-surrogate-prefix": [(TEXT, b"ok \xed\xa0", False)],
    "fail-fast-overlong": [(TEXT, b"ok \xc0", False)],
}


@pytest.mark.parametrize("frames", list(INVALID_UTF8.values()), ids=list(INVALID_UTF8))
def test_invalid_utf8_closes_1007(site: Site, frames: list[tuple[int, bytes, bool]]) -> None:
    facility = unique("utf8")
    with site.client(facility) as subscriber, site.client(facility, PUBLISH) as c:
        for opcode, payload, fin in frames:
            c.send(opcode, payload, fin=fin)
        assert c.expect_close() == 1007
        site.assert_next_message(subscriber, facility)  # nothing was published
    site.assert_intact()


def test_invalid_utf8_in_close_reason_closes_1007(site: Site) -> None:
    reason = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited"
    site.assert_violation(encode_frame(CLOSE, (1000).to_bytes(2, "big") + reason, mask=MASK), 1007)


# --------------------------------------------------------------------------------------------
# Close codes (Autobahn 7.x)

VALID_CLOSE_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999]
INVALID_CLOSE_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]


def client_close(site: Site, payload: bytes) -> int:
    """A client closes with ``payload``; the code of the server's answer (then the TCP end)."""
    with site.client(unique("close"), PUBLISH) as client:
        client.send(CLOSE, payload)
        code = client.recv_close()
        client.expect_eof()
    return code


@pytest.mark.parametrize("code", VALID_CLOSE_CODES)
def test_valid_close_code_is_echoed(site: Site, code: int) -> None:
    assert client_close(site, code.to_bytes(2, "big")) == code
    site.assert_intact()


def test_close_with_the_longest_reason_is_echoed(site: Site) -> None:
    reason = "é" * 61 + "!"  # 123 bytes: the payload is 125 bytes, the most a close can carry
    assert client_close(site, (3001).to_bytes(2, "big") + reason.encode()) == 3001
    site.assert_intact()


def test_empty_close_is_answered_with_1000(site: Site) -> None:
    assert client_close(site, b"") == 1000
    site.assert_intact()


@pytest.mark.parametrize("code", INVALID_CLOSE_CODES)
def test_invalid_close_code_closes_1002(site: Site, code: int) -> None:
    site.assert_violation(encode_frame(CLOSE, code.to_bytes(2, "big"), mask=MASK), 1002)


@pytest.mark.parametrize(
    "payload",
    [pytest.param(b"\x03", id="1-byte"), pytest.param(b"\x03\xe8" + b"r" * 124, id="126-bytes")],
)
def test_malformed_close_payload_closes_1002(site: Site, payload: bytes) -> None:
    site.assert_violation(encode_frame(CLOSE, payload, mask=MASK), 1002)


def test_nothing_after_the_close_frame_is_published(site: Site) -> None:
    facility = unique("after-close")
    with site.client(facility) as subscriber:
        with site.client(facility, PUBLISH) as client:
            client.sendall(
                encode_frame(TEXT, b"before the close", mask=MASK)
                + encode_frame(CLOSE, (1000).to_bytes(2, "big"), mask=MASK)
                + encode_frame(TEXT, b"after the close", mask=MASK)
                + encode_frame(PING, b"after the close", mask=MASK)
            )
            assert client.recv_close() == 1000  # no pong before it, nothing after it
            client.expect_eof()
        site.assert_next_message(subscriber, facility, b"before the close")
    site.assert_intact()


def test_close_while_a_message_is_being_written_is_answered(site: Site) -> None:
    # The client closes while the server is stuck writing to it: the client reads nothing
    # meanwhile and keeps its window small, and 6 MiB of echoes is more than any send buffer
    # (net.ipv4.tcp_wmem allows 4 MiB at most).  The server must finish the frame it is
    # writing and then answer the close (RFC 6455 §5.5.1), whatever else it drops.
    facility = unique("close-while-writing")
    payload = text(MAX_MESSAGE_SIZE)
    count = 6
    pubsub = site.redis.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(broadcast_key(facility))
    try:
        with RawClient(site.port, facility, ECHO, receive_buffer=4096) as client:
            client.sendall(encode_frame(TEXT, payload, mask=MASK) * count)
            deadline = time.monotonic() + TIMEOUT
            for _ in range(count):  # all published: the server has them all to write
                while pubsub.get_message(timeout=0.5) is None:
                    assert time.monotonic() < deadline, "timed out waiting for the publications"
            client.send(CLOSE, (1000).to_bytes(2, "big"))
            echoed = 0
            while (frame := client.recv_significant()).opcode == TEXT:
                assert digest(frame.payload) == digest(payload)
                echoed += 1
            assert 1 <= echoed <= count
            assert (frame.opcode, frame.payload) == (CLOSE, (1000).to_bytes(2, "big"))
            client.expect_eof()
    finally:
        pubsub.close()
    site.assert_intact()


def test_failing_server_ends_the_tcp_connection(site: Site) -> None:
    # RFC 6455 §5.5.1 and §7.1.1: once it has sent and received a close frame, the server MUST
    # close the TCP connection (and it closes first). The client here answers the server's
    # 1002 and then waits, as browsers do, so the server has to end the connection itself;
    # CLOSE_TIMEOUT (2 s) in ws4redis/wsgi_server.py is only the fallback for a silent client.
    # uWSGI's HTTP router closes the client's socket outright as soon as the worker has ended
    # its side, so the client's answer may draw a reset from the router instead of the FIN.
    with site.client(unique("fail-close"), PUBLISH) as client:
        client.send(CONT, b"nothing to continue")
        assert client.expect_close() == 1002
        client.expect_eof(timeout=1.0, reset_allowed=site.kind == "http-router")
    site.assert_intact()


# --------------------------------------------------------------------------------------------
# Masking: every client frame must be masked (RFC 6455 §5.1)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(encode_frame(TEXT, b"not masked"), id="text"),
        pytest.param(encode_frame(BINARY, b"\xff not masked"), id="binary"),
        pytest.param(encode_frame(PING, b"not masked"), id="ping"),
        pytest.param(encode_frame(CLOSE, (1000).to_bytes(2, "big")), id="close"),
        pytest.param(
            encode_frame(TEXT, b"masked ", fin=False, mask=MASK) + encode_frame(CONT, b"not"),
            id="continuation",
        ),
    ],
)
def test_unmasked_client_frame_closes_1002(site: Site, data: bytes) -> None:
    site.assert_violation(data, 1002)


# --------------------------------------------------------------------------------------------
# Limits (Autobahn 9.x and WS4REDIS_MAX_MESSAGE_SIZE)


def test_burst_of_1000_small_messages_is_echoed_in_order(site: Site) -> None:
    facility = unique("burst")
    messages = [f"burst message {i:04d}".encode() for i in range(1000)]
    with site.client(facility, ECHO) as client:
        client.sendall(b"".join(encode_frame(TEXT, m, mask=MASK) for m in messages))
        site.assert_echoes(client, facility, *((TEXT, m) for m in messages))
    site.assert_intact()


def test_message_of_exactly_the_limit_is_accepted(site: Site) -> None:
    facility = unique("limit")
    payload = text(MAX_MESSAGE_SIZE)
    with site.client(facility) as subscriber, site.client(facility, PUBLISH) as c:
        pieces = [payload[i : i + FRAGMENT] for i in range(0, MAX_MESSAGE_SIZE, FRAGMENT)]
        c.sendall(
            b"".join(
                encode_frame(TEXT if i == 0 else CONT, p, fin=i == len(pieces) - 1, mask=MASK)
                for i, p in enumerate(pieces)
            )
        )
        site.assert_echoes(subscriber, facility, (TEXT, payload))
        c.send(PING, b"still open")
        c.expect_pong(b"still open")
    site.assert_intact()


@pytest.mark.parametrize("fragment", [4096, FRAGMENT], ids=["4KiB-fragments", "64KiB-fragments"])
def test_over_limit_fragmented_message_closes_1009(site: Site, fragment: int) -> None:
    facility = unique("too-big")
    count = MAX_MESSAGE_SIZE // fragment
    with site.client(facility) as subscriber, site.client(facility, PUBLISH) as c:
        # ``count`` fragments make exactly 1 MiB; one more byte is over the limit.
        chunk = text(fragment)
        frames = [encode_frame(TEXT, chunk, fin=False, mask=MASK)]
        frames += [encode_frame(CONT, chunk, fin=False, mask=MASK)] * (count - 1)
        frames.append(encode_frame(CONT, b"!", fin=True, mask=MASK))
        c.sendall(b"".join(frames))
        assert c.expect_close() == 1009
        site.assert_next_message(subscriber, facility)  # nothing was published
    site.assert_intact()


def test_over_limit_frame_closes_1009_from_its_header(site: Site) -> None:
    # Only the header and a little of the payload are sent: the declared length is enough.
    header = bytes((0x80 | BINARY, 0x80 | 127)) + (MAX_MESSAGE_SIZE + 1).to_bytes(8, "big")
    site.assert_violation(header + MASK + b"\x00" * 1000, 1009)


# --------------------------------------------------------------------------------------------
# The opening handshake, checked by ws4redis before any 101 is written


@pytest.mark.parametrize(
    ("spoilt", "status"),
    [
        pytest.param({"method": "POST"}, 405, id="post"),
        pytest.param({"http_version": "HTTP/1.0"}, 400, id="http-1.0"),
        pytest.param({"drop": ["Sec-WebSocket-Key"]}, 400, id="key-missing"),
        pytest.param({"key": "not-a-key"}, 400, id="key-not-base64"),
        pytest.param({"key": base64.b64encode(b"15 bytes only!!").decode()}, 400, id="key-15"),
        pytest.param({"key": ""}, 400, id="key-empty"),
        pytest.param({"drop": ["Upgrade"]}, 400, id="upgrade-missing"),
        pytest.param({"version": "12"}, 426, id="version-12"),
        pytest.param({"version": "8"}, 426, id="version-8"),
    ],
)
def test_invalid_handshake_is_refused(site: Site, spoilt: dict[str, object], status: int) -> None:
    response = refused_handshake(site.port, **spoilt)
    assert response.status == status, response
    assert "sec-websocket-accept" not in response.headers
    body = response.rest.decode("utf-8")
    assert body.strip() and "\n" not in body.strip() and "Traceback" not in body
    if status == 405:
        assert response.headers.get("allow") == "GET"
    if status == 426:
        assert response.headers.get("sec-websocket-version") == "13"
    if spoilt == {"drop": ["Upgrade"]}:
        assert "websocket" in body.lower() and "upgrade" in body.lower(), body
    site.assert_intact()

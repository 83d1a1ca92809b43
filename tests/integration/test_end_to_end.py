"""End-to-end tests: real clients against the example project under real uWSGI + gevent.

Every test talks to a ``uwsgi --http-socket … --gevent 1000 --http-websockets`` process over
TCP, with ``websocket-client`` where a client library is enough and raw sockets where it would
hide what is asserted (status lines, header lines, the bytes after the upgrade).  Messages come
from the test through Redis (``RedisPublisher`` or a plain ``PUBLISH``), exactly as from a
Django view.

Servers come from ``conftest.start_uwsgi``; one settings module per special configuration
lives in ``tests/sites/``.

To assert that a client does *not* receive something without waiting an arbitrary time, the
test publishes a sentinel on a channel the client does listen to, right after the message that
must not arrive: Redis delivers a subscriber's messages in publication order, so the next
message the client sees must be the sentinel.
"""

from __future__ import annotations

import base64
import functools
import os
import re
import socket
import struct
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest
import redis
import websocket

from tests.conftest import login
from tools.servers import RedisServer, UwsgiServer, raise_fd_limit
from ws4redis.connection import LOOP_POOL_MAX_CONNECTIONS
from ws4redis.publisher import RedisPublisher
from ws4redis.websocket import FrameDecoder, Opcode, encode_close, encode_frame

PREFIX = "ws"
HEARTBEAT = "--heartbeat--"
TIMEOUT = 5.0
MASK = b"abcd"
CACHE_MAX_CONNECTIONS = 8  # the example's CACHES OPTIONS


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def publisher_settings(ws_settings):  # noqa: ANN001, ANN201
    """The test process publishes like the example's Django loop: same prefix and expiry."""
    ws_settings.WS4REDIS_PREFIX = PREFIX
    ws_settings.WS4REDIS_EXPIRE = 7200
    ws_settings.WS4REDIS_HEARTBEAT = HEARTBEAT
    return ws_settings


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A client of the session's Redis server, *not* emptied before the test.

    The example keeps its sessions in this Redis: emptying it would log the users of the
    module-scoped ``cookies`` out.  Every test uses a facility of its own instead.
    """
    client = redis_server.client()
    yield client
    client.close()


@pytest.fixture
def facility(request: pytest.FixtureRequest) -> str:
    """A facility name no other test uses, so channels and persisted keys never collide."""
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")
    return f"{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module", params=["uwsgi", "runserver"])
def server_kind(request: pytest.FixtureRequest) -> str:
    """Every behaviour test runs against uWSGI + gevent and against ``manage.py runserver``."""
    return request.param


@pytest.fixture(scope="module")
def start_site(
    start_uwsgi: Callable[..., UwsgiServer], server_kind: str
) -> Callable[..., UwsgiServer]:
    """Start the example on ``server_kind`` with one of the settings modules of ``tests/sites``."""
    return functools.partial(start_uwsgi, kind=server_kind)


@pytest.fixture(scope="module")
def uwsgi_server(start_site: Callable[..., UwsgiServer]) -> UwsgiServer:
    """The example project as configured in ``chatserver.settings``."""
    return start_site()


@pytest.fixture(scope="module")
def restricted_server(start_site: Callable[..., UwsgiServer]) -> UwsgiServer:
    """The example refusing anonymous users (``WS4REDIS_ALLOWED_CHANNELS`` from the spec)."""
    return start_site("tests.sites.restricted")


@pytest.fixture(scope="module")
def hook_server(start_site: Callable[..., UwsgiServer]) -> UwsgiServer:
    """The example with a ``WS4REDIS_PROCESS_REQUEST`` hook."""
    return start_site("tests.sites.process_request")


@pytest.fixture(scope="module")
def heartbeat_server(start_site: Callable[..., UwsgiServer]) -> UwsgiServer:
    """The example sending heartbeats after 0.5 s of idleness."""
    return start_site("tests.sites.fast_heartbeat")


@pytest.fixture(scope="module")
def no_expire_server(start_site: Callable[..., UwsgiServer]) -> UwsgiServer:
    """The example with ``WS4REDIS_EXPIRE = None``."""
    return start_site("tests.sites.no_expire")


@pytest.fixture(scope="module")
def cookies(uwsgi_server: UwsgiServer) -> dict[str, str]:
    """``Cookie`` header values of the fixture users, logged in through the example's page."""
    return {name: login(uwsgi_server.port, name) for name in ("admin", "john", "mary")}


# -- helpers ----------------------------------------------------------------------------------


def ws_path(facility: str, query: str = "") -> str:
    """The path of the WebSocket of ``facility`` with the URL flags ``query``."""
    return f"/ws/{facility}" + (f"?{query}" if query else "")


def ws_url(server: UwsgiServer, facility: str, query: str = "") -> str:
    """The WebSocket URL of ``facility`` on ``server`` with the URL flags ``query``."""
    return f"ws://127.0.0.1:{server.port}{ws_path(facility, query)}"


def connect(
    server: UwsgiServer, facility: str, query: str = "", **options: object
) -> websocket.WebSocket:
    """Open a WebSocket with ``websocket-client``; every later receive times out."""
    return websocket.create_connection(ws_url(server, facility, query), timeout=TIMEOUT, **options)


def receive(ws: websocket.WebSocket, *, skip_heartbeats: bool = True) -> tuple[int, bytes]:
    """The next data message as ``(opcode, payload)``, heartbeats skipped unless asked for."""
    while True:
        opcode, data = ws.recv_data()
        if skip_heartbeats and opcode == Opcode.TEXT and data == HEARTBEAT.encode():
            continue
        return opcode, data


def receive_text(ws: websocket.WebSocket) -> str:
    """The next data message, which must be a text message."""
    opcode, data = receive(ws)
    assert opcode == Opcode.TEXT, (opcode, data)
    return data.decode("utf-8")


def round_trip(ws: websocket.WebSocket) -> None:
    """Ping and wait for the pong: the server has handled everything this client sent before.

    The loop handles a client's frames in order, publishing a message before it reads on.
    """
    token = uuid.uuid4().hex.encode()
    ws.ping(token)
    while True:
        opcode, data = ws.recv_data(control_frame=True)
        if opcode == Opcode.PONG and data == token:
            return
        assert opcode == Opcode.TEXT and data == HEARTBEAT.encode(), (opcode, data)


def broadcast_key(facility: str) -> str:
    return f"{PREFIX}:broadcast:{facility}"


def sentinel(redis_client, facility: str) -> str:  # noqa: ANN001
    """Publish a unique marker on the broadcast channel of ``facility``; return it."""
    marker = f"sentinel-{uuid.uuid4().hex}"
    redis_client.publish(broadcast_key(facility), marker)
    return marker


def next_pubsub_message(pubsub) -> bytes:  # noqa: ANN001
    """The payload of the next message a redis-py ``PubSub`` receives."""
    message = poll(lambda: pubsub.get_message(timeout=0.1), TIMEOUT, "a pub/sub message")
    return message["data"]  # type: ignore[index]


def session_key(cookie: str) -> str:
    """The session key inside a ``sessionid=…`` cookie value."""
    return cookie.split("=", 1)[1]


def poll(condition: Callable[[], object], timeout: float, what: str) -> object:
    """Wait until ``condition()`` is truthy and return its value; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def wait_for_request_log(server: UwsgiServer, path: str, since: int) -> str:
    """The server's log written after offset ``since``, once it holds the request of ``path``.

    Both servers write their request log line when the request (the whole WebSocket) is over:
    uWSGI as ``… GET PATH => generated …``, runserver as ``"GET PATH HTTP/1.1" STATUS …``.
    """
    escaped = re.escape(path)
    pattern = re.compile(rf"\] GET {escaped} => generated|\"GET {escaped} HTTP/1\.1\" \d{{3}}")

    def finished() -> str | None:
        log = server.log()[since:]
        return log if pattern.search(log) else None

    return str(poll(finished, 10, f"the request log line of {path}"))


REQUEST_LOG_LINE = re.compile(
    r"^(\[pid: \d+\|app: .* => generated .*|\[[^]]+\] \"GET [^\"]* HTTP/1\.1\" \d{3} .*)$",
    re.MULTILINE,
)
TROUBLE = re.compile(r"traceback|error|exception|fail", re.IGNORECASE)


def assert_clean(log: str) -> None:
    """No traceback, error or failure in this part of a server log (request lines aside)."""
    messages = REQUEST_LOG_LINE.sub("", log)
    assert not TROUBLE.search(messages), messages


# -- raw sockets ------------------------------------------------------------------------------


@dataclass
class Response:
    """An HTTP response read from a raw socket; ``rest`` is what followed a 101's headers."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""
    rest: bytes = b""
    sock: socket.socket | None = field(default=None, repr=False)

    def header(self, name: str) -> list[str]:
        """Every value of header ``name`` (case-insensitive), in order."""
        return [value for key, value in self.headers if key.lower() == name.lower()]


def new_key() -> str:
    return base64.b64encode(os.urandom(16)).decode()


def handshake_request(
    port: int, path: str, headers: dict[str, str] | None = None, *, upgrade: bool = True
) -> bytes:
    """The bytes of a client's opening handshake (or a plain GET with ``upgrade=False``)."""
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    if upgrade:
        lines += [
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {new_key()}",
            "Sec-WebSocket-Version: 13",
        ]
    fields = dict(line.split(": ", 1) for line in lines[1:])
    fields.update(headers or {})
    request = [lines[0], *(f"{k}: {v}" for k, v in fields.items() if v is not None)]
    return ("\r\n".join(request) + "\r\n\r\n").encode("latin-1")


def exchange(port: int, request: bytes) -> Response:
    """Send ``request`` on a new connection and read the response.

    A 101 keeps the socket open (``response.sock``); any other response is read to its
    ``Content-Length`` and the socket closed.
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before the response headers: {data!r}")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = [tuple(line.split(": ", 1)) for line in header_lines]
    response = Response(int(status_line.split()[1]), headers)  # type: ignore[arg-type]
    if response.status == 101:
        response.rest, response.sock = rest, sock
        return response
    length = int(response.header("Content-Length")[0])
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    sock.close()
    response.body = rest
    return response


def read_until_eof(sock: socket.socket) -> bytes:
    """Everything the server writes until it closes the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """Split bytes sent by the server into ``(opcode, payload)``; all of them must be frames."""
    decoder = FrameDecoder(require_mask=False)
    decoder.feed(data)
    frames = []
    while (frame := decoder.next_frame()) is not None:
        assert frame.fin and not frame.masked and not frame.rsv, frame
        frames.append((frame.opcode, frame.payload))
    # the server encodes minimally: the frames found, encoded again, must be all the bytes
    assert b"".join(encode_frame(*f) for f in frames) == data, f"not only frames: {data!r}"
    return frames


def client_frame(opcode: int, payload: bytes) -> bytes:
    return encode_frame(opcode, payload, mask=MASK)


def raw_websocket(server: UwsgiServer, facility: str, query: str) -> Response:
    """Open a WebSocket over a raw socket; the 101 must come with nothing after it."""
    response = exchange(server.port, handshake_request(server.port, ws_path(facility, query)))
    assert response.status == 101, response
    assert response.rest == b""
    return response


# -- 1. broadcast -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    ["subscribe-broadcast&publish-broadcast", "subscribe=broadcast&publish=broadcast"],
)
def test_broadcast_reaches_subscribers_from_django_and_from_clients(
    uwsgi_server, publisher_settings, facility, query
):
    listener = connect(uwsgi_server, facility, query)
    sender = connect(uwsgi_server, facility, query)
    try:
        RedisPublisher(facility=facility, broadcast=True).publish_message("from django")
        assert receive_text(listener) == "from django"
        assert receive_text(sender) == "from django"

        sender.send("from a client")
        assert receive_text(listener) == "from a client"
    finally:
        listener.close()
        sender.close()


# -- 2. audiences -----------------------------------------------------------------------------


def test_user_messages_reach_only_that_user(
    uwsgi_server, publisher_settings, redis_client, cookies, facility
):
    query = "subscribe-user&subscribe-broadcast"
    john = connect(uwsgi_server, facility, query, cookie=cookies["john"])
    mary = connect(uwsgi_server, facility, query, cookie=cookies["mary"])
    try:
        RedisPublisher(facility=facility, users=["john"]).publish_message("for john")
        marker = sentinel(redis_client, facility)
        assert receive_text(john) == "for john"
        assert receive_text(john) == marker
        assert receive_text(mary) == marker
    finally:
        john.close()
        mary.close()


def test_group_messages_reach_group_members_only(
    uwsgi_server, publisher_settings, redis_client, cookies, facility
):
    query = "subscribe-group&subscribe-broadcast"
    clients = {
        name: connect(uwsgi_server, facility, query, cookie=cookies[name]) for name in cookies
    }
    try:
        RedisPublisher(facility=facility, groups=["chatters"]).publish_message("for chatters")
        marker = sentinel(redis_client, facility)
        assert receive_text(clients["john"]) == "for chatters"
        assert receive_text(clients["mary"]) == "for chatters"
        for ws in clients.values():
            assert receive_text(ws) == marker
    finally:
        for ws in clients.values():
            ws.close()


def test_session_messages_reach_that_session_only(
    uwsgi_server, publisher_settings, redis_client, cookies, facility
):
    query = "subscribe-session&subscribe-broadcast"
    john = connect(uwsgi_server, facility, query, cookie=cookies["john"])
    mary = connect(uwsgi_server, facility, query, cookie=cookies["mary"])
    try:
        john_session = session_key(cookies["john"])
        RedisPublisher(facility=facility, sessions=[john_session]).publish_message("for you")
        marker = sentinel(redis_client, facility)
        assert receive_text(john) == "for you"
        assert receive_text(john) == marker
        assert receive_text(mary) == marker
    finally:
        john.close()
        mary.close()


def test_anonymous_self_channels_are_never_shared(uwsgi_server, redis_client, facility):
    query = "subscribe-user&subscribe-group&subscribe-session&subscribe-broadcast&publish-user"
    first = connect(uwsgi_server, facility, query)
    # a session cookie naming no stored session is no session either
    second = connect(uwsgi_server, facility, query, cookie="sessionid=nosuchsessionkey12345")
    try:
        assert first.getstatus() == 101
        assert second.getstatus() == 101
        # the only channel of this facility anybody subscribed to is the broadcast
        assert redis_client.pubsub_channels(f"{PREFIX}:*:{facility}") == [
            broadcast_key(facility).encode()
        ]
        for name in ("SELF", "None", "", "AnonymousUser", "anonymous", "nosuchsessionkey12345"):
            for audience in ("user", "group", "session"):
                assert redis_client.publish(f"{PREFIX}:{audience}:{name}:{facility}", "x") == 0
        first.send("anonymous talk")  # publish-user without a user publishes nowhere
        round_trip(first)
        marker = sentinel(redis_client, facility)
        assert receive_text(first) == marker
        assert receive_text(second) == marker
    finally:
        first.close()
        second.close()


def test_clients_publish_to_their_own_user_group_and_session(
    uwsgi_server, redis_client, cookies, facility
):
    listen = "subscribe-user&subscribe-group&subscribe-session&subscribe-broadcast"
    john = connect(uwsgi_server, facility, "publish-user", cookie=cookies["john"])
    john_tab = connect(uwsgi_server, facility, listen, cookie=cookies["john"])
    mary = connect(uwsgi_server, facility, listen, cookie=cookies["mary"])
    admin = connect(uwsgi_server, facility, listen, cookie=cookies["admin"])
    group = connect(uwsgi_server, facility, "publish-group", cookie=cookies["john"])
    session = connect(uwsgi_server, facility, "publish-session", cookie=cookies["john"])
    try:
        # one sender at a time: messages of different connections have no order between them
        john.send("to john's user channel")
        assert receive_text(john_tab) == "to john's user channel"
        group.send("to john's groups")
        assert receive_text(john_tab) == "to john's groups"
        assert receive_text(mary) == "to john's groups"
        session.send("to john's session")
        assert receive_text(john_tab) == "to john's session"
        marker = sentinel(redis_client, facility)  # published after all of the above
        assert receive_text(john_tab) == marker
        assert receive_text(mary) == marker
        assert receive_text(admin) == marker
    finally:
        for ws in (john, john_tab, mary, admin, group, session):
            ws.close()


# -- 3. echo ----------------------------------------------------------------------------------


def test_sender_does_not_get_its_message_back_without_echo(uwsgi_server, redis_client, facility):
    query = "subscribe-broadcast&publish-broadcast"
    sender = connect(uwsgi_server, facility, query)
    other = connect(uwsgi_server, facility, query)
    try:
        sender.send("my state")
        assert receive_text(other) == "my state"
        marker = sentinel(redis_client, facility)
        assert receive_text(sender) == marker
        assert receive_text(other) == marker
    finally:
        sender.close()
        other.close()


def test_sender_gets_its_message_back_with_echo(uwsgi_server, facility):
    sender = connect(uwsgi_server, facility, "subscribe-broadcast&publish-broadcast&echo")
    other = connect(uwsgi_server, facility, "subscribe-broadcast")
    try:
        sender.send("said twice")
        assert receive_text(sender) == "said twice"
        assert receive_text(other) == "said twice"
        sender.send("said twice")
        assert receive_text(sender) == "said twice"
    finally:
        sender.close()
        other.close()


# -- 4. persisted messages --------------------------------------------------------------------


def test_persisted_message_is_sent_right_after_connect(
    uwsgi_server, publisher_settings, redis_client, facility
):
    RedisPublisher(facility=facility, broadcast=True).publish_message("remember me")
    assert 0 < redis_client.ttl(broadcast_key(facility)) <= 7200
    ws = connect(uwsgi_server, facility, "subscribe-broadcast")
    try:
        assert receive_text(ws) == "remember me"
        marker = sentinel(redis_client, facility)
        assert receive_text(ws) == marker
    finally:
        ws.close()


def test_expire_none_persists_nothing(no_expire_server, publisher_settings, redis_client, facility):
    publisher_settings.WS4REDIS_EXPIRE = None
    key = broadcast_key(facility)
    RedisPublisher(facility=facility, broadcast=True).publish_message("not kept by django")
    assert redis_client.exists(key) == 0

    sender = connect(no_expire_server, facility, "subscribe-broadcast&publish-broadcast&echo")
    try:
        sender.send("not kept by the websocket loop")
        assert receive_text(sender) == "not kept by the websocket loop"
        assert redis_client.exists(key) == 0
    finally:
        sender.close()

    redis_client.set(key, "stale copy")  # even a copy left by someone else is not sent
    ws = connect(no_expire_server, facility, "subscribe-broadcast")
    try:
        marker = sentinel(redis_client, facility)
        assert receive_text(ws) == marker
    finally:
        ws.close()


# -- 5. text and binary -----------------------------------------------------------------------


def test_text_stays_text_and_binary_stays_binary(uwsgi_server, publisher_settings, facility):
    sender = connect(uwsgi_server, facility, "publish-broadcast")
    listener = connect(uwsgi_server, facility, "subscribe-broadcast")
    try:
        sender.send_binary(b"\x00\xff\xfe")
        assert receive(listener) == (Opcode.BINARY, b"\x00\xff\xfe")
        sender.send("héllo wörld")
        assert receive(listener) == (Opcode.TEXT, "héllo wörld".encode())

        publisher = RedisPublisher(facility=facility, broadcast=True)
        publisher.publish_message(b"\x80\x81 not utf-8")
        assert receive(listener) == (Opcode.BINARY, b"\x80\x81 not utf-8")
        publisher.publish_message("ünïcode text")
        assert receive(listener) == (Opcode.TEXT, "ünïcode text".encode())
    finally:
        sender.close()
        listener.close()


# -- 6. heartbeats ----------------------------------------------------------------------------


def test_idle_client_receives_heartbeats(heartbeat_server, facility):
    ws = connect(heartbeat_server, facility, "subscribe-broadcast")
    try:
        for _ in range(3):
            assert receive(ws, skip_heartbeats=False) == (Opcode.TEXT, HEARTBEAT.encode())
    finally:
        ws.close()


def test_incoming_heartbeats_are_not_published(heartbeat_server, redis_client, facility):
    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(broadcast_key(facility))
    listener = connect(heartbeat_server, facility, "subscribe-broadcast")
    sender = connect(heartbeat_server, facility, "publish-broadcast")
    try:
        sender.send(HEARTBEAT)
        sender.send(HEARTBEAT)
        sender.send("real message")
        assert next_pubsub_message(pubsub) == b"real message"
        assert receive_text(listener) == "real message"
        assert redis_client.get(broadcast_key(facility)) == b"real message"
    finally:
        pubsub.close()
        sender.close()
        listener.close()


# -- 7. subprotocols --------------------------------------------------------------------------


def test_one_of_several_subprotocols_is_selected(uwsgi_server, facility):
    ws = connect(uwsgi_server, facility, "subscribe-broadcast", subprotocols=["chat", "superchat"])
    try:
        assert ws.getsubprotocol() == "chat"
        assert ws.getheaders()["sec-websocket-protocol"] == "chat"
    finally:
        ws.close()

    path = f"/ws/{facility}?subscribe-broadcast"
    request = handshake_request(
        uwsgi_server.port, path, {"Sec-WebSocket-Protocol": "chat, superchat"}
    )
    response = exchange(uwsgi_server.port, request)
    try:
        assert response.status == 101
        assert response.header("Sec-WebSocket-Protocol") == ["chat"]
    finally:
        response.sock.close()


def test_no_subprotocol_header_when_none_offered(uwsgi_server, facility):
    response = exchange(uwsgi_server.port, handshake_request(uwsgi_server.port, f"/ws/{facility}"))
    try:
        assert response.status == 101
        assert response.header("Sec-WebSocket-Protocol") == []
    finally:
        response.sock.close()


# -- 8. handshake errors ----------------------------------------------------------------------


def assert_no_traceback(response: Response) -> None:
    assert b"Traceback" not in response.body
    assert b'File "' not in response.body


def test_plain_get_is_told_to_upgrade(uwsgi_server):
    port = uwsgi_server.port
    response = exchange(port, handshake_request(port, "/ws/foo", upgrade=False))
    assert response.status == 400
    assert b"upgrade" in response.body.lower()
    assert b"websocket" in response.body.lower()
    assert_no_traceback(response)


def test_unsupported_version_gets_426(uwsgi_server):
    port = uwsgi_server.port
    response = exchange(port, handshake_request(port, "/ws/foo", {"Sec-WebSocket-Version": "8"}))
    assert response.status == 426
    assert response.header("Sec-WebSocket-Version") == ["13"]
    assert_no_traceback(response)


@pytest.fixture(scope="module")
def redis_down_server(start_site: Callable[..., UwsgiServer]) -> UwsgiServer:
    """The example with WS4REDIS_CONNECTION and its session cache on a Redis that is not there."""
    return start_site("tests.sites.redis_down")


@pytest.mark.parametrize("cookie", [None, "sessionid=0123456789abcdefghijklmnopqrstuv"])
def test_redis_unreachable_at_handshake_gets_503(redis_down_server, cookie):
    port = redis_down_server.port
    since = len(redis_down_server.log())
    headers = {"Cookie": cookie} if cookie else {}
    response = exchange(port, handshake_request(port, "/ws/foo?subscribe-broadcast", headers))
    assert response.status == 503
    assert response.header("Retry-After") == ["5"]
    assert b"Redis is unavailable" in response.body
    assert_no_traceback(response)
    assert "Traceback" not in redis_down_server.log()[since:]


@pytest.mark.parametrize(
    ("origin", "status"),
    [("http://evil.example", 403), ("same-host", 101), (None, 101)],
)
def test_cross_site_origin_is_refused(uwsgi_server, origin, status):
    port = uwsgi_server.port
    if origin == "same-host":
        origin = f"http://127.0.0.1:{port}"
    request = handshake_request(port, "/ws/foo?subscribe-user", {"Origin": origin})
    response = exchange(port, request)
    if response.sock is not None:
        response.sock.close()
    assert response.status == status
    assert_no_traceback(response)


def test_restricted_site_refuses_anonymous_users(restricted_server, facility):
    port = restricted_server.port
    since = len(restricted_server.log())
    path = ws_path(facility, "subscribe-broadcast")
    response = exchange(port, handshake_request(port, path))
    assert response.status == 403
    assert_no_traceback(response)
    assert_clean(wait_for_request_log(restricted_server, path, since))


def test_restricted_site_accepts_logged_in_users(restricted_server, redis_client, facility):
    cookie = login(restricted_server.port, "john")
    ws = connect(restricted_server, facility, "subscribe-broadcast", cookie=cookie)
    try:
        assert ws.getstatus() == 101
        marker = sentinel(redis_client, facility)
        assert receive_text(ws) == marker
    finally:
        ws.close()


def test_process_request_hook_runs_before_the_channels_are_built(
    hook_server, redis_client, facility
):
    port = hook_server.port
    refused = exchange(
        port, handshake_request(port, f"/ws/{facility}?subscribe-broadcast", {"X-Refuse-Me": "1"})
    )
    assert refused.status == 403
    assert_no_traceback(refused)

    ws = connect(hook_server, facility, "subscribe-broadcast", header=["X-Facility-Tag: tagged"])
    try:
        assert redis_client.publish(broadcast_key(facility), "untagged") == 0
        marker = sentinel(redis_client, f"{facility}-tagged")
        assert receive_text(ws) == marker
    finally:
        ws.close()


# -- 9. subscriptions before the 101 ----------------------------------------------------------


def test_message_published_right_after_the_handshake_arrives(uwsgi_server, redis_client, facility):
    for attempt in range(20):
        ws = connect(uwsgi_server, facility, "subscribe-broadcast")
        try:
            assert redis_client.publish(broadcast_key(facility), f"at once {attempt}") == 1
            assert receive_text(ws) == f"at once {attempt}"
        finally:
            ws.close()
        poll(
            lambda: redis_client.pubsub_numsub(broadcast_key(facility))[0][1] == 0,
            TIMEOUT,
            "the unsubscribe of the closed client",
        )


def test_persisted_message_published_right_after_the_handshake_arrives_once(
    uwsgi_server, publisher_settings, redis_client, facility
):
    for attempt in range(20):
        channel_facility = f"{facility}-{attempt}"  # no persisted copy from an earlier round
        ws = connect(uwsgi_server, channel_facility, "subscribe-broadcast")
        try:
            RedisPublisher(facility=channel_facility, broadcast=True).publish_message("once")
            marker = sentinel(redis_client, channel_facility)
            assert receive_text(ws) == "once"
            assert receive_text(ws) == marker
        finally:
            ws.close()


# -- 10. bursts -------------------------------------------------------------------------------


def test_burst_from_redis_arrives_complete_and_in_order(uwsgi_server, redis_client, facility):
    ws = connect(uwsgi_server, facility, "subscribe-broadcast")
    try:
        pipe = redis_client.pipeline(transaction=False)
        for number in range(200):
            pipe.publish(broadcast_key(facility), f"burst {number}")
        assert pipe.execute() == [1] * 200
        assert [receive_text(ws) for _ in range(200)] == [f"burst {n}" for n in range(200)]
    finally:
        ws.close()


def test_frames_in_one_tcp_write_are_all_published_in_order(uwsgi_server, facility):
    listener = connect(uwsgi_server, facility, "subscribe-broadcast")
    sender = raw_websocket(uwsgi_server, facility, "publish-broadcast")
    try:
        burst = b"".join(client_frame(Opcode.TEXT, f"frame {n}".encode()) for n in range(50))
        sender.sock.sendall(burst)
        assert [receive_text(listener) for _ in range(50)] == [f"frame {n}" for n in range(50)]
    finally:
        sender.sock.close()
        listener.close()


# -- 11. nothing but frames after the upgrade -------------------------------------------------


def test_client_close_handshake_leaves_only_a_close_frame_on_the_wire(uwsgi_server, facility):
    response = raw_websocket(uwsgi_server, facility, "subscribe-broadcast")
    sock = response.sock
    try:
        sock.sendall(client_frame(Opcode.CLOSE, (1000).to_bytes(2, "big")))
        data = read_until_eof(sock)
    finally:
        sock.close()
    assert server_frames(data) == [(Opcode.CLOSE, (1000).to_bytes(2, "big"))]
    assert data == encode_close(1000)


def test_server_close_leaves_only_a_close_frame_on_the_wire(uwsgi_server, facility):
    response = raw_websocket(uwsgi_server, facility, "subscribe-broadcast&publish-broadcast")
    sock = response.sock
    try:
        sock.sendall(client_frame(Opcode.TEXT, b"\xff invalid utf-8"))
        first = sock.recv(65536)
        sock.sendall(client_frame(Opcode.CLOSE, (1000).to_bytes(2, "big")))
        data = first + read_until_eof(sock)
    finally:
        sock.close()
    frames = server_frames(data)
    assert len(frames) == 1
    opcode, payload = frames[0]
    assert opcode == Opcode.CLOSE
    assert int.from_bytes(payload[:2], "big") == 1007


# -- 12. clean closes -------------------------------------------------------------------------


@pytest.mark.parametrize("code", [1000, 1001, 3000, 4999])
def test_client_close_codes_end_cleanly(uwsgi_server, facility, code):
    since = len(uwsgi_server.log())
    query = "subscribe-broadcast&publish-broadcast"
    response = raw_websocket(uwsgi_server, facility, query)
    sock = response.sock
    try:
        sock.sendall(client_frame(Opcode.CLOSE, code.to_bytes(2, "big") + b"bye"))
        data = read_until_eof(sock)
    finally:
        sock.close()
    assert server_frames(data) == [(Opcode.CLOSE, code.to_bytes(2, "big"))]
    assert_clean(wait_for_request_log(uwsgi_server, ws_path(facility, query), since))


def test_websocket_client_close_is_clean(uwsgi_server, facility):
    since = len(uwsgi_server.log())
    ws = connect(uwsgi_server, facility, "subscribe-broadcast")
    ws.close(status=1001, reason=b"going away", timeout=TIMEOUT)
    path = ws_path(facility, "subscribe-broadcast")
    assert_clean(wait_for_request_log(uwsgi_server, path, since))


# -- 13. many clients, one Redis subscription -------------------------------------------------


def redis_connections_of(pids: list[int], redis_port: int) -> set[int]:
    """Local ports of the TCP connections that processes ``pids`` hold to ``redis_port``."""
    inodes: set[str] = set()
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        for fd in os.listdir(fd_dir):
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                parts = line.split()
                local, remote, inode = parts[1], parts[2], parts[9]
                if inode in inodes and int(remote.rsplit(":", 1)[1], 16) == redis_port:
                    ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


def process_tree(pid: int) -> list[int]:
    """``pid`` and all of its descendants (uWSGI may fork workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def test_300_clients_share_one_redis_subscription(start_site, redis_server, redis_client):
    count = 300
    raise_fd_limit(count + 1024)
    server = start_site()
    facility = f"crowd-{uuid.uuid4().hex[:8]}"

    def open_client(_: int) -> websocket.WebSocket:
        return connect(server, facility, "subscribe-broadcast")

    with ThreadPoolExecutor(max_workers=32) as pool:
        clients = list(pool.map(open_client, range(count)))
    try:
        assert redis_client.pubsub_numsub(broadcast_key(facility)) == [
            (broadcast_key(facility).encode(), 1)
        ]
        assert redis_client.publish(broadcast_key(facility), "to everyone") == 1
        with ThreadPoolExecutor(max_workers=32) as pool:
            received = list(pool.map(receive_text, clients))
        assert received == ["to everyone"] * count

        ports = redis_connections_of(process_tree(server.process.pid), redis_server.port)
        entries = redis_client.client_list()
        from_server = [e for e in entries if int(e["addr"].rsplit(":", 1)[1]) in ports]
        subscribed = [e for e in from_server if int(e["sub"]) > 0]
        print(
            f"\n{count} WebSocket clients on one uWSGI worker: {len(from_server)} Redis "
            f"connections from that server, {len(subscribed)} of them in pub/sub mode "
            f"({len(entries)} in CLIENT LIST overall)"
        )
        assert len(subscribed) == 1
        # the rest is the pooled command client (persisted messages, publishing), whose size
        # depends on how many handshakes ran at once, never on how many clients are connected
        assert len(from_server) <= 1 + LOOP_POOL_MAX_CONNECTIONS + CACHE_MAX_CONNECTIONS
    finally:
        with ThreadPoolExecutor(max_workers=32) as pool:
            list(pool.map(lambda ws: ws.close(timeout=TIMEOUT), clients))
    poll(
        lambda: redis_client.pubsub_numsub(broadcast_key(facility))[0][1] == 0,
        10,
        "PUBSUB NUMSUB to drop to 0",
    )


# -- 14. a client that just disappears --------------------------------------------------------


@pytest.mark.parametrize("abort", [False, True], ids=["fin", "reset"])
def test_vanishing_client_is_a_normal_event(uwsgi_server, redis_client, facility, abort):
    since = len(uwsgi_server.log())
    survivor = connect(uwsgi_server, facility, "subscribe-broadcast")
    query = "subscribe-broadcast&publish-broadcast"
    gone = raw_websocket(uwsgi_server, facility, query)
    try:
        if abort:  # l_onoff=1, l_linger=0: closing sends a TCP reset instead of a FIN
            gone.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        gone.sock.close()
        assert_clean(wait_for_request_log(uwsgi_server, ws_path(facility, query), since))
        marker = sentinel(redis_client, facility)
        assert receive_text(survivor) == marker
    finally:
        survivor.close()

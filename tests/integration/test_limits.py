"""Abuse limits, each tested one unit over, on uWSGI (``--http-socket``) and on ``runserver``.

The servers run ``tests/sites/limits.py``: 10 messages a second per connection with bursts of
20 (``WS4REDIS_MAX_MESSAGES_PER_SECOND``), 5 WebSockets per worker
(``WS4REDIS_MAX_CONNECTIONS``), and under ``runserver`` 2 seconds to send a request head
(``WS4REDIS_HANDSHAKE_TIMEOUT``); under uWSGI a head that stalls is dropped by uWSGI itself
after ``--socket-timeout`` seconds of silence, which the documented configuration sets to 4
(under ``--gevent``, uWSGI applies no timeout to request heads unless the option is given).
Every case also checks that the other connections did not notice.
``WS4REDIS_MAX_MESSAGE_SIZE`` (1009) is tested in ``test_conformance.py`` and
``WS4REDIS_SEND_QUEUE_SIZE`` (1008) in ``test_slow_consumers.py``.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import WS_SERVER_ARGS
from tests.integration.test_conformance import (
    HOST,
    MASK,
    PING,
    PUBLISH,
    SUBSCRIBE,
    TEXT,
    RawClient,
    broadcast_key,
    refused_handshake,
    unique,
)
from tests.sites import limits
from tools.servers import RedisServer, UwsgiServer, raise_fd_limit
from ws4redis.websocket import encode_frame

RATE = limits.WS4REDIS_MAX_MESSAGES_PER_SECOND
BURST = 2 * RATE
MAX_CONNECTIONS = limits.WS4REDIS_MAX_CONNECTIONS
HANDSHAKE_TIMEOUT = limits.WS4REDIS_HANDSHAKE_TIMEOUT
UWSGI_SOCKET_TIMEOUT = 4  # --socket-timeout of the documented configuration
HALF_OPEN = 500
#: How long a new client may take to connect while HALF_OPEN handshakes stall.
CONNECT_BOUND = 1.0

SERVERS = {
    "http-socket": {
        "socket_option": "--http-socket",
        "args": [*WS_SERVER_ARGS, "--socket-timeout", str(UWSGI_SOCKET_TIMEOUT)],
    },
    "runserver": {"kind": "runserver"},
}
HEAD_TIMEOUTS = {"http-socket": UWSGI_SOCKET_TIMEOUT, "runserver": HANDSHAKE_TIMEOUT}


class LimitedSite:
    """A server of ``tests/sites/limits.py`` and the Redis it uses."""

    def __init__(self, kind: str, server: UwsgiServer, redis_server: RedisServer) -> None:
        self.kind = kind
        self.server = server
        self.port = server.port
        self.redis = redis_server.client()

    def client(self, facility: str, flags: str = SUBSCRIBE) -> RawClient:
        return RawClient(self.port, facility, flags)

    def assert_receives_marker(self, *clients: RawClient, facility: str) -> None:
        """Each of ``clients`` (subscribers of ``facility``) gets a message published now."""
        marker = f"marker {unique('m')}".encode()
        self.redis.publish(broadcast_key(facility), marker)
        for client in clients:
            assert client.recv_message() == marker

    def assert_alive(self) -> None:
        process = self.server.process
        assert process is not None and process.poll() is None, self.server.log()
        assert "Traceback" not in self.server.log(), self.server.log()


@pytest.fixture(scope="module", params=list(SERVERS))
def site(
    request: pytest.FixtureRequest,
    start_uwsgi: Callable[..., UwsgiServer],
    redis_server: RedisServer,
) -> Iterator[LimitedSite]:
    server = start_uwsgi(settings_module="tests.sites.limits", **SERVERS[request.param])
    site = LimitedSite(request.param, server, redis_server)
    yield site
    site.redis.close()


def messages(count: int) -> list[bytes]:
    return [f"message {i:03d}".encode() for i in range(count)]


def burst(payloads: list[bytes]) -> bytes:
    """The messages as masked text frames, to be sent in one write."""
    return b"".join(encode_frame(TEXT, p, mask=MASK) for p in payloads)


# --------------------------------------------------------------------------------------------
# WS4REDIS_MAX_MESSAGES_PER_SECOND


def test_burst_of_twice_the_rate_is_published(site: LimitedSite) -> None:
    facility = unique("rate-ok")
    with site.client(facility) as subscriber, site.client(facility, PUBLISH) as sender:
        sender.sendall(burst(messages(BURST)))
        assert [subscriber.recv_message() for _ in range(BURST)] == messages(BURST)
        sender.send(PING, b"still open")
        sender.expect_pong(b"still open")
        site.assert_receives_marker(subscriber, facility=facility)
    site.assert_alive()


def test_one_message_over_the_burst_closes_1008(site: LimitedSite) -> None:
    facility = unique("rate-over")
    with (
        site.client(facility) as subscriber,
        site.client(unique("rate-bystander")) as bystander,
        site.client(facility, PUBLISH) as sender,
    ):
        sender.sendall(burst(messages(BURST + 1)))
        assert sender.expect_close() == 1008
        # The first BURST messages were published, the one over the limit was not.
        assert [subscriber.recv_message() for _ in range(BURST)] == messages(BURST)
        site.assert_receives_marker(subscriber, facility=facility)
        bystander.send(PING, b"untouched")
        bystander.expect_pong(b"untouched")
    site.assert_alive()


def test_tokens_flow_back_at_the_rate(site: LimitedSite) -> None:
    facility = unique("rate-refill")
    with site.client(facility) as subscriber, site.client(facility, PUBLISH) as sender:
        sender.sendall(burst(messages(BURST)))
        assert [subscriber.recv_message() for _ in range(BURST)] == messages(BURST)
        time.sleep(3 / RATE)  # three tokens back (at least two, whatever the timer's slack)
        sender.sendall(burst([b"after a pause", b"and another"]))
        assert subscriber.recv_message() == b"after a pause"
        assert subscriber.recv_message() == b"and another"
        sender.send(PING, b"still open")
        sender.expect_pong(b"still open")
    site.assert_alive()


# --------------------------------------------------------------------------------------------
# WS4REDIS_MAX_CONNECTIONS


def open_clients(site: LimitedSite, facility: str, count: int) -> list[RawClient]:
    """``count`` subscribers; a 503 is retried for a while (earlier tests' sockets closing)."""
    clients: list[RawClient] = []
    deadline = time.monotonic() + 10
    while len(clients) < count:
        try:
            clients.append(site.client(facility))
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    return clients


def test_one_connection_over_the_limit_gets_503(site: LimitedSite) -> None:
    facility = unique("max-conn")
    clients = open_clients(site, facility, MAX_CONNECTIONS)
    try:
        response = refused_handshake(site.port)
        assert response.status == 503, response
        assert response.headers["retry-after"].isdigit()
        assert b"Too many WebSocket connections" in response.rest
        site.assert_receives_marker(*clients, facility=facility)
        # A slot freed is a slot to take again.
        clients.pop().sock.close()
        clients += open_clients(site, facility, 1)
        site.assert_receives_marker(*clients, facility=facility)
    finally:
        for client in clients:
            client.sock.close()
    site.assert_alive()


# --------------------------------------------------------------------------------------------
# The opening handshake's deadline, and many stalled handshakes


def stalled_handshake(port: int) -> socket.socket:
    """A connection that sends half of an opening handshake and then nothing."""
    sock = socket.create_connection((HOST, port), timeout=10)
    sock.sendall(f"GET /ws/{unique('slow')}?{SUBSCRIBE} HTTP/1.1\r\nHost: {HOST}\r\n".encode())
    return sock


def dropped(sock: socket.socket, timeout: float) -> bytes:
    """Wait for the server to end ``sock``; return what it sent before (a 408, or nothing)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def test_stalled_handshake_is_dropped_after_the_timeout(site: LimitedSite) -> None:
    limit = HEAD_TIMEOUTS[site.kind]
    sock = stalled_handshake(site.port)
    started = time.monotonic()
    with sock:
        answer = dropped(sock, limit + 5)
    elapsed = time.monotonic() - started
    assert limit - 0.5 <= elapsed <= limit + 3, f"dropped after {elapsed:.1f} s"
    if site.kind == "runserver":
        assert answer.startswith(b"HTTP/1.1 408 "), answer
    site.assert_alive()


def test_new_client_connects_at_once_despite_500_stalled_handshakes(site: LimitedSite) -> None:
    raise_fd_limit(4 * HALF_OPEN)
    facility = unique("slowloris")
    stalled = [stalled_handshake(site.port) for _ in range(HALF_OPEN)]
    try:
        started = time.monotonic()
        with site.client(facility) as client:
            elapsed = time.monotonic() - started
            site.assert_receives_marker(client, facility=facility)
        print(
            f"\n{site.kind}: a new client connected in {elapsed * 1000:.0f} ms "
            f"beside {HALF_OPEN} stalled handshakes"
        )
        assert elapsed < CONNECT_BOUND
        # All of them are dropped once the deadline has passed.
        limit = HEAD_TIMEOUTS[site.kind]
        deadline = time.monotonic() + limit + 10
        for sock in stalled:
            dropped(sock, max(0.1, deadline - time.monotonic()))
        assert time.monotonic() < deadline
    finally:
        for sock in stalled:
            sock.close()
    site.assert_alive()

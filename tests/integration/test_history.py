"""Missed-message recovery against real Redis and real uWSGI (``WS4REDIS_HISTORY``).

A client opts in with the ``ws4redis.history.v1`` subprotocol: every frame then carries the
message's channel tag and stream id, and a reconnection with ``last-id`` replays what was
missed.  A client that does not opt in sees exactly what it saw before.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import login
from tests.integration.test_conformance import (
    BINARY,
    HOST,
    TEXT,
    TIMEOUT,
    RawClient,
    handshake_request,
    read_http_head,
    unique,
)
from tools.servers import RedisServer, UwsgiServer
from ws4redis import history
from ws4redis.redis_store import channel_key
from ws4redis.websocket import FrameDecoder, accept_key

SITE = "tests.sites.history"
PREFIX = "ws"
USER = "john"
FLAGS = "subscribe-broadcast&subscribe-user"


class HistoryClient(RawClient):
    """A raw client offering the history subprotocol (or ``protocols`` of its choice)."""

    def __init__(  # noqa: PLR0913
        self,
        port: int,
        facility: str,
        flags: str = FLAGS,
        *,
        cookie: str | None = None,
        last_id: str | None = None,
        protocols: str | None = history.SUBPROTOCOL,
    ) -> None:
        query = flags + (f"&last-id={last_id}" if last_id else "")
        request, key = handshake_request(f"/ws/{facility}?{query}", port)
        extra = ""
        if protocols:
            extra += f"Sec-WebSocket-Protocol: {protocols}\r\n"
        if cookie:
            extra += f"Cookie: {cookie}\r\n"
        self.sock = socket.create_connection((HOST, port), timeout=TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(request[:-2] + extra.encode("latin-1") + b"\r\n")
        response = read_http_head(self.sock)
        assert response.status == 101, response
        assert response.headers["sec-websocket-accept"] == accept_key(key)
        self.protocol = response.headers.get("sec-websocket-protocol")
        self.decoder = FrameDecoder(require_mask=False)
        self.decoder.feed(response.rest)
        self.positions: dict[str, str] = {}

    def recv_envelope(self) -> tuple[bytes, bytes]:
        """The next message as ``(header, payload)``; message headers update the positions."""
        header, payload = history.split_envelope(self.recv_message())
        if header == history.SYNC:
            self.positions.update(p.split(":") for p in payload.decode().split(","))
        elif header not in (b"", history.GAP):
            tag, stream_id = header.decode().split(":")
            self.positions[tag] = stream_id
        return header, payload

    def recv_until_sync(self) -> list[tuple[bytes, bytes]]:
        """Everything before the sync notice (which updates the positions)."""
        received = []
        while (item := self.recv_envelope())[0] != history.SYNC:
            received.append(item)
        return received

    @property
    def last_id(self) -> str:
        return ",".join(f"{tag}:{stream_id}" for tag, stream_id in self.positions.items())


@pytest.fixture(scope="module")
def server(start_uwsgi: Callable[..., UwsgiServer]) -> UwsgiServer:
    return start_uwsgi(SITE)


@pytest.fixture(scope="module")
def cookie(server: UwsgiServer) -> str:
    return login(server.port, USER)


@pytest.fixture
def publish(redis_server: RedisServer) -> Iterator[Callable[..., None]]:
    """``publish(facility, message, broadcast=…, users=…)`` through RedisPublisher."""
    from django.test import override_settings

    from ws4redis.publisher import RedisPublisher

    client = redis_server.client()
    with override_settings(
        WS4REDIS_HISTORY={"size": 100, "ttl": 120},
        WS4REDIS_PREFIX=PREFIX,
        WS4REDIS_EXPIRE=0,
    ):

        def publish(facility: str, message: bytes, **audience: object) -> None:
            RedisPublisher(facility=facility, connection=client, **audience).publish_message(
                message
            )

        yield publish
    client.close()


def test_a_reconnecting_client_gets_every_missed_message_once_in_order(
    server: UwsgiServer, cookie: str, publish: Callable[..., None]
) -> None:
    facility = unique("recover")
    first = HistoryClient(server.port, facility, cookie=cookie)
    assert first.protocol == history.SUBPROTOCOL
    assert first.recv_until_sync() == []
    publish(facility, b"seen", broadcast=True)
    header, payload = first.recv_envelope()
    assert payload == b"seen"
    assert header.startswith(
        history.channel_tag(channel_key("broadcast", facility, None, PREFIX)).encode()
    )
    first.sock.close()

    sent = []
    for number in range(50):
        message = f"missed {number}".encode()
        audience = {"broadcast": True} if number % 2 else {"users": [USER]}
        publish(facility, message, **audience)
        sent.append(message)

    again = HistoryClient(server.port, facility, cookie=cookie, last_id=first.last_id)
    replayed = again.recv_until_sync()
    assert [payload for _, payload in replayed] == sent
    publish(facility, b"live", users=[USER])
    assert again.recv_envelope()[1] == b"live"
    publish(facility, b"live too", broadcast=True)
    assert again.recv_envelope()[1] == b"live too"
    again.sock.close()


def test_a_gap_beyond_the_history_is_reported(
    server: UwsgiServer, publish: Callable[..., None]
) -> None:
    facility = unique("gap")
    first = HistoryClient(server.port, facility, "subscribe-broadcast")
    first.recv_until_sync()
    publish(facility, b"seen", broadcast=True)
    assert first.recv_envelope()[1] == b"seen"
    first.sock.close()
    for number in range(400):  # far more than the history's 100 (about) entries
        publish(facility, f"lost {number}".encode(), broadcast=True)

    again = HistoryClient(server.port, facility, "subscribe-broadcast", last_id=first.last_id)
    (header, tags), *kept = again.recv_until_sync()
    tag = history.channel_tag(channel_key("broadcast", facility, None, PREFIX))
    assert (header, tags) == (history.GAP, tag.encode())
    payloads = [payload for _, payload in kept]
    assert 100 <= len(payloads) < 400
    assert payloads == [f"lost {n}".encode() for n in range(400 - len(payloads), 400)]
    again.sock.close()


@pytest.mark.parametrize("protocols", [None, "chat, superchat"])
def test_a_client_without_the_subprotocol_sees_raw_payloads(
    server: UwsgiServer, publish: Callable[..., None], protocols: str | None
) -> None:
    facility = unique("raw")
    client = HistoryClient(server.port, facility, "subscribe-broadcast", protocols=protocols)
    assert client.protocol == (protocols and "chat")  # the first offered, as before
    payloads = [b"plain text", "caf\u00e9".encode(), b"\xff\xfe binary", b""]
    for payload in payloads:
        publish(facility, payload, broadcast=True)
    for payload in payloads:
        opcode, received = client.recv_data()
        assert received == payload
        assert opcode == (BINARY if payload.startswith(b"\xff") else TEXT)
    client.sock.close()


def test_only_our_subprotocol_offered_with_others_is_selected_and_binary_stays_binary(
    server: UwsgiServer, publish: Callable[..., None]
) -> None:
    facility = unique("binary")
    offer = f"chat, {history.SUBPROTOCOL}"
    client = HistoryClient(server.port, facility, "subscribe-broadcast", protocols=offer)
    assert client.protocol == history.SUBPROTOCOL
    client.recv_until_sync()
    publish(facility, b"\xff\xfe binary", broadcast=True)
    opcode, data = client.recv_data()
    assert opcode == BINARY
    assert history.split_envelope(data)[1] == b"\xff\xfe binary"
    client.sock.close()


def test_a_malformed_last_id_is_refused(server: UwsgiServer) -> None:
    with pytest.raises(AssertionError, match="status=400"):
        HistoryClient(server.port, unique("bad"), "subscribe-broadcast", last_id="nonsense")

"""Stress test with greenlets: 1000 concurrent WebSockets receive one broadcast.

Every client is a greenlet that subscribes to the broadcasts of one facility; another WebSocket
publishes a message to that facility (``?publish-broadcast``), and every client must receive it.

Run it from this directory, against a server you started (see ``stress_support``)::

    WS4REDIS_STRESS_URL=ws://localhost:8000/ws/ nosetests test_uwsgi_gevent.py

or with a throw-away Redis and uWSGI of its own (``WS4REDIS_STRESS_URL`` unset)::

    nosetests -v test_uwsgi_gevent.py          # or, from the top directory:
    python -m pytest stress-tests/test_uwsgi_gevent.py

The clients are websocket-client WebSockets on gevent sockets handed to them ready-connected:
cooperative without monkey-patching, so nothing leaks into other test modules of the same run.
"""

from __future__ import annotations

import time

import gevent
import gevent.pool
import gevent.socket
import websocket
from stress_support import (
    CLIENTS,
    CONNECT_DEADLINE,
    HANDSHAKES_AT_ONCE,
    RECEIVE_DEADLINE,
    SOCKET_TIMEOUT,
    StressServer,
    connect_failures,
    publisher_url,
    receive_message,
    report,
    subscriber_url,
    unique_facility,
)

server = StressServer()


def setup_module() -> None:
    server.start()


def teardown_module() -> None:
    server.stop()


def open_websocket(url: str, address: tuple[str, int]) -> websocket.WebSocket:
    """A WebSocket to ``url`` over a gevent socket connected to ``address``."""
    sock = gevent.socket.create_connection(address, timeout=SOCKET_TIMEOUT)
    try:
        return websocket.create_connection(url, socket=sock, timeout=SOCKET_TIMEOUT)
    except BaseException:
        sock.close()
        raise


def close_all(clients: list[websocket.WebSocket]) -> None:
    """Close every WebSocket with a close frame, a pool of greenlets at a time."""

    def close(ws: websocket.WebSocket) -> None:
        try:
            ws.close(timeout=SOCKET_TIMEOUT)
        except Exception:
            ws.shutdown()

    gevent.pool.Pool(HANDSHAKES_AT_ONCE).map(close, clients)


def test_greenlets_receive_one_broadcast() -> None:
    facility = unique_facility("gevent")
    url = subscriber_url(server, facility)
    address = server.address()
    message = f"hello from {facility}"
    clients: list[websocket.WebSocket] = []
    errors: list[BaseException] = []

    def subscribe(_: int) -> None:
        try:
            clients.append(open_websocket(url, address))
        except Exception as exc:
            errors.append(exc)

    started = time.perf_counter()
    try:
        with gevent.Timeout(CONNECT_DEADLINE, TimeoutError("clients still connecting")):
            gevent.pool.Pool(HANDSHAKES_AT_ONCE).map(subscribe, range(CLIENTS))
        connected = time.perf_counter() - started
        assert not errors, connect_failures(server, errors)

        deadline = time.monotonic() + RECEIVE_DEADLINE
        receivers = [gevent.spawn(receive_message, ws, message, deadline) for ws in clients]
        publisher = open_websocket(publisher_url(server, facility), address)
        published = time.perf_counter()
        publisher.send(message)
        gevent.joinall(receivers, timeout=RECEIVE_DEADLINE + 1)
        gevent.killall(receivers)  # those still waiting have failed
        publisher.close(timeout=SOCKET_TIMEOUT)

        arrivals = [g.value for g in receivers if g.successful()]
        failed = [g.exception or "still waiting" for g in receivers if not g.successful()]
        assert not failed, f"{len(failed)} of {CLIENTS} clients missed it (first: {failed[0]!r})"
        print(report("greenlets", connected, published, arrivals))
    finally:
        close_all(clients)

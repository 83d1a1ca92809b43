"""Stress test with threads: 1000 concurrent WebSockets receive one broadcast.

The same test as ``test_uwsgi_gevent.py``, with one Python thread per client: each thread
subscribes to the broadcasts of one facility and waits; once all are connected, another
WebSocket publishes a message (``?publish-broadcast``), and every thread must receive it.

Run it from this directory, against a server you started (see ``stress_support``)::

    WS4REDIS_STRESS_URL=ws://localhost:8000/ws/ nosetests test_uwsgi_threads.py

or with a throw-away Redis and uWSGI of its own (``WS4REDIS_STRESS_URL`` unset)::

    nosetests -v test_uwsgi_threads.py         # or, from the top directory:
    python -m pytest stress-tests/test_uwsgi_threads.py
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

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


class Client(threading.Thread):
    """One subscriber: connects (a few handshakes at a time), then waits for ``expected``."""

    def __init__(self, url: str, expected: str, handshakes: threading.Semaphore) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.expected = expected
        self.handshakes = handshakes
        self.connected = threading.Event()
        self.ws: websocket.WebSocket | None = None
        self.error: BaseException | None = None
        self.arrival: float | None = None

    def run(self) -> None:
        try:
            with self.handshakes:
                self.ws = websocket.create_connection(self.url, timeout=SOCKET_TIMEOUT)
        except Exception as exc:
            self.error = exc
        finally:
            self.connected.set()
        if self.ws is None:
            return
        deadline = time.monotonic() + CONNECT_DEADLINE + RECEIVE_DEADLINE
        try:
            self.arrival = receive_message(self.ws, self.expected, deadline)
        except Exception as exc:
            self.error = exc


def wait_all(events: list[threading.Event], deadline: float) -> None:
    """Wait until every event is set; ``TimeoutError`` after ``deadline`` (monotonic)."""
    for event in events:
        if not event.wait(max(0.0, deadline - time.monotonic())):
            raise TimeoutError("clients still connecting")


def test_threads_receive_one_broadcast() -> None:
    facility = unique_facility("threads")
    message = f"hello from {facility}"
    handshakes = threading.Semaphore(HANDSHAKES_AT_ONCE)
    url = subscriber_url(server, facility)
    clients = [Client(url, message, handshakes) for _ in range(CLIENTS)]

    started = time.perf_counter()
    try:
        for client in clients:
            client.start()
        wait_all([client.connected for client in clients], time.monotonic() + CONNECT_DEADLINE)
        connected = time.perf_counter() - started
        errors = [client.error for client in clients if client.ws is None and client.error]
        assert not errors, connect_failures(server, errors)

        publisher = websocket.create_connection(
            publisher_url(server, facility), timeout=SOCKET_TIMEOUT
        )
        published = time.perf_counter()
        publisher.send(message)
        deadline = time.monotonic() + RECEIVE_DEADLINE
        for client in clients:
            client.join(max(0.0, deadline - time.monotonic()))
        publisher.close(timeout=SOCKET_TIMEOUT)

        missed = [client.error or "still waiting" for client in clients if client.arrival is None]
        assert not missed, f"{len(missed)} of {CLIENTS} clients missed it (first: {missed[0]!r})"
        print(report("threads", connected, published, [c.arrival for c in clients]))
    finally:
        close_all(clients)


def close_all(clients: list[Client]) -> None:
    """Close every client's WebSocket with a close frame, a pool of threads at a time."""

    def close(client: Client) -> None:
        if client.ws is None:
            return
        try:
            client.ws.close(timeout=SOCKET_TIMEOUT)
        except Exception:
            client.ws.shutdown()

    with ThreadPoolExecutor(HANDSHAKES_AT_ONCE) as pool:
        list(pool.map(close, clients))

"""A deadline for the request head under Django's development server.

A client that opens a connection and then sends its request line and headers slowly, or not at
all (a "slowloris"), holds one of the development server's threads.  The server class here gives
every request ``WS4REDIS_HANDSHAKE_TIMEOUT`` seconds from the moment the server starts reading it
until its head is complete; a request still incomplete then is answered with ``408 Request
Timeout`` and its connection is shut down.  Once the head is read the deadline is off, so a
WebSocket (or a long response) is never cut by it.  ``ws4redis``'s ``runserver`` command uses
this class (``ws4redis/management/commands/runserver.py``).
"""

from __future__ import annotations

import heapq
import itertools
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from django.core.servers.basehttp import WSGIRequestHandler, WSGIServer

from ws4redis import settings

TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 35\r\n"
    b"Connection: close\r\n\r\n"
    b"Request head not received in time.\n"
)


class DeadlineWatch:
    """One thread that calls the callbacks whose deadlines have passed, unless cancelled.

    A thread per request would double the development server's threads; one watch serves them
    all.  Cancelled entries stay queued until their deadline, then are skipped.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._queue: list[tuple[float, int, list[Callable[[], None] | None]]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, seconds: float, callback: Callable[[], None]) -> list[Any]:
        """Call ``callback`` in ``seconds`` unless :meth:`cancel` is given the returned entry."""
        entry: list[Any] = [callback]
        with self._condition:
            heapq.heappush(self._queue, (time.monotonic() + seconds, next(self._order), entry))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="ws4redis-handshake-deadlines", daemon=True
                )
                self._thread.start()
            self._condition.notify()
        return entry

    @staticmethod
    def cancel(entry: list[Any]) -> None:
        """Forget the callback of ``entry``."""
        entry[0] = None

    def _run(self) -> None:
        while True:
            with self._condition:
                callback = self._next_due()
            if callback is not None:
                callback()

    def _next_due(self) -> Callable[[], None] | None:
        """Wait for the earliest deadline to pass; return its callback (``None``: cancelled)."""
        while True:
            if not self._queue:
                self._condition.wait()
                continue
            due = self._queue[0][0] - time.monotonic()
            if due > 0:
                self._condition.wait(due)
                continue
            return heapq.heappop(self._queue)[2][0]


_deadlines = DeadlineWatch()


class DeadlineRequestHandler(WSGIRequestHandler):
    """Django's request handler with a deadline for reading each request's head."""

    def handle_one_request(self) -> None:
        """Serve one request; a head not read within the deadline ends the connection."""
        self._head_lock = threading.Lock()
        self._head_read = False
        self._deadline = _deadlines.watch(settings.get("WS4REDIS_HANDSHAKE_TIMEOUT"), self._expire)
        try:
            super().handle_one_request()
        finally:
            _deadlines.cancel(self._deadline)

    def parse_request(self) -> bool:
        """Read the headers; from then on the deadline no longer applies."""
        ok = super().parse_request()
        with self._head_lock:
            self._head_read = True
        _deadlines.cancel(self._deadline)
        return ok

    def _expire(self) -> None:
        with self._head_lock:
            if self._head_read:
                return
            self._head_read = True  # nothing else is written on this connection
        self.close_connection = True
        try:
            self.connection.sendall(TIMEOUT_RESPONSE)
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # the client is gone already


class HandshakeDeadlineServer(WSGIServer):
    """Django's development server, serving requests with :class:`DeadlineRequestHandler`.

    Its listen backlog is the system's maximum instead of Django's 10: while the server starts
    threads for a burst of connections (clients reconnecting after a restart, or stalled
    handshakes), a full backlog would drop new clients' SYNs, and each retry costs them a second.
    """

    request_queue_size = socket.SOMAXCONN

    def __init__(self, server_address: Any, handler_class: Any, *args: Any, **kwargs: Any) -> None:
        if handler_class is WSGIRequestHandler:
            handler_class = DeadlineRequestHandler
        super().__init__(server_address, handler_class, *args, **kwargs)

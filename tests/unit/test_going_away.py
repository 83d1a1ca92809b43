"""A server closing its WebSockets (a reload, a shutdown) refuses new handshakes with 503."""

from __future__ import annotations

from typing import Any

from ws4redis.runtime import thread_runtime
from ws4redis.wsgi_server import GOING_AWAY_REASON, WebSocketServer


class ClosingServer(WebSocketServer):
    runtime = thread_runtime()


def test_handshakes_after_close_all_get_503_with_retry_after() -> None:
    server = ClosingServer()
    assert server.close_all() == 0
    answers: list[tuple[str, list[tuple[str, str]]]] = []

    def start_response(status: str, headers: list[tuple[str, str]]) -> Any:
        answers.append((status, headers))

    body = server({"REQUEST_METHOD": "GET", "PATH_INFO": "/ws/foobar"}, start_response)
    [(status, headers)] = answers
    assert status == "503 Service Unavailable"
    assert ("Retry-After", "1") in headers
    assert b"".join(body).decode().strip() == GOING_AWAY_REASON

"""Fixtures that own real processes: a Redis server, the example database, uWSGI servers."""

from __future__ import annotations

import http.client
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tools.devserver import DevServer
from tools.servers import EXAMPLES, ROOT, RedisServer, UwsgiServer

WS_SERVER_ARGS = ["--gevent", "1000", "--http-websockets", "--module", "wsgi"]


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A real ``redis-server`` on a free loopback port, for the whole test session."""
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_server: RedisServer):  # noqa: ANN201
    """A client of the session's Redis server, emptied before the test."""
    client = redis_server.client()
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def ws_settings(settings, redis_server: RedisServer):  # noqa: ANN001, ANN201
    """pytest-django's ``settings``, pointed at the test Redis server."""
    settings.WS4REDIS_CONNECTION = redis_server.url
    return settings


@pytest.fixture(scope="session")
def example_db(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Path:
    """The example project's SQLite database, migrated and loaded with its fixture users."""
    path = tmp_path_factory.mktemp("db") / "chatserver.sqlite3"
    env = server_env(redis_server, path)
    for command in (["migrate", "-v0"], ["loaddata", "data.json", "-v0"]):
        subprocess.run(
            [sys.executable, "manage.py", *command],
            cwd=EXAMPLES,
            env={**os.environ, **env},
            check=True,
            timeout=120,
        )
    return path


EXAMPLE_SETTINGS = "chatserver.settings"


def server_env(
    redis_server: RedisServer, db: Path, settings_module: str | None = None
) -> dict[str, str]:
    """Environment for a process of the example project using the test Redis and database.

    ``DJANGO_SETTINGS_MODULE`` is always set: under pytest-django the test process's own
    ``tests.settings`` would otherwise leak into the servers.
    """
    return {
        "CHATSERVER_REDIS_URL": redis_server.url,
        "CHATSERVER_DB": str(db),
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(EXAMPLES)]),
        "DJANGO_SETTINGS_MODULE": settings_module or EXAMPLE_SETTINGS,
    }


@pytest.fixture(scope="session")
def start_uwsgi(
    redis_server: RedisServer, example_db: Path
) -> Iterator[Callable[..., UwsgiServer]]:
    """Start servers of the example project; all are stopped at the end of the session.

    ``start_uwsgi(settings_module=None, args=WS_SERVER_ARGS, socket_option="--http-socket",
    kind="uwsgi")``; ``kind="runserver"`` starts Django's development server instead
    (``WSGI_APPLICATION = "ws4redis.django_runserver.application"``), which ignores ``args``
    and ``socket_option``.
    """
    servers: list[UwsgiServer] = []

    def start(
        settings_module: str | None = None,
        args: list[str] | None = None,
        socket_option: str = "--http-socket",
        kind: str = "uwsgi",
    ) -> UwsgiServer:
        env = server_env(redis_server, example_db, settings_module)
        if kind == "runserver":
            server = DevServer(env).start()
        else:
            server = UwsgiServer(args or WS_SERVER_ARGS, env, socket_option=socket_option).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def uwsgi_server(start_uwsgi: Callable[..., UwsgiServer]) -> UwsgiServer:
    """The example project under standalone uWSGI (``wsgi.py`` dispatcher, gevent)."""
    return start_uwsgi()


def login(port: int, username: str, password: str = "secret") -> str:
    """Log in through the example's real login page; returns the ``Cookie`` header value.

    One HTTP connection per request: a worker speaking HTTP itself (``--http-socket``) closes
    the connection after each response.
    """
    response, page = _login_request(port, "GET", {})
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    response, _ = _login_request(
        port,
        "POST",
        {
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": f"csrftoken={_cookie(response, 'csrftoken')}",
            "Referer": f"http://127.0.0.1:{port}/login/",
        },
        f"username={username}&password={password}&csrfmiddlewaretoken={token}",
    )
    assert response.status == 302, f"login of {username} failed with HTTP {response.status}"
    return f"sessionid={_cookie(response, 'sessionid')}"


def _login_request(
    port: int, method: str, headers: dict[str, str], body: str | None = None
) -> tuple[http.client.HTTPResponse, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, "/login/", body=body, headers=headers)
        response = conn.getresponse()
        return response, response.read().decode()
    finally:
        conn.close()


def _cookie(response: http.client.HTTPResponse, name: str) -> str:
    for header in response.headers.get_all("Set-Cookie") or []:
        if match := re.match(rf"{name}=([^;]*)", header):
            return match.group(1)
    raise AssertionError(f"no {name} cookie in the response")

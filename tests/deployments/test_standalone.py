"""Standalone uWSGI: one instance, the ``examples/wsgi.py`` dispatcher sending ``/ws/…`` to the
WebSocket loop and everything else to Django, in one gevent loop.

Two ways to serve static files, as ``docs/deployment.rst`` explains:

* the 0.5 documentation's command line (``--http`` router) with ``DEBUG = True``, where
  ``staticfiles_urlpatterns()`` in ``urls.py`` lets Django serve them;
* ``DEBUG = False`` behind ``--http-socket``, where those patterns are empty and uWSGI's
  ``--static-map /static=STATIC_ROOT`` serves what ``collectstatic`` gathered.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import server_env
from tests.deployments.checks import STATIC_FILE, exercise, http_get, logs_on_failure
from tools.servers import RedisServer, UwsgiServer


@pytest.fixture(scope="module")
def start_standalone(
    redis_server: RedisServer, example_db: Path, static_root: Path
) -> Iterator[Callable[..., UwsgiServer]]:
    """Start ``uwsgi SOCKET_OPTION 127.0.0.1:PORT ARGS`` in ``examples/`` (where ``wsgi.py``
    is), with the example's environment plus ``env``; all are stopped at the end."""
    servers: list[UwsgiServer] = []

    def start(socket_option: str, args: list[str], env: dict[str, str]) -> UwsgiServer:
        full_env = {
            **server_env(redis_server, example_db),
            "CHATSERVER_STATIC_ROOT": str(static_root),
            **env,
        }
        server = UwsgiServer(args, full_env, socket_option=socket_option)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


def test_the_documented_command_line_with_django_serving_static_files(
    start_standalone, redis_client, static_root: Path
) -> None:
    # uwsgi --http :PORT --gevent 100 --http-websockets --module wsgi, as in the 0.5 docs
    server = start_standalone(
        "--http",
        ["--gevent", "100", "--http-websockets", "--module", "wsgi"],
        {"CHATSERVER_DEBUG": "1"},
    )
    with logs_on_failure(server):
        exercise(server.port, redis_client, static_root)


def test_static_map_serves_collected_files_without_debug(
    start_standalone, redis_client, static_root: Path
) -> None:
    args = ["--gevent", "100", "--http-websockets", "--module", "wsgi"]
    static_map = ["--static-map", f"/static={static_root}"]
    without_map = start_standalone("--http-socket", args, {"CHATSERVER_DEBUG": "0"})
    server = start_standalone("--http-socket", args + static_map, {"CHATSERVER_DEBUG": "0"})
    with logs_on_failure(without_map, server):
        # DEBUG = False: staticfiles_urlpatterns() is empty, Django has no static files ...
        status, _, _ = http_get(without_map.port, f"/static/{STATIC_FILE}")
        assert status == 404
        # ... and uWSGI's static map serves them
        exercise(server.port, redis_client, static_root)
        served_by_uwsgi = rf"\|app: -1\|.* GET /static/{STATIC_FILE} => .* \(HTTP/1.1 200\)"
        assert re.search(served_by_uwsgi, server.log())

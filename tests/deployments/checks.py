"""What every deployment must serve, checked like a browser would; and how to start its parts.

:func:`exercise` is the one behaviour suite all deployments of ``docs/deployment.rst`` pass,
whatever sits in front of the WebSocket loop (nothing, NGINX, Apache, the uWSGI emperor).
"""

from __future__ import annotations

import signal
import sys
import tempfile
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import pytest
import redis
import websocket

from tests.conftest import login, server_env
from tools.servers import RedisServer, ServerProcess, unix_socket_ready, uwsgi_binary, wait_until

TIMEOUT = 30.0  # generous: the tests also run on loaded CI machines
PREFIX = "ws"  # the example's WS4REDIS_PREFIX
HEARTBEAT = "--heartbeat--"  # the example's WS4REDIS_HEARTBEAT
STATIC_FILE = "admin/css/base.css"
NO_ROUTER = "no internal routing support"  # what uWSGI built without PCRE2 logs


# -- processes --------------------------------------------------------------------------------


def make_run_dir() -> Path:
    """A fresh directory for Unix sockets, short (a socket path has at most 107 bytes) and
    reachable by the web servers' workers (they run as www-data when the tests run as root)."""
    path = Path(tempfile.mkdtemp(prefix="ws4redis-run-"))
    path.chmod(0o755)
    return path


def deployment_env(
    redis_server: RedisServer, example_db: Path, static_root: Path, run_dir: Path
) -> dict[str, str]:
    """The environment the deployment files read: the example's, plus the run directory.

    ``VIRTUAL_ENV`` is this interpreter's prefix, so the ``virtualenv`` lines of the ini files
    name the virtualenv running the tests, whatever the calling shell has activated.
    """
    return {
        **server_env(redis_server, example_db),
        "CHATSERVER_STATIC_ROOT": str(static_root),
        "WS4REDIS_RUN_DIR": str(run_dir),
        "VIRTUAL_ENV": sys.prefix,
    }


def start_uwsgi_ini(name: str, ini: Path, env: dict[str, str], ready: Path) -> ServerProcess:
    """``uwsgi --ini INI``, run from ``/`` (the ini must not depend on the working directory),
    ready when the Unix socket ``ready`` accepts connections; stopped with SIGINT (uWSGI's
    immediate shutdown: a graceful one waits for Django's workers for seconds)."""
    args = [uwsgi_binary(), "--ini", ini]
    server = ServerProcess(name, args, env=env, cwd=Path("/"), stop_signal=signal.SIGINT)
    return server.start(lambda: unix_socket_ready(ready), timeout=60)


class HasLog(Protocol):
    def log(self) -> str: ...


@contextmanager
def logs_on_failure(*servers: HasLog) -> Iterator[None]:
    """Add the logs of ``servers`` to any failure inside the block."""
    try:
        yield
    except Exception as error:
        logs = "\n".join(server.log() for server in servers)
        raise AssertionError(f"{type(error).__name__}: {error}\n\n{logs}") from error


# -- the checks -------------------------------------------------------------------------------


def http_get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    """``GET path`` on 127.0.0.1:``port``: status, headers and body (error responses too)."""
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def open_ws(port: int, path: str, **options: object) -> websocket.WebSocket:
    """A WebSocket opened as by a page of this site (``Origin`` is the site's own)."""
    options.setdefault("origin", f"http://127.0.0.1:{port}")
    return websocket.create_connection(f"ws://127.0.0.1:{port}{path}", timeout=TIMEOUT, **options)


def receive_text(ws: websocket.WebSocket) -> str:
    """The next message that is not a heartbeat."""
    while True:
        message = ws.recv()
        if message != HEARTBEAT:
            return message


def wait_for_subscribers(client: redis.Redis, channel: str) -> None:
    """Wait until someone subscribes to ``channel``: the WebSocket loop subscribes after the
    handshake, so a message published earlier would reach nobody."""
    wait_until(
        lambda: client.pubsub_numsub(channel)[0][1] >= 1, TIMEOUT, f"a subscriber of {channel}"
    )


def exercise(port: int, redis_client: redis.Redis, static_root: Path) -> None:
    """Everything a deployment must serve on 127.0.0.1:``port``.

    1. a Django page (the login form), and a static file, byte for byte the collected one;
    2. a WebSocket subscribed to a broadcast channel receives what is published to Redis;
    3. a second WebSocket publishing on that channel reaches the first (client to client);
    4. a logged-in user's WebSocket receives a message for that user (the WebSocket loop
       reads the session that the Django loop wrote, through whatever is in front);
    5. a handshake from a foreign ``Origin`` is refused with 403: the browser's ``Host``
       reached the WebSocket loop, so the Origin check is live and same-origin pages pass.
    """
    status, _, body = http_get(port, "/login/")
    assert status == 200, body[:500]
    assert b'name="csrfmiddlewaretoken"' in body

    status, headers, body = http_get(port, f"/static/{STATIC_FILE}")
    assert status == 200, body[:500]
    assert body == (static_root / STATIC_FILE).read_bytes()
    assert headers.get("Content-Type", "").startswith("text/css"), headers

    facility = f"deploy-{uuid.uuid4().hex[:12]}"
    channel = f"{PREFIX}:broadcast:{facility}"
    listener = open_ws(port, f"/ws/{facility}?subscribe-broadcast")
    try:
        wait_for_subscribers(redis_client, channel)
        redis_client.publish(channel, "from Redis")
        assert receive_text(listener) == "from Redis"

        sender = open_ws(port, f"/ws/{facility}?publish-broadcast")
        try:
            sender.send("from another client")
            assert receive_text(listener) == "from another client"
        finally:
            sender.close()
    finally:
        listener.close()

    user_ws = open_ws(port, f"/ws/{facility}?subscribe-user", cookie=login(port, "john"))
    try:
        user_channel = f"{PREFIX}:user:john:{facility}"
        wait_for_subscribers(redis_client, user_channel)
        redis_client.publish(user_channel, "for john")
        assert receive_text(user_ws) == "for john"
    finally:
        user_ws.close()

    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        open_ws(port, f"/ws/{facility}?subscribe-broadcast", origin="http://evil.example")
    assert refused.value.status_code == 403

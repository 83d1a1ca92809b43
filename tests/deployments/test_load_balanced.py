"""Several WebSocket servers, one site: NGINX balancing two WebSocket uWSGI instances.

``deploy/nginx/load_balanced.conf.template`` puts NGINX in front of two instances of
``deploy/uwsgi/websocket.ini`` (separate processes, each with its master and gevent workers, as
on two hosts; here each on a Unix socket of its own) and the Django loop of ``django.ini``, all
with one Redis.  NGINX takes turns (round robin), so consecutive WebSockets land on different
instances; which one holds a client is read from the instances' sockets themselves.

Every subscribed client must receive each broadcast, user, group and session message exactly
once, and a message sent by a client on one instance must reach the clients on the other.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import websocket

from tests.conftest import login
from tests.deployments.checks import (
    PREFIX,
    TIMEOUT,
    deployment_env,
    logs_on_failure,
    make_run_dir,
    open_ws,
    receive_text,
    start_uwsgi_ini,
)
from tests.deployments.conftest import TwoLoops
from tests.integration.test_end_to_end import redis_connections_of
from tools.servers import (
    ROOT,
    NginxServer,
    RedisServer,
    ServerProcess,
    free_port,
    process_group_members,
    render_template,
    wait_until,
)
from ws4redis.metrics import read_snapshots
from ws4redis.publisher import RedisPublisher

TEMPLATE = ROOT / "deploy" / "nginx" / "load_balanced.conf.template"
WEBSOCKET_INI = ROOT / "deploy" / "uwsgi" / "websocket.ini"
#: ``processes`` of ``websocket.ini``: each worker has its own pub/sub connection at most.
WORKERS_PER_INSTANCE = 2
SUBSCRIBE = "subscribe-broadcast&subscribe-user&subscribe-group&subscribe-session"
#: Who opens a WebSocket, in order: round robin puts each user once on each instance.
USERS = ("john", "john", "mary", "mary", "admin", "admin")


@dataclass
class Balanced:
    """NGINX on ``nginx.port`` over the WebSocket ``instances``, listening on ``sockets``."""

    nginx: NginxServer
    django: ServerProcess
    instances: list[ServerProcess]
    sockets: list[Path]

    def servers(self) -> list[ServerProcess]:
        return [self.nginx, self.django, *self.instances]


@pytest.fixture(scope="module")
def second_instance(
    redis_server: RedisServer, example_db: Path, static_root: Path
) -> Iterator[tuple[ServerProcess, Path]]:
    """Another ``uwsgi --ini deploy/uwsgi/websocket.ini``, in a run directory of its own."""
    run_dir = make_run_dir()
    env = deployment_env(redis_server, example_db, static_root, run_dir)
    if os.geteuid() == 0:
        env["WS4REDIS_SOCKET_OWNER"] = "root:www-data"
    socket_path = run_dir / "web.socket"
    server = start_uwsgi_ini("uwsgi-websocket-2", WEBSOCKET_INI, env, socket_path)
    try:
        yield server, socket_path
    finally:
        server.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def balanced(
    two_loops: TwoLoops, second_instance: tuple[ServerProcess, Path], static_root: Path
) -> Iterator[Balanced]:
    """NGINX balancing the WebSocket instance of ``two_loops`` and ``second_instance``."""
    sockets = [two_loops.run_dir / "web.socket", second_instance[1]]
    port = free_port()
    site = render_template(
        TEMPLATE,
        {
            "WS4REDIS_LISTEN": f"127.0.0.1:{port}",
            "WS4REDIS_SERVER_NAME": "127.0.0.1 localhost",
            "WS4REDIS_WEBSOCKET_SERVER_1": f"unix:{sockets[0]}",
            "WS4REDIS_WEBSOCKET_SERVER_2": f"unix:{sockets[1]}",
            "WS4REDIS_DJANGO_SERVER": f"unix:{two_loops.run_dir / 'django.socket'}",
            "CHATSERVER_STATIC_ROOT": str(static_root),
        },
    )
    nginx = NginxServer(site, port)
    try:
        nginx.start()
        yield Balanced(nginx, two_loops.django, [two_loops.websocket, second_instance[0]], sockets)
    finally:
        nginx.stop()


@pytest.fixture
def publisher(ws_settings):  # noqa: ANN001, ANN201
    """This process publishes as the example's Django loop does (same prefix), unpersisted."""
    ws_settings.WS4REDIS_PREFIX = PREFIX
    ws_settings.WS4REDIS_EXPIRE = 0
    return ws_settings


def unix_connections(path: Path) -> int:
    """How many accepted connections the Unix socket ``path`` has right now.

    An accepted socket carries its listener's path in ``/proc/net/unix``, with state 03
    (connected); the listener itself is in state 01.
    """
    with open("/proc/net/unix") as table:
        next(table)
        rows = [line.split() for line in table]
    return sum(1 for row in rows if len(row) >= 8 and row[7] == str(path) and row[5] == "03")


def open_counted(
    site: Balanced, path: str, cookie: str | None = None
) -> tuple[websocket.WebSocket, int]:
    """Open a WebSocket through NGINX; return it and the index of the instance holding it."""
    before = [unix_connections(path) for path in site.sockets]
    ws = open_ws(site.nginx.port, path, **({"cookie": cookie} if cookie else {}))
    holder: list[int] = []

    def one_more() -> bool:
        now = [unix_connections(path) for path in site.sockets]
        holder[:] = [i for i, (a, b) in enumerate(zip(before, now, strict=True)) if b == a + 1]
        return len(holder) == 1 and sum(now) == sum(before) + 1

    wait_until(one_more, TIMEOUT, "the new WebSocket on one of the instances")
    return ws, holder[0]


def reported_connections(instance: ServerProcess, client: redis.Redis) -> int:
    """The open WebSockets that the workers of ``instance`` last reported (see ``metrics``)."""
    pids = set(process_group_members(instance.pid))
    return sum(r["connections"] for r in read_snapshots(client, PREFIX) if r["pid"] in pids)


def receive_until(ws: websocket.WebSocket, last: str) -> list[str]:
    """Every message up to and including ``last``."""
    received = [receive_text(ws)]
    while received[-1] != last:
        received.append(receive_text(ws))
    return received


def test_every_message_reaches_every_subscriber_once_whichever_server_holds_it(
    balanced: Balanced, publisher, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    with logs_on_failure(*balanced.servers()):
        port = balanced.nginx.port
        cookies = {name: login(port, name) for name in set(USERS)}
        facility = f"balanced-{uuid.uuid4().hex[:12]}"
        clients = [
            (name, *open_counted(balanced, f"/ws/{facility}?{SUBSCRIBE}", cookies[name]))
            for name in USERS
        ]
        sender, _ = open_counted(balanced, f"/ws/{facility}?publish-broadcast")
        try:
            for user in set(USERS):  # each user has a WebSocket on each instance
                assert sorted(where for name, _, where in clients if name == user) == [0, 1]
            wait_until(
                lambda: sorted(unix_connections(path) for path in balanced.sockets) == [3, 4],
                TIMEOUT,
                "4 WebSockets on one instance and 3 on the other",
            )
            wait_until(  # and each instance's workers report theirs (every 5 s)
                lambda: (
                    sorted(reported_connections(i, redis_client) for i in balanced.instances)
                    == [3, 4]
                ),
                TIMEOUT,
                "the instances' metrics to report 4 and 3 connections",
            )

            # from a client on one instance to the clients of both
            sender.send("from a client")
            for _, ws, _ in clients:
                assert receive_text(ws) == "from a client"

            # from Django, to each audience
            mary_session = cookies["mary"].split("=", 1)[1]
            RedisPublisher(facility=facility, broadcast=True).publish_message("to everyone")
            RedisPublisher(facility=facility, users=["john"]).publish_message("to john")
            RedisPublisher(facility=facility, groups=["chatters"]).publish_message("to chatters")
            RedisPublisher(facility=facility, sessions=[mary_session]).publish_message("to mary")
            RedisPublisher(facility=facility, broadcast=True).publish_message("the end")
            expected = {
                "john": ["to everyone", "to john", "to chatters", "the end"],
                "mary": ["to everyone", "to chatters", "to mary", "the end"],
                "admin": ["to everyone", "the end"],
            }
            for name, ws, where in clients:
                assert receive_until(ws, "the end") == expected[name], (name, where)

            assert_redis_connections(balanced, redis_server, redis_client)
        finally:
            for _, ws, _ in clients:
                ws.close()
            sender.close()


def assert_redis_connections(
    balanced: Balanced, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    """Each instance holds one pub/sub connection per worker with clients, however many."""
    entries = redis_client.client_list()
    for instance in balanced.instances:
        ports = redis_connections_of(process_group_members(instance.pid), redis_server.port)
        mine = [e for e in entries if int(e["addr"].rsplit(":", 1)[1]) in ports]
        subscribed = [e for e in mine if int(e["sub"]) > 0]
        print(
            f"\n{instance.name}: {len(mine)} Redis connections, {len(subscribed)} in pub/sub mode"
        )
        assert 1 <= len(subscribed) <= WORKERS_PER_INSTANCE

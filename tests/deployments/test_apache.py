"""Apache 2.4 in front of two uWSGI instances: ``deploy/apache/chatserver.conf`` with this
run's paths defined before it, and ``deploy/uwsgi/{django,websocket}.ini`` (see ``conftest``).

Apache serves ``/static/`` from ``STATIC_ROOT``, tunnels ``/ws/`` to the WebSocket loop's
``--http-socket`` with mod_proxy_wstunnel (``ws://``) and passes everything else to Django's
uwsgi-protocol ``--socket`` with mod_proxy_uwsgi.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deployments.checks import exercise, logs_on_failure
from tests.deployments.conftest import TwoLoops
from tools.servers import ROOT, ApacheServer, free_port

SITE = ROOT / "deploy" / "apache" / "chatserver.conf"


@pytest.fixture(scope="module")
def apache(two_loops: TwoLoops, static_root: Path) -> Iterator[ApacheServer]:
    """Apache on a free loopback port, including the repository's site configuration."""
    port = free_port()
    defines = {
        "WS4REDIS_LISTEN": f"127.0.0.1:{port}",
        "WS4REDIS_SERVER_NAME": "127.0.0.1",
        "WS4REDIS_RUN_DIR": str(two_loops.run_dir),
        "CHATSERVER_STATIC_ROOT": str(static_root),
    }
    server = ApacheServer(SITE, port, defines)
    try:
        yield server.start()
    finally:
        server.stop()


def test_apache_serves_django_static_files_and_websockets(
    apache: ApacheServer, two_loops: TwoLoops, redis_client, static_root: Path
) -> None:
    with logs_on_failure(apache, two_loops.django, two_loops.websocket):
        exercise(apache.port, redis_client, static_root)

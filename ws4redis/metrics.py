"""What each WebSocket worker is doing: counters, their periodic report to Redis, their totals.

Every worker process keeps one :class:`Counters` object, :data:`counters`, that the WebSocket
loop updates with plain integer additions (no lock, no lookup by name on the per-message path).
The first WebSocket of a worker starts a reporter task on the server's runtime (a greenlet under
uWSGI, a daemon thread under ``runserver``) that writes a JSON snapshot of the counters to Redis
every ``WS4REDIS_METRICS_INTERVAL`` seconds (default :data:`REPORT_INTERVAL`) under the key::

    [PREFIX:]ws4redis:stats:HOSTNAME:PID

with a time-to-live of :data:`TTL_FACTOR` intervals, so that the snapshot of a worker that died
disappears by itself.  ``manage.py ws4redis_stats`` and the view :func:`ws4redis.views.metrics`
read those snapshots back (:func:`read_snapshots`) and add them up (:func:`merge_snapshots`).
"""

from __future__ import annotations

import bisect
import json
import logging
import math
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import redis

from ws4redis import settings
from ws4redis.runtime import Runtime

__all__ = [
    "FANOUT_BUCKETS",
    "REPORT_INTERVAL",
    "TTL_FACTOR",
    "Counters",
    "Histogram",
    "counters",
    "ensure_reporter",
    "merge_snapshots",
    "observe_fanout",
    "read_snapshots",
    "record_close",
    "record_reconnect",
    "record_refused",
    "stats_key",
    "stop_reporter",
    "worker_id",
]

logger = logging.getLogger("ws4redis")

#: Default of ``WS4REDIS_METRICS_INTERVAL``: seconds between two reports of a worker.
REPORT_INTERVAL = 5.0
#: A report lives this many intervals in Redis: a worker that stopped reporting is gone then.
TTL_FACTOR = 3
#: Upper bounds, in seconds, of the buckets of the fan-out time histogram (``+Inf`` follows).
FANOUT_BUCKETS = (
    0.00001,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)
#: Close codes that mean "closed by a limit": policy (1008), too big (1009), try later (1013).
LIMIT_CLOSE_CODES = frozenset((1008, 1009, 1013))
#: The numeric counters of a snapshot, added up in the total.
COUNTER_FIELDS = (
    "connections",
    "handshakes_accepted",
    "messages_in",
    "messages_out",
    "bytes_out",
    "redis_reconnects",
)
#: The counters kept per status or close code, as ``{"403": 2, …}``.
BREAKDOWN_FIELDS = ("handshakes_refused", "closed_by_limit")
KEY_INFIX = "ws4redis:stats:"


class Histogram:
    """Counts of observations in fixed buckets, with their sum, as Prometheus keeps them.

    ``counts[i]`` counts the observations ``<= bounds[i]`` and ``> bounds[i - 1]``; the last
    count is the ``+Inf`` bucket.  Histograms with the same bounds add up bucket by bucket.
    """

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Sequence[float] = FANOUT_BUCKETS) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float, times: int = 1) -> None:
        """Count ``times`` observations of ``value``."""
        self.counts[bisect.bisect_left(self.bounds, value)] += times
        self.sum += value * times
        self.count += times

    def merge(self, other: Histogram) -> None:
        """Add the observations of ``other`` (same bounds) to this histogram."""
        if other.bounds != self.bounds:
            raise ValueError("histograms with different buckets cannot be merged")
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.sum += other.sum
        self.count += other.count

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, observations <= bound)`` per bucket, ``+Inf`` last (Prometheus)."""
        pairs, total = [], 0
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            total += count
            pairs.append((bound, total))
        return pairs

    def quantile(self, q: float) -> float | None:
        """The upper bound of the bucket holding quantile ``q``; ``None`` when empty."""
        if not self.count:
            return None
        rank = q * self.count
        for bound, total in self.cumulative():
            if total >= rank:
                return bound
        return math.inf  # pragma: no cover - the +Inf bucket holds every observation

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form; ``+Inf`` is implied by the extra last count."""
        return {
            "bounds": list(self.bounds),
            "counts": list(self.counts),
            "sum": self.sum,
            "count": self.count,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Histogram:
        """The histogram :meth:`to_dict` described."""
        histogram = cls(data["bounds"])
        counts = [int(n) for n in data["counts"]]
        if len(counts) != len(histogram.counts):
            raise ValueError("a histogram needs one count per bucket plus +Inf")
        histogram.counts = counts
        histogram.sum = float(data["sum"])
        histogram.count = int(data["count"])
        return histogram


class Counters:
    """The counters of one worker process; the loop adds to the attributes directly."""

    __slots__ = (
        "bytes_out",
        "closed_by_limit",
        "connections",
        "fanout",
        "handshakes_accepted",
        "handshakes_refused",
        "messages_in",
        "messages_out",
        "redis_reconnects",
    )

    def __init__(self) -> None:
        #: Open WebSockets right now (a gauge).
        self.connections = 0
        self.handshakes_accepted = 0
        #: Refused handshakes per HTTP status.
        self.handshakes_refused: Counter[int] = Counter()
        #: Data messages received from clients (heartbeats aside).
        self.messages_in = 0
        #: Data messages written to clients (heartbeats aside).
        self.messages_out = 0
        #: Bytes written to clients after the 101, frames of every kind.
        self.bytes_out = 0
        #: Connections the server closed because of a limit, per close code.
        self.closed_by_limit: Counter[int] = Counter()
        self.redis_reconnects = 0
        #: Seconds the hub spent handing one message to its local listeners.
        self.fanout = Histogram()

    def snapshot(self) -> dict[str, Any]:
        """The counters as a JSON-ready dict (breakdown keys as strings)."""
        data: dict[str, Any] = {name: getattr(self, name) for name in COUNTER_FIELDS}
        for name in BREAKDOWN_FIELDS:
            data[name] = {str(key): value for key, value in sorted(getattr(self, name).items())}
        data["fanout_seconds"] = self.fanout.to_dict()
        return data


#: The counters of this process.
counters = Counters()


def record_refused(status: int) -> None:
    """Count a handshake refused with HTTP ``status``."""
    counters.handshakes_refused[status] += 1


def record_close(code: int) -> None:
    """Count a connection the server closed with ``code``, when that code means a limit."""
    if code in LIMIT_CLOSE_CODES:
        counters.closed_by_limit[code] += 1


def record_reconnect() -> None:
    """Count a restored Redis pub/sub connection (the hub calls this after each reconnect)."""
    counters.redis_reconnects += 1


def observe_fanout(seconds: float, messages: int = 1) -> None:
    """Record that handing ``messages`` messages to their local listeners took ``seconds``.

    A run of several messages counts as that many observations of the average time each.
    """
    counters.fanout.observe(seconds / messages if messages > 1 else seconds, messages)


# -- snapshots ----------------------------------------------------------------------------------


def worker_id() -> str:
    """``HOSTNAME:PID``, naming this worker process in reports."""
    return f"{socket.gethostname()}:{os.getpid()}"


def stats_key(worker: str = "*", prefix: str | None = None) -> str:
    """The Redis key of ``worker``'s report (``*``: the pattern matching every worker)."""
    if prefix is None:
        prefix = settings.get("WS4REDIS_PREFIX")
    return f"{prefix}:{KEY_INFIX}{worker}" if prefix else f"{KEY_INFIX}{worker}"


def merge_snapshots(snapshots: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The total of worker snapshots: counters and breakdowns added up, histograms merged."""
    total: dict[str, Any] = {name: 0 for name in COUNTER_FIELDS}
    breakdowns: dict[str, dict[str, int]] = {name: {} for name in BREAKDOWN_FIELDS}
    fanout = Histogram()
    workers = 0
    for snapshot in snapshots:
        workers += 1
        for name in COUNTER_FIELDS:
            total[name] += int(snapshot.get(name, 0))
        for name in BREAKDOWN_FIELDS:
            for key, value in snapshot.get(name, {}).items():
                breakdowns[name][key] = breakdowns[name].get(key, 0) + int(value)
        if "fanout_seconds" in snapshot:
            fanout.merge(Histogram.from_dict(snapshot["fanout_seconds"]))
    for name in BREAKDOWN_FIELDS:
        total[name] = dict(sorted(breakdowns[name].items(), key=lambda item: int(item[0])))
    total["fanout_seconds"] = fanout.to_dict()
    total["workers"] = workers
    return total


def read_snapshots(client: redis.Redis, prefix: str | None = None) -> list[dict[str, Any]]:
    """The reports of every live worker, sorted by worker id; unreadable ones are skipped."""
    pattern = _glob_escape(stats_key("", prefix)) + "*"
    keys = sorted(client.scan_iter(match=pattern, count=1000))
    snapshots = []
    for key, value in zip(keys, _values(client, keys), strict=True):
        if value is None:
            continue  # expired between SCAN and MGET
        try:
            snapshot = json.loads(value)
        except ValueError:
            logger.warning("Ignoring an unreadable worker report under %r", key)
            continue
        if isinstance(snapshot, dict) and "id" in snapshot:
            snapshots.append(snapshot)
    return sorted(snapshots, key=lambda snapshot: str(snapshot["id"]))


def _values(client: redis.Redis, keys: list[bytes]) -> list[bytes | None]:
    """``MGET`` of ``keys``; in a Cluster one ``MGET`` per slot (the reports hash apart)."""
    from ws4redis.connection import is_cluster

    if not keys:
        return []
    return client.mget_nonatomic(keys) if is_cluster(client) else client.mget(keys)


def _glob_escape(text: str) -> str:
    return "".join(f"\\{char}" if char in "*?[]\\" else char for char in text)


# -- the reporter -------------------------------------------------------------------------------


class Reporter:
    """Writes this worker's snapshot to Redis every interval, forever, whatever Redis does.

    ``client`` is a Redis client, or a function returning one, called when first needed (so that
    a bad connection setting shows in the reporter's log, not in the handshake calling it).
    """

    def __init__(self, runtime: Runtime, client: redis.Redis | Callable[[], redis.Redis]) -> None:
        self.pid = os.getpid()
        self.worker = worker_id()
        self.started = time.time()
        self._runtime = runtime
        self._client = client
        self._failing = False
        self.stopped = False

    def snapshot(self) -> dict[str, Any]:
        """This worker's report: who it is, then its counters."""
        host, _, pid = self.worker.rpartition(":")
        return {
            "id": self.worker,
            "host": host,
            "pid": int(pid),
            "runtime": self._runtime.name,
            "started": self.started,
            "updated": time.time(),
            **counters.snapshot(),
        }

    def run(self) -> None:
        """Report, sleep an interval, report again, until :meth:`stop` (or the process ends)."""
        while not self.stopped:
            interval = _interval()
            self.report(interval)
            self._runtime.sleep(interval)

    def report(self, interval: float) -> None:
        """Write one report; a Redis failure is logged once per outage, never raised."""
        try:
            payload = json.dumps(self.snapshot(), separators=(",", ":"))
            ttl = max(1, math.ceil(interval * TTL_FACTOR * 1000))
            self._redis().set(stats_key(self.worker), payload, px=ttl)
        except Exception as exc:
            if not self._failing:
                logger.warning("Reporting the metrics of this worker to Redis failed: %s", exc)
            self._failing = True
            return
        if self._failing:
            logger.info("Reporting the metrics of this worker to Redis works again")
        self._failing = False

    def _redis(self) -> redis.Redis:
        if callable(self._client) and not isinstance(self._client, redis.Redis):
            self._client = self._client()
        return self._client

    def stop(self) -> None:
        """Stop reporting and remove this worker's report (its connections are gone)."""
        self.stopped = True
        try:
            self._redis().delete(stats_key(self.worker))
        except Exception as exc:
            logger.debug("Removing this worker's report failed: %s", exc)


def _interval() -> float:
    try:
        return float(settings.get("WS4REDIS_METRICS_INTERVAL"))
    except Exception:  # an invalid setting must not end the reporter: system checks say it
        return REPORT_INTERVAL


_reporter: Reporter | None = None
_reporter_lock = threading.Lock()


def ensure_reporter(runtime: Runtime, client: redis.Redis | Callable[[], redis.Redis]) -> None:
    """Start this process's reporter task on ``runtime`` unless it runs already.

    Called for each WebSocket handshake; after a fork (a new uWSGI worker) the child starts its
    own.  ``client`` as for :class:`Reporter`.
    """
    global _reporter
    reporter = _reporter
    if reporter is not None and reporter.pid == os.getpid():
        return
    with _reporter_lock:
        if _reporter is reporter:
            _reporter = Reporter(runtime, client)
            runtime.spawn(_reporter.run)


def stop_reporter() -> None:
    """Stop this process's reporter and remove its report (a worker shutting down)."""
    global _reporter
    reporter, _reporter = _reporter, None
    if reporter is not None and reporter.pid == os.getpid():
        reporter.stop()

"""``manage.py ws4redis_stats``: what the WebSocket workers report, per worker and in total.

The figures are the snapshots the workers write to Redis every ``WS4REDIS_METRICS_INTERVAL``
seconds (see :mod:`ws4redis.metrics`); a worker that stopped reporting drops out after three
intervals.  ``--json`` prints one JSON object ``{"total": {…}, "workers": [{…}, …]}``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import redis
from django.core.management.base import BaseCommand, CommandError, CommandParser

from ws4redis.connection import get_redis_client
from ws4redis.metrics import Histogram, merge_snapshots, read_snapshots

#: The table's columns: heading, and how a row (a worker's snapshot or the total) shows in it.
COLUMNS: Sequence[tuple[str, Any]] = (
    ("CONN", lambda row: row["connections"]),
    ("ACCEPTED", lambda row: row["handshakes_accepted"]),
    ("REFUSED", lambda row: _breakdown(row["handshakes_refused"])),
    ("MSG IN", lambda row: row["messages_in"]),
    ("MSG OUT", lambda row: row["messages_out"]),
    ("BYTES OUT", lambda row: row["bytes_out"]),
    ("LIMIT CLOSES", lambda row: _breakdown(row["closed_by_limit"])),
    ("RECONNECTS", lambda row: row["redis_reconnects"]),
    ("FAN-OUT P50/P99 ms", lambda row: _quantiles(row["fanout_seconds"])),
)


class Command(BaseCommand):
    help = "Show the counters the WebSocket workers report to Redis, per worker and in total."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--json", action="store_true", help='print one JSON object {"total", "workers"}'
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            workers = read_snapshots(get_redis_client())
        except redis.exceptions.RedisError as exc:
            raise CommandError(f"Redis cannot be reached: {exc}") from exc
        report = {"total": merge_snapshots(workers), "workers": workers}
        if options["json"]:
            self.stdout.write(json.dumps(report))
        else:
            self.stdout.write(format_table(report))


def format_table(report: dict[str, Any]) -> str:
    """The report as a text table: one row per worker, then the total."""
    rows = [[str(worker["id"])] + _cells(worker) for worker in report["workers"]]
    total = report["total"]
    count = total["workers"]
    rows.append([f"TOTAL ({count} worker{'' if count == 1 else 's'})"] + _cells(total))
    header = ["WORKER"] + [heading for heading, _ in COLUMNS]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    rule = "  ".join("-" * width for width in widths)
    lines = [_line(header, widths), rule]
    lines += [_line(row, widths) for row in rows[:-1]]
    lines += [rule, _line(rows[-1], widths)]
    return "\n".join(lines)


def _cells(row: dict[str, Any]) -> list[str]:
    return [str(cell(row)) for _, cell in COLUMNS]


def _line(cells: list[str], widths: list[int]) -> str:
    first = cells[0].ljust(widths[0])
    rest = (cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True))
    return "  ".join([first, *rest]).rstrip()


def _breakdown(counts: dict[str, int]) -> str:
    """``0``, or the sum and its parts: ``3 (403:1 503:2)``."""
    if not counts:
        return "0"
    parts = " ".join(f"{key}:{value}" for key, value in counts.items())
    return f"{sum(counts.values())} ({parts})"


def _quantiles(data: dict[str, Any]) -> str:
    """The bucket bounds holding the median and the 99th percentile, in milliseconds."""
    histogram = Histogram.from_dict(data)
    bounds = [histogram.quantile(0.5), histogram.quantile(0.99)]
    if bounds[0] is None:
        return "-"
    return "/".join(f"<={bound * 1000:g}" for bound in bounds if bound is not None)

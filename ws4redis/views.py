"""Django views of ws4redis: the WebSocket workers' metrics for Prometheus.

Add the view to the site's URLs, on the Django side (not below ``WEBSOCKET_URL``)::

    from ws4redis.views import metrics

    urlpatterns += [path("ws4redis/metrics", metrics)]
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator, Sequence
from typing import Any

import redis
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from ws4redis import settings
from ws4redis.connection import get_redis_client
from ws4redis.metrics import Histogram, merge_snapshots, read_snapshots

__all__ = ["PROMETHEUS_CONTENT_TYPE", "metrics"]

#: The Prometheus text exposition format, version 0.0.4.
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: ``(snapshot field, metric name, kind, help, breakdown label)`` of every metric served.
METRICS: Sequence[tuple[str, str, str, str, str | None]] = (
    ("connections", "connections", "gauge", "Open WebSockets.", None),
    ("handshakes_accepted", "handshakes_accepted", "counter", "Handshakes accepted.", None),
    (
        "handshakes_refused",
        "handshakes_refused",
        "counter",
        "Handshakes refused, by HTTP status.",
        "status",
    ),
    ("messages_in", "messages_received", "counter", "Messages received from clients.", None),
    ("messages_out", "messages_delivered", "counter", "Messages delivered to clients.", None),
    ("bytes_out", "sent_bytes", "counter", "Bytes written to clients.", None),
    (
        "closed_by_limit",
        "closed_by_limit",
        "counter",
        "Connections closed by a limit, by close code.",
        "code",
    ),
    ("redis_reconnects", "redis_reconnects", "counter", "Redis pub/sub reconnects.", None),
    (
        "fanout_seconds",
        "fanout_seconds",
        "histogram",
        "Time to hand one message to its local listeners.",
        None,
    ),
)


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """The workers' counters in the Prometheus text format.

    Totals are named ``ws4redis_*``, the figures of each worker ``ws4redis_worker_*`` with a
    ``worker`` label.  Only for staff users, or for a request carrying the token of
    ``WS4REDIS_METRICS_TOKEN`` as ``Authorization: Bearer TOKEN``; HTTP 403 otherwise, 503 when
    Redis cannot be reached.
    """
    if not _allowed(request):
        return HttpResponse("Forbidden\n", status=403, content_type="text/plain")
    try:
        workers = read_snapshots(get_redis_client())
    except redis.exceptions.RedisError:
        return HttpResponse("Redis unavailable\n", status=503, content_type="text/plain")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshots(workers))
    return HttpResponse(generate_latest(registry), content_type=PROMETHEUS_CONTENT_TYPE)


def _allowed(request: HttpRequest) -> bool:
    user = getattr(request, "user", None)
    if user is not None and user.is_active and user.is_staff:
        return True
    token = settings.get("WS4REDIS_METRICS_TOKEN")
    scheme, _, given = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    if token is None or scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


class _Snapshots:
    """A Prometheus collector of worker snapshots read once per request."""

    def __init__(self, workers: list[dict[str, Any]]) -> None:
        self._workers = workers

    def collect(self) -> Iterator[Metric]:
        total = merge_snapshots(self._workers)
        yield GaugeMetricFamily("ws4redis_workers", "Workers reporting.", value=total["workers"])
        rows = [(str(worker["id"]), worker) for worker in self._workers]
        for spec in METRICS:
            yield _family("ws4redis_", spec, [], [([], total)])
            yield _family("ws4redis_worker_", spec, ["worker"], [([w], s) for w, s in rows])


def _family(
    prefix: str,
    spec: tuple[str, str, str, str, str | None],
    labels: list[str],
    rows: list[tuple[list[str], dict[str, Any]]],
) -> Metric:
    field, name, kind, documentation, breakdown = spec
    kinds = {"gauge": GaugeMetricFamily, "counter": CounterMetricFamily}
    family_class = kinds.get(kind, HistogramMetricFamily)
    family = family_class(
        prefix + name, documentation, labels=[*labels, breakdown] if breakdown else labels
    )
    for values, snapshot in rows:
        data = snapshot.get(field)
        if data is None:
            continue
        if kind == "histogram":
            histogram = Histogram.from_dict(data)
            buckets = [(_bound(bound), count) for bound, count in histogram.cumulative()]
            family.add_metric(values, buckets, histogram.sum)
        elif breakdown:
            for key, count in data.items():
                family.add_metric([*values, str(key)], count)
        else:
            family.add_metric(values, data)
    return family


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))

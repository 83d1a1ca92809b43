"""The pure parts of the metrics: histogram, counters, snapshot merging, the table, the
Prometheus rendering and the view's access rules.  No server is needed."""

from __future__ import annotations

import json
import logging
import math

import pytest
import redis
from django.contrib.auth.models import AnonymousUser
from django.test import RequestFactory, override_settings
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tools.servers import free_port
from ws4redis import metrics
from ws4redis.management.commands.ws4redis_stats import format_table
from ws4redis.metrics import FANOUT_BUCKETS, Counters, Histogram, merge_snapshots, stats_key
from ws4redis.runtime import thread_runtime
from ws4redis.views import _allowed, _Snapshots


class TestHistogram:
    def test_a_value_on_a_bound_counts_in_that_bucket(self) -> None:
        histogram = Histogram((0.1, 1.0))
        for value in (0.1, 0.05, 0.5, 1.0, 7.0):
            histogram.observe(value)
        assert histogram.counts == [2, 2, 1]
        assert histogram.count == 5
        assert histogram.sum == pytest.approx(8.65)

    def test_cumulative_ends_with_inf_holding_everything(self) -> None:
        histogram = Histogram((0.1, 1.0))
        histogram.observe(0.5, times=3)
        histogram.observe(2.0)
        assert histogram.cumulative() == [(0.1, 0), (1.0, 3), (math.inf, 4)]

    def test_merge_adds_bucket_by_bucket(self) -> None:
        first, second = Histogram((1.0,)), Histogram((1.0,))
        first.observe(0.5)
        second.observe(0.5)
        second.observe(3.0)
        first.merge(second)
        assert (first.counts, first.count, first.sum) == ([2, 1], 3, 4.0)

    def test_merge_refuses_other_buckets(self) -> None:
        with pytest.raises(ValueError, match="different buckets"):
            Histogram((1.0,)).merge(Histogram((2.0,)))

    def test_quantile_is_the_bound_of_its_bucket(self) -> None:
        histogram = Histogram((0.001, 0.01, 0.1))
        assert histogram.quantile(0.5) is None
        histogram.observe(0.0005, times=98)
        histogram.observe(0.05, times=2)
        assert histogram.quantile(0.5) == 0.001
        assert histogram.quantile(0.99) == 0.1

    def test_round_trip_through_json(self) -> None:
        histogram = Histogram()
        histogram.observe(0.0003, times=4)
        again = Histogram.from_dict(json.loads(json.dumps(histogram.to_dict())))
        assert (again.bounds, again.counts, again.sum, again.count) == (
            FANOUT_BUCKETS,
            histogram.counts,
            histogram.sum,
            4,
        )

    def test_from_dict_checks_the_number_of_counts(self) -> None:
        with pytest.raises(ValueError, match="one count per bucket"):
            Histogram.from_dict({"bounds": [1.0], "counts": [1], "sum": 0, "count": 1})


def snapshot(worker: str, **values: object) -> dict[str, object]:
    data = {"id": worker, **Counters().snapshot()}
    data.update(values)
    return data


class TestSnapshots:
    def test_counters_snapshot_is_json_with_string_keys(self) -> None:
        counters = Counters()
        counters.connections = 3
        counters.handshakes_refused[403] = 2
        counters.closed_by_limit[1009] = 1
        data = json.loads(json.dumps(counters.snapshot()))
        assert data["connections"] == 3
        assert data["handshakes_refused"] == {"403": 2}
        assert data["closed_by_limit"] == {"1009": 1}
        assert data["fanout_seconds"]["count"] == 0

    def test_merge_adds_counters_breakdowns_and_histograms(self) -> None:
        fast, slow = Histogram(), Histogram()
        fast.observe(0.00002, times=3)
        slow.observe(0.2)
        total = merge_snapshots(
            [
                snapshot(
                    "a:1",
                    connections=2,
                    messages_out=10,
                    handshakes_refused={"403": 1},
                    fanout_seconds=fast.to_dict(),
                ),
                snapshot(
                    "b:2",
                    connections=5,
                    messages_in=4,
                    handshakes_refused={"403": 2, "503": 1},
                    closed_by_limit={"1008": 1},
                    fanout_seconds=slow.to_dict(),
                ),
            ]
        )
        assert total["workers"] == 2
        assert total["connections"] == 7
        assert (total["messages_in"], total["messages_out"]) == (4, 10)
        assert total["handshakes_refused"] == {"403": 3, "503": 1}
        assert total["closed_by_limit"] == {"1008": 1}
        assert total["fanout_seconds"]["count"] == 4
        assert total["fanout_seconds"]["sum"] == pytest.approx(0.20006)

    def test_merge_of_nothing_is_all_zero(self) -> None:
        total = merge_snapshots([])
        assert total["workers"] == 0
        assert total["connections"] == 0
        assert total["handshakes_refused"] == {}

    def test_record_helpers(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(metrics, "counters", Counters())
        metrics.record_refused(403)
        metrics.record_refused(403)
        metrics.record_close(1009)
        metrics.record_close(1000)  # a normal close is no limit
        metrics.record_reconnect()
        metrics.observe_fanout(0.004, messages=4)
        counters = metrics.counters
        assert counters.handshakes_refused == {403: 2}
        assert counters.closed_by_limit == {1009: 1}
        assert counters.redis_reconnects == 1
        assert counters.fanout.count == 4
        assert counters.fanout.quantile(1.0) == 0.001

    def test_stats_key(self) -> None:
        assert stats_key("host:12", prefix="") == "ws4redis:stats:host:12"
        assert stats_key("host:12", prefix="ws") == "ws:ws4redis:stats:host:12"


class TestReporter:
    def test_redis_down_is_logged_once_and_never_raised(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        client = redis.Redis(port=free_port(), socket_connect_timeout=1)
        reporter = metrics.Reporter(thread_runtime(), client)
        with caplog.at_level(logging.WARNING, logger="ws4redis"):
            reporter.report(5.0)
            reporter.report(5.0)
        failures = [r for r in caplog.records if "metrics of this worker" in r.getMessage()]
        assert len(failures) == 1

    def test_snapshot_names_the_worker(self) -> None:
        reporter = metrics.Reporter(thread_runtime(), redis.Redis(port=free_port()))
        data = reporter.snapshot()
        assert data["id"] == metrics.worker_id()
        assert data["runtime"] == "threads"
        assert data["updated"] >= data["started"]


class TestTable:
    def test_one_row_per_worker_then_the_total(self) -> None:
        workers = [
            snapshot("host:1", connections=4, handshakes_refused={"403": 1}),
            snapshot("host:2", connections=6),
        ]
        table = format_table({"total": merge_snapshots(workers), "workers": workers})
        lines = table.splitlines()
        assert lines[0].split()[:3] == ["WORKER", "CONN", "ACCEPTED"]
        assert lines[2].split()[:2] == ["host:1", "4"]
        assert lines[3].split()[:2] == ["host:2", "6"]
        assert lines[-1].startswith("TOTAL (2 workers)")
        assert "1 (403:1)" in lines[-1]
        assert len({len(line) for line in lines[:2]}) == 1  # the rule is as wide as the header


class TestPrometheus:
    def families(self, workers: list[dict[str, object]]) -> dict[str, object]:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Snapshots(workers))
        text = generate_latest(registry).decode()
        return {family.name: family for family in text_string_to_metric_families(text)}

    def test_totals_and_per_worker_figures(self) -> None:
        histogram = Histogram()
        histogram.observe(0.0004, times=2)
        workers = [
            snapshot("h:1", connections=2, handshakes_refused={"403": 1}),
            snapshot("h:2", connections=3, fanout_seconds=histogram.to_dict()),
        ]
        families = self.families(workers)
        assert families["ws4redis_workers"].samples[0].value == 2
        assert families["ws4redis_connections"].samples[0].value == 5
        per_worker = {
            s.labels["worker"]: s.value for s in families["ws4redis_worker_connections"].samples
        }
        assert per_worker == {"h:1": 2, "h:2": 3}
        refused = families["ws4redis_handshakes_refused"].samples
        assert [(s.name, s.labels, s.value) for s in refused if s.name.endswith("_total")] == [
            ("ws4redis_handshakes_refused_total", {"status": "403"}, 1)
        ]
        count = [
            s for s in families["ws4redis_fanout_seconds"].samples if s.name.endswith("_count")
        ]
        assert count[0].value == 2


class TestAccess:
    def request(self, **headers: str):  # noqa: ANN201
        request = RequestFactory().get("/metrics", **headers)
        request.user = AnonymousUser()
        return request

    def test_anonymous_is_refused(self) -> None:
        assert not _allowed(self.request())

    @override_settings(WS4REDIS_METRICS_TOKEN="s3cret")
    def test_token(self) -> None:
        assert _allowed(self.request(HTTP_AUTHORIZATION="Bearer s3cret"))
        assert not _allowed(self.request(HTTP_AUTHORIZATION="Bearer wrong"))
        assert not _allowed(self.request(HTTP_AUTHORIZATION="Basic s3cret"))

    def test_no_token_configured_accepts_no_token(self) -> None:
        assert not _allowed(self.request(HTTP_AUTHORIZATION="Bearer "))

    def test_staff_user(self) -> None:
        class Staff:
            is_active = True
            is_staff = True

        request = self.request()
        request.user = Staff()
        assert _allowed(request)

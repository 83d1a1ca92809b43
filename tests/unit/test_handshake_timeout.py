"""The one thread that enforces request-head deadlines under ``runserver``."""

from __future__ import annotations

import threading
import time

from ws4redis.handshake_timeout import DeadlineWatch


def test_callbacks_run_once_their_deadline_passes_in_deadline_order() -> None:
    watch = DeadlineWatch()
    called: list[str] = []
    done = threading.Event()
    started = time.monotonic()
    watch.watch(0.2, lambda: (called.append("late"), done.set()))
    watch.watch(0.05, lambda: called.append("early"))
    assert done.wait(5)
    assert called == ["early", "late"]
    assert time.monotonic() - started >= 0.2


def test_a_cancelled_callback_never_runs() -> None:
    watch = DeadlineWatch()
    called: list[str] = []
    done = threading.Event()
    entry = watch.watch(0.05, lambda: called.append("cancelled"))
    watch.cancel(entry)
    watch.watch(0.1, done.set)
    assert done.wait(5)
    assert called == []


def test_one_thread_serves_every_deadline() -> None:
    watch = DeadlineWatch()
    before = threading.active_count()
    entries = [watch.watch(60, lambda: None) for _ in range(100)]
    assert threading.active_count() == before + 1
    for entry in entries:
        watch.cancel(entry)

"""The concurrency primitives a WebSocket loop runs on: greenlets or threads.

The loop and the hub are written once against :class:`Runtime`; the uWSGI binding hands them
:func:`gevent_runtime`, the development server :func:`thread_runtime`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Runtime:
    """Factories for tasks, events, locks and semaphores of one concurrency model."""

    name: str
    spawn: Callable[..., Any]
    event: Callable[[], Any]
    lock: Callable[[], Any]
    semaphore: Callable[[int], Any]
    sleep: Callable[[float], None]


def _spawn_thread(function: Callable[..., Any], *args: Any) -> threading.Thread:
    thread = threading.Thread(target=function, args=args, daemon=True)
    thread.start()
    return thread


def thread_runtime() -> Runtime:
    """One operating-system thread per task (the development server)."""
    return Runtime(
        name="threads",
        spawn=_spawn_thread,
        event=threading.Event,
        lock=threading.Lock,
        semaphore=threading.BoundedSemaphore,
        sleep=time.sleep,
    )


def gevent_runtime() -> Runtime:
    """Greenlets on gevent's hub (uWSGI with ``--gevent``)."""
    import gevent
    import gevent.event
    import gevent.lock

    return Runtime(
        name="gevent",
        spawn=gevent.spawn,
        event=gevent.event.Event,
        lock=gevent.lock.Semaphore,
        semaphore=gevent.lock.BoundedSemaphore,
        sleep=gevent.sleep,
    )

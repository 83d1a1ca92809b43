"""Per-connection and per-worker limits against abuse: message rate and open connections."""

from __future__ import annotations

import time
from typing import Any


class TokenBucket:
    """Allow ``rate`` events per second on average, in bursts of up to ``burst`` events.

    The bucket starts full; each event takes one token and tokens flow back at ``rate`` per
    second up to ``burst``.
    """

    __slots__ = ("_burst", "_rate", "_stamp", "_tokens")

    def __init__(self, rate: float, burst: float) -> None:
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._stamp = time.monotonic()

    def take(self) -> bool:
        """Take one token; ``False`` when the bucket is empty (the event is over the limit)."""
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


def message_rate_limit(rate: float | None) -> TokenBucket | None:
    """The bucket for ``WS4REDIS_MAX_MESSAGES_PER_SECOND``: bursts of twice the rate."""
    return None if rate is None else TokenBucket(rate, 2 * rate)


class ConnectionSlots:
    """Count the WebSockets of a worker, from their handshake on, against a limit."""

    def __init__(self, lock: Any) -> None:
        self._lock = lock
        self.taken = 0

    def acquire(self, limit: int | None) -> bool:
        """Take a slot; ``False`` when ``limit`` slots are taken already."""
        with self._lock:
            if limit is not None and self.taken >= limit:
                return False
            self.taken += 1
            return True

    def release(self) -> None:
        """Give a slot back (the handshake was refused or the WebSocket ended)."""
        with self._lock:
            self.taken -= 1

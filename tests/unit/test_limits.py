"""The token bucket behind ``WS4REDIS_MAX_MESSAGES_PER_SECOND`` and the connection slots."""

from __future__ import annotations

import threading
import time

import pytest

from ws4redis import limits
from ws4redis.limits import ConnectionSlots, TokenBucket, message_rate_limit


class FakeClock:
    """A monotonic clock the test moves by hand (the bucket's only input besides events)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    clock = FakeClock()
    monkeypatch.setattr(limits.time, "monotonic", clock)
    return clock


def take(bucket: TokenBucket, count: int) -> list[bool]:
    return [bucket.take() for _ in range(count)]


def test_a_full_bucket_allows_the_burst_and_not_one_more(clock: FakeClock) -> None:
    bucket = TokenBucket(rate=10, burst=20)
    assert take(bucket, 20) == [True] * 20
    assert bucket.take() is False


def test_tokens_flow_back_at_the_rate(clock: FakeClock) -> None:
    bucket = TokenBucket(rate=10, burst=20)
    take(bucket, 20)
    clock.now += 0.25  # 2.5 tokens
    assert take(bucket, 3) == [True, True, False]


def test_the_bucket_never_holds_more_than_the_burst(clock: FakeClock) -> None:
    bucket = TokenBucket(rate=10, burst=20)
    clock.now += 3600
    assert take(bucket, 21) == [True] * 20 + [False]


def test_steady_traffic_at_the_rate_is_never_refused(clock: FakeClock) -> None:
    bucket = TokenBucket(rate=100, burst=200)
    for _ in range(10_000):
        clock.now += 0.01
        assert bucket.take()


def test_the_setting_gives_bursts_of_twice_the_rate(clock: FakeClock) -> None:
    bucket = message_rate_limit(5)
    assert bucket is not None
    assert take(bucket, 11) == [True] * 10 + [False]
    assert message_rate_limit(None) is None


def test_slots_refuse_one_over_the_limit_and_free_on_release() -> None:
    slots = ConnectionSlots(threading.Lock())
    assert [slots.acquire(3) for _ in range(4)] == [True, True, True, False]
    slots.release()
    assert slots.acquire(3) is True
    assert slots.taken == 3


def test_slots_without_a_limit_only_count() -> None:
    slots = ConnectionSlots(threading.Lock())
    assert all(slots.acquire(None) for _ in range(1000))
    assert slots.taken == 1000


def test_real_clock_refills(monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = TokenBucket(rate=50, burst=1)
    assert bucket.take()
    assert not bucket.take()
    time.sleep(0.05)
    assert bucket.take()

from __future__ import annotations

import threading

import pytest
from events import Ev, FakeClock
from hypothesis import given
from hypothesis import strategies as st

from tracebridge.sampling import KeyedRateLimiter, RateLimiter


@given(
    rate=st.floats(min_value=0.5, max_value=1000),
    burst=st.floats(min_value=1, max_value=50),
    steps=st.lists(st.tuples(st.floats(min_value=0, max_value=2), st.integers(0, 20)), max_size=40),
)
def test_token_bucket_never_exceeds_burst_plus_rate_times_t(rate: float, burst: float, steps) -> None:  # type: ignore[no-untyped-def]
    clock = FakeClock(0.0)
    limiter = RateLimiter(rate, burst, clock=clock)
    allowed: list[float] = []
    for dt, n in steps:
        clock.advance(dt)
        for _ in range(n):
            if limiter.allow():
                allowed.append(clock.t)
    for i in range(len(allowed)):
        for j in range(i, len(allowed)):
            window = allowed[j] - allowed[i]
            assert j - i + 1 <= burst + rate * window + 1e-6


def test_refills_at_the_rate() -> None:
    clock = FakeClock(0.0)
    limiter = RateLimiter(10, burst=5, clock=clock)
    assert sum(limiter.allow() for _ in range(100)) == 5
    clock.advance(1.0)
    assert sum(limiter.allow() for _ in range(100)) == 5  # capped at the burst, not 10
    clock.advance(0.3)
    assert sum(limiter.allow() for _ in range(100)) == 3


def test_eight_threads_one_limiter_totals_exact() -> None:
    clock = FakeClock(0.0)  # frozen: exactly `burst` tokens exist
    limiter = RateLimiter(1.0, burst=1000, clock=clock)
    allowed = [0] * 8
    barrier = threading.Barrier(8)

    def hammer(k: int) -> None:
        barrier.wait()
        for _ in range(10_000):
            if limiter.decide(Ev()):
                allowed[k] += 1

    threads = [threading.Thread(target=hammer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sum(allowed) == 1000


def test_keyed_limiter_reports_the_flood_once() -> None:
    clock = FakeClock(0.0)
    limiter = KeyedRateLimiter(1.0, burst=2, clock=clock)
    floods: list[tuple[object, int]] = []
    limiter.on_flood_end = lambda key, n: floods.append((key, n))
    kept = [bool(limiter.decide(Ev("noisy"))) for _ in range(10)]
    assert kept == [True, True] + [False] * 8
    assert limiter.decide(Ev("quiet")) == 1.0  # another key has its own bucket
    assert floods == []
    clock.advance(1.0)
    assert limiter.decide(Ev("noisy")) == 1.0  # the flood is over: one report
    assert floods == [("noisy", 8)]
    limiter.decide(Ev("noisy"))
    limiter.flush()
    assert floods == [("noisy", 8), ("noisy", 1)]


def test_keyed_limiter_bounds_its_keys() -> None:
    limiter = KeyedRateLimiter(1.0, burst=1, max_keys=3, clock=FakeClock())
    floods: list[tuple[object, int]] = []
    limiter.on_flood_end = lambda key, n: floods.append((key, n))
    for name in "abcd":
        limiter.decide(Ev(name))
        limiter.decide(Ev(name))  # suppressed
    assert len(limiter._buckets) == 3
    assert floods == [("a", 1)]  # evicted with a flood going on: reported


def test_keyed_limiter_by_logger_or_callable() -> None:
    limiter = KeyedRateLimiter(1.0, key="logger", burst=1, clock=FakeClock())
    assert limiter.decide(Ev("m1", kind="log", metadata={"logger": "db"})) == 1.0
    assert limiter.decide(Ev("m2", kind="log", metadata={"logger": "db"})) == 0.0
    by_len = KeyedRateLimiter(1.0, key=lambda ev: len(ev.name), burst=1, clock=FakeClock())
    assert by_len.decide(Ev("ab")) == 1.0 and by_len.decide(Ev("cd")) == 0.0


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: RateLimiter(0), r"RateLimiter\(per_second\) must be a positive number, got 0"),
        (lambda: RateLimiter(-5), r"got -5"),
        (lambda: RateLimiter(5, burst=0), r"RateLimiter\(burst\)"),
        (lambda: KeyedRateLimiter(5, key="nonsense"), r"KeyedRateLimiter\(key\)"),
        (lambda: KeyedRateLimiter(5, max_keys=0), r"KeyedRateLimiter\(max_keys\)"),
    ],
)
def test_bad_limits(make, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=message):
        make()

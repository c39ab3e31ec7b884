from __future__ import annotations

import itertools
import math
import random

import pytest
from events import Ev
from traffic import Clock, drive, stage_deciding

from tracebridge.sampling import (
    Adaptive,
    AlwaysOff,
    AlwaysOn,
    ParentBased,
    PerOperation,
    Probability,
    TraceIdRatio,
    th_to_threshold,
    threshold,
    threshold_to_th,
)


@pytest.mark.parametrize(
    "p, th, adjusted",
    [
        # The OTEP 235 / specification table (precision 5 digits, more for small probabilities).
        (1.0, "0", 1.0),
        (0.5, "8", 2.0),
        (1 / 3, "aaaab", 3.0000028610256777),
        (0.25, "c", 4.0),
        (0.2, "ccccd", 5.0000047683761295),
        (0.125, "e", 8.0),
        (0.1, "e6666", 9.999961853172863),
        (0.0625, "f", 16.0),
        (0.01, "fd70a4", 100.00009536752259),
        (0.001, "ffbe76d", 1000.0016987352618),
    ],
)
def test_thresholds_match_the_specification(p: float, th: str, adjusted: float) -> None:
    t = threshold(p)
    assert threshold_to_th(t) == th
    assert th_to_threshold(th) == t
    sampler = TraceIdRatio(p)
    assert sampler.th == th
    kept = next(sampler.decide(Ev(trace_id=x)) for x in range((1 << 56) - 1, 0, -1 << 50))
    assert 1 / kept == pytest.approx(adjusted, rel=1e-12)


def test_trace_id_ratio_keeps_iff_randomness_reaches_the_threshold() -> None:
    s = TraceIdRatio(0.01)
    t = s.threshold
    high = 0xABCDEF << 64
    assert s.decide(Ev(trace_id=high | t)) > 0  # the low 56 bits are the randomness
    assert s.decide(Ev(trace_id=high | (t - 1))) == 0
    assert s.decide(Ev(trace_id=(t - 1) | (1 << 60))) == 0  # bits above 56 do not count


def test_decisions_nest_across_rates_and_agree_everywhere() -> None:
    rng = random.Random(42)
    ids = [rng.getrandbits(128) for _ in range(20_000)]
    rates = [0.001, 0.01, 0.1, 0.25, 0.5, 0.9]
    kept = {p: {i for i in ids if TraceIdRatio(p).decide(Ev(trace_id=i))} for p in rates}
    for low, high in itertools.pairwise(rates):
        assert kept[low] <= kept[high]
    # Another instance (another process) reaches the same decisions.
    assert kept[0.1] == {i for i in ids if TraceIdRatio(0.1).decide(Ev(trace_id=i))}
    for p in rates:
        assert len(kept[p]) / len(ids) == pytest.approx(p, abs=4 * (p * (1 - p) / len(ids)) ** 0.5 + 1e-3)


def test_probability_within_tolerance() -> None:
    s = Probability(0.3, rng=random.Random(7))
    n = 50_000
    kept = sum(1 for _ in range(n) if s.decide(Ev(trace_id=1)))
    assert kept / n == pytest.approx(0.3, abs=0.01)
    assert s.decide.__self__.p == 0.3  # type: ignore[attr-defined]
    assert Probability(0).decide(Ev()) == 0 and Probability(1).decide(Ev()) == 1


def test_always() -> None:
    assert AlwaysOn().decide(Ev()) == 1.0 and AlwaysOff().decide(Ev()) == 0.0


def test_parent_based_follows_the_parent() -> None:
    class Parent:
        def __init__(self, sampled: bool, adjusted: float = 1.0) -> None:
            self.sampled = sampled
            self.adjusted_count = adjusted

    s = ParentBased(TraceIdRatio(0.0))
    assert s.decide(Ev(parent=Parent(True, 10.0))) == pytest.approx(0.1)
    assert s.decide(Ev(parent=Parent(False))) == 0.0
    assert s.decide(Ev()) == 0.0  # a root: the root sampler decides
    assert ParentBased().decide(Ev()) == 1.0


def test_per_operation_rates_by_glob() -> None:
    s = PerOperation({"db.*": 0.1, "gpu_*": 1.0}, default=0.0)
    rng = random.Random(3)
    ids = [rng.getrandbits(128) for _ in range(10_000)]
    assert all(s.decide(Ev("gpu_kernel", i)) == 1.0 for i in ids[:100])
    assert not any(s.decide(Ev("http.get", i)) for i in ids[:100])
    db = sum(1 for i in ids if s.decide(Ev("db.query", i)))
    assert db / len(ids) == pytest.approx(0.1, abs=0.015)
    # Consistent with TraceIdRatio at the same rate.
    ratio = TraceIdRatio(0.1)
    assert all(bool(s.decide(Ev("db.x", i))) == bool(ratio.decide(Ev(trace_id=i))) for i in ids)


@pytest.mark.parametrize("target", [100.0, 1000.0])
def test_adaptive_follows_a_step_in_traffic_within_a_second(target: float) -> None:
    # A new operation goes from nothing to 50,000 a second.
    clock = Clock()
    sampler = Adaptive(target, clock=clock)
    out = drive(stage_deciding(sampler), clock, [(10.0, {"hot": 50_000})], seed=1)
    per_second = out.kept_per_second()
    assert len(per_second) == 10 and len(out.times) == pytest.approx(500_000, rel=0.01)
    # Within 2x of the target in every second after the first (the first too: the burst is capped at
    # once), and within 20% over five seconds.
    assert all(target / 2 <= kept <= 2 * target for kept in per_second), per_second
    assert sum(per_second[1:6]) / 5 == pytest.approx(target, rel=0.2), per_second
    assert sum(per_second[1:]) / 9 == pytest.approx(target, rel=0.1), per_second
    # Kept events stand for 1/p events each: together, for what came (within four standard deviations).
    total, deviation = out.adjusted_total()
    assert abs(total - len(out.times)) < 4 * deviation < 0.2 * len(out.times)


def test_adaptive_with_a_coarse_clock() -> None:
    # A clock that moves in 15.6 ms steps (time.monotonic on Windows before Python 3.13): arrivals at
    # the same reading tell no rate, so their batch goes on until the clock moves.
    class Coarse(Clock):
        def __call__(self) -> float:
            return math.floor(self.t / 0.015625) * 0.015625

    clock = Coarse()
    out = drive(stage_deciding(Adaptive(100, clock=clock)), clock, [(4.0, {"op": 20_000})], seed=9)
    per_second = out.kept_per_second()
    assert per_second[0] < 1000  # the first tick's events are kept whole, then it adapts
    assert all(50 <= kept <= 200 for kept in per_second[1:]), per_second


def test_adaptive_caps_a_burst_of_a_new_operation() -> None:
    clock = Clock()
    sampler = Adaptive(100, clock=clock)
    out = drive(stage_deciding(sampler), clock, [(4.0, {"burst": 20_000})], seed=2)
    per_second = out.kept_per_second()
    assert all(50 <= kept <= 200 for kept in per_second), per_second  # of about 20,000 a second
    assert sum(per_second) == pytest.approx(400, rel=0.2)
    assert sampler.probability("burst") == pytest.approx(100 / 20_000, rel=0.2)


def test_adaptive_keeps_rare_operations_whole_beside_hot_ones() -> None:
    clock = Clock()
    sampler = Adaptive(50, clock=clock)
    rates = {"hot": 5_000, "rare": 5, "occasional": 0.2}
    out = drive(stage_deciding(sampler), clock, [(20.0, rates)], seed=3)
    for name in ("rare", "occasional"):
        weights = [w for n, w in zip(out.names, out.weights, strict=True) if n == name]
        assert weights and all(w == 1.0 for w in weights), name
        assert sampler.probability(name) == 1.0
    hot = out.kept_per_second("hot")
    assert sum(hot[1:]) / 19 == pytest.approx(50, rel=0.2), hot


def test_adaptive_follows_slow_and_fast_operations_alike() -> None:
    clock = Clock()
    target = 5.0
    sampler = Adaptive(target, clock=clock)
    rates = {"slow": 10, "fast": 2_000}
    out = drive(stage_deciding(sampler), clock, [(45.0, rates)], seed=11)
    # The fast operation's estimate is close at any time; what each keeps over forty seconds is within
    # 20% of the target (four standard deviations of the counting noise).
    assert sampler.probability("fast") * rates["fast"] == pytest.approx(target, rel=0.2)
    for name in rates:
        kept = out.kept_per_second(name)[5:]
        assert sum(kept) / len(kept) == pytest.approx(target, rel=0.2), (name, kept)
        total, deviation = out.adjusted_total(name)
        assert abs(total - out.arrivals(name)) < 4 * deviation, name


def test_adaptive_probability_returns_to_one_when_traffic_drops() -> None:
    clock = Clock()
    sampler = Adaptive(100, clock=clock)
    drive(stage_deciding(sampler), clock, [(3.0, {"op": 50_000})], seed=4)
    assert sampler.probability("op") < 0.01
    out = drive(stage_deciding(sampler), clock, [(6.0, {"op": 10})], seed=5)
    # Within a second of the drop every event is kept again (and stays so).
    later = [w for t, w in zip(out.times, out.weights, strict=True) if t >= 4.0]
    assert len(later) > 30 and all(w == 1.0 for w in later)
    assert sampler.probability("op") == 1.0


def test_adaptive_goes_on_when_the_clock_steps_back() -> None:
    """An injected wall clock stepped back an hour (NTP): the estimate goes on from there, it does not
    freeze until the clock is back where it was."""
    clock = Clock(7200.0)
    sampler = Adaptive(100, clock=clock)
    drive(stage_deciding(sampler), clock, [(3.0, {"op": 50_000})], seed=4)
    assert sampler.probability("op") < 0.01
    clock.t -= 3600.0
    drive(stage_deciding(sampler), clock, [(3.0, {"op": 10})], seed=5)
    assert sampler.probability("op") == 1.0


def test_adaptive_decisions_nest_and_agree_everywhere() -> None:
    # Traffic that moves, so that the probabilities move: every instance decides alike on the same trace
    # ids, and what a lower target keeps is a subset of what a higher one keeps.
    phases: list[tuple[float, dict[str, float]]] = [
        (2.0, {"op": 20_000}),
        (2.0, {"op": 2_000}),
        (1.0, {"op": 50_000}),
    ]
    outcomes = []
    for target in (20, 20, 200):
        clock = Clock()
        outcomes.append(drive(stage_deciding(Adaptive(target, clock=clock)), clock, phases, seed=6))
    low, again, high = outcomes
    assert low.weights == again.weights
    assert low.kept() < high.kept()
    # Each kept event is what an OTEP 235 threshold at its probability keeps.
    for trace_id, weight in zip(high.trace_ids, high.weights, strict=True):
        if weight:
            assert TraceIdRatio(weight).decide(Ev(trace_id=trace_id)) == pytest.approx(weight, rel=1e-6)


def test_adaptive_floor_and_bounded_rises() -> None:
    clock = Clock()
    # The floor: at least one event a minute, at 1000/s a probability of 1/60000, above target/rate.
    sampler = Adaptive(0.001, clock=clock)
    drive(stage_deciding(sampler), clock, [(5.0, {"busy": 1000})], seed=7)
    assert sampler.probability("busy") == pytest.approx(1 / 60_000, rel=0.15)
    # The probability falls at once with a jump in traffic, and rises by at most max_step a window.
    clock = Clock()
    sampler = Adaptive(100, max_step=2.0, clock=clock)
    probabilities: list[float] = []
    out = drive(
        stage_deciding(sampler, probabilities), clock, [(2.0, {"op": 50_000}), (3.0, {"op": 10})], seed=8
    )
    assert probabilities[500] < 0.01  # within 10 ms
    changes = [(out.times[0], 1.0)] + [
        (t, p)
        for t, p, before in zip(out.times, probabilities, [1.0, *probabilities[:-1]], strict=True)
        if p != before
    ]
    steps = [(p1 / p0, (t1 - t0) / sampler.window) for (t0, p0), (t1, p1) in itertools.pairwise(changes)]
    assert all(ratio <= 2**windows * (1 + 1e-5) for ratio, windows in steps if ratio > 1), steps
    assert any(ratio < 2**-windows for ratio, windows in steps)  # falls are not bounded
    # From below 1% back to 1 after the drop: at least seven doublings, none more than one a window.
    assert sum(ratio > 1 for ratio, _ in steps) >= 7
    assert probabilities[-1] == 1.0


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Probability(1.5), r"Probability\(p\) must be a probability between 0 and 1, got 1.5"),
        (lambda: TraceIdRatio(-0.1), r"TraceIdRatio\(p\) must be a probability"),
        (lambda: PerOperation({"db.*": 2}), r"PerOperation rate for 'db.\*'"),
        (lambda: PerOperation({"": 0.5}), r"non-empty glob"),
        (lambda: PerOperation({"[z-a]*": 0.5}), r"can never match"),
        (lambda: Adaptive(0), r"Adaptive\(target_per_second\) must be a positive number, got 0"),
        (lambda: Adaptive(5, decay=1.5), r"Adaptive\(decay\)"),
        (lambda: ParentBased("nope"), r"ParentBased\(root\)"),  # type: ignore[arg-type]
    ],
)
def test_bad_input_names_the_argument(make, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=message):
        make()

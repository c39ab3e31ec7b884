from __future__ import annotations

import itertools
import random

import pytest
from events import Ev, FakeClock

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


def drive(
    sampler: Adaptive, clock: FakeClock, rates: dict[str, int], windows: int, rng: random.Random
) -> list[dict[str, int]]:
    """Feed ``rates`` events a second for ``windows`` one-second windows; kept counts per window."""
    out = []
    for _ in range(windows):
        kept = dict.fromkeys(rates, 0)
        total = sum(rates.values())
        schedule = [name for name, n in rates.items() for _ in range(n)]
        rng.shuffle(schedule)
        for k, name in enumerate(schedule):
            clock.t = int(clock.t) + k / total  # spread over the second
            if sampler.decide(Ev(name, rng=rng)):
                kept[name] += 1
        clock.t = int(clock.t) + 1.0
        out.append(kept)
    return out


def test_adaptive_converges_for_slow_and_fast_operations() -> None:
    clock = FakeClock(0.0)
    target = 5.0
    s = Adaptive(target, window=1.0, clock=clock)
    rng = random.Random(11)
    rates = {"slow": 10, "fast": 10_000}
    drive(s, clock, rates, 25, rng)
    # Converged within a bounded number of windows: the probability times the traffic is within 20%.
    for name, rate in rates.items():
        assert s.probability(name) * rate == pytest.approx(target, rel=0.2), name
    # And what it keeps, over the next forty windows, is within 20% of the target (four standard
    # deviations of the counting noise).
    history = drive(s, clock, rates, 40, rng)
    for name in rates:
        mean = sum(w[name] for w in history) / len(history)
        assert mean == pytest.approx(target, rel=0.2), (name, mean)


def test_adaptive_floor_and_step_bound() -> None:
    clock = FakeClock(0.0)
    s = Adaptive(0.001, window=1.0, floor_interval=60.0, max_step=2.0, clock=clock)
    rng = random.Random(5)
    probabilities = []
    for _ in range(15):
        drive(s, clock, {"busy": 100}, 1, rng)
        probabilities.append(s.probability("busy"))
    for before, after in itertools.pairwise(probabilities):
        assert after >= before / 2 - 1e-9  # at most halved per window
    # The floor: at least one event a minute at 100/s is a probability of 1/6000, above target/rate.
    assert probabilities[-1] == pytest.approx(1 / 6000, rel=0.05)


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

"""Adaptive sampling: how fast it follows traffic (on a simulated clock), and what a decision costs
(against OpenTelemetry's TraceIdRatioBased sampler, measured in the same run).

Convergence: seeded Poisson traffic of one operation on a simulated clock, for several targets and steps.
After the step, the kept rate the sampler aims at is the arrival rate times its current probability; the
convergence time is when that rate enters, for good, 2x of the target and 20% of it. Also printed, from
what was really kept (counting noise included): the first second after the step, the worst second after
it (as a factor of the target), and the mean of seconds 2 to 6 (the issue's criteria: within 2x in every
second after the first, within 20% over five seconds). At a target of 10/s counting noise alone puts
about one second in 30 outside 2x (a Poisson count of mean 10 is 4 or less, or 21 or more, that often).
A traffic drop is timed until the probability is back at 1; a 4-second burst at 20,000/s is counted per
second.

Cost: ``Adaptive.decide`` (20 operations in turn, the real clock) against our ``TraceIdRatio.decide``
and OpenTelemetry's ``TraceIdRatioBased.should_sample`` (the anchor), and ``AdaptiveSampler`` against
``TraceIdRatioBased`` through the same OpenTelemetry call. Sampling is pure Python: one run.

Run: python benchmarks/bench_adaptive.py [--quick]
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass

from _timing import per_op_ns, row
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

from tracebridge.otel import AdaptiveSampler
from tracebridge.sampling import Adaptive, TraceIdRatio

QUICK = "--quick" in sys.argv
N = 20_000 if QUICK else 100_000
REPEAT = 3 if QUICK else 7
SECONDS = 6.0 if QUICK else 10.0


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class _Ev:
    __slots__ = ("kind", "level", "metadata", "name", "parent", "trace_id")

    def __init__(self, name: str) -> None:
        self.kind = "span"
        self.level = 2
        self.metadata = None
        self.parent = None
        self.name = name
        self.trace_id = random.getrandbits(128)


@dataclass
class Run:
    """What one operation's arrivals after the step met: time, probability used, kept or not."""

    times: list[float]
    probabilities: list[float]
    kept: list[bool]


def simulate(target: float, phases: list[tuple[float, float]], seed: int = 1) -> tuple[Adaptive, Run]:
    """Poisson arrivals of one operation, phase after phase of (seconds, events a second); the run
    records the last phase."""
    clock = _Clock()
    sampler = Adaptive(target, clock=clock)
    rng = random.Random(seed)
    ev = _Ev("op")
    run = Run([], [], [])
    t = 0.0
    for i, (seconds, rate) in enumerate(phases):
        end = t + seconds
        last = i == len(phases) - 1
        while True:
            t += rng.expovariate(rate)
            if t >= end:
                break
            clock.t = t
            ev.trace_id = rng.getrandbits(128)
            kept = sampler.decide(ev) > 0
            if last:
                run.times.append(t - (end - seconds))
                run.probabilities.append(sampler.probability("op"))
                run.kept.append(kept)
        t = end
    return sampler, run


def settled(run: Run, rate: float, target: float, factor: float) -> float:
    """Seconds after the step from which the aimed-at kept rate (rate x probability) stays within
    ``factor`` of the target (2.0: half to twice; 1.2: 20%)."""
    since = 0.0
    for t, p in zip(run.times, run.probabilities, strict=True):
        if not target / factor <= rate * p <= target * factor:
            since = t
    return since


def per_second(run: Run) -> list[int]:
    counts = [0] * (int(max(run.times)) + 1)
    for t, kept in zip(run.times, run.kept, strict=True):
        counts[int(t)] += kept
    return counts


def convergence() -> None:
    print(f"  convergence after a step (simulated clock, {SECONDS:g} s after the step; Poisson traffic)")
    print(
        f"    {'target/s':>8} {'step':>18} {'within 2x':>10} {'within 20%':>11} {'1st second':>11}"
        f" {'worst later':>12} {'s2-6 mean':>10}"
    )
    steps: list[tuple[str, list[tuple[float, float]], float]] = [
        (f"0 -> {rate:,}/s", [(SECONDS, rate)], rate) for rate in (1_000, 10_000, 50_000)
    ]
    steps.append(("10/s -> 50,000/s", [(5.0, 10), (SECONDS, 50_000)], 50_000))
    steps.append(("2,000 -> 50,000/s", [(5.0, 2_000), (SECONDS, 50_000)], 50_000))
    for target in (10.0, 100.0, 1000.0):
        for label, phases, rate in steps:
            if rate < 10 * target:
                continue
            _, run = simulate(target, phases)
            counts = [c / target for c in per_second(run)]
            worst = max(max(c, 1 / c) if c else float("inf") for c in counts[1:])
            print(
                f"    {target:8g} {label:>18} {settled(run, rate, target, 2.0):9.3f}s"
                f" {settled(run, rate, target, 1.2):10.3f}s {counts[0]:10.2f}x {worst:11.2f}x"
                f" {sum(counts[1:6]) / 5:9.2f}x"
            )
    _, run = simulate(100.0, [(5.0, 50_000), (5.0, 10)])
    back = next(t for t, p in zip(run.times, run.probabilities, strict=True) if p == 1.0)
    print(f"  traffic drop 50,000/s -> 10/s, target 100/s: the probability is back at 1 after {back:.2f} s")
    _, run = simulate(100.0, [(4.0, 20_000)])
    print(f"  a 4-second burst at 20,000/s, target 100/s: kept per second {per_second(run)}")


def cost() -> None:
    adaptive = Adaptive(100.0)
    ratio = TraceIdRatio(0.5)
    anchor = TraceIdRatioBased(0.5)
    otel_adaptive = AdaptiveSampler(100.0)
    events = [_Ev(f"op{i % 20}") for i in range(1000)]
    ids = [ev.trace_id for ev in events]
    names = [ev.name for ev in events]

    def loop(n: int) -> None:
        for i in range(n):
            events[i % 1000]

    def ours(n: int) -> None:
        decide = adaptive.decide
        for i in range(n):
            decide(events[i % 1000])

    def ours_ratio(n: int) -> None:
        decide = ratio.decide
        for i in range(n):
            decide(events[i % 1000])

    def otel(n: int) -> None:
        should_sample = anchor.should_sample
        for i in range(n):
            should_sample(None, ids[i % 1000], names[i % 1000])

    def otel_ours(n: int) -> None:
        should_sample = otel_adaptive.should_sample
        for i in range(n):
            should_sample(None, ids[i % 1000], names[i % 1000])

    base = per_op_ns(loop, N, REPEAT)
    a = per_op_ns(ours, N, REPEAT) - base
    r = per_op_ns(ours_ratio, N, REPEAT) - base
    o = per_op_ns(otel, N, REPEAT) - base
    oa = per_op_ns(otel_ours, N // 5, REPEAT) - base
    print("  cost of a decision (the loop's own cost taken off)")
    print(row("Adaptive.decide vs OTel TraceIdRatioBased.should_sample", a, o, "reported"))
    print(row("TraceIdRatio.decide vs the same", r, o, "reported"))
    print(row("AdaptiveSampler.should_sample vs the same", oa, o, "reported"))


def main() -> None:
    print(f"tracebridge adaptive sampling (N={N}, best of {REPEAT}; Python {sys.version.split()[0]})")
    convergence()
    cost()


if __name__ == "__main__":
    main()

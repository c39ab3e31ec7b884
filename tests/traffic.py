"""Simulated traffic for adaptive samplers: Poisson arrivals of named operations on an injected clock,
seeded, and what a sampler kept of them, counted per second."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from tracebridge.sampling import Stage


class _Event:
    """What a stage sees of an event: a root span (no parent, no metadata) of operation ``name``."""

    __slots__ = ("name", "trace_id")
    kind = "span"
    level = 2
    metadata = None
    parent = None

    def __init__(self) -> None:
        self.name = ""
        self.trace_id = 0


def stage_deciding(stage: Stage, probabilities: list[float] | None = None) -> Callable[[str, int], float]:
    """``decide(name, trace_id)`` for :func:`drive` by a sampling stage; ``probabilities`` (when given)
    gets the operation's probability after each decision (the stage must have ``probability(name)``)."""
    ev = _Event()

    def decide(name: str, trace_id: int) -> float:
        ev.name = name
        ev.trace_id = trace_id
        weight = stage.decide(ev)
        if probabilities is not None:
            probabilities.append(stage.probability(name))  # type: ignore[attr-defined]
        return weight

    return decide


class Clock:
    """A clock the test sets (seconds)."""

    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@dataclass
class Outcome:
    """Each arrival's time, operation, trace id and the probability it was kept with (0.0: dropped)."""

    times: list[float] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    trace_ids: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)

    def kept_per_second(self, name: str | None = None, start: float = 0.0) -> list[int]:
        """Kept events (of operation ``name``, or all) in each whole second from ``start``."""
        out: list[int] = []
        for t, n, w in zip(self.times, self.names, self.weights, strict=True):
            second = int(t - start)
            while len(out) <= second:
                out.append(0)
            if w and (name is None or n == name):
                out[second] += 1
        return out

    def kept(self) -> set[int]:
        """The trace ids kept."""
        return {tid for tid, w in zip(self.trace_ids, self.weights, strict=True) if w}

    def arrivals(self, name: str) -> int:
        return self.names.count(name)

    def adjusted_total(self, name: str | None = None) -> tuple[float, float]:
        """The number of arrivals the kept events stand for (each counts 1/p), and its standard
        deviation as the kept events estimate it (the Horvitz-Thompson variance, (1-p)/p^2 each)."""
        kept = [w for n, w in zip(self.names, self.weights, strict=True) if w and (name is None or n == name)]
        return sum(1.0 / w for w in kept), math.sqrt(sum((1.0 - w) / (w * w) for w in kept))


def drive(
    decide: Callable[[str, int], float],
    clock: Clock,
    phases: list[tuple[float, dict[str, float]]],
    seed: int,
) -> Outcome:
    """Feed ``decide(name, trace_id)`` Poisson streams, phase after phase of ``(seconds, {name: events a
    second})`` (no names: a pause), with ``clock`` at each arrival's time; the clock ends at the last
    phase's end."""
    rng = random.Random(seed)
    out = Outcome()
    t = clock.t
    for seconds, rates in phases:
        end = t + seconds
        names, weights = list(rates), list(rates.values())
        total = sum(weights)
        while total > 0:
            t += rng.expovariate(total)
            if t >= end:
                break
            clock.t = t
            name = names[0] if len(names) == 1 else rng.choices(names, weights)[0]
            trace_id = rng.getrandbits(128)
            out.times.append(t)
            out.names.append(name)
            out.trace_ids.append(trace_id)
            out.weights.append(decide(name, trace_id))
        t = clock.t = end
    return out

"""Samplers: keep a share of events, and say what share (each kept event stands for 1/p events).

``TraceIdRatio``, ``PerOperation`` and ``Adaptive`` decide consistently (OpenTelemetry's OTEP 235): an
event is kept iff its trace's randomness ``R`` (the low 56 bits of the trace id) is at least the
rejection threshold ``T`` of its rate. Every process, and logs and spans alike, reach the same decision
for a trace, and what a lower rate keeps is a subset of what a higher rate keeps.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar

from .._globs import GlobTable
from ._stage import SampledEvent, Stage, event_name
from .consistent import RANDOMNESS_MASK, keep_probability, randomness, threshold, threshold_to_th


def _check_rate(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{what} must be a probability between 0 and 1, got {value!r}")
    return float(value)


class AlwaysOn(Stage):
    """Keeps every event."""

    consistent = True
    reason = "sampled_out"
    root_threshold = 0

    def decide(self, ev: SampledEvent) -> float:
        return 1.0


class AlwaysOff(Stage):
    """Drops every event (critical events and failures are still kept by the pipeline, if it says so)."""

    consistent = True
    reason = "sampled_out"

    def decide(self, ev: SampledEvent) -> float:
        return 0.0


class Probability(Stage):
    """Keeps each event with probability ``p``, independently of every other event.

    .. versionadded:: 0.1
    """

    reason = "sampled_out"

    def __init__(self, p: float, *, rng: random.Random | None = None) -> None:
        super().__init__()
        self.p = _check_rate(p, "Probability(p)")
        self._random = (rng or random.Random()).random

    def decide(self, ev: SampledEvent) -> float:
        p = self.p
        return p if p and self._random() < p else 0.0

    def __repr__(self) -> str:
        return f"Probability({self.p:g})"


class TraceIdRatio(Stage):
    """Keeps the traces whose randomness is at least the OTEP 235 threshold of rate ``p``.

    ``th`` is the threshold as OpenTelemetry's tracestate writes it (``ot=th:fd70a4`` for 1%).

    .. versionadded:: 0.1
    """

    consistent = True
    reason = "sampled_out"

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = _check_rate(p, "TraceIdRatio(p)")
        self.threshold = threshold(self.p) if self.p > 0 else 1 << 56
        self.th = threshold_to_th(self.threshold) if self.p > 0 else ""
        self._weight = keep_probability(self.threshold) if self.p > 0 else 0.0
        self.root_threshold = self.threshold

    def decide(self, ev: SampledEvent) -> float:
        tid = ev.trace_id
        r = tid & RANDOMNESS_MASK if tid else random.getrandbits(56)
        return self._weight if r >= self.threshold else 0.0

    def __repr__(self) -> str:
        return f"TraceIdRatio({self.p:g})"


class ParentBased(Stage):
    """Children follow their parent's decision; events without a parent are decided by ``root``.

    Inside a trace whose root was dropped, spans cost about as little as spans whose level is off: the
    pipeline short-cuts them.

    .. versionadded:: 0.1
    """

    consistent = True
    reason = "sampled_out"
    follows_parent: ClassVar[bool] = True

    def __init__(self, root: Stage | None = None) -> None:
        super().__init__()
        if root is not None and not isinstance(root, Stage):
            raise ValueError(f"ParentBased(root): expected a sampling stage, got {root!r}")
        if root is not None and root.tail:
            raise ValueError(f"ParentBased(root): {root!r} decides when spans end, not when they begin")
        self.root = root if root is not None else AlwaysOn()
        self.needs_name = self.root.needs_name  # type: ignore[misc]
        self.consistent = self.root.consistent  # (children take their parent's probability)
        self.root_threshold = self.root.root_threshold

    def after_fork(self) -> None:
        self.root.after_fork()

    def decide(self, ev: SampledEvent) -> float:
        parent = ev.parent
        if parent is not None:
            if not parent.sampled:
                return 0.0
            return 1.0 / float(parent.adjusted_count)
        return self.root.decide(ev)

    def __repr__(self) -> str:
        return f"ParentBased({self.root!r})"


class PerOperation(Stage):
    """Rates by operation name glob, first match wins: ``PerOperation({"db.*": 0.1, "gpu_*": 1.0},
    default=0.01)``. Decisions are consistent (see :class:`TraceIdRatio`).

    .. versionadded:: 0.1
    """

    consistent = True
    reason = "sampled_out"
    needs_name = True

    def __init__(self, rates: dict[str, float], default: float = 1.0) -> None:
        super().__init__()
        checked = {k: _check_rate(v, f"PerOperation rate for {k!r}") for k, v in dict(rates).items()}
        self.rates = checked
        self.default = _check_rate(default, "PerOperation(default)")
        table = {k: _Rate(v) for k, v in checked.items()}
        self._table = GlobTable(table, "PerOperation", _Rate(self.default))

    def decide(self, ev: SampledEvent) -> float:
        rate: _Rate = self._table.lookup(event_name(ev))
        return rate.weight if rate.p and randomness(ev) >= rate.threshold else 0.0

    def __repr__(self) -> str:
        return f"PerOperation({self.rates!r}, default={self.default:g})"


class _Rate:
    __slots__ = ("p", "threshold", "weight")

    def __init__(self, p: float) -> None:
        self.p = p
        self.threshold = threshold(p) if p > 0 else 1 << 56
        self.weight = keep_probability(self.threshold) if p > 0 else 0.0


class _Operation:
    __slots__ = ("arrivals", "rate", "seen_at", "threshold", "weight")

    def __init__(self, now: float) -> None:
        self.arrivals = 0
        self.rate = -1.0  # decayed arrivals per second; < 0 until the first window closes
        self.threshold = 0  # start by keeping everything
        self.weight = 1.0
        self.seen_at = now


class Adaptive(Stage):
    """Per-operation rates that adjust themselves so that each operation is kept about
    ``target_per_second`` times a second, whatever its traffic (in-process adaptive sampling).

    At the end of every ``window`` seconds the arrival rate of each operation is estimated (an
    exponentially decayed average, weight ``decay`` on the past), and its probability moves toward
    ``target / rate``, by at most a factor ``max_step`` per window. A floor keeps every operation seen at
    least once per ``floor_interval`` seconds. Decisions use OTEP 235 thresholds (see
    :class:`TraceIdRatio`), so they are consistent across processes and nest as rates change.

    ``clock`` (seconds) can be replaced in tests. At most ``max_operations`` names are tracked; others
    share one entry.

    .. versionadded:: 0.1
    """

    consistent = True
    reason = "sampled_out"
    needs_name = True

    def __init__(
        self,
        target_per_second: float,
        *,
        window: float = 10.0,
        decay: float = 0.5,
        max_step: float = 4.0,
        floor_interval: float = 60.0,
        max_operations: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        for name, value, low in (
            ("target_per_second", target_per_second, 0.0),
            ("window", window, 0.0),
            ("floor_interval", floor_interval, 0.0),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > low:
                raise ValueError(f"Adaptive({name}) must be a positive number, got {value!r}")
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0.0 <= decay < 1.0:
            raise ValueError(f"Adaptive(decay) must be in [0, 1), got {decay!r}")
        if isinstance(max_step, bool) or not isinstance(max_step, (int, float)) or not max_step > 1.0:
            raise ValueError(f"Adaptive(max_step) must be greater than 1, got {max_step!r}")
        if isinstance(max_operations, bool) or not isinstance(max_operations, int) or max_operations < 1:
            raise ValueError(f"Adaptive(max_operations) must be a positive integer, got {max_operations!r}")
        self.target = float(target_per_second)
        self.window = float(window)
        self.decay = float(decay)
        self.max_step = float(max_step)
        self.floor_interval = float(floor_interval)
        self.max_operations = max_operations
        self._clock = clock
        self._lock = threading.Lock()
        self._ops: dict[str, _Operation] = {}
        self._window_end = clock() + self.window

    def probability(self, name: str) -> float:
        """The current keep probability of operation ``name``."""
        op = self._ops.get(name)
        return 1.0 if op is None else keep_probability(op.threshold)

    def decide(self, ev: SampledEvent) -> float:
        now = self._clock()
        if now >= self._window_end:
            self._roll(now)
        name = event_name(ev)
        op = self._ops.get(name)
        if op is None:
            op = self._new_operation(name, now)
        op.arrivals += 1  # under the GIL a lost update only blurs the estimate slightly
        return op.weight if randomness(ev) >= op.threshold else 0.0

    def _new_operation(self, name: str, now: float) -> _Operation:
        with self._lock:
            op = self._ops.get(name)
            if op is None:
                if len(self._ops) >= self.max_operations:
                    name = "*"
                    op = self._ops.get(name)
                if op is None:
                    op = self._ops[name] = _Operation(now)
            return op

    def _roll(self, now: float) -> None:
        with self._lock:
            if now < self._window_end:
                return
            # Whole windows that passed without a decision count as windows with no arrivals.
            elapsed = self.window + (now - self._window_end) // self.window * self.window
            self._window_end = now + self.window - (now - self._window_end) % self.window
            for op in self._ops.values():
                self._adjust(op, op.arrivals / elapsed)
                op.arrivals = 0

    def _adjust(self, op: _Operation, observed: float) -> None:
        op.rate = observed if op.rate < 0 else self.decay * op.rate + (1 - self.decay) * observed
        if op.rate <= 0:
            wanted = 1.0
        else:
            wanted = min(1.0, self.target / op.rate)
            floor = 1.0 / (op.rate * self.floor_interval)  # at least one a floor_interval
            wanted = max(wanted, min(1.0, floor))
        current = keep_probability(op.threshold)
        wanted = min(max(wanted, current / self.max_step), current * self.max_step, 1.0)
        op.threshold = threshold(wanted)
        op.weight = keep_probability(op.threshold)

    def __repr__(self) -> str:
        return f"Adaptive({self.target:g}/s)"

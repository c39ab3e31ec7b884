"""Samplers: keep a share of events, and say what share (each kept event stands for 1/p events).

``TraceIdRatio``, ``PerOperation`` and ``Adaptive`` decide consistently (OpenTelemetry's OTEP 235): an
event is kept iff its trace's randomness ``R`` (the low 56 bits of the trace id) is at least the
rejection threshold ``T`` of its rate. Every process, and logs and spans alike, reach the same decision
for a trace, and what a lower rate keeps is a subset of what a higher rate keeps.
"""

from __future__ import annotations

import math
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


#: A batch of this many arrivals is evidence enough by itself (its rate is known within about 25%); a new
#: operation is kept whole for at least this many arrivals (or one window).
_MIN_BATCH = 16
#: At low rates the estimate spans at least about this many arrivals (about 14% of noise) whatever the
#: time constant: a shorter memory would make the probability, and so what is kept, jitter and run high.
_MIN_ARRIVALS = 50
#: A batch ends early once this many times the arrivals expected in a window have come: a jump in
#: traffic shows after a few dozen events, not at the end of the window.
_EARLY = 2.0
#: A batch with this many times more, or fewer, arrivals than the estimate expects (and enough of them,
#: seen or expected, to tell) shows that the past no longer describes the traffic: the estimate starts
#: again from that batch. Smaller changes are followed by the smoothing.
_JUMP = 3.0


class _Operation:
    """One operation's arrival rate, estimated by exponential smoothing over irregular intervals (a
    decayed count of arrivals over a decayed span of time, as in Wright's method), and its threshold.

    Arrivals are counted in batches that end at the first arrival after ``due`` or after ``size``
    arrivals; the estimate and the threshold change only then, so that a decision costs a countdown."""

    __slots__ = ("count", "due", "left", "rate", "since", "size", "span", "threshold", "weight")

    def __init__(self, now: float, window: float, first_batch: int) -> None:
        self.count = 0.0  # decayed arrivals
        self.span = 0.0  # decayed seconds
        self.rate = 0.0  # arrivals a second; 0 until the estimate has two arrivals to go by
        self.threshold = 0  # keep everything until then
        self.weight = 1.0
        self.since = now  # the batch began with an arrival, which it does not count (see ``left``)
        self.due = now + window
        self.size = first_batch
        self.left = first_batch + 1  # (the arrival that opens the batch is about to count down)


class Adaptive(Stage):
    """Per-operation rates that adjust themselves so that each operation is kept about
    ``target_per_second`` times a second, whatever its traffic (in-process adaptive sampling).

    Each operation's arrival rate is estimated continuously: an exponentially decayed average in which
    what was seen ``window`` seconds ago weighs ``decay`` (by default 0.1 s and 0.8, a time constant of
    0.45 s) and which, at low rates, spans at least the last 50 or so arrivals, so that what is kept
    does not jitter. The estimate is renewed every ``window`` while the operation has traffic, and as
    soon as twice the arrivals expected in a window have come; a change of traffic by more than 3x
    starts it afresh. The probability is ``target / rate``: it falls as fast as traffic grows and
    rises by at most a factor ``max_step`` per ``window``. A new operation is kept whole for its first
    window or its first window's worth of the target (at least 16 events), whichever ends first: a
    burst is capped within milliseconds. From 0 to 50,000 events a second, the kept rate is within 2x
    of the target in every second after the first and within 20% of it over five seconds
    (``benchmarks/bench_adaptive.py`` measures it). Operations under the target are kept whole, and a
    floor keeps every operation seen at least once per ``floor_interval`` seconds. Traffic that comes in
    bursts shorter than a second is kept at the target during each burst, so less than the target on
    average (bursts of 0.1 s at 50,000/s once a second: about 28 a second for a target of 100; the
    adjusted counts still add up to the traffic).

    Decisions use OTEP 235 thresholds (see :class:`TraceIdRatio`), so they are consistent across
    processes and nest as rates change, and a kept event's adjusted count is 1/p of the probability it
    was kept with. A decision costs a dictionary look-up and a countdown; the estimate is renewed, under
    a lock, about ten times a second per busy operation.

    ``clock`` (seconds) can be replaced in tests; the default, ``time.perf_counter``, is monotonic and
    fine-grained on every platform (``time.monotonic`` moves in 15.6 ms steps on Windows before Python
    3.13, and a rate needs time to be measured in). At most ``max_operations`` names are tracked; others
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
        window: float = 0.1,
        decay: float = 0.8,
        max_step: float = 4.0,
        floor_interval: float = 60.0,
        max_operations: int = 1000,
        clock: Callable[[], float] = time.perf_counter,
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
        #: Seconds over which the rate estimate forgets by a factor e (0 with ``decay=0``: then only
        #: the least number of arrivals it spans counts).
        self.time_constant = self.window / -math.log(self.decay) if self.decay > 0 else 0.0
        self._log_step_per_second = math.log(self.max_step) / self.window
        # A new operation is kept whole until it has had a window's worth of the target (or one window).
        self._first_batch = max(_MIN_BATCH, int(self.target * self.window))
        self._clock = clock
        self._lock = threading.Lock()
        self._ops: dict[str, _Operation] = {}

    def probability(self, name: str) -> float:
        """The current keep probability of operation ``name``."""
        op = self._ops.get(name)
        return 1.0 if op is None else op.weight

    def decide(self, ev: SampledEvent) -> float:
        now = self._clock()
        name = ev.name
        if type(name) is not str:
            name = event_name(ev)
        op = self._ops.get(name)
        if op is None:
            op = self._new_operation(name, now)
        op.left -= 1  # under the GIL a lost update only delays the next estimate by an arrival
        if op.left <= 0 or not op.since <= now < op.due:  # (a batch is over, or the clock went back)
            self._estimate(op, now)
        tid = ev.trace_id
        r = tid & RANDOMNESS_MASK if tid else random.getrandbits(56)
        return op.weight if r >= op.threshold else 0.0

    def _new_operation(self, name: str, now: float) -> _Operation:
        with self._lock:
            op = self._ops.get(name)
            if op is None:
                if len(self._ops) >= self.max_operations:
                    name = "*"
                    op = self._ops.get(name)
                if op is None:
                    op = self._ops[name] = _Operation(now, self.window, self._first_batch)
            return op

    def _estimate(self, op: _Operation, now: float) -> None:
        """Close the operation's batch at an arrival (``now``): renew its rate and its threshold."""
        with self._lock:
            if op.left > 0 and op.since <= now < op.due:
                return  # another thread has just done it
            arrivals = op.size - op.left
            elapsed = now - op.since
            if elapsed < 0:
                # The clock went back (an injected wall clock stepped by NTP): the batch starts again now,
                # rather than waiting, its estimate frozen, for the clock to come back to where it was.
                op.since, op.due, op.left = now, now + self.window, op.size
                return
            if elapsed <= 0:
                # The clock has not moved (a coarse one): the batch cannot tell a rate yet, so it goes on.
                op.left += op.size
                op.size *= 2
                return
            rate = op.rate
            expected = rate * elapsed
            faded = elapsed / max(self.time_constant, _MIN_ARRIVALS / rate) if rate > 0 else 0.0
            changed = not expected / _JUMP <= arrivals <= expected * _JUMP
            if changed and max(arrivals, expected) >= _MIN_BATCH:
                kept_share, weight = 0.0, 1.0  # a jump or a drop: start again from this batch
            elif faded > 0:
                # The past fades by exp(-faded); the batch's arrivals, spread over its interval, weigh
                # the average of the decay over it.
                kept_share, weight = math.exp(-faded), -math.expm1(-faded) / faded
            else:
                kept_share, weight = 1.0, 1.0
            op.count = op.count * kept_share + arrivals * weight
            op.span = op.span * kept_share + elapsed * weight
            # The batch ends with an arrival: counting that one as if it were typical would bias the rate
            # up (as 16 arrivals over the time until the 16th would).
            count = op.count - weight
            rate = op.rate = count / op.span if count > 0 and op.span > 0 else 0.0
            self._set_probability(op, rate, elapsed)
            op.since = now
            op.due = now + self.window
            op.size = op.left = max(_MIN_BATCH, int(_EARLY * rate * self.window) + 1)

    def _set_probability(self, op: _Operation, rate: float, elapsed: float) -> None:
        wanted = 1.0
        if rate > self.target:
            floor = 1.0 / (rate * self.floor_interval)  # at least one a floor_interval
            wanted = min(1.0, max(self.target / rate, floor))
        current = op.weight
        if wanted > current and math.log(wanted / current) > self._log_step_per_second * elapsed:
            wanted = current * math.exp(self._log_step_per_second * elapsed)
        if wanted != current:
            op.threshold = threshold(wanted)
            op.weight = keep_probability(op.threshold)

    def __repr__(self) -> str:
        return f"Adaptive({self.target:g}/s)"

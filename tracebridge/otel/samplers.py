"""tracebridge's sampling stages as OpenTelemetry samplers, consistent with OTEP 235 (``ot=th:...`` in
the tracestate)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, Sampler, SamplingResult
from opentelemetry.trace import Link as OTelLink
from opentelemetry.trace import SpanKind, TraceState, get_current_span
from opentelemetry.util.types import Attributes

from .. import _safety
from .._safety import errors_named
from ..sampling import Adaptive, Pipeline, RateLimiter, Stage, TraceIdRatio
from ..sampling.consistent import RANDOMNESS_MASK, threshold_to_th
from ..sampling.limiters import KeyedRateLimiter
from ..sampling.samplers import Probability


class _Probe:
    """What a sampling stage sees of a span about to begin."""

    __slots__ = ("level", "metadata", "name", "trace_id")
    kind = "span"
    parent = None
    adjusted_count = 1.0

    def __init__(self, name: str, trace_id: int, level: int, metadata: dict[str, Any] | None) -> None:
        self.name = name
        self.trace_id = trace_id
        self.level = level
        self.metadata = metadata


#: Stages whose decisions are not a function of the trace's randomness: a span they keep must not
#: claim a threshold (OTEP 235 has them erase ``th``).
_INCONSISTENT = (Probability, RateLimiter, KeyedRateLimiter)


def parse_ot(state: TraceState | None) -> dict[str, str]:
    """The sub-keys of OpenTelemetry's ``ot`` tracestate entry (``th``, ``rv``, ...)."""
    if state is None:
        return {}
    value = state.get("ot")
    if not value:
        return {}
    out: dict[str, str] = {}
    for part in value.split(";"):
        key, sep, val = part.partition(":")
        if sep and key:
            out[key] = val
    return out


def _with_ot(state: TraceState | None, ot: dict[str, str]) -> TraceState:
    state = state if state is not None else TraceState()
    value = ";".join(f"{k}:{v}" for k, v in ot.items())
    if not value:
        return state.delete("ot") if "ot" in state else state
    return state.update("ot", value) if "ot" in state else state.add("ot", value)


def _randomness(trace_id: int, ot: dict[str, str]) -> int:
    """The trace id to decide on: its own, or with an explicit ``rv`` (56 random bits) in place of its
    low 56 bits."""
    rv = ot.get("rv", "")
    if len(rv) == 14:
        try:
            return (trace_id & ~RANDOMNESS_MASK) | int(rv, 16)
        except ValueError:
            pass
    return trace_id


class PipelineSampler(Sampler):
    """An OpenTelemetry ``Sampler`` that decides with tracebridge sampling stages (a stage, a list of
    them, or a :class:`~tracebridge.sampling.Pipeline`), for ``TracerProvider(sampler=...)``.

    Spans are seen as level ``level`` with their attributes as metadata. Consistent stages decide on
    the trace id's randomness (or the ``rv`` of the ``ot`` tracestate entry when there is one), and a
    kept span's tracestate gets ``ot=th:...`` (OTEP 235), so that other processes and backends can tell
    its sampling probability; a decision that involved a rate limit or a random draw erases ``th``.
    Stages that decide when spans end (``MinDuration``, ``TailSampler``) belong in
    ``tracebridge.start(sampling=...)``, not here. Never raises into the SDK (a failure keeps the span).

    .. versionadded:: 0.1
    """

    def __init__(self, sampling: Stage | Sequence[Stage] | Pipeline, *, level: int = 2) -> None:
        pipeline = Pipeline.of(sampling)
        if pipeline is None:
            raise ValueError("PipelineSampler: expected a stage, a list of stages or a Pipeline, got None")
        if pipeline.tail_stages:
            raise ValueError(
                f"PipelineSampler: {pipeline.tail_stages[0]!r} decides when spans end; an OpenTelemetry "
                "sampler decides when they begin (use it in tracebridge.start(sampling=...))"
            )
        if isinstance(level, bool) or not isinstance(level, int) or level < 1:
            raise ValueError(f"PipelineSampler(level) must be an integer >= 1, got {level!r}")
        self.pipeline = pipeline
        self.level = level
        self._consistent = not any(isinstance(st, _INCONSISTENT) for st in pipeline.head_stages)
        # When the stages decide by trace randomness alone (TraceIdRatio and the like, see
        # Pipeline.root_threshold), one comparison decides, and a kept span's ``th`` is always this one.
        threshold = pipeline.root_threshold
        self._th = threshold_to_th(threshold) if threshold is not None and threshold < 1 << 56 else None
        self._kept_state = _with_ot(None, {"th": self._th}) if self._th is not None else None

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[OTelLink] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        if trace_state is None:
            trace_state = get_current_span(parent_context).get_span_context().trace_state
        try:
            pipe = self.pipeline
            threshold = pipe.root_threshold
            if threshold is not None:
                ot = parse_ot(trace_state) if trace_state else {}
                if ((_randomness(trace_id, ot) if ot else trace_id) & RANDOMNESS_MASK) < threshold:
                    next(pipe.root_drops)
                    return SamplingResult(Decision.DROP, None, trace_state)
                pipe.count_root_kept("span")
                if not trace_state and self._kept_state is not None:
                    return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, self._kept_state)
                ot.pop("th", None)
                if self._th is not None:
                    ot["th"] = self._th
                return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, _with_ot(trace_state, ot))
            ot = parse_ot(trace_state)
            probe = _Probe(
                name, _randomness(trace_id, ot), self.level, dict(attributes) if attributes else None
            )
            weight, dropped_by = self.pipeline.head(probe)
            if dropped_by is not None:
                self.pipeline.count_drop(dropped_by, "span")
                return SamplingResult(Decision.DROP, None, trace_state)
            ot.pop("th", None)
            if self._consistent:
                ot["th"] = threshold_to_th((1 << 56) - round(weight * (1 << 56)))
            # The SDK gives a span the attributes its sampler returns.
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, _with_ot(trace_state, ot))
        except Exception as exc:
            _safety.internal_error(f"{type(self).__name__}.should_sample", exc)
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, trace_state)

    def counts(self) -> dict[str, Any]:
        """What each stage kept and dropped."""
        return self.pipeline.counts()

    def get_description(self) -> str:
        return f"PipelineSampler({', '.join(repr(st) for st in self.pipeline.head_stages)})"


class ConsistentRatioSampler(PipelineSampler):
    """Keeps a share ``p`` of traces by OTEP 235 thresholds (:class:`tracebridge.sampling.TraceIdRatio`):
    the same decision as tracebridge's own spans and logs of that trace, in any process; a kept span's
    tracestate says ``ot=th:...``; an incoming ``rv`` is the randomness.

    .. versionadded:: 0.1
    """

    def __init__(self, p: float) -> None:
        with errors_named("ConsistentRatioSampler", "TraceIdRatio"):
            self.ratio = TraceIdRatio(p)
        super().__init__(self.ratio)

    def get_description(self) -> str:
        return f"ConsistentRatioSampler{{{self.ratio.p:g}, th:{self.ratio.th or 'none'}}}"


class AdaptiveSampler(PipelineSampler):
    """Per span name, a probability that adjusts itself so that about ``target_per_second`` spans of
    that name are kept a second (:class:`tracebridge.sampling.Adaptive`; its options too).

    .. versionadded:: 0.1
    """

    def __init__(self, target_per_second: float, **options: Any) -> None:
        with errors_named("AdaptiveSampler", "Adaptive"):
            self.adaptive = Adaptive(target_per_second, **options)
        super().__init__(self.adaptive)

    def get_description(self) -> str:
        return f"AdaptiveSampler{{{self.adaptive.target:g}/s}}"


class RateLimitingSampler(PipelineSampler):
    """At most ``per_second`` new spans a second (``burst`` at once): a token bucket
    (:class:`tracebridge.sampling.RateLimiter`). Not consistent: kept spans carry no ``th``.

    .. versionadded:: 0.1
    """

    def __init__(self, per_second: float, burst: float | None = None) -> None:
        with errors_named("RateLimitingSampler", "RateLimiter"):
            self.limiter = RateLimiter(per_second, burst)
        super().__init__(self.limiter)

    def get_description(self) -> str:
        return f"RateLimitingSampler{{{self.limiter.per_second:g}/s}}"


class ParentBasedConsistentRatioSampler(ParentBased):
    """Roots by :class:`ConsistentRatioSampler`; children as their parent (and its tracestate).

    .. versionadded:: 0.1
    """

    def __init__(self, p: float) -> None:
        super().__init__(ConsistentRatioSampler(p))


class ParentBasedAdaptiveSampler(ParentBased):
    """Roots by :class:`AdaptiveSampler`; children as their parent.

    .. versionadded:: 0.1
    """

    def __init__(self, target_per_second: float, **options: Any) -> None:
        super().__init__(AdaptiveSampler(target_per_second, **options))


class ParentBasedRateLimitingSampler(ParentBased):
    """Roots by :class:`RateLimitingSampler`; children as their parent.

    .. versionadded:: 0.1
    """

    def __init__(self, per_second: float, burst: float | None = None) -> None:
        super().__init__(RateLimitingSampler(per_second, burst))

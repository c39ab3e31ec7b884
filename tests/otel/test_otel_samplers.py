"""tracebridge samplers as OpenTelemetry samplers, in a real TracerProvider."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import Decision, Sampler
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState
from traffic import Clock, drive, stage_deciding

from tracebridge.otel import (
    AdaptiveSampler,
    ConsistentRatioSampler,
    ParentBasedAdaptiveSampler,
    ParentBasedConsistentRatioSampler,
    PipelineSampler,
    RateLimitingSampler,
    parse_ot,
)
from tracebridge.sampling import Adaptive, MinDuration, Names, PerOperation, Predicate, TraceIdRatio
from tracebridge.sampling.consistent import keep_probability, th_to_threshold


class SeededIds(IdGenerator):
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def generate_span_id(self) -> int:
        return self.rng.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        return self.rng.getrandbits(128) or 1


def kept_traces(sampler: Sampler, n: int = 4000, seed: int = 7) -> dict[int, str]:
    """trace id -> the ot entry of the kept roots' tracestate."""
    provider = TracerProvider(sampler=sampler, id_generator=SeededIds(seed), shutdown_on_exit=False)
    tracer = provider.get_tracer("t")
    kept = {}
    for _ in range(n):
        with tracer.start_as_current_span("op") as span:
            ctx = span.get_span_context()
            if ctx.trace_flags.sampled:
                kept[ctx.trace_id] = ctx.trace_state.get("ot", "")
    return kept


def test_consistent_ratio_matches_tracebridge_and_nests() -> None:
    ratio = TraceIdRatio(0.1)
    sampler = ConsistentRatioSampler(0.1)
    kept = kept_traces(sampler)
    (entry,) = sampler.counts().values()
    assert entry["kept"]["span"] == len(kept) and entry["dropped"]["span"] == 4000 - len(kept)
    all_ids = SeededIds(7)
    # The same decisions as tracebridge's own stage on the same trace ids.
    expected = set()
    for _ in range(4000):
        tid = all_ids.generate_trace_id()
        all_ids.generate_span_id()
        if ratio.decide(type("E", (), {"trace_id": tid})()):
            expected.add(tid)
    assert set(kept) == expected
    assert 300 < len(kept) < 500
    assert set(kept.values()) == {"th:e6666"}
    # Decisions at a lower rate are a subset of those at a higher rate.
    assert set(kept_traces(ConsistentRatioSampler(0.01))) <= set(kept)
    assert set(kept_traces(ConsistentRatioSampler(1.0)).values()) == {"th:0"}


def test_nested_consistent_stages_advertise_the_lower_probability() -> None:
    # Both decide on the trace's randomness: what they keep together was kept with probability 0.25, so
    # th says 0.25 (not the product, 0.125).
    sampler = PipelineSampler([TraceIdRatio(0.5), PerOperation({"op": 0.25})])
    kept = kept_traces(sampler)
    assert set(kept.values()) == {"th:c"}
    assert set(kept) == set(kept_traces(ConsistentRatioSampler(0.25)))


def test_kept_spans_keep_their_attributes() -> None:
    provider = TracerProvider(sampler=ParentBasedConsistentRatioSampler(1.0), shutdown_on_exit=False)
    with provider.get_tracer("t").start_as_current_span("op", attributes={"k": 1}) as span:
        assert dict(span.attributes or {}) == {"k": 1}  # type: ignore[attr-defined]


def remote_parent(trace_id: int, ot: str, sampled: bool = True) -> otel_context.Context:
    ctx = SpanContext(
        trace_id,
        0x1234,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED if sampled else 0),
        trace_state=TraceState([("ot", ot), ("vendor", "x")]),
    )
    return otel_trace.set_span_in_context(NonRecordingSpan(ctx))


def test_incoming_rv_is_the_randomness_and_other_entries_survive() -> None:
    sampler = ConsistentRatioSampler(0.5)
    tid = 0xFFFF_FFFF_FFFF_FFFF_FFFF_FFFF_FFFF_FFFF  # its own low bits would keep it at any rate
    low = sampler.should_sample(remote_parent(tid, "rv:00000000000001"), tid, "op")
    assert low.decision is Decision.DROP
    high = sampler.should_sample(remote_parent(tid, "rv:ffffffffffffff;th:0"), tid, "op")
    assert high.decision is Decision.RECORD_AND_SAMPLE
    assert parse_ot(high.trace_state) == {"rv": "ffffffffffffff", "th": "8"}
    assert high.trace_state.get("vendor") == "x"


def test_parent_based_children_follow_and_inherit_the_tracestate() -> None:
    sampler = ParentBasedConsistentRatioSampler(0.0001)
    tid = 5
    child = sampler.should_sample(remote_parent(tid, "th:c"), tid, "child")
    assert child.decision is Decision.RECORD_AND_SAMPLE and parse_ot(child.trace_state) == {"th": "c"}
    dropped = sampler.should_sample(remote_parent(tid, "th:c", sampled=False), tid, "child")
    assert dropped.decision is Decision.DROP


def test_rate_limiting_sampler_caps_and_erases_th() -> None:
    sampler = RateLimitingSampler(1.0, burst=5)
    tid = 77
    results = [
        sampler.should_sample(remote_parent(tid, "th:0;rv:00000000000009"), tid, "op") for _ in range(20)
    ]
    kept = [r for r in results if r.decision is Decision.RECORD_AND_SAMPLE]
    assert len(kept) == 5
    assert all(parse_ot(r.trace_state) == {"rv": "00000000000009"} for r in kept)


def test_adaptive_sampler_per_span_name() -> None:
    clock = Clock()
    sampler = AdaptiveSampler(10, clock=clock)
    out = drive(deciding(sampler), clock, [(20.0, {"hot": 1000, "cold": 5})], seed=3)
    hot = out.kept_per_second("hot")
    assert sum(hot[1:]) / 19 == pytest.approx(10, rel=0.2), hot  # about 10 a second of 1000
    assert sum(out.kept_per_second("cold")) == out.arrivals("cold") > 50
    assert sampler.adaptive.probability("cold") == 1.0  # it is under its target: all kept


def deciding(sampler: Sampler) -> Callable[[str, int], float]:
    """``decide(name, trace_id)`` for :func:`traffic.drive`: the probability a kept root span's
    tracestate says (``ot=th:...``), 0.0 for a dropped one."""

    def decide(name: str, trace_id: int) -> float:
        result = sampler.should_sample(None, trace_id, name)
        if result.decision is not Decision.RECORD_AND_SAMPLE:
            return 0.0
        return keep_probability(th_to_threshold(parse_ot(result.trace_state)["th"]))

    return decide


def test_adaptive_sampler_follows_traffic_within_a_second() -> None:
    clock = Clock()
    sampler = AdaptiveSampler(100, clock=clock)
    # A new span name from nothing to 10,000 a second (tests/sampling/test_samplers.py takes the stage
    # itself to 50,000), then down to 10 a second; a rare one beside it.
    phases: list[tuple[float, dict[str, float]]] = [
        (6.0, {"hot": 10_000, "rare": 5}),
        (4.0, {"hot": 10, "rare": 5}),
    ]
    out = drive(deciding(sampler), clock, phases, seed=21)
    hot = out.kept_per_second("hot")
    assert all(50 <= kept <= 200 for kept in hot[:6]), hot  # the first second too: capped at once
    assert sum(hot[1:6]) / 5 == pytest.approx(100, rel=0.2), hot
    # After the drop, within a second, every span is kept again; rare spans always were.
    after = [w for t, n, w in zip(out.times, out.names, out.weights, strict=True) if n == "hot" and t >= 7.0]
    assert len(after) > 20 and all(w == 1.0 for w in after)
    assert sum(out.kept_per_second("rare")) == out.arrivals("rare")
    # The probabilities the tracestate says stand for what came.
    total, deviation = out.adjusted_total("hot")
    assert abs(total - out.arrivals("hot")) < 4 * deviation
    # The same decisions, at the same probabilities, as tracebridge's own stage on the same trace ids.
    clock = Clock()
    ours = drive(stage_deciding(Adaptive(100, clock=clock)), clock, phases, seed=21)
    assert ours.kept() == out.kept()
    assert ours.weights == pytest.approx(out.weights, rel=1e-9)


def test_parent_based_adaptive_sampler_decides_roots_alike() -> None:
    phases: list[tuple[float, dict[str, float]]] = [(2.0, {"hot": 5_000, "rare": 5})]
    outcomes = []
    for make in (AdaptiveSampler, ParentBasedAdaptiveSampler):
        clock = Clock()
        outcomes.append(drive(deciding(make(50, clock=clock)), clock, phases, seed=22))
    plain, parent_based = outcomes
    assert parent_based.weights == plain.weights
    assert 60 <= sum(plain.kept_per_second("hot")) <= 200


def test_pipeline_sampler_setup_and_failures(lenient: None) -> None:
    with pytest.raises(ValueError, match="decides when spans end"):
        PipelineSampler(MinDuration("1ms"))
    with pytest.raises(ValueError, match="level"):
        PipelineSampler(Names(include=["a*"]), level=0)

    def broken(ev: object) -> bool:
        raise RuntimeError("user predicate")

    sampler = PipelineSampler([Names(exclude=["health*"]), Predicate(broken)])
    assert sampler.should_sample(None, 1, "healthcheck").decision is Decision.DROP
    assert sampler.should_sample(None, 1, "work").decision is Decision.RECORD_AND_SAMPLE  # kept, counted
    counts = sampler.counts()
    assert any(entry.get("errors") for entry in counts.values()), counts


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ConsistentRatioSampler(1.5), r"^ConsistentRatioSampler\(p\) must be a probability"),
        (lambda: AdaptiveSampler(-1), r"^AdaptiveSampler\(target_per_second\) must be"),
        (lambda: RateLimitingSampler(0), r"^RateLimitingSampler\(per_second\) must be"),
    ],
)
def test_setup_errors_name_the_class_the_user_wrote(make: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()  # type: ignore[operator]

"""OpenTelemetry integration: OTel spans into Perfetto traces and trace lines, tracebridge's samplers as
OTel samplers.

::

    from opentelemetry.sdk.trace import TracerProvider
    from tracebridge.otel import ConsistentRatioSampler, PerfettoSpanProcessor

    provider = TracerProvider(sampler=ConsistentRatioSampler(0.1))
    provider.add_span_processor(PerfettoSpanProcessor("app.perfetto-trace"))

Spans that nest on one thread are drawn on that thread's track, inside the tracebridge spans around them;
spans that overlap without nesting (asyncio tasks) and spans that end on another thread get tracks of
their own under the process. Attributes become typed debug annotations, span events instants, an
exception event the slice's back-trace, links flows; the trace id is the slice's correlation id and the
resource's ``service.name`` names the process.
"""

from __future__ import annotations

from ._shared import BRIDGE_SCOPE as BRIDGE_SCOPE  # (its home before otel/ was split)
from .bridge import Bridge, otel_attributes
from .processor import (
    PerfettoSpanExporter,
    PerfettoSpanProcessor,
    TraceLineSpanProcessor,
    frames_from_stacktrace,
)
from .samplers import (
    AdaptiveSampler,
    ConsistentRatioSampler,
    ParentBasedAdaptiveSampler,
    ParentBasedConsistentRatioSampler,
    ParentBasedRateLimitingSampler,
    PipelineSampler,
    RateLimitingSampler,
    parse_ot,
)

__all__ = [
    "AdaptiveSampler",
    "Bridge",
    "ConsistentRatioSampler",
    "ParentBasedAdaptiveSampler",
    "ParentBasedConsistentRatioSampler",
    "ParentBasedRateLimitingSampler",
    "PerfettoSpanExporter",
    "PerfettoSpanProcessor",
    "PipelineSampler",
    "RateLimitingSampler",
    "TraceLineSpanProcessor",
    "frames_from_stacktrace",
    "otel_attributes",
    "parse_ot",
]

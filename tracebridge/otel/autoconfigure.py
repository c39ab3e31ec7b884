"""What OpenTelemetry's zero-code path loads by name: the exporter ``OTEL_TRACES_EXPORTER=perfetto`` and
the samplers ``OTEL_TRACES_SAMPLER=tracebridge_adaptive`` (and its siblings), registered as entry points
of the groups ``opentelemetry_traces_exporter`` and ``opentelemetry_traces_sampler``. The SDK's
configurator reads those groups when ``opentelemetry-instrument`` starts a program (through
opentelemetry-distro), and hands a sampler factory ``OTEL_TRACES_SAMPLER_ARG`` as text (or ``None``).

::

    OTEL_TRACES_EXPORTER=perfetto OTEL_TRACES_SAMPLER=tracebridge_adaptive OTEL_TRACES_SAMPLER_ARG=50 \\
    OTEL_METRICS_EXPORTER=none OTEL_LOGS_EXPORTER=none TRACEBRIDGE_OUTPUT=app.perfetto-trace \\
        opentelemetry-instrument python app.py

The SDK puts a named exporter behind a ``BatchSpanProcessor``: spans would reach it in batches, seconds
after they ended, on the batch thread, where their threads are unknown. So the exporter does not record
what it is handed: as it is made, the configurator has just installed its TracerProvider as the global
one, and the exporter adds a Perfetto span processor to that provider. Spans are then placed as they
begin and written as they end, on their threads, nested with tracebridge's own spans and log records,
exactly as :class:`~tracebridge.otel.PerfettoSpanProcessor` places them; the batches that follow hold
spans recorded already. A span of another provider (the exporter added to one by hand) is recorded from
its batch, on a track per trace as :class:`~tracebridge.otel.PerfettoSpanExporter` records it.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry import trace as otel_trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import Sampler

from .. import _safety
from .._environment import EnvironmentSettingError, from_environment, parse_number
from .._recorder import configure, record_into
from .._recorder.lifecycle import OtherFileError
from .._recorder.runtime import RT
from .processor import PerfettoSpanExporter, PerfettoSpanProcessor
from .samplers import (
    AdaptiveSampler,
    ConsistentRatioSampler,
    ParentBasedAdaptiveSampler,
    ParentBasedConsistentRatioSampler,
    ParentBasedRateLimitingSampler,
    RateLimitingSampler,
)

#: The trace file when ``TRACEBRIDGE_OUTPUT`` is not set (in the current directory).
DEFAULT_OUTPUT = "tracebridge-otel.perfetto-trace"
#: How the exporter names itself in what it says on stderr.
EXPORTER_NAME = "OTEL_TRACES_EXPORTER=perfetto"
SAMPLER_ARG = "OTEL_TRACES_SAMPLER_ARG"


class _SampledSpanProcessor(PerfettoSpanProcessor):
    """A Perfetto span processor for the spans an exporter gets (the sampled ones), which remembers the
    spans whose end it saw, so that the exporter leaves them out of its batches."""

    def __init__(self, path: str, seen: weakref.WeakSet[ReadableSpan]) -> None:
        super().__init__(path)
        self._seen = seen

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        try:
            sampled = span.get_span_context().trace_flags.sampled
        except Exception as exc:
            _safety.internal_error("OTEL_TRACES_EXPORTER=perfetto: on_start", exc)
            return
        if sampled:
            super().on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        try:
            # (The SDK hands this very object to every processor, the batch processor included.)
            self._seen.add(span)
        except Exception as exc:
            _safety.internal_error("OTEL_TRACES_EXPORTER=perfetto: on_end", exc)
        super().on_end(span)


class PerfettoEnvironmentExporter(SpanExporter):
    """The exporter of ``OTEL_TRACES_EXPORTER=perfetto``: made by the SDK's configurator (no arguments),
    it records the spans of the global TracerProvider into a Perfetto trace, on their threads (see the
    module's documentation), and the spans of any other provider that exports to it on a track per trace.

    The recording comes from the environment as ``tracebridge.start()`` takes it: the file from
    ``TRACEBRIDGE_OUTPUT`` (else ``tracebridge-otel.perfetto-trace`` in the current directory),
    ``TRACEBRIDGE_LEVEL``, ``TRACEBRIDGE_SAMPLING`` (applied after the TracerProvider's sampler),
    ``TRACEBRIDGE_LOG_LINES`` and ``TRACEBRIDGE_FILTER``. It joins a recording of that file if one is on;
    tracebridge's exit hook writes the file out after the SDK has shut the provider down. A bad value,
    or a file that cannot be written, is one line on stderr, and the exporter records nothing: the
    program runs on. Never raises into the SDK.

    .. versionadded:: 0.1
    """

    def __init__(self) -> None:
        self._seen: weakref.WeakSet[ReadableSpan] = weakref.WeakSet()
        self._batches: PerfettoSpanExporter | None = None
        #: The processor added to the global TracerProvider (``None`` when there was none to add it to).
        self.processor: PerfettoSpanProcessor | None = None
        #: The trace file (``None`` when the exporter records nothing).
        self.path: str | None = None
        try:
            env = from_environment()
        except EnvironmentSettingError as exc:
            _safety.report(f"tracebridge: {exc}; {EXPORTER_NAME} records nothing")
            return
        path = env.output or DEFAULT_OUTPUT
        try:
            if env.log_lines and RT.config.trace_lines() is None:
                configure(log_lines=True)
            # (Another file being recorded: the processor's target says it, once, and counts what it
            # cannot write.)
            with contextlib.suppress(OtherFileError):
                record_into(path, env.level or 2, EXPORTER_NAME, sampling=env.sampling or None)
            self._batches = PerfettoSpanExporter(path)
            provider = otel_trace.get_tracer_provider()
            if isinstance(provider, TracerProvider):
                processor = _SampledSpanProcessor(path, self._seen)
                provider.add_span_processor(processor)
                self.processor = processor
        except Exception as exc:
            self._batches = None
            _safety.report(
                f"tracebridge: {EXPORTER_NAME} records nothing: {path}: {type(exc).__name__}: "
                f"{_safety.safe_str(exc)}"
            )
            return
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        batches = self._batches
        if batches is None:
            return SpanExportResult.SUCCESS  # (it said so when it was made: it records nothing)
        try:
            seen = self._seen
            rest = [span for span in spans if span not in seen]
        except Exception as exc:
            _safety.internal_error("OTEL_TRACES_EXPORTER=perfetto: export", exc)
            return SpanExportResult.FAILURE
        return batches.export(rest) if rest else SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        if self._batches is not None:
            self._batches.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        done = True
        if self.processor is not None:
            done = self.processor.force_flush(timeout_millis)
        if self._batches is not None:
            done = self._batches.force_flush(timeout_millis) and done
        return done


def _from_argument(
    name: str, arg: object, default: float, make: Callable[[float], Sampler], unit: str
) -> Sampler:
    """The sampler ``name`` with the number ``arg`` (``OTEL_TRACES_SAMPLER_ARG``), or with ``default``
    when it is not set; a bad one is one line on stderr, and ``default``."""
    text = "" if arg is None else _safety.safe_str(arg).strip()
    if not text:
        return make(default)
    try:
        return make(parse_number(SAMPLER_ARG, text, whole=False))
    except EnvironmentSettingError as exc:
        problem = str(exc)
    except ValueError as exc:  # (out of range: the sampler's own message)
        problem = f"{SAMPLER_ARG}: {_safety.safe_str(exc)}"
    _safety.report(f"tracebridge: {problem}; {name} uses its default, {default:g}{unit}")
    return make(default)


#: Defaults of the samplers' ``OTEL_TRACES_SAMPLER_ARG``.
DEFAULT_PER_SECOND = 100.0
DEFAULT_RATIO = 1.0


def adaptive_sampler(arg: object = None) -> Sampler:
    """``OTEL_TRACES_SAMPLER=tracebridge_adaptive``: :class:`~tracebridge.otel.AdaptiveSampler`, about
    ``OTEL_TRACES_SAMPLER_ARG`` spans a second of each span name (default 100).

    .. versionadded:: 0.1
    """
    return _from_argument("tracebridge_adaptive", arg, DEFAULT_PER_SECOND, AdaptiveSampler, " a second")


def parent_based_adaptive_sampler(arg: object = None) -> Sampler:
    """``OTEL_TRACES_SAMPLER=parentbased_tracebridge_adaptive``: roots as ``tracebridge_adaptive``,
    children as their parent.

    .. versionadded:: 0.1
    """
    return _from_argument(
        "parentbased_tracebridge_adaptive", arg, DEFAULT_PER_SECOND, ParentBasedAdaptiveSampler, " a second"
    )


def ratio_sampler(arg: object = None) -> Sampler:
    """``OTEL_TRACES_SAMPLER=tracebridge_ratio``: :class:`~tracebridge.otel.ConsistentRatioSampler`, a
    share ``OTEL_TRACES_SAMPLER_ARG`` of traces, by OTEP 235 thresholds (default 1: all).

    .. versionadded:: 0.1
    """
    return _from_argument("tracebridge_ratio", arg, DEFAULT_RATIO, ConsistentRatioSampler, "")


def parent_based_ratio_sampler(arg: object = None) -> Sampler:
    """``OTEL_TRACES_SAMPLER=parentbased_tracebridge_ratio``: roots as ``tracebridge_ratio``, children as
    their parent.

    .. versionadded:: 0.1
    """
    return _from_argument(
        "parentbased_tracebridge_ratio", arg, DEFAULT_RATIO, ParentBasedConsistentRatioSampler, ""
    )


def rate_limiting_sampler(arg: object = None) -> Sampler:
    """``OTEL_TRACES_SAMPLER=tracebridge_ratelimit``: :class:`~tracebridge.otel.RateLimitingSampler`, at
    most ``OTEL_TRACES_SAMPLER_ARG`` new spans a second (default 100).

    .. versionadded:: 0.1
    """
    return _from_argument("tracebridge_ratelimit", arg, DEFAULT_PER_SECOND, RateLimitingSampler, " a second")


def parent_based_rate_limiting_sampler(arg: object = None) -> Sampler:
    """``OTEL_TRACES_SAMPLER=parentbased_tracebridge_ratelimit``: roots as ``tracebridge_ratelimit``,
    children as their parent.

    .. versionadded:: 0.1
    """
    return _from_argument(
        "parentbased_tracebridge_ratelimit",
        arg,
        DEFAULT_PER_SECOND,
        ParentBasedRateLimitingSampler,
        " a second",
    )

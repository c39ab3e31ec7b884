"""Process-wide options (:func:`tracebridge.configure`), validated when they are set."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from . import _safety
from ._sanitize import DEFAULT_SECRET_KEYS, Limits, compile_secret_keys
from ._units import parse_duration
from .sampling.pipeline import Pipeline
from .sinks.lines import TraceLines


@dataclass
class Config:
    """Process-wide options, set with :func:`tracebridge.configure`."""

    #: Raise internal errors instead of counting them (the test suite runs strict).
    strict: bool = field(default_factory=_safety.strict)
    #: Regular expression (case-insensitive) for metadata keys whose values are replaced by
    #: ``[scrubbed]``; ``None`` turns scrubbing off.
    scrub: str | None = DEFAULT_SECRET_KEYS
    #: Longest string kept in metadata and names; longer ones are cut with a ``…[+N chars]`` marker.
    max_string: int = 16384
    #: Deepest nesting of dicts and lists kept in metadata.
    max_depth: int = 8
    #: Most items (dict entries and list elements, all levels together) kept per metadata mapping.
    max_items: int = 1000
    #: Records a thread may have queued for the writer; more are dropped and counted (``queue_full``).
    thread_buffer: int = 65536
    #: What a thread whose queue is full does with a record: ``"drop"`` it (never waits; counted as
    #: ``queue_full``, and the trace marks the gap) or ``"block"`` until the writer has made room (nothing
    #: is lost; a writer that is dead, or makes no room within ``timeout``, turns waiting into dropping,
    #: counted as ``writer_stalled``, until it catches up).
    on_full: str = "drop"
    #: Seconds between the writer's rounds.
    flush_interval: float = 0.1
    #: In-memory sessions keep at most this many events; more are dropped and counted (``memory_cap``).
    max_events: int = 1_000_000
    #: Seconds ``stop()``, ``flush()`` and the exit hook wait for the writer.
    timeout: float = 10.0
    #: Perfetto traces: write batches as zlib ``compressed_packets`` (trace_processor and the Perfetto UI
    #: inflate them); about three times smaller files for a little writer time.
    compress: bool = True
    #: Sampling for sessions that do not give their own (``start(sampling=...)``): a stage, a list of
    #: stages or a :class:`~tracebridge.sampling.Pipeline`. ``TRACEBRIDGE_FILTER``, when set, adds
    #: :class:`~tracebridge.sampling.Directives` in front.
    sampling: Any = None
    #: Trace lines: ``True``, or the options of :class:`~tracebridge.sinks.lines.TraceLines` as a dict
    #: (``slow=``, ``level=``, ``max_level=``, ...): every span that ends is logged on the
    #: ``tracebridge.trace`` logger. With no session active, one that keeps nothing but the lines starts.
    log_lines: Any = None
    #: The two-way OpenTelemetry bridge: ``True`` (the global TracerProvider) or a TracerProvider makes
    #: every recorded tracebridge span an OpenTelemetry span too, and instants events of the current
    #: OpenTelemetry span; OTel spans begun inside tracebridge spans are their children and the other
    #: way round. With no session active, one that records nothing starts (level 2), so that spans are on.
    otel: Any = None
    #: Child processes record into the trace too (fork, spawn, forkserver, multiprocessing pools and
    #: executors): each writes a file beside it while it runs, added to the trace as a process of its own.
    children: bool = True
    #: Trace context crosses into thread and process pools (``concurrent.futures``, ``multiprocessing``):
    #: a task submitted inside a span runs as a span (``pool.task <function>``), its child, which the
    #: submitting span's flow points to.
    pools: bool = True
    #: A process whose SIGTERM is left at its default (it dies) finishes the trace first, then dies of
    #: the signal as it would have; a handler the program installs itself is left alone.
    sigterm: bool = True
    #: Runtime metrics: counter tracks of the process's RSS (bytes), CPU % (100 a busy core), threads, open
    #: file descriptors, and the garbage collector's share of the time (GC %), collections per generation
    #: and objects in its youngest generation, sampled by the writer thread as it writes (nothing runs on
    #: the application's threads for them); and the collector's pauses as slices on the "GC" track
    #: (generation, collected and uncollectable as arguments). Trace lines show pauses longer than their
    #: ``gc_pause``. For the session active now and those that start afterwards.
    runtime: bool = False
    #: ``runtime=True``: pauses shorter than this (a duration: ``"1ms"``, or seconds) are not slices of
    #: their own (the young generation's take microseconds, thousands a second while a program builds
    #: large structures); GC % and the counters include them. ``0``: every pause is a slice.
    gc_min_pause: Any = "1ms"

    def validate(self) -> None:
        for name in ("max_string", "max_depth", "max_items", "thread_buffer", "max_events"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("flush_interval", "timeout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        for name in ("children", "sigterm", "pools", "runtime"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        self.gc_min_pause_ns()
        if self.on_full not in ("drop", "block"):
            raise ValueError(f"on_full must be 'drop' or 'block', got {self.on_full!r}")
        compile_secret_keys(self.scrub)
        Pipeline.of(self.sampling)
        self.trace_lines()
        if self.otel not in (None, False, True) and not callable(getattr(self.otel, "get_tracer", None)):
            raise ValueError(f"otel must be True, False, None or a TracerProvider, got {self.otel!r}")

    def gc_min_pause_ns(self) -> int:
        """``gc_min_pause`` in nanoseconds (raises ``ValueError`` on a bad value)."""
        return parse_duration(self.gc_min_pause, "gc_min_pause")

    def trace_lines(self) -> TraceLines | None:
        """The trace-line logger these options ask for (``None``: off). Raises ``ValueError`` on bad
        options."""
        options = self.log_lines
        if options is None or options is False:
            return None
        if options is True:
            return TraceLines()
        if not isinstance(options, dict):
            raise ValueError(f"log_lines must be True, False, None or a dict of options, got {options!r}")
        try:
            return TraceLines(**options)
        except TypeError as exc:
            raise ValueError(f"log_lines: {exc}") from None

    @functools.cached_property
    def limits(self) -> Limits:
        return Limits(
            max_string=self.max_string,
            max_depth=self.max_depth,
            max_items=self.max_items,
            secret_keys=compile_secret_keys(self.scrub),
        )

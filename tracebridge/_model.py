"""The event records every source produces and every sink consumes.

Sources (spans, logging, OpenTelemetry, instrumentation) put internal records on per-thread buffers; the
writer thread turns them into :class:`Event` objects for the in-memory sink, and the readers give the same
:class:`Event` objects back from a file. Sinks import only this module.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol


def trace_clock_ns() -> int:
    """Now on the trace clock: CLOCK_BOOTTIME on Linux (Perfetto's default), the performance counter
    elsewhere."""
    if _BOOTTIME is not None:
        return time.clock_gettime_ns(_BOOTTIME)
    return time.perf_counter_ns()


_BOOTTIME: int | None = getattr(time, "CLOCK_BOOTTIME", None)

EventKind = Literal["span", "instant", "counter", "activity", "log"]

#: An event's name: a string, or a callable that gives it (called only if the event is recorded).
NameOrFactory = str | Callable[[], str]

#: Event kinds, in the order :attr:`Session.stats` lists them.
KINDS: Final[tuple[EventKind, ...]] = ("span", "instant", "counter", "activity", "log")


@dataclass(frozen=True)
class Frame:
    """One frame of a back-trace."""

    function: str
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.function} ({self.file}:{self.line})"


#: Causes kept of a chained exception (``raise ... from``, or raised while handling another).
MAX_CAUSES: Final = 4


@dataclass(frozen=True)
class ErrorInfo:
    """Why an event failed: the exception type, its message and the back-trace, outermost frame first;
    ``cause``: the exception that caused it (``raise ... from``, ``explicit_cause``) or during whose
    handling it was raised."""

    type: str
    message: str
    frames: tuple[Frame, ...] = ()
    cause: ErrorInfo | None = None
    explicit_cause: bool = True

    def format(self) -> str:
        """The back-traces as text, the first cause first (as Python prints them), each outermost frame
        first and then ``Type: message``."""
        lines = []
        if self.cause is not None:
            lines.append(self.cause.format())
            lines.append("(which caused:)" if self.explicit_cause else "(while handling it, another:)")
        lines.extend(f"  {f}" for f in self.frames)
        lines.append(f"{self.type}: {self.message}" if self.message else self.type)
        return "\n".join(lines)

    def stacktrace(self, limit: int) -> str:
        """:meth:`format` in at most ``limit`` characters: when longer, its end (the innermost frames and
        the exception), after a line that says how much was left out."""
        text = self.format()
        if len(text) <= limit:
            return text
        keep = max(0, limit - 48)
        return f"(... {len(text) - keep} characters left out)\n" + text[len(text) - keep :]

    def causes(self) -> list[dict[str, Any]]:
        """The cause chain, nearest first, as plain values (how trace files keep it)."""
        out: list[dict[str, Any]] = []
        error = self
        while error.cause is not None:
            c = error.cause
            out.append(
                {
                    "type": c.type,
                    "message": c.message,
                    "explicit": error.explicit_cause,
                    "frames": [[f.function, f.file, f.line] for f in c.frames],
                }
            )
            error = c
        return out

    def with_causes(self, causes: Any) -> ErrorInfo:
        """This failure with the cause chain :meth:`causes` gave (as read back from a file); values that
        do not have that shape are left out."""
        chain: ErrorInfo | None = None
        explicit = True
        try:
            for c in reversed(list(causes)[:MAX_CAUSES]):
                frames = tuple(Frame(str(f[0]), str(f[1]), int(f[2])) for f in c.get("frames", ()))
                chain = ErrorInfo(str(c["type"]), str(c.get("message", "")), frames, chain, explicit)
                explicit = bool(c.get("explicit", True))
        except (TypeError, KeyError, ValueError, AttributeError, IndexError):
            return self
        if chain is None:
            return self
        return ErrorInfo(self.type, self.message, self.frames, chain, explicit)


@dataclass(slots=True)
class Event:
    """One recorded event, as :attr:`Session.events` and :func:`tracebridge.read` return it.

    Timestamps are nanoseconds on the trace clock (``CLOCK_BOOTTIME`` on Linux, the monotonic
    performance counter elsewhere). ``end_ns`` equals ``start_ns`` for instants, counter samples and log
    messages, and is ``None`` for a span or activity that had not ended when the trace was cut.
    """

    kind: EventKind
    name: str
    start_ns: int
    end_ns: int | None
    level: int = 1
    metadata: dict[str, Any] = field(default_factory=dict)
    thread_id: int = 0
    thread_name: str = ""
    error: ErrorInfo | None = None
    categories: tuple[str, ...] = ()
    track: str | None = None
    flows: tuple[int, ...] = ()
    terminating_flows: tuple[int, ...] = ()
    #: Counter samples: the value. Log messages: the Perfetto priority (2 verbose ... 7 fatal).
    value: float | int | None = None
    #: Counter samples: the unit name given to :func:`tracebridge.counter`.
    unit: str | None = None
    #: Log messages: the source location.
    source: Frame | None = None
    trace_id: int = 0
    span_id: int = 0
    parent_id: int = 0
    #: Spans: ``True`` when the span overlapped another span of its thread without nesting in it (spans
    #: of asyncio tasks); it is then drawn on a track of its own under the process.
    overlapping: bool = False
    #: How many events this one stands for: ``1/p`` when sampling kept it with probability ``p``.
    adjusted_count: float = 1.0
    #: For writers: the span's beginning is in the file already (a long-running OpenTelemetry span is
    #: written as begun while it runs, so that a killed process still shows it); only its end is left.
    begun: bool = False
    #: The process that recorded it, as a trace read from a file says (a trace with child processes has
    #: several); ``0`` for the process that records it now (``Session.events``).
    pid: int = 0

    @property
    def duration_ns(self) -> int | None:
        """``end_ns - start_ns``, or ``None`` when the event has not ended."""
        return None if self.end_ns is None else self.end_ns - self.start_ns


#: A compact event: ``(name, level, start_ns, end_ns, metadata)``, a span whose other fields are
#: :class:`Event`'s defaults. The compiled writer step hands them, instead of an :class:`Event` each, to a
#: sink whose ``takes_compact`` is true (the Perfetto writer), so that the commonest spans cost no Event.
CompactEvent = tuple[str, int, int, int, dict[str, Any]]


def as_event(ev: Event | CompactEvent, thread: ThreadInfo | None = None) -> Event:
    """The :class:`Event` a compact event stands for, on ``thread`` if given (an Event as it is). Its
    metadata is a copy: a compact event's may be shared with others."""
    if type(ev) is tuple:
        name, level, start, end, metadata = ev
        tid, thread_name = (thread.tid, thread.name) if thread is not None else (0, "")
        return Event("span", name, start, end, level, dict(metadata), tid, thread_name)
    return ev  # type: ignore[return-value]


@dataclass
class Stats:
    """What a session recorded and dropped.

    ``recorded`` counts events by kind. ``dropped`` counts events by reason, then kind: ``queue_full``
    (producers outran the writer, ``on_full="drop"``), ``writer_stalled`` (``on_full="block"``, but the
    writer was dead or made no room within the timeout), ``sink_error`` (the file could not be written),
    ``stop_timeout`` (still queued when ``stop()``'s deadline passed), ``memory_cap`` (an in-memory
    session reached ``max_events``), ``outside_session`` (a span began in one session and ended after it
    stopped), ``other_file`` (a logging handler or another source named another trace file than the one
    being recorded), ``internal_error`` (tracebridge failed on it): these are the :data:`LOSS_REASONS`. The
    others are not faults: the sampling stages' reasons (``sampled_out``, ``rate_limited``, ...),
    ``fork_inherited`` (queued when the process forked: the parent writes them, the child does not),
    ``unknown_activity`` (an activity ended that never began, or twice).
    ``open_activities`` counts activities (and OpenTelemetry spans) still open when the session stopped:
    they are written as begun but not ended.
    """

    recorded: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, dict[str, int]] = field(default_factory=dict)
    open_activities: int = 0
    sanitized: int = 0
    scrubbed: int = 0
    internal_errors: int = 0
    #: Per sampling stage (``"<position>:<stage>"``): what it kept and dropped, by kind.
    sampling: dict[str, Any] = field(default_factory=dict)
    #: Auto-instrumented functions demoted to the near-zero-cost path (always under their
    #: ``min_duration``), with the calls seen before.
    demoted: dict[str, int] = field(default_factory=dict)

    @property
    def total_recorded(self) -> int:
        return sum(self.recorded.values())

    @property
    def total_dropped(self) -> int:
        return sum(sum(v.values()) for v in self.dropped.values())

    @property
    def lost(self) -> dict[str, int]:
        """Events lost to faults (the :data:`LOSS_REASONS`), by reason; not those a sampling stage,
        filter or rate limiter left out on purpose."""
        return {r: sum(k.values()) for r, k in sorted(self.dropped.items()) if r in LOSS_REASONS}

    def headline(self) -> str:
        """One line for the trace's stats slice, where users look: ``tracebridge: 64 events recorded,
        936 lost (queue_full)``, then what was left out on purpose (sampling, filters, rate limits) or
        not recorded for another reason than a fault, by reason."""
        text = f"tracebridge: {self.total_recorded:,} events recorded"
        lost = self.lost
        left_out = {r: sum(k.values()) for r, k in sorted(self.dropped.items()) if r not in lost}
        for what, counts in (("lost", lost), ("left out", left_out)):
            total = sum(counts.values())
            if total:
                reasons = ", ".join(f"{r} {n:,}" if len(counts) > 1 else r for r, n in counts.items() if n)
                text += f", {total:,} {what} ({reasons})"
        return text

    def merge(self, other: Stats) -> Stats:
        """The stats of two sessions together (the processes of a merged trace): counts added up."""
        return Stats.from_dict(_added(self.as_dict(), other.as_dict()))

    @classmethod
    def total(cls, parts: list[Stats]) -> Stats:
        """The stats of many sessions together, in time linear in what they hold (``merge`` one after
        another would copy the growing total each time)."""
        total: dict[str, Any] = {}
        for part in parts:
            _add_into(total, part.as_dict())
        return cls.from_dict(total)

    def count_drop(self, reason: str, kind: str, n: int = 1) -> None:
        by_kind = self.dropped.setdefault(reason, {})
        by_kind[kind] = by_kind.get(kind, 0) + n

    def as_dict(self) -> dict[str, Any]:
        return {
            "recorded": dict(self.recorded),
            "dropped": {r: dict(k) for r, k in self.dropped.items()},
            "open_activities": self.open_activities,
            "sanitized": self.sanitized,
            "scrubbed": self.scrubbed,
            "internal_errors": self.internal_errors,
            "sampling": self.sampling,
            "demoted": dict(self.demoted),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Stats:
        return cls(
            recorded={str(k): int(v) for k, v in dict(d.get("recorded", {})).items()},
            dropped={
                str(r): {str(k): int(v) for k, v in dict(by).items()}
                for r, by in dict(d.get("dropped", {})).items()
            },
            open_activities=int(d.get("open_activities", 0)),
            sanitized=int(d.get("sanitized", 0)),
            scrubbed=int(d.get("scrubbed", 0)),
            internal_errors=int(d.get("internal_errors", 0)),
            sampling=dict(d.get("sampling") or {}),
            demoted={str(k): int(v) for k, v in dict(d.get("demoted") or {}).items()},
        )


def _add_into(total: dict[str, Any], d: dict[str, Any]) -> None:
    """Add the stats tree ``d`` into ``total`` in place (as :func:`_added` adds two)."""
    for k, v in d.items():
        mine = total.get(k)
        if isinstance(v, dict):
            if not isinstance(mine, dict):
                if k in total:
                    continue  # (the first's value stays, as _added keeps it)
                mine = total[k] = {}
            _add_into(mine, v)
        elif k not in total:
            total[k] = v
        else:
            total[k] = _added(mine, v)


def _added(a: Any, b: Any) -> Any:
    """Two stats trees with their numbers added up (keys of either; otherwise the first's value)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return {k: _added(a[k], b[k]) if k in a and k in b else a.get(k, b.get(k)) for k in {**a, **b}}
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return a + b
    return a


@dataclass(frozen=True)
class ThreadInfo:
    """The thread (and process) a batch of records came from."""

    pid: int
    tid: int
    name: str


# Names of the debug annotations (Perfetto) and arguments (Chrome JSON) that carry tracebridge's own
# fields beside the metadata; readers take them back out, so metadata should not use these keys.
LEVEL_KEY: Final = "tb.level"
ADJUSTED_COUNT_KEY: Final = "tb.adjusted_count"
ERROR_TYPE_KEY: Final = "exception.type"
ERROR_MESSAGE_KEY: Final = "exception.message"
ERROR_CAUSE_KEY: Final = "exception.cause"
#: A failure's back-trace as text (OpenTelemetry's name for it): every UI shows it, whatever its version
#: makes of the Perfetto callstack; derived from the error, so readers drop it.
ERROR_STACKTRACE_KEY: Final = "exception.stacktrace"
#: The most characters of that text (its end is kept: the innermost frames and the exception).
MAX_STACKTRACE_TEXT: Final = 8192
RESERVED_KEYS: Final = frozenset(
    {LEVEL_KEY, ADJUSTED_COUNT_KEY, ERROR_TYPE_KEY, ERROR_MESSAGE_KEY, ERROR_CAUSE_KEY, ERROR_STACKTRACE_KEY}
)
#: A log message's format string (``logger.info("order %d", n)``: ``"order %d"``). In Perfetto the log's
#: slice is named after it (so that the messages of one statement share a name), the message is the body.
MESSAGE_TEMPLATE_KEY: Final = "message_template"
#: The track of the slice that spans the session and holds its stats (:meth:`Stats.headline` names it).
STATS_TRACK: Final = "tracebridge"
#: The category of that slice.
STATS_CATEGORY: Final = "tracebridge.stats"
#: ``configure(runtime=True)``: the track of the garbage collector's pauses (one slice per collection)
#: and their category, by which trace lines know them.
GC_TRACK: Final = "GC"
GC_CATEGORY: Final = "python.gc"
#: Drop reasons that are losses (faults), as opposed to what sampling stages and filters leave out.
LOSS_REASONS: Final = frozenset(
    {
        "queue_full",
        "writer_stalled",
        "sink_error",
        "stop_timeout",
        "memory_cap",
        "outside_session",
        "other_file",
        "internal_error",
    }
)
#: The category of the instants that mark where a thread's events went missing (see :class:`Loss`).
LOSS_CATEGORY: Final = "tracebridge.loss"


@dataclass
class Loss:
    """Events of one thread that never reached the trace file, just before the batch it comes with:
    how many, by reason (``queue_full``, ``writer_stalled``, ``sink_error``, ...), and when (trace
    clock: the first and the last of them, as far as known).

    A sink marks the place with an instant on the thread's track (:meth:`marker`) and makes sure that
    what follows on the thread's sequence does not depend on anything written before the gap.
    """

    dropped: dict[str, int]
    first_ns: int
    last_ns: int

    @property
    def total(self) -> int:
        return sum(self.dropped.values())

    def merge(self, other: Loss | None) -> Loss:
        if other is None:
            return self
        dropped = dict(self.dropped)
        for reason, n in other.dropped.items():
            dropped[reason] = dropped.get(reason, 0) + n
        return Loss(dropped, min(self.first_ns, other.first_ns), max(self.last_ns, other.last_ns))

    def marker(self, thread: ThreadInfo) -> Event:
        """The instant that shows the gap in a trace: ``tracebridge: 1,234 events dropped
        (queue_full)``, at the first lost event's time."""
        reasons = ", ".join(
            f"{r} {n:,}" if len(self.dropped) > 1 else r for r, n in sorted(self.dropped.items())
        )
        return Event(
            "instant",
            f"tracebridge: {self.total:,} events dropped ({reasons})",
            self.first_ns,
            self.first_ns,
            metadata={"dropped": dict(self.dropped), "until_ns": self.last_ns},
            thread_id=thread.tid,
            thread_name=thread.name,
            categories=(LOSS_CATEGORY,),
        )

    @classmethod
    def from_marker(cls, ev: Event) -> Loss | None:
        """The loss an instant read back from a file marks, if it is such a marker."""
        if ev.kind != "instant" or LOSS_CATEGORY not in ev.categories:
            return None
        dropped = ev.metadata.get("dropped")
        until = ev.metadata.get("until_ns", ev.start_ns)
        if not isinstance(dropped, dict) or not isinstance(until, int):
            return None
        try:
            counts = {str(r): int(n) for r, n in dropped.items()}
        except (TypeError, ValueError):
            return None
        return cls(counts, ev.start_ns, until)


class SpanRecord:
    """A span as sources record it: filled in on the application's thread, read on the writer's.

    :class:`tracebridge.spans.Span` adds the context-manager behaviour. The writer turns records into
    :class:`Event` objects.
    """

    __slots__ = (
        "_span_id",
        "_trace_id",
        "adjusted_count",
        "end_ns",
        "error",
        "level",
        "metadata",
        "name",
        "overlapping",
        "parent",
        "start_ns",
    )
    kind: Final = "span"
    #: Kept by sampling (the dropped-span subclass says False): children of ParentBased follow it.
    sampled: bool = True
    #: Its beginning was written while it ran (see :attr:`Event.begun`); subclasses say True.
    begun: bool = False

    name: Any  # str, or a callable giving it (resolved before the record is queued)
    level: int
    metadata: dict[str, Any] | None
    start_ns: int
    end_ns: int
    error: ErrorInfo | None
    parent: SpanRecord | None
    overlapping: bool
    adjusted_count: float
    _trace_id: int
    _span_id: int

    @classmethod
    def of(
        cls,
        name: str,
        level: int,
        start_ns: int,
        end_ns: int | None,
        *,
        parent: SpanRecord | None = None,
        error: ErrorInfo | None = None,
        overlapping: bool = False,
        trace_id: int = 0,
        span_id: int = 0,
    ) -> Any:
        """A span record made whole by a source other than the span API (an OpenTelemetry span, an
        instrumented call timed after the fact); ``end_ns`` ``None``: begun only."""
        rec = object.__new__(cls)
        rec.name = name
        rec.level = level
        rec.metadata = None
        rec.start_ns = start_ns
        rec.end_ns = end_ns  # type: ignore[assignment]
        rec.error = error
        rec.parent = parent
        rec.overlapping = overlapping
        rec.adjusted_count = 1.0
        rec._trace_id = trace_id
        rec._span_id = span_id
        return rec

    # Ids (0 until made) are made the first time something asks (a log record, a sampler, the writer),
    # not when the span begins: most spans never need them on the application's thread. A lock makes
    # the first id the only one, whichever threads ask at once.
    @property
    def trace_id(self) -> int:
        """128-bit W3C trace id: the root span's, made at random."""
        tid = self._trace_id
        if tid:
            return tid
        parent = self.parent
        made = parent.trace_id if parent is not None else new_trace_id()
        with _id_lock:
            if not self._trace_id:
                self._trace_id = made
            return self._trace_id

    @trace_id.setter
    def trace_id(self, value: int) -> None:
        self._trace_id = value

    @property
    def span_id(self) -> int:
        """64-bit W3C span id, made at random."""
        sid = self._span_id
        if sid:
            return sid
        made = new_span_id()
        with _id_lock:
            if not self._span_id:
                self._span_id = made
            return self._span_id

    @span_id.setter
    def span_id(self, value: int) -> None:
        self._span_id = value

    @property
    def ids_made(self) -> tuple[int, int]:
        """The trace and span ids as far as something asked for them (0 for one never made); reading
        this makes none (a trace file keeps only the ids the application asked for)."""
        return self._trace_id, self._span_id


_id_lock = threading.Lock()


#: Where the code of a span name is, for names that stand for one function (auto-instrumented calls):
#: name -> (file, first line, function). The writer adds it to the span's events as ``code.filepath``,
#: ``code.lineno`` and ``code.function``, so that calls carry no metadata of their own.
CODE_LOCATIONS: dict[str, tuple[str, int, str]] = {}


class Deferred:
    """A record that sources queue as they have it and the writer thread converts: ``materialize``
    gives the records it stands for (none when it is dropped). Sources whose objects are immutable
    once queued (OpenTelemetry's ended spans) save the application's thread the conversion."""

    __slots__ = ()
    kind: str = "span"

    def materialize(self, session: Any) -> list[Any]:  # pragma: no cover - subclasses define it
        raise NotImplementedError


def new_trace_id() -> int:
    return random.getrandbits(128) or 1


def new_span_id() -> int:
    return random.getrandbits(64) or 1


class Record:
    """An instant, counter sample, activity or log message as sources record it."""

    __slots__ = (
        "adjusted_count",
        "end_ns",
        "error",
        "kind",
        "level",
        "metadata",
        "name",
        "parent",
        "source",
        "span_id",
        "start_ns",
        "thread",
        "trace_id",
        "value",
    )

    def __init__(
        self,
        kind: EventKind,
        name: str,
        start_ns: int,
        end_ns: int | None,
        level: int,
        metadata: dict[str, Any] | None,
        value: float | int | None = None,
        source: Frame | None = None,
        error: ErrorInfo | None = None,
        trace_id: int = 0,
        span_id: int = 0,
    ) -> None:
        self.kind = kind
        self.name = name
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.level = level
        self.metadata = metadata
        self.value = value
        self.source = source
        self.error = error
        self.trace_id = trace_id
        self.span_id = span_id
        self.adjusted_count = 1.0
        self.parent: Any = None  # the span current when it happened (sampling follows it)
        #: Activities: the thread that began them (they are written under it if they never end).
        self.thread: ThreadInfo | None = None


class TraceReadError(Exception):
    """A file is missing, is not a trace, or cannot be read as one."""


@dataclass(frozen=True)
class ReadLimits:
    """What reading a trace may cost, whatever the file holds (a hostile file, a zip bomb): past a limit
    the reader stops with one problem that names it (``tracebridge`` commands take a flag for each).
    Time and memory stay linear in the file's size.

    tracebridge's own traces inflate 6.5 to 8.3 times (zlib level 1) and hold 0.4 to 0.55 packets per
    byte of file: the defaults leave room for other writers' (and 4 to 10 times tracebridge's)."""

    #: One record of the file (a ``Trace.packet``) may be at most this long: a longer one is corrupt.
    max_packet_size: int = 256 << 20
    #: One ``compressed_packets`` record may inflate to at most this many bytes.
    max_inflated_packet: int = 16 << 20
    #: All ``compressed_packets`` of a file together may inflate to at most this many times the file's
    #: size (and 1 MiB whatever the size).
    max_inflate_ratio: int = 64
    #: A file may hold at most this many packets (compressed ones included) per byte of file (and 16,384
    #: whatever the size).
    max_packets_per_byte: int = 2

    def __post_init__(self) -> None:
        for name in ("max_packet_size", "max_inflated_packet", "max_inflate_ratio", "max_packets_per_byte"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"ReadLimits.{name} must be a whole number of 1 or more, got {value!r}")


#: How many offsets a problem keeps (and prints) of the places it occurs.
MAX_OFFSETS = 5


@dataclass
class Problem:
    """Something wrong in a trace file. For Perfetto traces ``code`` is the name of the trace_processor
    stat that would count it (``misplaced_end_event``, ``clock_sync_failure``, ...)."""

    code: str
    message: str
    offset: int = -1
    #: How many times the file has it (the message and offset are the first one's).
    count: int = 1
    #: Events that the problem keeps out of Perfetto (a skipped packet's slice, instant or counter).
    events: int = 0
    #: Where the first few of them are (bytes into the file).
    offsets: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.offset >= 0 and not self.offsets:
            self.offsets.append(self.offset)

    def __str__(self) -> str:
        shown = ", ".join(str(o) for o in self.offsets[:MAX_OFFSETS])
        more = ", ..." if self.count > len(self.offsets[:MAX_OFFSETS]) else ""
        where = f" (first at bytes {shown}{more})" if self.count > 1 else f" (at byte {self.offset})"
        text = f"{self.code}: {self.message}{where if self.offset >= 0 else ''}"
        if self.count > 1:
            text += f"; {self.count:,} times"
        if self.events:
            text += f"; hides {self.events:,} events"
        return text


class EventSink(Protocol):
    """Takes a trace's events as reading completes each one, instead of a list (a trace read in bounded
    memory: :func:`tracebridge.read_trace` with ``sink=``): instants, logs and counter samples as they
    come, a slice when it ends (or, if it never does, at the end of the trace, with ``self_ns`` ``None``).
    Perfetto traces give them in time order; the order is not part of the contract.

    ``self_ns``: a slice's duration less its children's on the same track; ``covered_ns``: its children's
    (those that ended) on the same track, whether or not it ended itself; ``depth``: how many slices
    enclose it there (``-1`` for events that are not slices).
    """

    def event(self, ev: Event, self_ns: int | None, depth: int, covered_ns: int) -> None: ...


@dataclass
class TraceFile:
    """What reading a trace file found: its events (in start order), the session's stats if the file
    holds them, problems (import errors) and notes (things worth saying that are not errors)."""

    format: str
    events: list[Event] = field(default_factory=list)
    stats: Stats | None = None
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    pid: int = 0
    process_name: str = ""
    #: Every process of the trace (its own first, then child processes appended to it): pid -> name.
    processes: dict[int, str] = field(default_factory=dict)
    packets: int = 0
    size: int = 0
    #: Bytes at the end that do not form a complete record (a trace cut off by a killed process).
    truncated_bytes: int = 0
    #: The file could not be read past a point (not a trace, a malformed record, a limit of
    #: :class:`ReadLimits`): :attr:`fatal_problem` says which.
    fatal: bool = False
    fatal_problem: Problem | None = None
    #: The instants that mark where a thread's events went missing, in time order (not in ``events``;
    #: :meth:`Loss.from_marker` reads one).
    losses: list[Event] = field(default_factory=list)
    #: Perfetto traces: the events the file holds (slices, instants, counter samples, log messages;
    #: not tracebridge's own stats and loss markers), and how many of them Perfetto's importer would show
    #: (the rest are in skipped packets).
    file_events: int = 0
    shown_events: int = 0
    #: When the session began and ended (trace clock), as its stats slice says; ``None`` when the file
    #: has no such slice.
    session_ns: tuple[int, int] | None = None

    def unreadable(self, partial: bool = True) -> str | None:
        """Why this is not a usable trace, in a few words, or ``None``. ``partial``: a file that stops
        making sense after some events still counts as usable (its problems say where it stopped)."""
        if self.format == "perfetto" and self.packets == 0 and not self.fatal:
            return "truncated: no complete packet" if self.truncated_bytes else "no packets"
        if self.fatal and (not partial or not (self.events or self.shown_events)):
            problem = self.fatal_problem or (self.problems[0] if self.problems else None)
            if problem is None:
                return "not a readable trace"
            where = f" at byte {problem.offset:,}" if problem.offset >= 0 else ""
            return f"unreadable{where}: {problem.code}: {problem.message}"
        return None

"""Streaming Perfetto protobuf writer.

Layout of a file (Perfetto's ``TracePacket`` format; the field numbers are in ``protos/``):

* sequence 1, the writer's own: the process track descriptor and a clock snapshot (BOOTTIME, MONOTONIC,
  REALTIME) first; at the end, the session as a slice on a track of its own ("tracebridge"), from its start
  to its end, named after what it recorded and lost, with the stats as arguments.
* one sequence per application thread: its thread track descriptor (with ``SEQ_INCREMENTAL_STATE_CLEARED``
  and defaults: incremental clock 64, the thread's track), a clock snapshot that starts clock 64, then
  events with delta timestamps and interned names, categories, annotation names, source locations and
  log bodies. An event earlier than the previous one on its sequence gets an absolute BOOTTIME timestamp.

Every write appends whole ``Trace.packet`` records, so every prefix of the file that ends on a record
boundary is a valid trace (a killed process leaves a readable file).
"""

from __future__ import annotations

import math
import os
import random
import sys
import time
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

from ..._accel import speedups
from ..._model import (
    ADJUSTED_COUNT_KEY,
    ERROR_CAUSE_KEY,
    ERROR_MESSAGE_KEY,
    ERROR_STACKTRACE_KEY,
    ERROR_TYPE_KEY,
    LEVEL_KEY,
    MAX_STACKTRACE_TEXT,
    MESSAGE_TEMPLATE_KEY,
    STATS_CATEGORY,
    STATS_TRACK,
    ErrorInfo,
    Event,
    Frame,
    Loss,
    Stats,
    ThreadInfo,
    as_event,
    trace_clock_ns,
)
from ..._sanitize import Counts, Limits, scrub_argv
from .._files import AppendOnlyFile, Lanes, renewed
from .schema import (
    A_ARRAY,
    A_BOOL,
    A_DICT,
    A_DOUBLE,
    A_INT,
    A_JSON,
    A_NAME,
    A_NAME_IID,
    A_STRING,
    A_UINT,
    ACTIVITY_TRACK_DESCRIPTION,
    BOOTTIME,
    C_ID,
    C_INCREMENTAL,
    C_TIMESTAMP,
    CALLSTACK_FRAMES,
    CD_UNIT,
    CD_UNIT_NAME,
    CLEARED,
    COUNTER,
    COUNTER_UNITS,
    CS_CLOCKS,
    CS_PRIMARY,
    D_CLOCK_ID,
    D_TRACK_EVENT_DEFAULTS,
    E_ANNOTATIONS,
    E_CALLSTACK,
    E_CATEGORIES,
    E_CATEGORY_IIDS,
    E_CORRELATION_STR,
    E_COUNTER,
    E_DOUBLE_COUNTER,
    E_FLOWS,
    E_LOG,
    E_NAME,
    E_NAME_IID,
    E_SOURCE_LOCATION_IID,
    E_TERMINATING_FLOWS,
    E_TRACK,
    E_TYPE,
    FR_FILE,
    FR_FUNCTION,
    FR_LINE,
    I_ANNOTATION_NAMES,
    I_CATEGORIES,
    I_LOG_BODIES,
    I_NAMES,
    I_SOURCE_LOCATIONS,
    INCREMENTAL_CLOCK,
    INSTANT,
    INTERNED_IID,
    INTERNED_NAME,
    LOG_BODY,
    LOG_PRIO,
    LOG_SOURCE,
    MONOTONIC,
    NAMED_ACTIVITY_TRACK_DESCRIPTION,
    NEEDS_STATE,
    OVERLAP_TRACK_DESCRIPTION,
    P_CLOCK_ID,
    P_CLOCK_SNAPSHOT,
    P_COMPRESSED,
    P_DEFAULTS,
    P_FIRST_ON_SEQUENCE,
    P_FLAGS,
    P_INTERNED,
    P_PREVIOUS_DROPPED,
    P_SEQUENCE_ID,
    P_TIMESTAMP,
    P_TRACK_DESCRIPTOR,
    P_TRACK_EVENT,
    PD_CMDLINE,
    PD_NAME,
    PD_PID,
    REALTIME,
    SL_FILE,
    SL_FUNCTION,
    SL_LINE,
    SLICE_BEGIN,
    SLICE_END,
    STATS_TRACK_DESCRIPTION,
    TD_COUNTER,
    TD_DESCRIPTION,
    TD_NAME,
    TD_PARENT,
    TD_PROCESS,
    TD_THREAD,
    TD_UUID,
    TED_TRACK_UUID,
    THD_NAME,
    THD_PID,
    THD_TID,
    frame,
)
from .wire import Field, message, varint

TYPE_BEGIN = E_TYPE.uint(SLICE_BEGIN)
TYPE_END = E_TYPE.uint(SLICE_END)
TYPE_INSTANT = E_TYPE.uint(INSTANT)
TYPE_COUNTER = E_TYPE.uint(COUNTER)
FLAGS_NEEDS = P_FLAGS.uint(NEEDS_STATE)
TRACK_EVENT_TAG = P_TRACK_EVENT.len_tag
ANNOTATION_TAG = E_ANNOTATIONS.len_tag
ABSOLUTE_CLOCK = P_CLOCK_ID.uint(BOOTTIME)
STRING_TAG = A_STRING.len_tag

if speedups is not None:  # the wire tags the compiled loop writes, from the schema
    speedups.configure(
        (
            P_TIMESTAMP.varint_tag,
            ABSOLUTE_CLOCK,
            TYPE_BEGIN,
            TYPE_INSTANT,
            TRACK_EVENT_TAG,
            ANNOTATION_TAG,
            STRING_TAG,
            A_BOOL.varint_tag,
            A_INT.varint_tag,
            A_UINT.varint_tag,
            A_DOUBLE.fixed64_tag,
            E_SOURCE_LOCATION_IID.varint_tag,
            E_NAME_IID.varint_tag,
            P_INTERNED.len_tag,
            I_NAMES.len_tag,
            I_LOG_BODIES.len_tag,
            INTERNED_IID.varint_tag,
            INTERNED_NAME.len_tag,
            E_LOG.len_tag,
            LOG_SOURCE.varint_tag,
            LOG_BODY.varint_tag,
            LOG_PRIO.varint_tag,
            E_FLOWS.fixed64_tag,
            E_TERMINATING_FLOWS.fixed64_tag,
            E_CORRELATION_STR.len_tag,
        )
    )

#: Writes of at least COMPRESS_MIN bytes of packets go into ``compressed_packets`` records holding at
#: most COMPRESS_CHUNK bytes each (trace_processor's limit is 512 KiB); zlib level 1 is the fastest and
#: already shrinks typical traces about threefold.
COMPRESS_MIN = 1024
COMPRESS_CHUNK = 256 * 1024
COMPRESS_LEVEL = 1
#: Interning tables are cleared (a new generation) when a sequence has interned this many entries.
MAX_INTERNED = 20_000
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
_UINT64_MAX = (1 << 64) - 1
#: OpenTelemetry's code.* attributes: written as the event's interned source location.
CODE_FILE, CODE_LINE, CODE_FUNCTION = "code.filepath", "code.lineno", "code.function"
CODE_KEYS = frozenset({CODE_FILE, CODE_LINE, CODE_FUNCTION})


def new_uuid() -> int:
    return random.getrandbits(63) | 1


def encode_value(value: Any) -> bytes:
    """The value fields of a DebugAnnotation for a sanitized metadata value."""
    t = type(value)
    if t is str:
        if value.isascii():
            data: bytes = value.encode()
            return STRING_TAG + varint(len(data)) + data
        return A_STRING.string(value)
    if t is bool:
        return A_BOOL.boolean(value)
    if t is int:
        if _INT64_MIN <= value <= _INT64_MAX:
            return A_INT.uint(value)
        if 0 <= value <= _UINT64_MAX:
            return A_UINT.uint(value)
        return A_STRING.string(str(value))
    if t is float:
        return A_DOUBLE.double(value)
    if value is None:
        # No value field at all: trace_processor imports it as a null argument (it cannot parse JSON
        # null in legacy_json_value: its JSON importer aborts).
        return b""
    if t is dict:
        if not value:
            return A_JSON.string("{}")
        return b"".join(message(A_DICT, A_NAME.string(k), encode_value(v)) for k, v in value.items())
    if t is list:
        if not value:
            return A_JSON.string("[]")
        return b"".join(message(A_ARRAY, encode_value(v)) for v in value)
    return A_STRING.string(repr(value))


class _Sequence:
    """One packet sequence: a thread's events, its interning tables and its incremental clock."""

    def __init__(self, writer: PerfettoWriter, seq_id: int, thread: ThreadInfo) -> None:
        self.writer = writer
        self.seq_id = seq_id
        self.seq_bytes = P_SEQUENCE_ID.uint(seq_id)
        self.thread = thread
        self.track_uuid = new_uuid()
        self.last_ts = -1
        self.started = False
        self.started_once = False
        self.first = True
        self.pending_drop = False
        self.names: dict[str, int] = {}
        self.categories: dict[str, int] = {}
        self.annotation_names: dict[str, int] = {}
        self.sources: dict[tuple[str, str, int], int] = {}
        self.bodies: dict[str, int] = {}
        # Encoded fields that refer to interned entries, by text: what most packets are made of.
        self.name_refs: dict[str, bytes] = {}
        self.annotation_refs: dict[str, bytes] = {}
        self.category_refs: dict[str, bytes] = {}
        self.level_annotations: dict[int, bytes] = {}
        self.seq_bytes_needs = self.seq_bytes + FLAGS_NEEDS
        self.end_tail = P_TRACK_EVENT.bytes_(TYPE_END) + self.seq_bytes_needs

    # -- incremental state -------------------------------------------------------------------------

    def reset(self, ts: int) -> bytes:
        """Packets that (re)start the sequence's incremental state with clock 64 at ``ts``."""
        for table in (
            self.names,
            self.categories,
            self.annotation_names,
            self.sources,
            self.bodies,
            self.name_refs,
            self.annotation_refs,
            self.category_refs,
            self.level_annotations,
        ):
            table.clear()
        thread = self.thread
        desc = (
            TD_UUID.uint(self.track_uuid)
            + TD_PARENT.uint(self.writer.process_uuid)
            + message(
                TD_THREAD,
                THD_PID.uint(thread.pid),
                THD_TID.uint(thread.tid),
                THD_NAME.string(thread.name),
            )
        )
        defaults = message(
            P_DEFAULTS,
            D_CLOCK_ID.uint(INCREMENTAL_CLOCK),
            message(D_TRACK_EVENT_DEFAULTS, TED_TRACK_UUID.uint(self.track_uuid)),
        )
        first = P_FIRST_ON_SEQUENCE.boolean(True) if self.first else b""
        self.first = False
        # A loss is reported on the packet that clears the state: trace_processor then counts it without
        # invalidating the sequence (a loss marker on a packet that does not clear would hide every
        # later packet of the sequence that needs interned data).
        lost = P_PREVIOUS_DROPPED.boolean(True) if self.pending_drop else b""
        self.pending_drop = False
        head = frame(
            P_TRACK_DESCRIPTOR.bytes_(desc) + self.seq_bytes + P_FLAGS.uint(CLEARED) + defaults + first + lost
        )
        snapshot = message(
            P_CLOCK_SNAPSHOT,
            message(CS_CLOCKS, C_ID.uint(BOOTTIME), C_TIMESTAMP.uint(ts)),
            message(
                CS_CLOCKS, C_ID.uint(INCREMENTAL_CLOCK), C_TIMESTAMP.uint(ts), C_INCREMENTAL.boolean(True)
            ),
        )
        self.last_ts = ts
        self.started = self.started_once = True
        return head + frame(snapshot + self.seq_bytes)

    def _interned_total(self) -> int:
        return (
            len(self.names)
            + len(self.categories)
            + len(self.annotation_names)
            + len(self.sources)
            + len(self.bodies)
        )

    # -- events ------------------------------------------------------------------------------------

    def encode(self, events: Sequence[Event], marker: Event | None = None) -> list[bytes]:
        """The framed packets for a batch of this thread's events, after ``marker`` (a loss's) if given.
        (Compiled: one bytes-like PacketRun holding them all, which ``_join_chunks`` cuts between them.)"""
        if speedups is not None:  # the same steps, compiled (None: a timestamp beyond its int64 range)
            packets: list[bytes] | None = speedups.encode_events(self, events, marker)
            if packets is not None:
                return packets
            # (compact events, in a list or the compiled EventBatch: see PerfettoWriter.takes_compact)
            events = [as_event(ev) for ev in events]
        if marker is not None:
            events = [marker, *events]
        # Sort key: time; then ends before begins (a slice that ends where the next begins); of two
        # slices that begin together the longer first, of two that end together the later-begun first
        # (so that they nest); a slice of zero duration ends right after it begins. The index breaks the
        # remaining ties (identical intervals), in reverse for ends, so the five leading fields never tie.
        items: list[tuple[int, int, int, int, int, int, Event]] = []
        for idx, ev in enumerate(events):
            kind = ev.kind
            start = ev.start_ns
            if kind == "span" and ev.begun and ev.end_ns is not None:  # its BEGIN is in the file
                items.append((ev.end_ns, 0, -start, -idx, 0, SLICE_END, ev))
            elif kind == "span" or kind == "activity":
                end = ev.end_ns
                items.append((start, 1, -(start if end is None else end), idx, 0, SLICE_BEGIN, ev))
                if end is not None:
                    if end == start:
                        items.append((end, 1, -end, idx, 1, SLICE_END, ev))
                    else:
                        items.append((end, 0, -start, -idx, 0, SLICE_END, ev))
            else:
                items.append((start, 1, -start, idx, 0, COUNTER if kind == "counter" else INSTANT, ev))
        items.sort()
        out: list[bytes] = []
        head = self.restart(items[0][0] if items else None)
        if head is not None:
            out.append(head)
        tracks: dict[int, int] = {}  # id(event) -> track uuid, for the END of a slice
        for ts, _, _, _, _, phase, ev in items:
            out.append(self._packet(ts, phase, ev, tracks))
        return out

    def restart(self, first: int | None) -> bytes | None:
        """The packets that start the sequence's incremental state afresh, when a batch whose first
        timestamp is ``first`` needs them (the first batch, after a loss, or tables grown too big)."""
        if self.started and self._interned_total() <= MAX_INTERNED:
            return None
        # A restarted clock must not go back in time (trace_processor rejects such a snapshot): events
        # before it take absolute timestamps.
        ts = first if first is not None else self.writer.start_ts
        return self.reset(max(ts, self.last_ts) if self.started_once else ts)

    def _packet(self, ts: int, phase: int, ev: Event, tracks: dict[int, int]) -> bytes:
        last = self.last_ts
        if ts >= last:
            head = P_TIMESTAMP.varint_tag + varint(ts - last)
            self.last_ts = ts
        else:
            head = P_TIMESTAMP.varint_tag + varint(ts) + ABSOLUTE_CLOCK
        if phase == SLICE_END:
            uuid = tracks.pop(id(ev), 0)
            if ev.begun:
                return self._late_end(head, ev)
            if uuid:
                return frame(head + self._tail(TYPE_END + E_TRACK.uint(uuid), []))
            packet = head + self.end_tail
            return b"\x0a" + varint(len(packet)) + packet
        interned: list[bytes] = []
        if phase == COUNTER:
            value = ev.value
            if type(value) is int and _INT64_MIN <= value <= _INT64_MAX:
                v = E_COUNTER.uint(value)
            else:
                v = E_DOUBLE_COUNTER.double(float(value) if value is not None else math.nan)
            te = TYPE_COUNTER + E_TRACK.uint(self.writer.counter_track(ev.name, ev.unit)) + v
            return frame(head + self._tail(te, interned))
        if ev.track is None and not ev.overlapping and ev.kind != "activity":
            parts = [TYPE_BEGIN if phase == SLICE_BEGIN else TYPE_INSTANT]
        else:
            uuid = self._track_for(ev)
            if phase == SLICE_BEGIN:
                tracks[id(ev)] = uuid
            parts = [TYPE_BEGIN if phase == SLICE_BEGIN else TYPE_INSTANT, E_TRACK.uint(uuid)]
        name, md = ev.name, ev.metadata
        if ev.kind == "log":  # named after its template (interned once), the message is the body
            template = md.get(MESSAGE_TEMPLATE_KEY)
            if type(template) is str and template and template != name:
                name = template
                md = {k: v for k, v in md.items() if k != MESSAGE_TEMPLATE_KEY}
        ref = self.name_refs.get(name)
        if ref is None:
            ref = self.name_refs[name] = E_NAME_IID.uint(self._intern(self.names, name, I_NAMES, interned))
        parts.append(ref)
        for cat in ev.categories:
            ref = self.category_refs.get(cat)
            if ref is None:
                iid = self._intern(self.categories, cat, I_CATEGORIES, interned)
                ref = self.category_refs[cat] = E_CATEGORY_IIDS.uint(iid)
            parts.append(ref)
        if ev.level != 1:
            ann = self.level_annotations.get(ev.level)
            if ann is None:
                ann = self.level_annotations[ev.level] = self._annotation(LEVEL_KEY, ev.level, interned)
            parts.append(ann)
        if ev.adjusted_count != 1.0:
            parts.append(self._annotation(ADJUSTED_COUNT_KEY, float(ev.adjusted_count), interned))
        refs = self.annotation_refs
        if CODE_FILE in md:  # where the code is (instrumented calls): an interned source location
            file, line, function = md[CODE_FILE], md.get(CODE_LINE), md.get(CODE_FUNCTION, "")
            if type(file) is str and type(line) is int and type(function) is str:
                parts.append(E_SOURCE_LOCATION_IID.uint(self._source(file, function, line, interned)))
                md = {k: v for k, v in md.items() if k not in CODE_KEYS}
        for key, value in md.items():
            ref = refs.get(key)
            if ref is None:
                ref = refs[key] = A_NAME_IID.uint(
                    self._intern(self.annotation_names, key, I_ANNOTATION_NAMES, interned)
                )
            body = ref + encode_value(value)
            parts.append(ANNOTATION_TAG + varint(len(body)) + body)
        if ev.error is not None:
            parts += self._error(ev.error, interned)
        if ev.flows:
            parts.extend(E_FLOWS.fixed64(fid) for fid in ev.flows)
        if ev.terminating_flows:
            parts.extend(E_TERMINATING_FLOWS.fixed64(fid) for fid in ev.terminating_flows)
        if ev.kind == "log":
            parts.append(self._log_message(ev, interned))
        elif ev.trace_id and phase == SLICE_BEGIN:  # the UI relates the slices of one trace by it
            parts.append(E_CORRELATION_STR.string(f"{ev.trace_id:032x}"))
        te = b"".join(parts)
        if interned:
            packet = head + self._tail(te, interned)
        else:
            packet = head + TRACK_EVENT_TAG + varint(len(te)) + te + self.seq_bytes_needs
        return b"\x0a" + varint(len(packet)) + packet

    def _late_end(self, head: bytes, ev: Event) -> bytes:
        """The END of a span whose BEGIN was written while it ran (on its thread's track): it brings
        what was only known at the end, as annotations (trace_processor adds them to the slice)."""
        interned: list[bytes] = []
        parts = [TYPE_END]
        for key, value in ev.metadata.items():
            parts.append(self._annotation(key, value, interned))
        if ev.error is not None:
            parts += self._error(ev.error, interned)
        return frame(head + self._tail(b"".join(parts), interned))

    def _error(self, error: ErrorInfo, interned: list[bytes]) -> list[bytes]:
        """A failure: its type and message as annotations, its back-trace as the callstack and as text."""
        parts = [
            self._annotation(ERROR_TYPE_KEY, error.type, interned),
            self._annotation(ERROR_MESSAGE_KEY, error.message, interned),
        ]
        if error.cause is not None:
            parts.append(self._annotation(ERROR_CAUSE_KEY, error.causes(), interned))
        if error.frames:
            parts.append(message(E_CALLSTACK, *(_frame(f) for f in error.frames)))
            # (the callstack field is unknown to UIs before v53: they show this text)
            text = error.stacktrace(MAX_STACKTRACE_TEXT)
            parts.append(self._annotation(ERROR_STACKTRACE_KEY, text, interned))
        return parts

    def _tail(self, te: bytes, interned: list[bytes]) -> bytes:
        """The rest of a packet after its timestamp: the track event, sequence fields, interned data."""
        out = TRACK_EVENT_TAG + varint(len(te)) + te + self.seq_bytes_needs
        if interned:
            out += P_INTERNED.bytes_(b"".join(interned))
        return out

    def _track_for(self, ev: Event) -> int:
        if ev.kind == "activity":
            if ev.track is not None:
                return self.writer.lane_track(("named activity", ev.track), ev.track, ev.start_ns, ev.end_ns)
            return self.writer.lane_track(("activity", ev.name), ev.name, ev.start_ns, ev.end_ns)
        if ev.track is not None:
            if ev.kind == "span":
                return self.writer.lane_track(("named", ev.track), ev.track, ev.start_ns, ev.end_ns)
            return self.writer.lane_track(("named", ev.track), ev.track, None, None)
        if ev.overlapping:
            return self.writer.lane_track(
                ("overlap", self.thread.tid),
                f"{self.thread.name} (overlapping)",
                ev.start_ns,
                ev.end_ns,
            )
        return 0

    def _intern(self, table: dict[str, int], text: str, field: Field, out: list[bytes]) -> int:
        iid = table.get(text)
        if iid is None:
            iid = len(table) + 1
            table[text] = iid
            out.append(message(field, INTERNED_IID.uint(iid), INTERNED_NAME.string(text)))
        return iid

    def _annotation(self, key: str, value: Any, interned: list[bytes]) -> bytes:
        iid = self._intern(self.annotation_names, key, I_ANNOTATION_NAMES, interned)
        return message(E_ANNOTATIONS, A_NAME_IID.uint(iid), encode_value(value))

    def _source(self, file: str, function: str, line: int, interned: list[bytes]) -> int:
        """The iid of an interned source location."""
        key = (file, function, line)
        iid = self.sources.get(key)
        if iid is None:
            iid = len(self.sources) + 1
            self.sources[key] = iid
            interned.append(
                message(
                    I_SOURCE_LOCATIONS,
                    INTERNED_IID.uint(iid),
                    SL_FILE.string(file),
                    SL_FUNCTION.string(function),
                    SL_LINE.uint(max(0, line)),
                )
            )
        return iid

    def _log_message(self, ev: Event, interned: list[bytes]) -> bytes:
        parts = [LOG_BODY.uint(self._intern(self.bodies, ev.name, I_LOG_BODIES, interned))]
        src = ev.source
        if src is not None:
            parts.append(LOG_SOURCE.uint(self._source(src.file, src.function, src.line, interned)))
        prio = ev.value if isinstance(ev.value, int) and 0 <= ev.value <= 7 else 4
        parts.append(LOG_PRIO.uint(prio))
        return message(E_LOG, *parts)


def _join_chunks(packets: list[bytes], limit: int) -> list[bytes]:
    """The packets joined in runs of at most ``limit`` bytes (a larger packet is a run of its own)."""
    if speedups is not None:
        return speedups.join_chunks(packets, limit)  # type: ignore[no-any-return]
    out: list[bytes] = []
    chunk: list[bytes] = []
    size = 0
    for packet in packets:
        if size + len(packet) > limit and chunk:
            out.append(b"".join(chunk))
            chunk, size = [], 0
        chunk.append(packet)
        size += len(packet)
    if chunk:
        out.append(b"".join(chunk))
    return out


def _frame(f: Frame) -> bytes:
    return message(
        CALLSTACK_FRAMES,
        FR_FUNCTION.string(f.function),
        FR_FILE.string(f.file),
        FR_LINE.uint(max(0, f.line)),
    )


def _process_name() -> str:
    """What the process is: the module of ``python -m module``, else the script's file name."""
    argv: list[str] = list(getattr(sys, "orig_argv", None) or sys.argv)
    if "-m" in argv[:-1]:
        return argv[argv.index("-m") + 1]
    script = next((a for a in sys.argv[:1] if a and a != "-c"), "")
    return os.path.basename(script) or os.path.basename(argv[0] if argv else "") or "python"


class PerfettoWriter:
    """Writes events to a Perfetto protobuf trace file, one sequence per thread.

    Each ``write`` appends the batch's packets (and the track descriptors they need, before them) in one
    write call. A failed write (disk full) is undone: the file is cut back to its last complete packet,
    every sequence starts its incremental state again, and the error is raised so that the caller counts
    the batch as dropped. The file therefore always ends on a packet boundary unless the process dies in
    the middle of a write, which readers tolerate.
    """

    drop_reason = "sink_error"
    #: ``write`` takes compact events (:data:`~tracebridge._model.CompactEvent`) among its events, and
    #: the events as the compiled writer step's EventBatch: it makes no object for a span that needs
    #: nothing else, and the encoder reads it in place. (Not a subclass that writes otherwise: its
    #: ``write`` may read the events.)
    takes_compact = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "write" in cls.__dict__:
            cls.takes_compact = False

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        pid: int | None = None,
        process_name: str | None = None,
        start_ts: int | None = None,
        end_ts: int | None = None,
        compress: bool = True,
        first_sequence: int = 1,
        limits: Limits | None = None,
    ) -> None:
        self.path = os.fspath(path)
        #: The command line written into the trace, its credentials scrubbed (``limits``' key pattern).
        self.counts = Counts()
        argv = list(getattr(sys, "orig_argv", None) or sys.argv)[:64]
        self.cmdline = scrub_argv(argv, limits or Limits(), self.counts)
        self.compress = compress
        self._out = AppendOnlyFile(path)
        self.pid = os.getpid() if pid is None else pid
        self.process_uuid = new_uuid()
        #: When the session began and ended (trace clock), for its stats slice: by default, when the
        #: writer is made and closed (a converted trace passes the original session's).
        self.start_ts = trace_clock_ns() if start_ts is None else start_ts
        self.end_ts = end_ts
        self._pending: list[bytes] = []
        self._sequences: dict[int, _Sequence] = {}
        #: Packet sequence ids: the writer's own first, then one per thread. A child process's writer
        #: starts where its parent's range for it does (see _recorder/children.py), so that its file
        #: appends to the parent's as it is.
        self._next_seq = first_sequence + 1
        self._tracks: dict[Any, tuple[Lanes, list[int]]] = {}
        self._counter_tracks: dict[tuple[str, str | None], int] = {}
        self._descriptors: dict[int, bytes] = {}
        self._described: set[int] = set()
        self._described_now: list[int] = []
        self._own = P_SEQUENCE_ID.uint(first_sequence)
        #: The process's name: written once, with the first events (see _name_process).
        self.process_name = process_name or _process_name()
        self._named = self._named_now = False  # (named in the file; in the write under way)
        self._pending.append(self._preamble())
        self._commit()

    # -- layout ------------------------------------------------------------------------------------

    def _preamble(self) -> bytes:
        """The process (without its name: see :meth:`_name_process`) and the clocks."""
        proc = message(
            TD_PROCESS,
            PD_PID.uint(self.pid),
            *(PD_CMDLINE.string(a) for a in self.cmdline),
        )
        desc = frame(
            P_TRACK_DESCRIPTOR.bytes_(TD_UUID.uint(self.process_uuid) + proc)
            + self._own
            + P_FIRST_ON_SEQUENCE.boolean(True)
        )
        boot, mono, real = _clock_triplet()
        snapshot = frame(
            message(
                P_CLOCK_SNAPSHOT,
                message(CS_CLOCKS, C_ID.uint(BOOTTIME), C_TIMESTAMP.uint(boot)),
                message(CS_CLOCKS, C_ID.uint(MONOTONIC), C_TIMESTAMP.uint(mono)),
                message(CS_CLOCKS, C_ID.uint(REALTIME), C_TIMESTAMP.uint(real)),
                CS_PRIMARY.uint(BOOTTIME),
            )
            + self._own
        )
        return desc + snapshot

    def _process_named(self, name: str) -> bytes:
        proc = message(TD_PROCESS, PD_PID.uint(self.pid), PD_NAME.string(name))
        return frame(P_TRACK_DESCRIPTOR.bytes_(TD_UUID.uint(self.process_uuid) + proc) + self._own)

    def _name_process(self) -> None:
        """Queue the process's name before the first events (once; again after a failed write that
        carried it, as track descriptors are: see :meth:`_commit`). trace_processor up
        to v52 keeps the first name it sees and later versions the last: written once, late enough for
        a source to have named it (an OpenTelemetry resource's ``service.name`` names it as its first
        span ends, before the writer's round that takes that span), both keep the same name."""
        if not self._named:
            self._named = self._named_now = True
            self._pending.append(self._process_named(self.process_name))

    def rename_process(self, name: str) -> None:
        """Name the process ``name``: in the name written with the first events, or, once that is
        written, in a later descriptor (which trace_processor after v52 and tracebridge's reader take)."""
        self.process_name = name
        if self._named:
            self._pending.append(self._process_named(name))

    def _describe(self, uuid: int) -> int:
        """Queue the descriptor of track ``uuid`` unless the file already has it; returns ``uuid``."""
        if uuid not in self._described:
            self._described.add(uuid)
            self._described_now.append(uuid)
            self._pending.append(self._descriptors[uuid])
        return uuid

    def _new_track(self, name: str, *extra: bytes) -> int:
        uuid = new_uuid()
        body = TD_UUID.uint(uuid) + TD_PARENT.uint(self.process_uuid) + TD_NAME.string(name) + b"".join(extra)
        self._descriptors[uuid] = frame(P_TRACK_DESCRIPTOR.bytes_(body) + self._own)
        return uuid

    def lane_track(self, key: Any, name: str, start: int | None, end: int | None) -> int:
        """The uuid of the track for an event on a lane-spread track (named tracks, overlapping spans,
        activities): spans that would cross go on further tracks of the same name."""
        entry = self._tracks.get(key)
        if entry is None:
            entry = (Lanes(), [])
            self._tracks[key] = entry
        lanes, uuids = entry
        lane = 0 if start is None else lanes.place(start, float("inf") if end is None else end)
        while len(uuids) <= lane:
            kind = key[0]
            if kind == "overlap":
                uuids.append(self._new_track(name, TD_DESCRIPTION.string(OVERLAP_TRACK_DESCRIPTION)))
            elif kind == "activity":
                uuids.append(self._new_track(name, TD_DESCRIPTION.string(ACTIVITY_TRACK_DESCRIPTION)))
            elif kind == "named activity":
                uuids.append(self._new_track(name, TD_DESCRIPTION.string(NAMED_ACTIVITY_TRACK_DESCRIPTION)))
            else:
                uuids.append(self._new_track(name))
        return self._describe(uuids[lane])

    def counter_track(self, name: str, unit: str | None) -> int:
        key = (name, unit)
        uuid = self._counter_tracks.get(key)
        if uuid is None:
            if unit is None:
                counter = message(TD_COUNTER)
            elif unit in COUNTER_UNITS:
                counter = message(TD_COUNTER, CD_UNIT.uint(COUNTER_UNITS[unit]))
            else:
                counter = message(TD_COUNTER, CD_UNIT_NAME.string(unit))
            uuid = self._counter_tracks[key] = self._new_track(name, counter)
        return self._describe(uuid)

    # -- sink interface ----------------------------------------------------------------------------

    def _renew_file(self) -> None:
        """The file was deleted or replaced while recording: a new one is made at the path, and the trace
        starts there from its beginning (process, clocks, every sequence's state and track)."""
        if not self._out.renew():
            return
        self._described.clear()
        self._named = False
        for seq in self._sequences.values():
            seq.started = False
            seq.first = True
        self._pending.insert(0, self._preamble())
        renewed(self.path, self._out.renewed)

    def write(self, thread: ThreadInfo, events: list[Event], loss: Loss | None = None) -> int:
        self._renew_file()
        seq = self._sequences.get(thread.tid)
        if seq is None or seq.thread.pid != thread.pid:
            seq = _Sequence(self, self._next_seq, thread)
            self._next_seq += 1
            self._sequences[thread.tid] = seq
        marker = None
        if loss is not None:
            # After a gap the sequence starts its incremental state afresh (with previous_packet_dropped
            # on the packet that clears it), and an instant on the thread's track marks the place.
            seq.started = False
            seq.pending_drop = True
            marker = loss.marker(thread)
        if events or marker is not None:
            self._name_process()
            try:
                # Track descriptors the batch needs are queued while it is encoded, so they precede it.
                self._pending.extend(seq.encode(events, marker))
                self._commit()
            except BaseException:
                # The batch is not in the file (and the sequence's tables may name what never reached
                # it): the next packet of the sequence follows a gap and starts the state afresh.
                seq.started = False
                seq.pending_drop = True
                raise
        return len(events)

    def _commit(self) -> None:
        data = self._compressed() if self.compress else b"".join(self._pending)
        self._pending.clear()
        try:
            self._out.append(data)
        except BaseException:
            # The file is as it was before this write: the sequences start their state afresh and the
            # descriptors written with it will be written again.
            self._described.difference_update(self._described_now)
            self._described_now.clear()
            if self._named_now:
                self._named = self._named_now = False
            for seq in self._sequences.values():
                seq.started = False
            raise
        self._described_now.clear()
        self._named_now = False

    def _compressed(self) -> bytes:
        """The pending packets as ``compressed_packets`` records (zlib, at most COMPRESS_CHUNK bytes of
        packets each), which trace_processor inflates on import. Small writes stay uncompressed: deflate
        would make them larger."""
        chunks = _join_chunks(self._pending, COMPRESS_CHUNK)
        if sum(len(c) for c in chunks) < COMPRESS_MIN:
            return b"".join(chunks)
        return b"".join(frame(P_COMPRESSED.bytes_(zlib.compress(c, COMPRESS_LEVEL))) for c in chunks)

    def flush(self) -> None:
        """Nothing to do: every ``write`` reaches the file before it returns."""

    @property
    def next_sequence(self) -> int:
        """The packet sequence id the writer would use next: every id in the file is below it."""
        return self._next_seq

    def close(self, stats: Stats | None = None, open_activities: Iterable[Event] = ()) -> None:
        if self._out.closed:
            return
        try:
            self._renew_file()
            by_thread: dict[tuple[int, str], list[Event]] = {}
            for ev in open_activities:
                by_thread.setdefault((ev.thread_id, ev.thread_name), []).append(ev)
            for (tid, name), events in by_thread.items():
                self.write(ThreadInfo(self.pid, tid, name), events)
            self._name_process()  # (a trace without events)
            if stats is not None:
                self._pending.append(self._stats_packet(stats))
            self._commit()
        finally:
            self._out.close()

    def _stats_packet(self, stats: Stats) -> bytes:
        """The session as a slice on a track of its own ("tracebridge"), from its start to its end, named
        after what it recorded and lost (:meth:`Stats.headline`), with the stats as arguments: visible at
        every zoom level, and not at the end of a thread's track as if the application had made it."""
        end = max(trace_clock_ns() if self.end_ts is None else self.end_ts, self.start_ts)
        track = self._describe(self._new_track(STATS_TRACK, TD_DESCRIPTION.string(STATS_TRACK_DESCRIPTION)))
        annotations = b"".join(
            message(E_ANNOTATIONS, A_NAME.string(k), encode_value(v)) for k, v in stats.as_dict().items()
        )
        begin = (
            TYPE_BEGIN
            + E_TRACK.uint(track)
            + E_NAME.string(stats.headline())
            + E_CATEGORIES.string(STATS_CATEGORY)
            + annotations
        )
        return b"".join(
            frame(P_TIMESTAMP.uint(ts) + ABSOLUTE_CLOCK + P_TRACK_EVENT.bytes_(te) + self._own)
            for ts, te in ((self.start_ts, begin), (end, TYPE_END + E_TRACK.uint(track)))
        )


def _clock_triplet() -> tuple[int, int, int]:
    return trace_clock_ns(), time.monotonic_ns(), time.time_ns()

"""Reading Perfetto protobuf traces: back to events, and the checks ``tracebridge validate`` reports.

The reader follows trace_processor's rules (its proto importer, ``ProtoTraceReader``): packets are
framed records; incremental state (interning, defaults) is per sequence and starts at
``SEQ_INCREMENTAL_STATE_CLEARED``; a loss (``previous_packet_dropped``) invalidates it until the next
clear; clock 64 is a sequence-scoped incremental clock started by a clock snapshot; track events are
sorted by timestamp (file order breaks ties) before slices are matched on their tracks. Whatever
trace_processor would count as an import problem is recorded as a :class:`Problem` under the name of
trace_processor's stat.
"""

from __future__ import annotations

import io
import json
import operator
import os
import re
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, BinaryIO

from google.protobuf.message import DecodeError

from ..._model import (
    ADJUSTED_COUNT_KEY,
    ERROR_CAUSE_KEY,
    ERROR_MESSAGE_KEY,
    ERROR_STACKTRACE_KEY,
    ERROR_TYPE_KEY,
    LEVEL_KEY,
    MAX_OFFSETS,
    MESSAGE_TEMPLATE_KEY,
    ErrorInfo,
    Event,
    EventSink,
    Frame,
    Loss,
    Problem,
    ReadLimits,
    Stats,
    TraceFile,
    TraceReadError,
)
from . import tracebridge_perfetto_pb2 as pb
from .external_sort import ExternalSort
from .schema import (
    ACTIVITY_TRACK_DESCRIPTION,
    BOOTTIME,
    COUNTER,
    INSTANT,
    NAMED_ACTIVITY_TRACK_DESCRIPTION,
    OVERLAP_TRACK_DESCRIPTION,
    SLICE_BEGIN,
    SLICE_END,
    STATS_TRACK_DESCRIPTION,
    UNIT_NAMES,
)
from .wire import read_varint

MAX_DEPTH = 512
#: Kinds of problem (code and message) listed apart; more are counted on the first of their code.
MAX_PROBLEMS = 100
#: Records held in memory at a time when a trace is streamed to an :class:`EventSink` (the rest wait,
#: sorted, in temporary files: see external_sort.py).
RUN_RECORDS = 100_000
_TracePacket: Any = pb.TracePacket  # type: ignore[attr-defined]


@dataclass(slots=True)
class _Track:
    uuid: int
    name: str = ""
    parent: int = 0
    pid: int | None = None
    tid: int | None = None
    thread_name: str = ""
    description: str = ""
    counter: bool = False
    unit: str | None = None
    process: bool = False
    raw: bytes = b""


@dataclass
class _Seq:
    cleared: bool = False
    default_clock: int | None = None
    default_track: int | None = None
    names: dict[int, str] = field(default_factory=dict)
    categories: dict[int, str] = field(default_factory=dict)
    annotation_names: dict[int, str] = field(default_factory=dict)
    sources: dict[int, Frame] = field(default_factory=dict)
    bodies: dict[int, str] = field(default_factory=dict)
    # clock id -> (last value of the incremental clock, offset to BOOTTIME)
    clocks: dict[int, list[int]] = field(default_factory=dict)


_HEX = frozenset("0123456789abcdef")


@dataclass(slots=True)
class _Raw:
    ts: int
    order: int
    type: int
    track: int
    seq: int
    name: str
    categories: tuple[str, ...]
    metadata: dict[str, Any]
    flows: tuple[int, ...]
    terminating: tuple[int, ...]
    frames: tuple[Frame, ...]
    value: Any = None
    log_body: str | None = None
    log_prio: int | None = None
    log_source: Frame | None = None
    correlation: str = ""
    offset: int = 0


#: A record as a tuple (for sorting on disk) and back: ``_Raw(*_raw_tuple(raw))``.
_raw_tuple = operator.attrgetter(*(f.name for f in fields(_Raw)))


def iter_frames(data: bytes) -> Iterator[tuple[int, int, memoryview]]:
    """The complete ``Trace.packet`` records of ``data`` as (start offset, end offset, packet bytes).
    Stops at the first incomplete or malformed record (the reader's :class:`_Split` says which)."""
    view = memoryview(data)
    pos = 0
    n = len(data)
    while pos < n and data[pos] == 0x0A:
        try:
            length, body = read_varint(data, pos + 1)
        except (IndexError, ValueError):
            return
        end = body + length
        if end > n:
            return
        yield pos, end, view[body:end]
        pos = end


#: A run of empty packets (tag, length 0): they hold nothing, and a file of millions of them reads in
#: one step.
_EMPTY_PACKETS = re.compile(rb"(?:\x0a\x00)+")
#: How much of a file is read at a time.
_CHUNK = 1 << 20


class _Split:
    """Splits bytes into ``Trace.packet`` records for the reader: runs of empty packets are counted
    without a step each, a record longer than the limit or not starting with the packet tag stops it
    (a problem), and ``stop`` says where the last complete record ended."""

    __slots__ = ("empty", "error", "stop", "zeros")

    def __init__(self) -> None:
        self.stop = 0
        self.empty = 0
        self.error = False
        self.zeros = False  # stopped at a zero byte where a packet would begin (a crash's leftover?)

    def records(self, buf: bytes, base: int, reader: _Reader) -> Iterator[tuple[int, memoryview]]:
        view = memoryview(buf)
        pos = 0
        n = len(buf)
        limit = reader.limits.max_packet_size
        while pos < n:
            if buf[pos] == 0:
                self.zeros = True  # (the caller says whether the rest is all zeros)
                break
            if buf[pos] != 0x0A:
                self.error = True
                reader.fail(
                    "trace_tokenizer_errors", f"unexpected byte 0x{buf[pos]:02x}, not a packet", base + pos
                )
                break
            if buf[pos + 1 : pos + 2] == b"\x00":
                run = _EMPTY_PACKETS.match(buf, pos)
                assert run is not None
                self.empty += (run.end() - pos) // 2
                pos = run.end()
                continue
            try:
                length, body = read_varint(buf, pos + 1)
            except IndexError:
                break  # cut off in the record's header
            except ValueError:
                self.error = True
                reader.fail("trace_tokenizer_errors", "bad packet length", base + pos)
                break
            if length > limit:
                self.error = True
                reader.fail(
                    "trace_tokenizer_errors",
                    f"a packet of {length:,} bytes, longer than the limit of {limit:,} (--max-packet-size)",
                    base + pos,
                )
                break
            end = body + length
            if end > n:
                break
            yield base + pos, view[body:end]
            pos = end
        self.stop = pos


def _file_records(f: BinaryIO, reader: _Reader) -> Iterator[tuple[int, memoryview]]:
    """The records of a file, read a piece at a time (memory: one piece, or the longest record)."""
    buf = b""
    base = 0  # the file offset of buf[0]
    need = _CHUNK
    while True:
        chunk = f.read(need)
        eof = not chunk
        buf = buf + chunk if buf else chunk
        split = _Split()
        yield from split.records(buf, base, reader)
        reader.out.packets += split.empty
        reader.count_packets(split.empty, base)
        if split.error or reader.stopped:
            return
        if split.zeros:
            _zero_tail(f, buf[split.stop :], base + split.stop, reader)
            return
        if eof:
            reader.complete = base + split.stop
            reader.reached_end = True
            return
        rest = len(buf) - split.stop
        buf = buf[split.stop :]
        base += split.stop
        need = _CHUNK
        if rest >= 2:  # a record that does not fit: read the rest of it at once (no more than the file has)
            try:
                length, body = read_varint(buf, 1)
                need = max(_CHUNK, min(body + length - rest, reader.size - base - rest))
            except (IndexError, ValueError):
                pass


def _zero_tail(f: BinaryIO, head: bytes, at: int, reader: _Reader) -> None:
    """A zero byte where a packet would begin: the end of a file whose last writes the file system had
    not made when the process died (it shows them as zeros), when nothing but zeros follows; else a
    damaged file."""
    piece = head
    while piece:
        if piece.count(0) != len(piece):
            reader.fail("trace_tokenizer_errors", "unexpected byte 0x00, not a packet", at)
            return
        piece = f.read(_CHUNK)
    reader.complete = at
    reader.reached_end = reader.zero_tail = True


def _text(value: str | bytes) -> str:
    """A string field as text: the decoder gives bytes for one that is not valid UTF-8 (a damaged or
    foreign file), repaired as trace_processor shows it."""
    return value if type(value) is str else value.decode("utf-8", "replace")  # type: ignore[union-attr]


def _annotation_value(a: Any) -> Any:
    which = a.WhichOneof("value")
    if which is None:
        if len(a.dict_entries):
            return {_text(d.name): _annotation_value(d) for d in a.dict_entries}
        if len(a.array_values):
            return [_annotation_value(v) for v in a.array_values]
        return None
    if which == "legacy_json_value":
        try:
            return json.loads(_text(a.legacy_json_value))
        except ValueError:
            return _text(a.legacy_json_value)
    value = getattr(a, which)
    return _text(value) if type(value) is bytes else value


class _Reader:
    def __init__(
        self,
        size: int,
        progress: Callable[[int, int], None] | None,
        limits: ReadLimits | None = None,
        sink: EventSink | None = None,
    ) -> None:
        self.size = size
        self.sink = sink
        # Streaming to a sink: records past RUN_RECORDS wait sorted on disk; else all are kept in memory.
        self.sorter = ExternalSort() if sink is not None else None
        self.run_records = RUN_RECORDS
        self.order = 0  # file order of the records (ties of timestamps keep it)
        self.kept: list[tuple[int, Event]] = []  # (without a sink) the events and their file order
        self.progress = progress
        self.limits = limits = limits or ReadLimits()
        self.out = TraceFile("perfetto", size=size)
        self.seqs: dict[int, _Seq] = {}
        self.tracks: dict[int, _Track] = {}
        self.raw: list[_Raw] = []
        self.global_offsets: dict[int, int] = {}  # builtin clock id -> offset to BOOTTIME
        self.snapshots: dict[tuple[int, frozenset[int]], int] = {}  # clock set -> last BOOTTIME
        self.by_kind: dict[tuple[str, str], Problem] = {}
        self.first_of_code: dict[str, Problem] = {}
        self.lost_seqs: set[int] = set()  # sequences invalid since a loss (until they clear)
        self.stats_tracks: set[int] = set()  # the tracks of the sessions' stats slices (several: merged)
        self.stats_open: set[int] = set()  # those whose slice has not ended yet
        self.stats_parts: list[Stats] = []
        self.reached_end = False  # the whole file was read (a cut-off tail may then be noted)
        self.zero_tail = False  # it ends in zero bytes where a packet would begin
        # What the file may cost (ReadLimits): bytes inflated and packets read, over the whole file.
        self.inflate_budget = max(1 << 20, limits.max_inflate_ratio * size)
        self.packet_budget = max(1 << 14, limits.max_packets_per_byte * size)
        self.inflated = 0
        self.work = 0  # packets read, inside compressed packets too
        self.stopped = False  # a limit was reached, or the file stopped making sense: read no further
        self.complete = 0  # where the last complete record of the file ends

    def problem(self, code: str, message: str, offset: int = -1, events: int = 0) -> Problem:
        """Record a problem. The same problem again is counted on the first one (with the events they
        keep out of Perfetto); past MAX_PROBLEMS kinds, on the first of its code: a file with a
        million problems reads in bounded memory."""
        found = self.by_kind.get((code, message))
        if found is None and len(self.by_kind) >= MAX_PROBLEMS:
            found = self.first_of_code.get(code)
        if found is None:
            found = self.by_kind[code, message] = Problem(code, message, offset, events=events)
            self.first_of_code.setdefault(code, found)
            self.out.problems.append(found)
        else:
            found.count += 1
            found.events += events
            if offset >= 0 and len(found.offsets) < MAX_OFFSETS and offset not in found.offsets:
                found.offsets.append(offset)
        return found

    def fail(self, code: str, message: str, offset: int = -1) -> None:
        """A problem past which the file cannot be trusted (what follows is not read when it is a
        limit or the framing)."""
        problem = self.problem(code, message, offset)
        self.out.fatal = True
        if self.out.fatal_problem is None:
            self.out.fatal_problem = problem

    def limit(self, message: str, offset: int) -> None:
        self.fail("read_limit_exceeded", message, offset)
        self.stopped = True

    def run(self, f: BinaryIO) -> TraceFile:
        try:
            return self._run(f)
        finally:
            if self.sorter is not None:
                self.sorter.close()

    def _run(self, f: BinaryIO) -> TraceFile:
        out = self.out
        head = f.read(1)
        if head and head[0] != 0x0A:
            self.fail("not_a_trace", f"first byte is 0x{head[0]:02x}, a Perfetto trace starts with 0x0a", 0)
            return out
        f.seek(0)
        step = max(1, self.size // 100)
        next_report = step
        for offset, packet in _file_records(f, self):
            out.packets += 1
            self.count_packets(1, offset)
            if self.stopped:
                break
            try:
                self.packet(_TracePacket.FromString(packet), offset, False)
            except DecodeError as exc:
                self.fail("trace_parser_errors", f"malformed packet: {exc}", offset)
            if self.stopped:
                break
            if self.progress is not None and offset >= next_report:
                self.progress(offset, self.size)
                next_report = offset + step
        if self.reached_end and self.complete < self.size:
            out.truncated_bytes = self.size - self.complete
            out.notes.append(
                f"the last {out.truncated_bytes} bytes are zeros (the process died before the file system "
                "wrote them: the trace was cut off); ignored"
                if self.zero_tail
                else f"the last {out.truncated_bytes} bytes are an incomplete packet (the trace was cut "
                "off); ignored"
            )
        self.replay()
        if self.progress is not None:
            self.progress(self.size, self.size)
        return out

    def count_packets(self, n: int, offset: int) -> None:
        self.work += n
        if self.work > self.packet_budget and not self.stopped:
            self.limit(
                f"more than {self.packet_budget:,} packets, {self.limits.max_packets_per_byte} per byte of "
                "file (--max-packets-per-byte); the rest is not read",
                offset,
            )

    # -- packets -----------------------------------------------------------------------------------

    def compressed_record(self, p: Any, offset: int, inner: bool) -> bool:
        """Read ``p``'s packets if it is a ``compressed_packets`` record (one inside another is not
        read); False when it is not one."""
        if not p.HasField("compressed_packets"):
            return False
        if inner:
            self.fail("compressed_packets_invalid", "compressed packets inside compressed packets", offset)
        else:
            self.compressed(p.compressed_packets, offset)
        return True

    def packet(self, p: Any, offset: int, inner: bool) -> None:
        # The fields present, at once (one call, not a presence test per field a packet may have).
        f: dict[str, Any] = {d.name: v for d, v in p.ListFields()}
        if "compressed_packets" in f:
            self.compressed_record(p, offset, inner)
            return
        seq_id = f.get("trusted_packet_sequence_id", 0)
        seq = self.seqs.setdefault(seq_id, _Seq()) if seq_id else None
        # In the order trace_processor applies them (ProtoTraceReader::ParsePacket): a packet that
        # clears the incremental state makes it valid, else one that follows a loss makes it invalid;
        # then defaults, interned data (ignored while invalid), a clock snapshot (nothing else of its
        # packet is read), and packets that need the state are skipped while it is invalid.
        flags = f.get("sequence_flags", 0)
        if seq is not None and flags & 1:
            self.seqs[seq_id] = seq = _Seq(clocks=seq.clocks)
            seq.cleared = True
            self.lost_seqs.discard(seq_id)
        elif seq is not None and f.get("previous_packet_dropped"):
            seq.cleared = False
            self.lost_seqs.add(seq_id)
        d = f.get("trace_packet_defaults")
        if d is not None:
            if seq is None:
                self.problem(
                    "track_event_missing_sequence_id", "packet defaults without a sequence id", offset
                )
            else:
                seq.default_clock = d.timestamp_clock_id if d.HasField("timestamp_clock_id") else None
                seq.default_track = (
                    d.track_event_defaults.track_uuid
                    if d.HasField("track_event_defaults") and d.track_event_defaults.HasField("track_uuid")
                    else None
                )
        if "interned_data" in f:
            if seq is None or not seq.cleared:
                self.problem(
                    "interned_data_skipped_incremental_state_invalid",
                    "interned data on a sequence whose incremental state is not valid (not cleared yet, "
                    "or lost since)",
                    offset,
                )
            else:
                self.interned(f["interned_data"], seq)
        if "clock_snapshot" in f:
            self.clock_snapshot(f["clock_snapshot"], seq, seq_id, offset)
            return
        te = f.get("track_event")
        hidden = int(te is not None and te.type != SLICE_END)
        self.out.file_events += hidden  # (the replay takes tracebridge's own instants back out)
        if flags & 2 and (seq is None or not seq.cleared):
            lost = seq is not None and seq_id in self.lost_seqs
            self.problem(
                "packet_skipped_seq_needs_incremental_state_invalid",
                "packets that need incremental state on a sequence that "
                + (
                    "lost packets (previous_packet_dropped) and did not clear its state after"
                    if lost
                    else "has not cleared its state"
                ),
                offset,
                hidden,
            )
            return
        if "track_descriptor" in f:
            self.descriptor(f["track_descriptor"], offset)
        elif te is not None:
            self.track_event(f, te, seq, seq_id, offset)

    def compressed(self, blob: bytes, offset: int) -> None:
        """Inflate a ``compressed_packets`` record, never past the limits (the output is bounded
        before it is made), then read its packets."""
        limits = self.limits
        room = min(limits.max_inflated_packet, self.inflate_budget - self.inflated)
        inflater = zlib.decompressobj(zlib.MAX_WBITS | 32)  # zlib or gzip header
        try:
            data = inflater.decompress(blob, room + 1)
        except zlib.error as exc:
            self.fail("compressed_packets_invalid", f"cannot inflate compressed packets: {exc}", offset)
            return
        if len(data) > room:
            if room < limits.max_inflated_packet:
                self.limit(
                    f"compressed packets inflate to more than {limits.max_inflate_ratio} times the file's "
                    f"size, {self.inflate_budget:,} bytes (--max-inflate-ratio); the rest is not read",
                    offset,
                )
            else:
                self.limit(
                    f"compressed packets inflate to more than {limits.max_inflated_packet:,} bytes "
                    "(--max-inflated-packet); the rest is not read",
                    offset,
                )
            return
        self.inflated += len(data)
        if not inflater.eof:
            self.fail(
                "compressed_packets_invalid", "compressed packets end inside their deflate stream", offset
            )
            return
        split = _Split()
        for _start, packet in split.records(data, 0, self):
            self.count_packets(1, offset)
            if self.stopped:
                return
            try:
                self.packet(_TracePacket.FromString(packet), offset, True)
            except DecodeError as exc:
                self.fail("trace_parser_errors", f"malformed packet inside compressed packets: {exc}", offset)
            if self.stopped:
                return
        self.count_packets(split.empty, offset)
        if split.stop != len(data) and not split.error:
            self.fail("compressed_packets_invalid", "compressed packets end inside a packet", offset)

    def clock_snapshot(self, cs: Any, seq: _Seq | None, seq_id: int, offset: int) -> None:
        values = {c.clock_id: c.timestamp for c in cs.clocks}
        boot = values.get(BOOTTIME)
        if boot is None:
            self.problem("invalid_clock_snapshots", "clock snapshot without BOOTTIME", offset)
            return
        # trace_processor rejects a snapshot whose trace time is earlier than the previous snapshot of
        # the same clocks (sequence-scoped clocks count per sequence).
        key = (seq_id if any(c >= 64 for c in values) else 0, frozenset(values))
        previous = self.snapshots.get(key)
        if previous is not None and boot < previous:
            self.problem("invalid_clock_snapshots", "clock snapshot earlier than the previous one", offset)
            return
        self.snapshots[key] = boot
        for c in cs.clocks:
            if c.clock_id >= 64:
                if seq is None:
                    self.problem(
                        "invalid_clock_snapshots",
                        f"clock {c.clock_id} is sequence-scoped but sequence id is 0",
                        offset,
                    )
                    continue
                seq.clocks[c.clock_id] = [c.timestamp, boot - c.timestamp, int(c.is_incremental)]
            elif c.clock_id != BOOTTIME:
                self.global_offsets.setdefault(c.clock_id, boot - c.timestamp)

    def interned(self, d: Any, seq: _Seq) -> None:
        for e in d.event_names:
            seq.names[e.iid] = _text(e.name)
        for e in d.event_categories:
            seq.categories[e.iid] = _text(e.name)
        for e in d.debug_annotation_names:
            seq.annotation_names[e.iid] = _text(e.name)
        for s in d.source_locations:
            seq.sources[s.iid] = Frame(_text(s.function_name), _text(s.file_name), s.line_number)
        for b in d.log_message_body:
            seq.bodies[b.iid] = _text(b.body)

    def descriptor(self, d: Any, offset: int) -> None:
        if not d.HasField("uuid"):
            self.problem("track_descriptor_missing_uuid", "track descriptor without uuid", offset)
            return
        raw = d.SerializeToString(deterministic=True)
        old = self.tracks.get(d.uuid)
        if old is not None:
            if old.raw != raw:
                # As trace_processor: the same track again (parent, pid, tid, counter-ness) may rename
                # it (a process named later); anything else conflicts.
                pid = (
                    d.process.pid if d.HasField("process") else d.thread.pid if d.HasField("thread") else None
                )
                tid = d.thread.tid if d.HasField("thread") else None
                same = (old.parent, old.pid, old.tid, old.counter) == (
                    d.parent_uuid,
                    pid,
                    tid,
                    d.HasField("counter"),
                )
                if not same:
                    self.problem(
                        "track_descriptor_conflicting_reservation",
                        f"track {d.uuid} described twice with different content",
                        offset,
                    )
                elif old.process and d.process.process_name:
                    old.name = _text(d.process.process_name)
                    if d.process.pid == self.out.pid:
                        self.out.process_name = old.name
                    self.out.processes[d.process.pid] = old.name
            return
        t = _Track(d.uuid, _text(d.name), d.parent_uuid, raw=raw, description=_text(d.description))
        if d.HasField("thread"):
            if not (d.thread.HasField("pid") and d.thread.HasField("tid")):
                self.problem(
                    "track_descriptor_thread_missing_pid_tid",
                    f"thread track {d.uuid} lacks pid or tid",
                    offset,
                )
            t.pid, t.tid, t.thread_name = d.thread.pid, d.thread.tid, _text(d.thread.thread_name)
        if d.HasField("process"):
            if not d.process.HasField("pid"):
                self.problem(
                    "track_descriptor_process_missing_pid", f"process track {d.uuid} lacks pid", offset
                )
            t.process = True
            t.pid = d.process.pid
            process_name = _text(d.process.process_name)
            t.name = t.name or process_name
            if not self.out.pid:
                self.out.pid = d.process.pid
                self.out.process_name = process_name
            if process_name or d.process.pid not in self.out.processes:
                self.out.processes[d.process.pid] = process_name
        if d.HasField("counter"):
            t.counter = True
            c = d.counter
            t.unit = _text(c.unit_name) if c.HasField("unit_name") else UNIT_NAMES.get(c.unit)
        self.tracks[d.uuid] = t

    def timestamp(self, f: dict[str, Any], seq: _Seq | None, offset: int) -> int | None:
        """The BOOTTIME time of a packet (``f``: its fields)."""
        ts = f.get("timestamp")
        if ts is None:
            self.problem("track_event_missing_timestamp", "track event without timestamp", offset)
            return None
        if "timestamp_clock_id" in f:
            clock = f["timestamp_clock_id"]
        elif seq is not None and seq.default_clock is not None:
            clock = seq.default_clock
        else:
            clock = BOOTTIME
        if clock == BOOTTIME:
            return int(ts)
        if clock >= 64:
            state = seq.clocks.get(clock) if seq is not None else None
            if state is None:
                self.problem(
                    "clock_sync_failure", f"timestamp on clock {clock} before its clock snapshot", offset
                )
                return None
            if state[2]:
                state[0] += ts
                return state[0] + state[1]
            return int(ts) + state[1]
        if clock in self.global_offsets:
            return int(ts) + self.global_offsets[clock]
        self.problem(
            "clock_sync_failure",
            f"timestamp on clock {clock} with no snapshot relating it to BOOTTIME",
            offset,
        )
        return None

    def track_event(
        self, packet: dict[str, Any], te: Any, seq: _Seq | None, seq_id: int, offset: int
    ) -> None:
        """A track event ``te`` of a packet (``packet``: its fields)."""
        if seq is None:
            self.problem("track_event_missing_sequence_id", "track event without a sequence id", offset)
            return
        ts = self.timestamp(packet, seq, offset)
        if ts is None:
            return
        f: dict[str, Any] = {d.name: v for d, v in te.ListFields()}
        etype = f.get("type", 0)
        track = f.get("track_uuid", seq.default_track if seq.default_track is not None else 0)
        if track and track not in self.tracks:
            code = (
                "track_event_counter_invalid_track_uuid" if etype == COUNTER else "track_event_parser_errors"
            )
            self.problem(code, f"event on track {track}, which no earlier descriptor declares", offset)
            return
        name = ""
        if "name_iid" in f:
            found = seq.names.get(f["name_iid"])
            if found is None:
                self.problem(
                    "track_event_parser_errors", f"event name iid {f['name_iid']} not interned", offset
                )
                name = f"unknown({f['name_iid']})"
            else:
                name = found
        elif "name" in f:
            name = _text(f["name"])
        cats: list[str] = []
        for iid in f.get("category_iids", ()):
            cat = seq.categories.get(iid)
            if cat is None:
                self.problem("track_event_parser_errors", f"category iid {iid} not interned", offset)
            else:
                cats.append(cat)
        cats.extend(_text(c) for c in f.get("categories", ()))
        md: dict[str, Any] = {}
        for a in f.get("debug_annotations", ()):
            if a.HasField("name_iid"):
                key = seq.annotation_names.get(a.name_iid)
                if key is None:
                    self.problem(
                        "track_event_parser_errors", f"annotation name iid {a.name_iid} not interned", offset
                    )
                    continue
            else:
                key = _text(a.name)
            md[key] = _annotation_value(a)
        stack = f.get("callstack")
        frames = (
            tuple(
                Frame(_text(fr.function_name), _text(fr.source_file), fr.line_number) for fr in stack.frames
            )
            if stack is not None
            else ()
        )
        raw = _Raw(
            ts,
            self.order,
            etype,
            track,
            seq_id,
            name,
            tuple(cats),
            md,
            tuple(f.get("flow_ids", ())),
            tuple(f.get("terminating_flow_ids", ())),
            frames,
            offset=offset,
        )
        if "correlation_id_str" in f:
            raw.correlation = _text(f["correlation_id_str"])
        if "source_location_iid" in f:
            src = seq.sources.get(f["source_location_iid"])
            if src is None:
                self.problem(
                    "track_event_parser_errors",
                    f"source location iid {f['source_location_iid']} not interned",
                    offset,
                )
            else:
                md["code.filepath"], md["code.lineno"] = src.file, src.line
                if src.function:
                    md["code.function"] = src.function
        if etype == COUNTER:
            raw.value = f.get("counter_value", f.get("double_counter_value"))
        lm = f.get("log_message")
        if lm is not None:
            raw.log_body = seq.bodies.get(lm.body_iid)
            if raw.log_body is None:
                self.problem("track_event_parser_errors", f"log body iid {lm.body_iid} not interned", offset)
                raw.log_body = ""
            raw.log_prio = lm.prio
            if lm.source_location_iid:
                raw.log_source = seq.sources.get(lm.source_location_iid)
        self.order += 1
        self.raw.append(raw)
        if self.sorter is not None and len(self.raw) >= self.run_records:
            run = [_raw_tuple(r) for r in self.raw]
            self.raw.clear()
            try:
                self.sorter.add_run(run)
            except OSError as exc:
                raise _sort_failed(exc) from None

    # -- slices ------------------------------------------------------------------------------------

    def thread_of(self, raw: _Raw) -> tuple[int, int, str]:
        """(pid, tid, thread name) of an event: its thread track's, or its sequence's."""
        track = self.tracks.get(raw.track)
        if track is not None and track.tid is not None:
            return track.pid or 0, track.tid, track.thread_name
        seq = self.seqs.get(raw.seq)
        if seq is not None and seq.default_track is not None:
            t = self.tracks.get(seq.default_track)
            if t is not None and t.tid is not None:
                return t.pid or 0, t.tid, t.thread_name
        return 0, 0, ""

    def ordered(self) -> Iterator[_Raw]:
        """The records in timestamp order (file order breaks ties), each let go of as it is given."""
        raws, self.raw = self.raw, []
        if self.sorter is not None and self.sorter.records:
            try:
                for t in self.sorter.merged([_raw_tuple(r) for r in raws]):
                    yield _Raw(*t)
            except OSError as exc:
                raise _sort_failed(exc) from None
            return
        raws.sort(key=lambda r: (r.ts, r.order), reverse=True)
        pop = raws.pop
        while raws:
            yield pop()

    def emit(
        self, order: int, ev: Event, self_ns: int | None = None, depth: int = -1, covered_ns: int = 0
    ) -> None:
        """An event is complete: to the sink, or kept (with its file order, to sort by start)."""
        self.out.shown_events += 1
        if self.sink is not None:
            self.sink.event(ev, self_ns, depth, covered_ns)
        else:
            self.kept.append((order, ev))

    def replay(self) -> None:
        # Per track, the slices begun and not ended: [begin ts, begin order, event, children's time].
        open_slices: dict[int, list[list[Any]]] = {}
        flows_open: set[int] = set()
        last_ts = None
        for raw in self.ordered():
            last_ts = raw.ts
            t = raw.type
            if t == SLICE_END:
                if raw.track in self.stats_tracks:  # the end of a session's slice
                    self.stats_open.discard(raw.track)
                    self.session(raw.ts)
                    continue
                stack = open_slices.get(raw.track)
                if not stack:
                    self.problem(
                        "misplaced_end_event",
                        f"slice end on track {raw.track} with no open slice",
                        raw.offset,
                    )
                    continue
                begin_ts, order, ev, children_ns = stack.pop()
                if raw.ts < begin_ts:
                    self.problem(
                        "slice_negative_duration", f"slice {ev.name!r} ends before it begins", raw.offset
                    )
                ev.end_ns = raw.ts
                if raw.metadata:  # what a span written as begun while it ran knew only at its end
                    ev.metadata.update(raw.metadata)
                    ev.error = _pop_error(ev.metadata, raw.frames) or ev.error
                duration = raw.ts - begin_ts
                if stack:
                    stack[-1][3] += duration
                self.emit(order, ev, duration - children_ns, len(stack), children_ns)
                continue
            for fid in raw.flows:
                flows_open.add(fid)
            for fid in raw.terminating:
                if fid not in flows_open:
                    self.problem("flow_end_without_start", f"flow {fid} ends but never started", raw.offset)
                flows_open.discard(fid)
            if t == COUNTER:
                track = self.tracks.get(raw.track)
                if track is None or not track.counter:
                    self.problem(
                        "track_event_counter_invalid_track_uuid",
                        "counter event on a non-counter track",
                        raw.offset,
                    )
                    continue
                pid, tid, tname = self.thread_of(raw)
                self.emit(
                    raw.order,
                    Event(
                        "counter",
                        track.name,
                        raw.ts,
                        raw.ts,
                        thread_id=tid,
                        thread_name=tname,
                        value=raw.value,
                        unit=track.unit,
                        pid=pid,
                    ),
                )
                continue
            maybe = self.event(raw)
            if maybe is None:  # the stats
                self.out.file_events -= 1
                continue
            ev = maybe
            if t == INSTANT and Loss.from_marker(ev) is not None:
                self.out.file_events -= 1
                self.out.losses.append(ev)
                continue
            if t == SLICE_BEGIN:
                stack = open_slices.setdefault(raw.track, [])
                if len(stack) >= MAX_DEPTH:
                    self.problem(
                        "slice_max_depth_exceeded", f"more than {MAX_DEPTH} nested slices", raw.offset
                    )
                    continue
                ev.end_ns = None
                stack.append([raw.ts, raw.order, ev, 0])
                continue
            self.emit(raw.order, ev)
        if self.stats_open and last_ts is not None:  # (a file cut off before its session's end)
            self.session(last_ts)
            self.out.notes.append("the session's slice did not end: its end is the last event's time")
        unfinished = 0
        for stack in open_slices.values():
            unfinished += len(stack)
            for depth, (_, order, ev, children_ns) in enumerate(stack):
                self.emit(order, ev, None, depth, children_ns)
        if unfinished:
            self.out.notes.append(f"{unfinished} slices did not end (written as begun only)")
        if self.stats_parts:
            parts = self.stats_parts
            self.out.stats = parts[0] if len(parts) == 1 else Stats.total(parts)
        kept, self.kept = self.kept, []
        kept.sort(key=lambda pair: (pair[1].start_ns, pair[0]))
        self.out.events = [ev for _, ev in kept]

    def session(self, ts: int) -> None:
        """Widen the time the trace's sessions span (one per process, in a merged trace) to ``ts``."""
        start, end = self.out.session_ns or (ts, ts)
        self.out.session_ns = (min(start, ts), max(end, ts))

    def event(self, raw: _Raw) -> Event | None:
        track = self.tracks.get(raw.track)
        md = raw.metadata
        level = md.pop(LEVEL_KEY, 1)
        adjusted = md.pop(ADJUSTED_COUNT_KEY, 1.0)
        error = _pop_error(md, raw.frames)
        pid, tid, tname = self.thread_of(raw)
        if raw.type == SLICE_BEGIN and track is not None and track.description == STATS_TRACK_DESCRIPTION:
            self.stats_tracks.add(raw.track)
            self.stats_open.add(raw.track)
            self.session(raw.ts)
            try:
                stats = Stats.from_dict(md)
            except (TypeError, ValueError, ArithmeticError) as exc:
                self.problem(
                    "track_event_parser_errors", f"the session's stats do not read: {exc}", raw.offset
                )
                return None
            self.stats_parts.append(stats)  # (added up once, at the end: linear in the slices)
            return None
        kind = "span"
        named = None
        overlapping = False
        if track is not None and track.tid is None and not track.process:
            if track.description == ACTIVITY_TRACK_DESCRIPTION:
                kind = "activity"
            elif track.description == NAMED_ACTIVITY_TRACK_DESCRIPTION:
                kind = "activity"
                named = track.name
            elif track.description == OVERLAP_TRACK_DESCRIPTION:
                overlapping = True
            else:
                named = track.name
        if raw.type == INSTANT:
            if raw.log_body is not None:
                if raw.name and raw.name != raw.log_body and MESSAGE_TEMPLATE_KEY not in md:  # (its template)
                    md[MESSAGE_TEMPLATE_KEY] = raw.name
                return Event(
                    "log",
                    raw.log_body,
                    raw.ts,
                    raw.ts,
                    level=level if isinstance(level, int) else 1,
                    metadata=md,
                    thread_id=tid,
                    thread_name=tname,
                    error=error,
                    categories=raw.categories,
                    track=named,
                    value=raw.log_prio,
                    source=raw.log_source,
                    adjusted_count=float(adjusted),
                    pid=pid,
                )
            kind = "instant"
        ev = Event(
            kind,  # type: ignore[arg-type]
            raw.name,
            raw.ts,
            raw.ts,
            level=level if isinstance(level, int) else 1,
            metadata=md,
            thread_id=tid,
            thread_name=tname,
            error=error,
            categories=raw.categories,
            track=named,
            flows=raw.flows,
            terminating_flows=raw.terminating,
            overlapping=overlapping,
            adjusted_count=float(adjusted),
            pid=pid,
        )
        if len(raw.correlation) == 32 and all(c in _HEX for c in raw.correlation):
            ev.trace_id = int(raw.correlation, 16)  # else another writer's id: not a trace id
        return ev


def _sort_failed(exc: OSError) -> TraceReadError:
    """The temporary files of a streamed read failed (not the trace): one line that says where."""
    return TraceReadError(
        f"cannot sort the trace's events in temporary files in {tempfile.gettempdir()} "
        f"({exc.strerror or exc}); set TMPDIR to a folder with room"
    )


def _pop_error(md: dict[str, Any], frames: tuple[Frame, ...]) -> ErrorInfo | None:
    """The failure a writer put in an event's annotations (taken out of them), with its back-trace."""
    if ERROR_TYPE_KEY not in md:
        return None
    error = ErrorInfo(str(md.pop(ERROR_TYPE_KEY)), str(md.pop(ERROR_MESSAGE_KEY, "")), frames)
    causes = md.pop(ERROR_CAUSE_KEY, None)
    md.pop(ERROR_STACKTRACE_KEY, None)  # (the back-trace as text: the frames say it)
    return error if causes is None else error.with_causes(causes)


def starts_with_packet(head: bytes) -> bool:
    """True when ``head`` begins with a complete ``Trace.packet`` record that decodes."""
    try:
        length, pos = read_varint(head, 1)
    except (IndexError, ValueError):
        return False
    if pos + length > len(head):
        return False
    try:
        _TracePacket.FromString(head[pos : pos + length])
    except DecodeError:
        return False
    return True


def read_perfetto(
    path: str | os.PathLike[str],
    progress: Callable[[int, int], None] | None = None,
    limits: ReadLimits | None = None,
    sink: EventSink | None = None,
) -> TraceFile:
    """Read a Perfetto trace file, a piece at a time: its events, stats and import problems. With a
    ``sink``, the events go to it as they complete and memory stays bounded whatever the file's size."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            return _Reader(os.fstat(f.fileno()).st_size, progress, limits, sink).run(f)
    except FileNotFoundError:
        raise TraceReadError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise TraceReadError(f"{p}: is a directory") from None
    except OSError as exc:
        raise TraceReadError(f"{p}: cannot read: {exc.strerror or exc}") from None


class _Checker(_Reader):
    """Reads a trace only as far as decoding goes: every packet decodes and compressed packets inflate
    within the limits; no events are made (what ``tracebridge merge`` checks of its inputs)."""

    def packet(self, p: Any, offset: int, inner: bool) -> None:
        self.compressed_record(p, offset, inner)

    def replay(self) -> None:
        pass


def check_perfetto_bytes(data: bytes, limits: ReadLimits | None = None) -> TraceFile:
    """What :class:`_Checker` finds in ``data``: packets, problems, ``fatal``; no events."""
    return _Checker(len(data), None, limits).run(io.BytesIO(data))


def read_perfetto_bytes(
    data: bytes,
    progress: Callable[[int, int], None] | None = None,
    limits: ReadLimits | None = None,
    sink: EventSink | None = None,
) -> TraceFile:
    return _Reader(len(data), progress, limits, sink).run(io.BytesIO(data))

"""Merging Perfetto traces from several processes into one file.

A Perfetto trace is a sequence of ``TracePacket`` records, so traces concatenate, except that each file
numbers its packet sequences from 1: two files would share sequence ids, and with them interning tables
and incremental clocks. Merging gives every (file, sequence) pair a sequence id of its own, inside
``compressed_packets`` too; everything else (timestamps and their clock snapshots, track uuids, process
and thread descriptors) is kept byte for byte, so each process keeps its tracks and its clocks.
"""

from __future__ import annotations

import contextlib
import os
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..._model import ReadLimits
from . import tracebridge_perfetto_pb2 as pb
from .reader import check_perfetto_bytes, iter_frames
from .schema import BOOTTIME, frame

__all__ = ["MergeError", "append_processes", "append_traces", "merge_traces"]

_TracePacket: Any = pb.TracePacket  # type: ignore[attr-defined]
_Trace: Any = pb.Trace  # type: ignore[attr-defined]


class MergeError(ValueError):
    """A trace that cannot be merged (not a Perfetto trace, or it does not read)."""


class _Merger:
    """Renumbers sequences, and keeps global clock snapshots (clocks below 64, shared by every
    process of a machine) in time order, as trace_processor requires of the trace clock: a snapshot
    earlier than one already written only restates what the machine's clocks were, so it is left out."""

    def __init__(self, first_id: int = 1) -> None:
        self.next_id = first_id
        self.last_snapshot: dict[tuple[int, ...], int] = {}
        self.dropped_snapshots = 0

    def packet(self, packet: bytes, seqs: dict[int, int]) -> bytes | None:
        msg = _TracePacket()
        msg.ParseFromString(packet)
        changed = False
        if msg.HasField("clock_snapshot") and not self._in_order(msg):
            self.dropped_snapshots += 1
            return None
        if msg.HasField("trusted_packet_sequence_id"):
            old = msg.trusted_packet_sequence_id
            new = seqs.get(old)
            if new is None:
                new = seqs[old] = self.next_id
                self.next_id += 1
            if new != old:
                msg.trusted_packet_sequence_id = new
                changed = True
        if msg.HasField("compressed_packets"):
            inner = _Trace()
            inner.ParseFromString(zlib.decompress(msg.compressed_packets, zlib.MAX_WBITS | 32))  # (or gzip)
            kept = (self.packet(p.SerializeToString(), seqs) for p in inner.packet)
            msg.compressed_packets = zlib.compress(b"".join(frame(p) for p in kept if p is not None), 1)
            changed = True
        return msg.SerializeToString() if changed else packet

    def _in_order(self, msg: Any) -> bool:
        clocks = msg.clock_snapshot.clocks
        if any(c.clock_id >= 64 for c in clocks):
            return True  # sequence-scoped: each sequence has its own
        key = tuple(sorted(c.clock_id for c in clocks))
        primary = msg.clock_snapshot.primary_trace_clock or BOOTTIME
        ts = next((c.timestamp for c in clocks if c.clock_id == primary), None)
        if ts is None:
            return True
        if ts < self.last_snapshot.get(key, 0):
            return False
        self.last_snapshot[key] = ts
        return True


def _first_snapshot(data: bytes) -> int:
    """When a trace began: its first global clock snapshot's trace-clock time (0 if it has none)."""
    for _, _, raw in iter_frames(data):
        msg = _TracePacket()
        msg.ParseFromString(bytes(raw))
        if msg.HasField("clock_snapshot"):
            primary = msg.clock_snapshot.primary_trace_clock or BOOTTIME
            for c in msg.clock_snapshot.clocks:
                if c.clock_id == primary:
                    return int(c.timestamp)
    return 0


def merge_traces(
    paths: Iterable[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    limits: ReadLimits | None = None,
) -> int:
    """Write the packets of the Perfetto traces ``paths`` (processes of one machine) into ``output``,
    the trace that began first first, with sequence ids made unique across them; returns the number of
    packets written. Every input is read first (within ``limits``): one that is not a Perfetto trace or
    does not read raises :class:`MergeError`, and ``output`` is written whole or not at all (a file
    beside it, renamed when complete)."""
    out_path = Path(output)
    sources = [Path(p) for p in paths]
    if not sources:
        raise MergeError("nothing to merge")
    for src in sources:
        if src.exists() and out_path.exists() and src.resolve() == out_path.resolve():
            raise MergeError(f"{output}: the output is also an input")
    datas = []
    for src in sources:
        try:
            with open(src, "rb") as f:
                head = f.read(1)
        except OSError as exc:
            raise MergeError(f"{src}: cannot read: {exc.strerror or exc}") from None
        if head != b"\x0a":
            raise MergeError(f"{src}: not a Perfetto protobuf trace")
        data = src.read_bytes()
        checked = check_perfetto_bytes(data, limits)  # (every packet decodes, inflation stays bounded)
        why = checked.unreadable(partial=False)
        if why is not None:
            raise MergeError(f"{src}: {why}")
        datas.append((_first_snapshot(data), str(src), data))
    datas.sort(key=lambda d: d[0])
    merger = _Merger()
    written = 0
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.merging")  # (one of a dead process: replaced)
    try:
        with open(tmp, "wb") as out:
            for _, _, data in datas:
                seqs: dict[int, int] = {}
                for _, _, raw in iter_frames(data):
                    packet = merger.packet(bytes(raw), seqs)
                    if packet is not None:
                        out.write(frame(packet))
                        written += 1
        os.replace(tmp, out_path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return written


def append_traces(
    target: str | os.PathLike[str],
    paths: Iterable[Path],
    first_sequence: int | None,
    snapshots: dict[tuple[int, ...], int] | None = None,
) -> tuple[int, dict[tuple[int, ...], int]]:
    """Append the Perfetto traces ``paths`` (child processes) to ``target``, a finished trace whose
    sequence ids are below ``first_sequence`` (``None``: read them from it), the trace that began first
    first; each gets sequence ids of its own. A file cut off (a child that died) adds its complete
    packets. ``snapshots``: the global clock snapshots the file has so far, by clocks (``None``: read
    from it), so that those appended stay in time order across calls. Returns the sequence id that
    follows the last one used, and the snapshots."""
    if first_sequence is None:
        first_sequence = _max_sequence(Path(target).read_bytes()) + 1
    datas = []
    for src in paths:
        data = src.read_bytes()
        if data[:1] == b"\x0a":
            datas.append((_first_snapshot(data), data))
    datas.sort(key=lambda d: d[0])
    merger = _Merger(first_sequence)
    merger.last_snapshot = snapshots if snapshots is not None else _snapshots_of(target, merger)
    with open(target, "ab") as out:
        for _, data in datas:
            seqs: dict[int, int] = {}
            chunk = []
            next_id = merger.next_id
            try:
                for _, _, raw in iter_frames(data):
                    packet = merger.packet(bytes(raw), seqs)
                    if packet is not None:
                        chunk.append(frame(packet))
            except Exception:  # a corrupt packet: its complete packets up to there (ids stay unique)
                merger.next_id = max(merger.next_id, next_id)
            out.write(b"".join(chunk))  # (one process at a time)
    return merger.next_id, merger.last_snapshot


def append_processes(
    target: str | os.PathLike[str],
    paths: Iterable[Path],
    first_sequence: int | None,
    snapshots: dict[tuple[int, ...], int] | None,
    range_size: int,
) -> tuple[int, dict[tuple[int, ...], int]]:
    """Append child processes' traces to ``target`` as :func:`append_traces` does, but fast for files
    whose sequence ids are a range of their own (``range_size`` and above, while ``target``'s are below
    it): those are copied as they are, their complete packets only, leaving out a global clock snapshot
    that would go back in time. The others are renumbered. Returns what :func:`append_traces` does."""
    if first_sequence is None:
        first_sequence = _max_sequence(Path(target).read_bytes()) + 1
    merger = _Merger(first_sequence)
    merger.last_snapshot = snapshots if snapshots is not None else _snapshots_of(target, merger)
    as_they_are = []
    others = []
    for src in paths:
        data = src.read_bytes()
        if data[:1] != b"\x0a":
            continue
        own = _first_sequence(data)
        if own >= range_size and first_sequence < range_size:
            as_they_are.append((_first_snapshot(data), data))
        else:
            others.append(src)
    as_they_are.sort(key=lambda d: d[0])
    with open(target, "ab") as out:
        for _, data in as_they_are:
            pieces = []
            kept_from = 0
            end = 0
            for start, end, raw in iter_frames(data):
                if len(raw) < 512:  # (a clock snapshot is small; compressed chunks are not)
                    msg = _TracePacket()
                    msg.ParseFromString(bytes(raw))
                    if msg.HasField("clock_snapshot") and not merger._in_order(msg):
                        pieces.append(data[kept_from:start])
                        kept_from = end
            pieces.append(data[kept_from:end])  # (up to the last complete packet)
            out.write(b"".join(pieces))
    if others:
        return append_traces(target, others, merger.next_id, merger.last_snapshot)
    return merger.next_id, merger.last_snapshot


def _first_sequence(data: bytes) -> int:
    for _, _, raw in iter_frames(data):
        msg = _TracePacket()
        msg.ParseFromString(bytes(raw))
        return int(msg.trusted_packet_sequence_id)
    return 0


def _snapshots_of(target: str | os.PathLike[str], merger: _Merger) -> dict[tuple[int, ...], int]:
    """The global clock snapshots at the start of ``target`` (its writer puts them there)."""
    with open(target, "rb") as f:
        head = f.read(1 << 16)
    for _, _, raw in iter_frames(head):
        msg = _TracePacket()
        msg.ParseFromString(bytes(raw))
        if msg.HasField("clock_snapshot"):
            merger._in_order(msg)
    return merger.last_snapshot


def _max_sequence(data: bytes) -> int:
    top = 0
    for _, _, raw in iter_frames(data):
        msg = _TracePacket()
        msg.ParseFromString(bytes(raw))
        top = max(top, msg.trusted_packet_sequence_id)
        if msg.HasField("compressed_packets"):
            inner = _Trace()
            inner.ParseFromString(zlib.decompress(msg.compressed_packets, zlib.MAX_WBITS | 32))
            top = max([top, *(p.trusted_packet_sequence_id for p in inner.packet)])
    return top

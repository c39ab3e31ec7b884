"""Decoding our output with the official Perfetto schema (from the ``perfetto`` package), so that a
schema written by Perfetto's authors, not by us, judges the bytes we write."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as official

import tracebridge
from tracebridge._model import Event


def expand(data: bytes) -> bytes:
    """The file's packets with every ``compressed_packets`` record replaced by the packets it holds
    (decoded with the official schema; zlib as trace_processor inflates them)."""
    trace = official.Trace()
    trace.ParseFromString(data)
    out = official.Trace()
    for p in trace.packet:
        if p.HasField("compressed_packets"):
            inner = official.Trace()
            inner.ParseFromString(zlib.decompress(p.compressed_packets))
            assert len(inner.packet) > 0
            out.packet.extend(inner.packet)
        else:
            out.packet.append(p)
    return out.SerializeToString()


def decode(path: Path | bytes) -> Any:
    """The whole trace through the official schema, compressed packets expanded."""
    data = path if isinstance(path, bytes) else Path(path).read_bytes()
    trace = official.Trace()
    trace.ParseFromString(expand(data))
    return trace


def official_view(path: Path | bytes) -> dict[str, Any]:
    """An independent reading of a trace through the official schema: descriptors by uuid, and per track
    event packets (with their sequence's interned names resolved) in file order."""
    trace = decode(path)
    tracks: dict[int, Any] = {}
    names: dict[tuple[int, int], str] = {}
    annotation_names: dict[tuple[int, int], str] = {}
    categories: dict[tuple[int, int], str] = {}
    defaults: dict[int, int] = {}
    events: list[dict[str, Any]] = []
    for p in trace.packet:
        seq = p.trusted_packet_sequence_id
        if p.sequence_flags & 1:
            for table in (names, annotation_names, categories):
                for key in [k for k in table if k[0] == seq]:
                    del table[key]
        if p.HasField("trace_packet_defaults"):
            defaults[seq] = p.trace_packet_defaults.track_event_defaults.track_uuid
        if p.HasField("interned_data"):
            for e in p.interned_data.event_names:
                names[(seq, e.iid)] = e.name
            for e in p.interned_data.debug_annotation_names:
                annotation_names[(seq, e.iid)] = e.name
            for e in p.interned_data.event_categories:
                categories[(seq, e.iid)] = e.name
        if p.HasField("track_descriptor"):
            tracks[p.track_descriptor.uuid] = p.track_descriptor
        if p.HasField("track_event"):
            te = p.track_event
            track = te.track_uuid if te.HasField("track_uuid") else defaults.get(seq, 0)
            name = names.get((seq, te.name_iid), "") if te.HasField("name_iid") else te.name
            ann = {}
            for a in te.debug_annotations:
                key = annotation_names.get((seq, a.name_iid)) if a.HasField("name_iid") else a.name
                ann[key] = a
            events.append(
                {
                    "type": te.type,
                    "name": name,
                    "track": track,
                    "seq": seq,
                    "packet": p,
                    "annotations": ann,
                    "categories": [categories.get((seq, i)) for i in te.category_iids],
                }
            )
    return {"trace": trace, "tracks": tracks, "events": events}


def record(fn: Any, level: int = 2, **start: Any) -> tracebridge.Session:
    """Run ``fn`` inside an in-memory session and return the stopped session."""
    tracebridge.start(level=level, **start)
    try:
        fn()
    finally:
        session = tracebridge.stop()
    return session


def comparable(ev: Event) -> tuple[Any, ...]:
    """The fields a trace file carries (ids live only in memory)."""
    return (
        ev.kind,
        ev.name,
        ev.start_ns,
        ev.end_ns,
        ev.level,
        ev.metadata,
        ev.thread_id,
        ev.thread_name,
        ev.error,
        ev.categories,
        ev.track,
        ev.flows,
        ev.terminating_flows,
        ev.value,
        ev.unit,
        ev.source,
        ev.overlapping,
        ev.adjusted_count,
    )


FIELDS = [
    "kind", "name", "start_ns", "end_ns", "level", "metadata", "thread_id", "thread_name", "error",
    "categories", "track", "flows", "terminating_flows", "value", "unit", "source", "overlapping",
    "adjusted_count",
]  # fmt: skip


def assert_same_events(got: list[Event], expected: list[Event]) -> None:
    """The two lists hold the same events (as a trace file carries them), in any order; on a mismatch
    the message names the first field that differs."""
    a = sorted(map(comparable, got), key=repr)
    b = sorted(map(comparable, expected), key=repr)
    assert len(a) == len(b), f"{len(a)} events read, {len(b)} written"
    for x, y in zip(a, b, strict=True):
        for name, p, q in zip(FIELDS, x, y, strict=True):
            assert p == q, f"{name}: read {p!r:.300} but wrote {q!r:.300} (event {y[1]!r:.80})"

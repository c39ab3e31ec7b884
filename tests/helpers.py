"""Decoding our output with the official Perfetto schema (from the ``perfetto`` package), so that a
schema written by Perfetto's authors, not by us, judges the bytes we write."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as official

import tracebridge
from tracebridge._model import Event

#: Seconds a test waits for a process it runs (a hang fails the test instead of the run).
TIMEOUT = 120


def run_python(code: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run Python source (dedented) in a process of its own, with ``args``; its output captured."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env,
    )


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


def app_events(trace: Any) -> list[Any]:
    """The TrackEvents of a decoded trace, without the session's stats slice (its BEGIN, in category
    ``tracebridge.stats``, and its END on the same track)."""
    stats = {
        p.track_event.track_uuid for p in trace.packet if "tracebridge.stats" in p.track_event.categories
    }
    return [
        p.track_event
        for p in trace.packet
        if p.HasField("track_event")
        and not (p.track_event.HasField("track_uuid") and p.track_event.track_uuid in stats)
    ]


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
                    "categories": [categories.get((seq, i)) for i in te.category_iids] + list(te.categories),
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


class Imported:
    """What trace_processor's proto importer keeps of a trace (see :func:`perfetto_import`)."""

    def __init__(self) -> None:
        #: (name, track uuid, ts, duration or None) of every slice, instants with duration 0.
        self.slices: list[tuple[str, int, int, int | None]] = []
        #: The importer's stats that are not zero: packets skipped, interned data ignored, ...
        self.stats: dict[str, int] = {}
        #: Packets that carried previous_packet_dropped (trace_processor counts them per sequence).
        self.loss_packets = 0

    def count(self, stat: str) -> None:
        self.stats[stat] = self.stats.get(stat, 0) + 1

    def names(self) -> list[str]:
        return [s[0] for s in self.slices]


def perfetto_import(path: Path | bytes) -> Imported:
    """Apply trace_processor's rules for sequences (ProtoTraceReader::ParsePacket) to a trace decoded
    with the official schema, independently of tracebridge's reader.

    A sequence's incremental state starts invalid; a packet with SEQ_INCREMENTAL_STATE_CLEARED makes it
    valid (interned data and defaults start afresh); otherwise a packet with previous_packet_dropped
    makes it invalid. Interned data on an invalid sequence is ignored, and a packet with
    SEQ_NEEDS_INCREMENTAL_STATE on an invalid sequence is skipped whole. Slices are then matched per
    track in timestamp order (file order breaks ties); an END with no open slice is misplaced."""
    trace = decode(path)
    out = Imported()
    valid: dict[int, bool] = {}
    names: dict[int, dict[int, str]] = {}
    default_track: dict[int, int] = {}
    default_clock: dict[int, int] = {}
    clocks: dict[int, list[int]] = {}  # seq -> [current value of clock 64, its offset to BOOTTIME]
    events: list[tuple[int, int, int, int, str]] = []  # (ts, order, type, track, name)
    for p in trace.packet:
        seq = p.trusted_packet_sequence_id
        if p.sequence_flags & 1 or p.incremental_state_cleared:
            valid[seq] = True
            names[seq] = {}
            default_track.pop(seq, None)
            default_clock.pop(seq, None)
        elif p.previous_packet_dropped:
            valid[seq] = False
        if p.previous_packet_dropped:
            out.loss_packets += 1
        if p.HasField("trace_packet_defaults"):
            d = p.trace_packet_defaults
            default_clock[seq] = d.timestamp_clock_id
            default_track[seq] = d.track_event_defaults.track_uuid
        if p.HasField("interned_data"):
            if not valid.get(seq, False):
                out.count("interned_data_skipped_incremental_state_invalid")
            else:
                for e in p.interned_data.event_names:
                    names[seq][e.iid] = e.name
        if p.HasField("clock_snapshot"):
            values = {c.clock_id: c.timestamp for c in p.clock_snapshot.clocks}
            if 64 in values:
                clocks[seq] = [values[64], values[6] - values[64]]
            continue
        if p.sequence_flags & 2 and not valid.get(seq, False):
            out.count("packet_skipped_seq_needs_incremental_state_invalid")
            continue
        if not p.HasField("track_event"):
            continue
        te = p.track_event
        clock = p.timestamp_clock_id if p.HasField("timestamp_clock_id") else default_clock.get(seq, 0)
        clock = clock or 6  # none given: the trace's clock, BOOTTIME
        if clock == 64:
            state = clocks[seq]
            state[0] += p.timestamp
            ts = state[0] + state[1]
        else:
            assert clock == 6, clock
            ts = p.timestamp
        track = te.track_uuid if te.HasField("track_uuid") else default_track.get(seq, 0)
        if te.HasField("name_iid"):
            name = names.get(seq, {}).get(te.name_iid)
            if name is None:
                out.count("interned_name_missing")
                name = ""
        else:
            name = te.name
        events.append((ts, len(events), te.type, track, name))
    events.sort()
    open_slices: dict[int, list[int]] = {}
    for ts, _, kind, track, name in events:
        if kind == 2:  # SLICE_END
            stack = open_slices.get(track)
            if not stack:
                out.count("misplaced_end_event")
                continue
            i = stack.pop()
            n, t, begin, _ = out.slices[i]
            out.slices[i] = (n, t, begin, ts - begin)
        elif kind == 1:  # SLICE_BEGIN
            open_slices.setdefault(track, []).append(len(out.slices))
            out.slices.append((name, track, ts, None))
        elif kind == 3:  # INSTANT
            out.slices.append((name, track, ts, 0))
    return out


@contextlib.contextmanager
def configured(**options: Any) -> Iterator[None]:
    """``tracebridge.configure(**options)`` for the block, the earlier values afterwards."""
    from tracebridge._recorder.runtime import RT

    before = {k: getattr(RT.config, k) for k in options}
    tracebridge.configure(**options)
    try:
        yield
    finally:
        tracebridge.configure(**before)


def nested_on_thread(inner: Event, outer: Event) -> bool:
    """``inner`` nests in ``outer`` on its thread's track (as Perfetto draws it)."""
    assert inner.end_ns is not None and outer.end_ns is not None
    return (
        inner.thread_id == outer.thread_id
        and not inner.overlapping
        and not outer.overlapping
        and outer.start_ns <= inner.start_ns <= inner.end_ns <= outer.end_ns
    )


#: Python source of a loopback HTTP server, for the programs that tests run to make library spans:
#: ``URL`` answers every GET with "ok"; ``SERVER.shutdown()`` ends it.
LOOPBACK_SERVER = """
import http.server
import threading


class _Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


SERVER = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
threading.Thread(target=SERVER.serve_forever, daemon=True).start()
URL = f"http://127.0.0.1:{SERVER.server_address[1]}/items"
"""


def instrumentor_distributions(root: Path) -> Path:
    """Installed-looking distributions in ``root`` (put it on ``sys.path``) whose OpenTelemetry
    instrumentors cannot be activated: ``broken_import`` (its module raises on import),
    ``broken_instrument`` (its ``instrument()`` raises), ``old_wrapt`` (instruments a wrapt older than the
    one installed) and ``absent`` (instruments a library that is not installed)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "broken_instrumentor_import.py").write_text(
        'raise ImportError("needs a module that is not here")\n'
    )
    (root / "failing_instrumentors.py").write_text(
        "from opentelemetry.instrumentation.instrumentor import BaseInstrumentor\n\n\n"
        "class Instrumentor(BaseInstrumentor):\n"
        "    def instrumentation_dependencies(self):\n"
        "        return []\n\n"
        "    def _instrument(self, **kwargs):\n"
        "        raise RuntimeError('cannot patch the library')\n\n"
        "    def _uninstrument(self, **kwargs):\n"
        "        pass\n"
    )
    failing = "failing_instrumentors:Instrumentor"
    dists: dict[str, tuple[str, dict[str, str]]] = {  # name: (Requires-Dist lines, entry points)
        "broken_instrumentors": (
            "",
            {"broken_import": "broken_instrumentor_import:Instrumentor", "broken_instrument": failing},
        ),
        "old_wrapt_instrumentor": (
            'Requires-Dist: wrapt<1.0; extra == "instruments"\n',
            {"old_wrapt": failing},
        ),
        "absent_instrumentor": (
            'Requires-Dist: no-such-library-here; extra == "instruments"\n',
            {"absent": failing},
        ),
    }
    for name, (requires, entry_points) in dists.items():
        info = root / f"{name}-1.0.dist-info"
        info.mkdir(exist_ok=True)
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: 1.0\n"
            + ("Provides-Extra: instruments\n" if requires else "")
            + requires
        )
        lines = "".join(f"{ep} = {target}\n" for ep, target in entry_points.items())
        (info / "entry_points.txt").write_text(f"[opentelemetry_instrumentor]\n{lines}")
    return root

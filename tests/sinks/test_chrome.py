"""Chrome JSON: the structure chrome://tracing and Perfetto's JSON importer expect, and round trips."""

from __future__ import annotations

import json
import os
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

import tracebridge
from tracebridge._model import ErrorInfo, Event, Frame, ThreadInfo
from tracebridge.reading import read_trace
from tracebridge.sinks.chrome import ChromeJsonWriter

from helpers import assert_same_events, comparable
from strategies import thread_events

ME = ThreadInfo(os.getpid(), 77, "worker")


def test_structure(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    w = ChromeJsonWriter(path)
    err = ErrorInfo("KeyError", "'k'", (Frame("f", "/a.py", 3),))
    w.write(
        ME,
        [
            Event("span", "child", 2_500, 3_000, 1, {"n": 1}, ME.tid, ME.name),
            Event("span", "parent", 2_000, 4_000_123, 2, {}, ME.tid, ME.name, err, ("db",), flows=(5,)),
            Event("instant", "tick", 5_000, 5_000, 1, {}, ME.tid, ME.name),
            Event("counter", "mem", 6_000, 6_000, 1, {}, ME.tid, ME.name, value=10, unit="bytes"),
            Event("activity", "dl", 1_000, 9_000, 1, {}, ME.tid, ME.name, span_id=99),
            Event("span", "end", 7_000, 8_000, 1, {}, ME.tid, ME.name, terminating_flows=(5,)),
        ],
    )
    w.close()
    doc = json.loads(path.read_text())
    assert doc["displayTimeUnit"] == "ns"
    evs = doc["traceEvents"]
    by_ph: dict[str, list[dict[str, object]]] = {}
    for e in evs:
        by_ph.setdefault(e["ph"], []).append(e)
    names = {e["name"]: e for e in evs}
    parent = names["parent"]
    assert parent["ph"] == "X" and parent["ts"] == 2.0 and parent["dur"] == 3998.123
    assert parent["cat"] == "db" and parent["tb"]["level"] == 2
    assert parent["args"]["exception.type"] == "KeyError"
    assert parent["args"]["exception.stacktrace"] == "  f (/a.py:3)\nKeyError: 'k'"  # (what viewers show)
    assert names["tick"]["ph"] == "i" and names["tick"]["s"] == "t"
    assert names["mem"]["ph"] == "C" and names["mem"]["args"] == {"value": 10}  # (track "mem value")
    assert [e["ph"] for e in evs if e.get("name") == "dl"] == ["b", "e"]
    assert {e["name"] for e in by_ph["M"]} == {"process_name", "thread_name"}
    assert [e["ph"] for e in by_ph.get("s", []) + by_ph.get("f", [])] == ["s", "f"]
    assert by_ph["f"][0]["bp"] == "e"
    # Nanoseconds survive microsecond timestamps.
    back = {e.name: e for e in tracebridge.read(path)}
    assert back["parent"].end_ns == 4_000_123 and back["parent"].error == err
    assert back["parent"].metadata == {}
    assert back["parent"].flows == (5,) and back["end"].terminating_flows == (5,)
    assert back["mem"].unit == "bytes" and back["dl"].kind == "activity"


def test_overlapping_spans_get_other_tids(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    w = ChromeJsonWriter(path)
    a = Event("span", "a", 1_000, 5_000, 1, {}, ME.tid, ME.name, overlapping=True)
    b = Event("span", "b", 2_000, 9_000, 1, {}, ME.tid, ME.name)
    g1 = Event("span", "g1", 1_000, 5_000, 1, {}, ME.tid, ME.name, track="GPU")
    g2 = Event("span", "g2", 2_000, 6_000, 1, {}, ME.tid, ME.name, track="GPU")
    w.write(ME, [a, b, g1, g2])
    w.close()
    evs = json.loads(path.read_text())["traceEvents"]
    tid = {e["name"]: e["tid"] for e in evs if e["ph"] == "X"}
    assert tid["b"] == ME.tid and tid["a"] != ME.tid
    assert len({tid["g1"], tid["g2"], tid["a"], ME.tid}) == 4
    # Per tid, X events never cross.
    xs: dict[int, list[tuple[float, float]]] = {}
    for e in evs:
        if e["ph"] == "X":
            xs.setdefault(e["tid"], []).append((e["ts"], e["ts"] + e["dur"]))
    for intervals in xs.values():
        for s1, e1 in intervals:
            for s2, e2 in intervals:
                assert not (s1 < s2 < e1 < e2)
    back = {e.name: e for e in tracebridge.read(path)}
    assert back["a"].overlapping and back["a"].thread_id == ME.tid
    assert back["g2"].track == "GPU" and back["g2"].thread_name == "worker"
    # Lanes' thread ids stay below 2^31: trace_processor's JSON importer moves events of larger ones onto
    # the process's main thread, where every lane would collapse.
    assert all(0 < t < 2**31 for t in tid.values())


def test_a_lane_never_takes_a_thread_id_the_file_uses(tmp_path: Path) -> None:
    from tracebridge.sinks.chrome import LANE_TID_BASE

    path = tmp_path / "t.json"
    w = ChromeJsonWriter(path)
    odd = ThreadInfo(ME.pid, LANE_TID_BASE, "a thread whose id is the first lane's")
    w.write(odd, [Event("span", "x", 1_000, 2_000, 1, {}, odd.tid, odd.name)])
    w.write(ME, [Event("span", "lane", 1_000, 5_000, 1, {}, ME.tid, ME.name, overlapping=True)])
    w.close()
    evs = json.loads(path.read_text())["traceEvents"]
    tid = {e["name"]: e["tid"] for e in evs if e["ph"] == "X"}
    assert tid["x"] == LANE_TID_BASE and tid["lane"] == LANE_TID_BASE + 1


@given(st.data())
def test_round_trip(tmp_path_factory, data) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("json") / "t.json"
    events = data.draw(thread_events(ME.tid, ME.name, data.draw(st.integers(0, 10**12))))
    # JSON keeps no finite/infinite distinction for floats: keep to finite values here.
    for ev in events:
        if isinstance(ev.value, float) and abs(ev.value) == float("inf"):
            ev.value = 0.0
        ev.metadata = json.loads(json.dumps(ev.metadata).replace("Infinity", "0.0"))
    w = ChromeJsonWriter(path)
    w.write(ME, events)
    w.close()
    trace = read_trace(path)
    assert trace.problems == []
    assert_same_events(trace.events, events)


def test_session_to_json_and_convert_from_perfetto(tmp_path: Path) -> None:
    pf = tmp_path / "t.perfetto-trace"
    tracebridge.start(output=pf)
    with tracebridge.span("s", k="v"):
        tracebridge.counter("c", 1.5)
    tracebridge.stop()
    from tracebridge.cli import main

    out = tmp_path / "t.json"
    assert main(["convert", str(pf), "-o", str(out)]) == 0
    a = [comparable(e) for e in tracebridge.read(pf)]
    b = [comparable(e) for e in tracebridge.read(out)]
    assert a == b
    back = tmp_path / "again.perfetto-trace"
    assert main(["convert", str(out), "-o", str(back)]) == 0
    assert [comparable(e) for e in tracebridge.read(back)] == a


def test_a_converted_trace_keeps_the_marks_of_its_losses(tmp_path: Path, writer_asleep: None) -> None:
    """A queue of 64 records that no writer empties while 1,000 spans are recorded: the mark of the 936
    lost is in the Perfetto file and, converted, in Chrome JSON and back (it was left out)."""
    from tracebridge.cli import main

    pf = tmp_path / "lossy.perfetto-trace"
    tracebridge.configure(thread_buffer=64, flush_interval=3600.0, on_full="drop")
    try:
        tracebridge.start(level=2, output=pf)
        for _ in range(1000):
            with tracebridge.span("work", level=2):
                pass
        tracebridge.stop()
    finally:
        tracebridge.configure(thread_buffer=65536, flush_interval=0.1)
    out, back = tmp_path / "lossy.json", tmp_path / "again.perfetto-trace"
    assert (
        main(["convert", str(pf), "-o", str(out)]) == 0 and main(["convert", str(out), "-o", str(back)]) == 0
    )
    first = read_trace(pf)
    assert first.session_ns is not None and first.stats is not None
    for path in (pf, out, back):
        trace = read_trace(path)
        assert len(trace.events) == 64, path
        assert [m.name for m in trace.losses] == ["tracebridge: 936 events dropped (queue_full)"], path
        # The session's stats and time, as recorded: a conversion made later does not stretch them.
        assert (trace.stats, trace.session_ns) == (first.stats, first.session_ns), path
    (session,) = [
        e for e in json.loads(out.read_text())["traceEvents"] if e.get("cat") == "tracebridge.stats"
    ]
    assert (
        session["ph"] == "X" and session["name"] == "tracebridge: 64 events recorded, 936 lost (queue_full)"
    )
    assert session["args"]["dropped"] == {"queue_full": {"span": 936}}
    lane = [
        e for e in json.loads(out.read_text())["traceEvents"] if e["ph"] == "M" and e["tid"] == session["tid"]
    ]
    assert [e["args"]["name"] for e in lane] == ["tracebridge"]
    marks = [e for e in json.loads(out.read_text())["traceEvents"] if "dropped" in str(e.get("name"))]
    assert len(marks) == 1 and marks[0]["ph"] == "i"


def test_a_session_event_that_does_not_read_is_a_problem(tmp_path: Path) -> None:
    lane = {
        "ph": "M",
        "pid": 1,
        "tid": 5,
        "name": "thread_name",
        "args": {"name": "tracebridge", "tb.lane": "stats"},
    }
    for bad, why in (({"dur": -5}, "negative duration"), ({"args": {"recorded": "x"}}, "ValueError")):
        session = {
            "ph": "X",
            "name": "tracebridge: 1 events recorded",
            "pid": 1,
            "tid": 5,
            "ts": 10,
            "dur": 5,
        }
        path = tmp_path / "t.json"
        path.write_text(json.dumps({"traceEvents": [lane, {**session, **bad}]}))
        trace = read_trace(path)
        assert (trace.stats, trace.session_ns, trace.events) == (None, None, [])
        (problem,) = trace.problems
        assert problem.code == "json_parser_failure" and why in problem.message

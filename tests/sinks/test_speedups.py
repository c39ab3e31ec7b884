"""The compiled writer loop (tracebridge._speedups) against the pure-Python one: the same bytes."""

from __future__ import annotations

import dataclasses
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tracebridge
from tracebridge import _accel
from tracebridge._model import Event, ThreadInfo
from tracebridge.sinks.perfetto import writer as perfetto_writer
from tracebridge.sinks.perfetto.reader import iter_frames
from tracebridge.sinks.perfetto.writer import PerfettoWriter

from helpers import perfetto_import
from strategies import thread_events

PID = os.getpid()
compiled = pytest.mark.skipif(not _accel.accelerated, reason="the compiled accelerator is not in use here")


def packets(path: Path) -> list[bytes]:
    data = path.read_bytes()
    return [bytes(p) for _, _, p in iter_frames(data)]


def write(path: Path, batches: list[tuple[ThreadInfo, list[Event]]], compiled: bool) -> list[bytes]:
    """The packets a writer makes of ``batches`` on one path (random track uuids seeded alike)."""
    saved = perfetto_writer.speedups
    perfetto_writer.speedups = saved if compiled else None
    state = random.getstate()
    random.seed(20261201)
    try:
        w = PerfettoWriter(path, start_ts=1_000, compress=False)
        for thread, events in batches:
            w.write(thread, events)
        w.close()
    finally:
        random.setstate(state)
        perfetto_writer.speedups = saved
    return packets(path)[2:-1]  # (not the preamble's clock snapshot, nor the stats: they read clocks)


@st.composite
def repeated_batches(draw: st.DrawFn) -> list[tuple[ThreadInfo, list[Event]]]:
    """A thread's events, then the same events again later (names, metadata and levels then interned:
    the compiled loop's own cases), on one or two threads."""
    out = []
    for i in range(draw(st.integers(1, 2))):
        thread = ThreadInfo(PID, 5000 + i, f"t{i}")
        events = draw(thread_events(thread.tid, thread.name, draw(st.integers(10_000, 10**12))))
        shift = 10**9
        again = [
            dataclasses.replace(
                e, start_ns=e.start_ns + shift, end_ns=None if e.end_ns is None else e.end_ns + shift
            )
            for e in events
        ]
        out += [(thread, events), (thread, again)]
    return out


@compiled
@settings(max_examples=150)
@given(repeated_batches())
def test_both_paths_write_the_same_bytes(tmp_path_factory: Any, batches: Any) -> None:
    d = tmp_path_factory.mktemp("speedups")
    assert write(d / "c.perfetto-trace", batches, True) == write(d / "py.perfetto-trace", batches, False)


@compiled
def test_the_compiled_loop_takes_the_common_events(trace_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = [0]
    packet = perfetto_writer._Sequence._packet

    def counting(self: Any, *args: Any) -> bytes:
        calls[0] += 1
        return bytes(packet(self, *args))

    monkeypatch.setattr(perfetto_writer._Sequence, "_packet", counting)
    me = ThreadInfo(PID, 7, "main")
    events = [
        Event(
            "span", "work", 1_000 + 10 * i, 1_005 + 10 * i, level=2, metadata={"i": i, "ok": True, "x": 0.5}
        )
        for i in range(1000)
    ] + [Event("instant", "tick", 20_000 + i, 20_000 + i, metadata={"s": "é"}) for i in range(1000)]
    w = PerfettoWriter(trace_path, start_ts=0)
    w.write(me, events)
    w.close()
    # Only the first of each shape goes through the Python code (it interns the names).
    assert calls[0] <= 4
    imported = perfetto_import(trace_path)
    assert imported.stats == {} and len(imported.slices) == 2000
    back = tracebridge.read(trace_path)
    assert [e.metadata for e in back if e.name == "work"][999] == {"i": 999, "ok": True, "x": 0.5}


def test_which_path_runs_and_the_pure_path_can_be_forced() -> None:
    code = "import tracebridge; print(tracebridge.accelerated)"
    pure = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "TRACEBRIDGE_PURE_PYTHON": "1"},
        check=True,
    )
    assert pure.stdout.strip() == "False"
    assert tracebridge.accelerated is _accel.accelerated


def test_version_says_which_path_runs() -> None:
    from tracebridge.cli import main

    with pytest.raises(SystemExit):
        main(["--version"])
    code = "from tracebridge.cli import main; main(['--version'])"
    env = {**os.environ, "TRACEBRIDGE_PURE_PYTHON": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert (
        out.stdout.startswith("tracebridge ") and "pure Python: TRACEBRIDGE_PURE_PYTHON is set" in out.stdout
    )

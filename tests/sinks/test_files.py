"""AppendOnlyFile: a trace file grows by whole writes, whatever the disk does; Lanes: intervals on tracks
where none cross."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import tracebridge
from tracebridge._recorder.runtime import RT
from tracebridge.reading import read_trace
from tracebridge.sinks._files import Lanes


class ShortWrites:
    """A file that takes at most a few bytes per write, like a filling disk."""

    def __init__(self, real: Any, limit: int = 7) -> None:
        self.real = real
        self.limit = limit

    def write(self, data: Any) -> int:
        return int(self.real.write(bytes(data[: self.limit])))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@pytest.mark.parametrize("ext", [".perfetto-trace", ".json"])
def test_short_writes_are_completed(tmp_path: Path, ext: str) -> None:
    path = tmp_path / f"t{ext}"
    tracebridge.start(output=path)
    sink = RT.session._sink  # type: ignore[union-attr]
    sink._out.file = ShortWrites(sink._out.file)
    for i in range(50):
        with tracebridge.span("s", i=i):
            pass
    session = tracebridge.stop()
    trace = read_trace(path)
    assert trace.problems == []
    assert len(trace.events) == 50 == session.stats.recorded["span"]


@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 8)), max_size=80), st.integers(1, 8))
def test_lanes_never_put_crossing_intervals_together(spans: list[tuple[int, int]], window: int) -> None:
    lanes = Lanes(window)
    placed: dict[int, list[tuple[int, int]]] = {}
    for start, length in spans:
        placed.setdefault(lanes.place(start, start + length), []).append((start, start + length))
    for intervals in placed.values():
        for i, (s, e) in enumerate(intervals):
            for a, b in intervals[:i]:
                assert e < a or b < s or (a < s and e < b) or (s < a and b < e), ((a, b), (s, e))


def test_intervals_one_after_another_share_one_lane() -> None:
    lanes = Lanes(4)
    assert {lanes.place(10 * i, 10 * i + 5) for i in range(100)} == {0}
    assert lanes.place(3, 7) == 1  # (crosses 0-5 at its end)

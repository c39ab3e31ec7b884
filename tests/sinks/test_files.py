"""AppendOnlyFile: a trace file grows by whole writes, whatever the disk does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import tracebridge
from tracebridge._recorder.runtime import RT
from tracebridge.reading import read_trace


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

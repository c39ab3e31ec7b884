from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import tracebridge
from tracebridge.instrument import Instrumentation, instrument

sys.path.insert(0, str(Path(__file__).parent / "samples"))


@pytest.fixture
def kinds() -> Iterator[tuple[object, Instrumentation]]:
    """instr_sample.kinds, instrumented, and a recording in memory."""
    import instr_sample.kinds as module

    handle = instrument("instr_sample.kinds")
    tracebridge.start(level=2)
    try:
        yield module, handle
    finally:
        if tracebridge.stats() is not None and tracebridge._recorder.runtime.RT.session is not None:
            tracebridge.stop()
        handle.uninstrument()

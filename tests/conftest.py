"""Shared fixtures: strict mode (internal errors raise), no session leaks between tests, and decoding
with the official Perfetto schema."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

import tracebridge
from tracebridge import _safety
from tracebridge._recorder.runtime import RT

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent / "sinks"))

settings.register_profile(
    "default", deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "thorough", deadline=None, max_examples=1000, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

pytest_plugins = ("pytester",)  # tests/test_testing.py runs the fixture in a pytest of its own

# Strict mode for the whole suite: an internal error fails the test that caused it.
tracebridge.configure(strict=True)


@pytest.fixture(autouse=True)
def _no_leaked_session() -> Iterator[None]:
    yield
    if RT.session is not None:
        tracebridge.shutdown()
        pytest.fail("test left a tracebridge session running")


@pytest.fixture
def lenient() -> Iterator[None]:
    """Production behaviour: internal errors are counted and reported, not raised."""
    tracebridge.configure(strict=False)
    try:
        yield
    finally:
        tracebridge.configure(strict=True)
        _safety._pending.clear()


@pytest.fixture
def writer_asleep(monkeypatch: pytest.MonkeyPatch) -> None:
    """A thread whose queue is crowded neither wakes the writer nor yields to it: with a long
    flush_interval the writer sleeps until stop(), and a loop past the queue's size makes losses."""
    from tracebridge._recorder import runtime

    monkeypatch.setattr(runtime, "_yield", lambda: None)


@pytest.fixture
def trace_path(tmp_path: Path) -> Path:
    return tmp_path / "trace.perfetto-trace"

"""Sorting on disk: runs, tiers and the merge give every record once, in order, and leave no file."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracebridge.sinks.perfetto import external_sort
from tracebridge.sinks.perfetto.external_sort import ExternalSort


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    # Chunks and tiers small enough that a few hundred records go through every level of the merge.
    monkeypatch.setattr(external_sort, "CHUNK", 3)
    monkeypatch.setattr(external_sort, "FAN_IN", 3)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(-5, 5), st.text(max_size=3)), max_size=400),
    st.integers(1, 40),
)
def test_merged_is_sorted_and_complete(values: list[tuple[int, str]], run: int) -> None:
    records = [(ts, order, text, {"k": order}) for order, (ts, text) in enumerate(values)]
    with ExternalSort() as sorter:
        pending: list[tuple[int, int, str, dict[str, int]]] = []
        for r in records:
            pending.append(r)
            if len(pending) >= run:
                sorter.add_run(pending)
                assert pending == []
        assert sorter.records == len(records) - len(pending)
        out = list(sorter.merged(pending))
        folder = sorter._folder
        assert folder is None or os.listdir(folder) == []  # (each run is removed once read)
    assert out == sorted(records)
    assert folder is None or not os.path.exists(folder)


def test_close_removes_runs_not_read() -> None:
    sorter = ExternalSort()
    for i in range(10):
        sorter.add_run([(i, j) for j in range(5)])
    folder = sorter._folder
    assert folder is not None and os.listdir(folder)
    it = sorter.merged([])
    assert next(it) == (0, 0)
    sorter.close()
    assert not os.path.exists(folder)

"""The compiled path's queue of a thread's records (``_speedups.RecordQueue``) behaves as the deque the
pure path queues on: same records, same order, whatever mix of calls; compact spans come back as their
tuples; the collector sees what it holds."""

from __future__ import annotations

import gc
import weakref
from collections import deque
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracebridge import _accel
from tracebridge._recorder.runtime import new_queue, thread_state

pytestmark = pytest.mark.skipif(not _accel.accelerated, reason="the compiled accelerator is not in use here")

_ints = st.one_of(st.integers(-5, 300), st.integers(-(2**70), 2**70))
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.one_of(st.text(max_size=3), _ints, st.none())),
        st.tuples(st.just("compact"), st.tuples(st.text(max_size=3), _ints, _ints, _ints)),
        st.tuples(st.just("extend"), st.lists(st.integers(), max_size=5)),
        st.tuples(st.just("popleft"), st.none()),
        st.tuples(st.just("take"), st.integers(-2, 90)),
        st.tuples(st.just("clear"), st.none()),
    ),
    max_size=300,
)


@settings(max_examples=300)
@given(_ops)
def test_the_queue_does_what_a_deque_does(ops: list[tuple[str, Any]]) -> None:
    assert _accel.speedups is not None
    q, model = _accel.speedups.RecordQueue(), deque()
    for op, arg in ops:
        if op == "append":
            q.append(arg)
            model.append(arg)
        elif op == "compact":
            q.append_compact(*arg)
            model.append(arg)
        elif op == "extend":
            q.extend(arg)
            model.extend(arg)
        elif op == "popleft":
            if model:
                assert q.popleft() == model.popleft()
            else:
                with pytest.raises(IndexError):
                    q.popleft()
        elif op == "take":
            taken = q.take(arg)
            assert list(taken) == [model.popleft() for _ in range(min(max(arg, 0), len(model)))]
        else:
            q.clear()
            model.clear()
        assert len(q) == len(model) and bool(q) == bool(model)
        if model:
            assert q[-1] == model[-1] and q[0] == model[0]
    assert list(q) == list(model)


def test_a_long_run_keeps_its_order_as_the_ring_grows_wraps_and_shrinks() -> None:
    assert _accel.speedups is not None
    q = _accel.speedups.RecordQueue()
    expected: deque[Any] = deque()
    n = 0
    for rnd in range(6):
        for _ in range(3_000 * (rnd + 1)):
            q.append_compact("s", 2, n, n + 1) if n % 3 else q.append(n)
            expected.append(("s", 2, n, n + 1) if n % 3 else n)
            n += 1
        for size in (1, 700, 5_000):
            got = list(q.take(size))
            assert got == [expected.popleft() for _ in range(len(got))]
    assert list(q.take(10**9)) == list(expected) and len(q) == 0
    q.append("again")
    assert list(q) == ["again"]


def test_the_collector_frees_a_cycle_through_a_queue_or_a_batch() -> None:
    assert _accel.speedups is not None

    class Rec:
        pass

    for hold_in_batch in (False, True):
        q = _accel.speedups.RecordQueue()
        rec = Rec()
        rec.q = q  # type: ignore[attr-defined]
        q.append(rec)
        gone = weakref.ref(rec)
        if hold_in_batch:
            rec.batch = q.take(1)  # type: ignore[attr-defined]
        del q, rec
        gc.collect()
        assert gone() is None


def test_threads_queue_on_it_and_indices_out_of_range_raise() -> None:
    assert new_queue is _accel.speedups.RecordQueue  # type: ignore[union-attr]
    assert type(thread_state().buf) is new_queue
    q = new_queue()
    with pytest.raises(IndexError):
        q[0]
    q.append_compact("x", 1, 2, 3)
    assert q[0] == q[-1] == ("x", 1, 2, 3)
    with pytest.raises(IndexError):
        q[1]
    with pytest.raises(TypeError):
        new_queue(1)
    with pytest.raises(TypeError):
        q.append_compact("x", 1)
    assert "1 records" in repr(q)


class _Finalizer:
    """Runs ``action(queue)`` when the collector frees it (it is in a cycle)."""

    def __init__(self, q: Any, action: Any, out: list[Any]) -> None:
        self.q, self.action, self.out, self.me = q, action, out, self

    def __del__(self) -> None:
        self.out.append(self.action(self.q))


@pytest.mark.parametrize("op", ["item", "iter", "popleft"])
@pytest.mark.parametrize("action", ["clear", "popleft"])
def test_a_finalizer_that_takes_from_the_queue_while_it_makes_a_tuple(op: str, action: str) -> None:
    """Making a compact entry's tuple may run a collection, and a finalizer may take from the same queue
    meanwhile: nothing is read after it is freed, and no record is lost or given twice."""
    assert _accel.speedups is not None
    for extra in range(0, 8):
        q = _accel.speedups.RecordQueue()
        for i in range(6):
            q.append_compact(f"name-{i}" * 3, 1, i, i + 1)  # (names only the queue holds)
        expected = [(f"name-{i}" * 3, 1, i, i + 1) for i in range(6)]  # (equal strings, not the same)
        out: list[Any] = []
        gc.collect()
        gc.disable()
        _Finalizer(q, getattr(type(q), action), out)
        threshold = gc.get_threshold()
        gc.set_threshold(gc.get_count()[0] + extra)
        gc.enable()
        try:
            got = q[2] if op == "item" else list(q) if op == "iter" else q.popleft()
        finally:
            gc.set_threshold(*threshold)
            gc.collect()
        assert out, "the finalizer ran"
        if op == "item":
            assert got == expected[2]
        elif op == "iter":  # (a snapshot of what the queue held as it went: records of it, in order, once)
            assert all(r in expected for r in got) and got == sorted(set(got), key=expected.index)
        elif action == "popleft":  # both took one: the first two, each once
            assert sorted([got, out[0]]) == expected[:2] and list(q) == expected[2:]
        else:
            assert got == expected[0] and list(q) == []


def test_the_ring_gives_memory_back_as_the_queue_drains_and_counts_it() -> None:
    """A burst grows the ring; taking most of it shrinks it again (as a deque frees its blocks), though
    records stay queued; sys.getsizeof counts the ring."""
    import sys

    assert _accel.speedups is not None
    q = _accel.speedups.RecordQueue()
    empty = sys.getsizeof(q)
    for i in range(65_536):
        q.append_compact("burst", 1, i, i + 1)
    assert sys.getsizeof(q) >= empty + 65_536 * 32
    assert len(q.take(65_526)) == 65_526
    assert len(q) == 10 and sys.getsizeof(q) < empty + 8192 * 40
    assert list(q) == [("burst", 1, i, i + 1) for i in range(65_526, 65_536)]

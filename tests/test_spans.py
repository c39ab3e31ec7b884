from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import tracebridge
from tracebridge import accelerated
from tracebridge.spans import _C_CALLS_OK

from helpers import official_view, record

#: Decorated functions are the compiled wrapper (not on Python 3.12: see spans._C_CALLS_OK).
C_WRAPPER = accelerated and _C_CALLS_OK


def spans(session: tracebridge.Session) -> list[tracebridge.Event]:
    return [e for e in session.events if e.kind == "span"]


def test_nested_spans_link_parent_and_trace() -> None:
    def work() -> None:
        with tracebridge.span("outer", level=2, path="p"), tracebridge.span("inner", level=2):
            pass

    outer, inner = spans(record(work))
    assert (outer.name, inner.name) == ("outer", "inner")
    assert outer.metadata == {"path": "p"}
    assert inner.parent_id == outer.span_id and outer.parent_id == 0
    assert inner.trace_id == outer.trace_id != 0
    assert outer.start_ns <= inner.start_ns <= inner.end_ns <= outer.end_ns
    assert outer.thread_id == threading.get_native_id()
    assert outer.thread_name == threading.current_thread().name


def test_levels() -> None:
    def work() -> None:
        assert tracebridge.active(1) and tracebridge.active(2) and not tracebridge.active(3)
        with tracebridge.span("info", level=2), tracebridge.span("verbose", level=3):
            pass

    assert [e.name for e in spans(record(work, level=2))] == ["info"]
    assert not tracebridge.active(1)


def test_span_off_is_inert_and_still_decorates() -> None:
    off = tracebridge.span("x", level=3)
    with off as s:
        s.set(a=1).append_metadata(lambda: pytest.fail("called"))
        s.stop()

    @tracebridge.span("decorated", level=2, k="v")
    def f(x: int) -> int:
        return x + 1

    def work() -> None:
        assert f(1) == 2

    (ev,) = spans(record(work))
    assert (ev.name, ev.level, ev.metadata) == ("decorated", 2, {"k": "v"})


def test_off_span_propagates_exceptions() -> None:
    with pytest.raises(KeyError), tracebridge.span("x", level=5):
        raise KeyError("k")


def test_lazy_name_and_metadata_only_when_recorded() -> None:
    calls: list[str] = []

    def name() -> str:
        calls.append("name")
        return "lazy"

    def work() -> None:
        with tracebridge.span(name, level=2) as s:
            s.append_metadata(lambda: calls.append("md") or {"n": 1})
        with tracebridge.span(name, level=3) as s:
            s.append_metadata(lambda: calls.append("never") or {})

    (ev,) = spans(record(work))
    assert ev.name == "lazy" and ev.metadata == {"n": 1}
    assert calls == ["name", "md"]


def test_set_and_stop() -> None:
    def work() -> None:
        with tracebridge.span("s") as s:
            s.set(a=1)
            s.set(a=2, b=3)
            s.stop()
            s.set(after=True)  # after stop: not part of the record
        tracebridge.instant("after")

    session = record(work)
    (ev,) = spans(session)
    assert ev.metadata == {"a": 2, "b": 3}
    assert ev.end_ns <= next(e for e in session.events if e.name == "after").start_ns


def test_encoded_name_is_split() -> None:
    def work() -> None:
        with tracebridge.span("validate#rules=12,strict=true#", extra=1):
            pass

    (ev,) = spans(record(work))
    assert ev.name == "validate"
    assert ev.metadata == {"rules": "12", "strict": "true", "extra": 1}


def test_exception_marks_span_failed_and_is_reraised_unchanged() -> None:
    err = ValueError("bad value")

    def fail() -> None:
        raise err

    def work() -> None:
        with pytest.raises(ValueError) as info, tracebridge.span("boom"):
            fail()
        assert info.value is err

    (ev,) = spans(record(work))
    assert ev.error is not None
    assert (ev.error.type, ev.error.message) == ("ValueError", "bad value")
    functions = [f.function for f in ev.error.frames]
    # Outermost first: this test's callers, then work, then fail where it was raised.
    assert functions[-2:] == ["work", "fail"]
    assert ev.error.frames[-1].file == __file__
    assert ev.error.frames[-1].line == fail.__code__.co_firstlineno + 1


def test_traced_kinds() -> None:
    @tracebridge.traced
    def plain(x: int) -> int:
        """Doc."""
        return x * 2

    @tracebridge.traced(level=2)
    async def coro(x: int) -> int:
        await asyncio.sleep(0)
        return x + 1

    @tracebridge.traced
    def gen(n: int):  # type: ignore[no-untyped-def]
        yield from range(n)

    @tracebridge.traced
    async def agen(n: int):  # type: ignore[no-untyped-def]
        for i in range(n):
            yield i

    assert plain.__doc__ == "Doc." and plain.__name__ == "plain"
    assert inspect.iscoroutinefunction(coro)
    assert inspect.isgeneratorfunction(gen) and inspect.isasyncgenfunction(agen)

    async def consume() -> list[int]:
        return [i async for i in agen(3)]

    def work() -> None:
        assert plain(2) == 4
        assert asyncio.run(coro(1)) == 2
        assert list(gen(3)) == [0, 1, 2]
        assert asyncio.run(consume()) == [0, 1, 2]

    names = [e.name for e in spans(record(work))]
    assert names == [
        "test_traced_kinds.<locals>.plain",
        "test_traced_kinds.<locals>.coro",
        "test_traced_kinds.<locals>.gen",
        "test_traced_kinds.<locals>.agen",
    ]


def test_generator_span_covers_iteration() -> None:
    @tracebridge.traced
    def gen():  # type: ignore[no-untyped-def]
        yield 1
        with tracebridge.span("inside"):
            yield 2

    def work() -> None:
        it = gen()
        next(it)
        tracebridge.instant("between")
        next(it)
        it.close()

    session = record(work)
    g = next(e for e in session.events if e.name.endswith("gen"))
    between = next(e for e in session.events if e.name == "between")
    assert g.start_ns <= between.start_ns <= g.end_ns


def test_generator_close_and_error_end_the_span() -> None:
    @tracebridge.traced
    def gen():  # type: ignore[no-untyped-def]
        yield 1
        raise RuntimeError("mid-iteration")

    def work() -> None:
        it = gen()
        next(it)
        with pytest.raises(RuntimeError):
            next(it)

    (ev,) = spans(record(work))
    assert ev.error is not None and ev.error.type == "RuntimeError"


def test_async_generator_send_and_throw_are_forwarded() -> None:
    @tracebridge.traced
    async def echo():  # type: ignore[no-untyped-def]
        received = []
        try:
            while True:
                received.append((yield len(received)))
        except KeyError:
            yield -1

    async def drive() -> list[int]:
        it = echo()
        out = [await it.asend(None), await it.asend("a"), await it.athrow(KeyError())]
        await it.aclose()
        return out

    def work() -> None:
        assert asyncio.run(drive()) == [0, 1, -1]

    (ev,) = spans(record(work))
    assert ev.error is None


def test_overlapping_async_spans_are_marked() -> None:
    async def task(name: str, delay: float) -> None:
        with tracebridge.span(name):
            await asyncio.sleep(delay)

    async def main() -> None:
        # a begins first and ends first, while b (another task) is still open: they cross.
        await asyncio.gather(task("a", 0.01), task("b", 0.03), task("c", 0.0))

    def work() -> None:
        asyncio.run(main())

    by_name = {e.name: e for e in spans(record(work))}
    a, b, c = by_name["a"], by_name["b"], by_name["c"]
    assert a.start_ns < b.start_ns < a.end_ns < b.end_ns
    assert a.overlapping and not b.overlapping
    # c began last and ended first: it lies inside b's interval, which nests properly.
    assert not c.overlapping
    # Each task has its own current span: none is the parent of another.
    assert a.parent_id == b.parent_id == c.parent_id == 0


def test_instants_counters_categories_tracks() -> None:
    def work() -> None:
        tracebridge.instant("tick", level=1, category=["io", "net"], n=1)
        tracebridge.counter("mem", 12, unit="bytes")
        tracebridge.counter("temp", 36.6)
        with tracebridge.span("k", track="GPU Compute", category="gpu"):
            pass

    session = record(work)
    tick, mem, temp, k = session.events
    assert (tick.kind, tick.categories, tick.metadata) == ("instant", ("io", "net"), {"n": 1})
    assert (mem.kind, mem.value, mem.unit, mem.metadata) == ("counter", 12, "bytes", {})
    assert (temp.value, temp.unit) == (36.6, None)
    assert (k.track, k.categories) == ("GPU Compute", ("gpu",))


def test_activity_across_threads_and_open_activity() -> None:
    def work() -> None:
        aid = tracebridge.activity_start("download", url="u")
        t = threading.Thread(target=tracebridge.activity_end, args=(aid,), kwargs={"ok": True}, name="other")
        t.start()
        t.join()
        tracebridge.activity_start("never_ends")

    session = record(work)
    done = next(e for e in session.events if e.name == "download")
    assert done.metadata == {"url": "u", "ok": True}
    assert done.thread_name == "other" and done.end_ns is not None
    still_open = next(e for e in session.events if e.name == "never_ends")
    assert still_open.end_ns is None
    assert session.stats.open_activities == 1


def test_activity_end_with_unknown_id_is_counted() -> None:
    session = record(lambda: tracebridge.activity_end(12345))
    assert session.stats.dropped == {"unknown_activity": {"activity": 1}}
    tracebridge.activity_end(0)  # ignored, no session


def test_flows() -> None:
    def work() -> None:
        fid = tracebridge.flow()
        with tracebridge.span("send", flows=[fid]):
            pass
        t = threading.Thread(
            target=lambda: tracebridge.span("recv", terminating_flows=[fid]).__enter__().stop()
        )
        t.start()
        t.join()

    send, recv = spans(record(work))
    assert send.flows == recv.terminating_flows and len(send.flows) == 1


def test_backtrace() -> None:
    def inner() -> str:
        return tracebridge.backtrace()

    def skipping() -> str:
        return tracebridge.backtrace(skip=1)

    lines = inner().splitlines()
    assert lines[-1].strip().startswith("inner (") and lines[-1].endswith(
        f"{__file__}:{inner.__code__.co_firstlineno + 1})"
    )
    assert lines[-2].strip().startswith("test_backtrace (")
    assert skipping().splitlines()[-1].strip().startswith("test_backtrace (")


def test_nullcontext_compatible_usage_with_exit_stack() -> None:
    def work() -> None:
        with contextlib.ExitStack() as stack:
            stack.enter_context(tracebridge.span("on", level=1))
            stack.enter_context(tracebridge.span("off", level=9))

    assert [e.name for e in spans(record(work))] == ["on"]


def test_metadata_snapshot_at_record_time() -> None:
    items = [1, 2]

    def work() -> None:
        with tracebridge.span("s", items=items):
            pass
        items.append(3)

    (ev,) = spans(record(work))
    assert ev.metadata == {"items": [1, 2]}


def test_metadata_may_be_called_name() -> None:
    def work() -> None:
        with tracebridge.span("s", name="value"):
            tracebridge.instant("i", name="v2")

    session = record(work)
    assert [e.metadata for e in session.events] == [{"name": "value"}, {"name": "v2"}]
    assert tracebridge.decode(tracebridge.encode("n", name="x")) == ("n", {"name": "x"})


def test_traced_call_that_touches_its_own_span() -> None:
    @tracebridge.traced(level=2)
    def work(items: list[int]) -> int:
        span = tracebridge.current_span()
        assert span is not None
        span.set(items=items)
        span.append_metadata(lambda: {"lazy": len(items)})
        return len(items)

    @tracebridge.traced(level=2)
    def stops_early() -> str:
        span = tracebridge.current_span()
        assert span is not None
        span.stop()
        return "done"

    tracebridge.start(level=2)
    items = [1, 2]
    assert work(items) == 2
    items.append(3)  # after the call: the span keeps what it saw
    assert stops_early() == "done"
    ev, early = tracebridge.stop().events
    assert ev.metadata == {"items": [1, 2], "lazy": 2}
    assert early.name.endswith("stops_early") and early.end_ns is not None
    assert tracebridge.current_span() is None


def test_metadata_cannot_pose_as_the_files_own_fields(tmp_path: Path) -> None:
    # "exception.type" is an OpenTelemetry attribute name users set; "tb.level" is ours. Neither may turn
    # a span into a failure or change its level when the file is read back.
    for path in (tmp_path / "t.perfetto-trace", tmp_path / "t.json"):
        tracebridge.start(level=2, output=path)
        with tracebridge.span("op", level=2) as s:
            s.set(**{"exception.type": "X", "tb.level": 9, "ok": 1})
        tracebridge.stop()
        (ev,) = tracebridge.read(path)
        if path.suffix != ".json":  # as Perfetto's own schema reads it: the keys beside the file's own
            (begin,) = [e for e in official_view(path)["events"] if e["type"] == 1 and e["name"] == "op"]
            assert {"attribute.exception.type", "attribute.tb.level"} <= set(begin["annotations"])
            assert "exception.type" not in begin["annotations"]
        assert (ev.error, ev.level) == (None, 2)
        assert ev.metadata == {"attribute.exception.type": "X", "attribute.tb.level": 9, "ok": 1}


def test_a_level_that_is_not_a_number_is_a_clear_error() -> None:
    with pytest.raises(TypeError, match=r"span level must be an integer .* got 'info'"):
        tracebridge.span("x", level="info")  # type: ignore[arg-type]


def test_spans_of_interleaved_asyncio_tasks_stay_with_their_task(tmp_path: Path) -> None:
    # Task w0 opens spans while w1 and w2 have spans open above its own on the thread's stack: on the
    # thread's track they would be drawn inside w2's. They go on w0's track, nested as they ran.
    path = record_interleaved_tasks(tmp_path, 3)
    # As Perfetto's own schema reads the file: w0's three slices begin on one track named for it.
    view = official_view(path)
    w0 = [u for u, d in view["tracks"].items() if d.name == "w0 (MainThread)"]
    begins = [e for e in view["events"] if e["track"] in w0 and e["type"] == 1]
    assert len(w0) == 1 and [e["name"] for e in begins] == ["task", "inner", "leaf"]
    tracks = {(e.name, e.metadata["i"]): e.track for e in tracebridge.read(path)}
    for i in (0, 1):  # their spans overlapped another task's: a track of their own, all three
        assert {tracks[(n, i)] for n in ("task", "inner", "leaf")} == {f"w{i} (MainThread)"}
    assert {tracks[(n, 2)] for n in ("task", "inner", "leaf")} == {None}  # w2 nested on the thread's
    by_track: dict[object, list[tracebridge.Event]] = {}
    for e in tracebridge.read(path):
        by_track.setdefault(e.track, []).append(e)
    for events in by_track.values():  # on every track, slices nest or are apart: none cross
        for a in events:
            for b in events:
                assert a.end_ns is not None and b.end_ns is not None
                assert (
                    a.end_ns <= b.start_ns
                    or b.end_ns <= a.start_ns
                    or (a.start_ns <= b.start_ns and b.end_ns <= a.end_ns)
                    or (b.start_ns <= a.start_ns and a.end_ns <= b.end_ns)
                )


def test_traced_above_classmethod_and_staticmethod() -> None:
    class Shop:
        @tracebridge.traced(level=2)
        @classmethod
        def open(cls) -> str:
            return cls.__name__

        @tracebridge.span("close", level=2)
        @staticmethod
        def close(n: int) -> int:
            return n + 1

    session = record(lambda: (Shop.open(), Shop().close(1)))
    assert [e.name for e in spans(session)] == [
        "test_traced_above_classmethod_and_staticmethod.<locals>.Shop.open",
        "close",
    ]
    assert Shop.open() == "Shop" and Shop.close(1) == 2


def test_a_child_of_a_dropped_span_recorded_after_all() -> None:
    # A span sampling dropped that then fails is recorded (off its thread's stack); a span begun later
    # in a context where it is still current must begin as usual.
    import contextvars

    from tracebridge.sampling import Names

    def work() -> None:
        with tracebridge.span("root", level=2):
            ctx = None
            with pytest.raises(ValueError), tracebridge.span("d", level=2):
                ctx = contextvars.copy_context()
                raise ValueError("x")
            assert ctx is not None

            def child() -> None:
                with tracebridge.span("child", level=2):
                    pass

            ctx.run(child)

    session = record(work, sampling=[Names(exclude=["d"])])
    assert sorted(e.name for e in spans(session)) == ["child", "d", "root"]


def test_task_tracks_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tracebridge import _recorder

    monkeypatch.setattr(_recorder.convert, "MAX_TASK_TRACKS", 2)

    path = record_interleaved_tasks(tmp_path, 5)
    names = {e.track for e in tracebridge.read(path)}
    assert {"w0 (MainThread)", "w1 (MainThread)"} <= names
    assert not any(n and n.startswith(("w2", "w3")) for n in names)  # past the cap: the overlap lanes


def record_interleaved_tasks(tmp_path: Path, n: int) -> Path:
    """Tasks w0..w<n-1> each open a span, then, one after the other (w0 first, while the others' spans
    are open above its own on the thread's stack), an inner span and a leaf in it. Returns the trace."""

    async def worker(i: int, go: asyncio.Event, done: asyncio.Event) -> None:
        with tracebridge.span("task", i=i):
            await go.wait()
            with tracebridge.span("inner", i=i), tracebridge.span("leaf", i=i):
                pass
            done.set()
            await asyncio.sleep(0)

    async def main() -> None:
        go = [asyncio.Event() for _ in range(n)]
        done = [asyncio.Event() for _ in range(n)]
        tasks = [asyncio.create_task(worker(i, go[i], done[i]), name=f"w{i}") for i in range(n)]
        await asyncio.sleep(0)
        for i in range(n):
            go[i].set()
            await done[i].wait()
        await asyncio.gather(*tasks)

    path = tmp_path / "t.perfetto-trace"
    tracebridge.start(level=2, output=path)
    asyncio.run(main())
    tracebridge.stop()
    return path


# ------------------------------------------- the decorator's fast path records what Span.__exit__ does

BODIES = {
    "returns": lambda: 1,
    "raises": lambda: 1 / 0,
    "sets metadata": lambda: tracebridge.current_span().set(rows=3),  # type: ignore[union-attr]
    "lazy metadata": lambda: tracebridge.current_span().append_metadata(lambda: {"n": 1}),  # type: ignore[union-attr]
    "fails it": lambda: tracebridge.current_span().fail(KeyError("k")),  # type: ignore[union-attr]
    "stops it": lambda: tracebridge.current_span().stop(),  # type: ignore[union-attr]
    "exits": lambda: (_ for _ in ()).throw(SystemExit(0)),
    "asks for ids": lambda: tracebridge.current_span().trace_id,  # type: ignore[union-attr]
    "child": lambda: tracebridge.span("child", level=2).__enter__().stop(),
}


def _shape(events: list[tracebridge.Event]) -> list[tuple[object, ...]]:
    spans = [e for e in events if e.kind == "span"]
    ids = {e.span_id: e.name for e in spans}
    return sorted(
        (
            e.name,
            e.level,
            sorted(e.metadata.items()),
            e.error and (e.error.type, e.error.message),
            e.overlapping,
            e.adjusted_count,
            ids.get(e.parent_id),
            e.end_ns is not None and e.end_ns >= e.start_ns,
        )
        for e in spans
    )


@pytest.mark.parametrize("to_file", [False, True], ids=["memory", "perfetto file"])
@pytest.mark.parametrize("body", sorted(BODIES))
def test_traced_fast_path_records_what_a_with_span_records(body: str, to_file: bool, tmp_path: Path) -> None:
    fn = BODIES[body]

    def call(run: object) -> None:
        with tracebridge.span("outer", level=2), contextlib.suppress(ZeroDivisionError, SystemExit):
            run()  # type: ignore[operator]

    def with_span() -> object:
        with tracebridge.span("work", level=2):
            return fn()

    fast = tracebridge.traced(name="work", level=2)(fn)
    # (no metadata, a string name: the fast path, compiled or not)
    if C_WRAPPER:
        assert type(fast).__name__ == "Traced"
    else:
        assert fast.__code__.co_name == "plain_wrapper"

    def events(run: object, name: str) -> list[tracebridge.Event]:
        if not to_file:
            return record(lambda: call(run), level=2).events
        path = tmp_path / f"{name}.perfetto-trace"  # (spans that carry nothing go as compact records)
        record(lambda: call(run), level=2, output=path)
        return tracebridge.read(path)

    a, b = events(fast, "fast"), events(with_span, "with")
    assert _shape(a) == _shape(b)
    assert {e.name for e in a} >= {"outer", "work"}


@tracebridge.traced
def described(x: int, *, scale: int = 2) -> int:
    """Doubles."""
    return x * scale


class _Holder:
    @tracebridge.traced
    def method(self, x: int) -> tuple[object, int]:
        return self, x


def test_a_decorated_function_reads_binds_and_pickles_like_the_function() -> None:
    """On both paths (the compiled one is a C object, the pure one a Python function)."""
    import pickle
    import weakref

    assert inspect.isfunction(described) and callable(described)
    assert (described.__name__, described.__qualname__, described.__doc__) == (
        "described",
        "described",
        "Doubles.",
    )
    assert described.__module__ == __name__ and described.__wrapped__.__name__ == "described"
    assert str(inspect.signature(described)) == "(x: 'int', *, scale: 'int' = 2) -> 'int'"
    if C_WRAPPER:  # what the C object does not have itself is the function's (as with wrapt's proxies)
        assert described.__globals__ is globals() and described.__code__ is described.__wrapped__.__code__
    assert pickle.loads(pickle.dumps(described)) is described  # by reference, as functions are
    assert weakref.ref(described)() is described
    holder = _Holder()
    assert holder.method(1) == (holder, 1) and _Holder.method(holder, 2) == (holder, 2)
    assert holder.method.__self__ is holder  # a bound method when looked up on an instance

    def work() -> None:
        assert described(3) == 6 and described(3, scale=3) == 9 and described(x=1) == 2
        assert holder.method(5) == (holder, 5)

    names = [e.name for e in spans(record(work, level=1))]
    assert names == ["described", "described", "described", "_Holder.method"]


def test_a_decorated_function_is_left_out_of_back_traces() -> None:
    """A failed call's back-trace goes from its caller straight into the function: no wrapper frame (the
    compiled wrapper has none; the pure one's is left out), the same on both paths."""

    @tracebridge.traced
    def broken() -> None:
        raise KeyError("k")

    def caller() -> None:
        with contextlib.suppress(KeyError):
            broken()

    (failed,) = spans(record(caller, level=1))
    assert failed.error is not None
    frames = [f.function for f in failed.error.frames]
    assert frames[-2:] == ["caller", "broken"], frames
    assert not {"plain_wrapper", "wrapper", "compiled_wrapper"} & set(frames)


def test_a_decorated_function_that_stops_the_recording_returns_as_usual() -> None:
    calls: list[int] = []

    @tracebridge.traced(level=2)
    def work(i: int) -> int:
        calls.append(i)
        if i == 1:
            tracebridge.stop()
        return i

    tracebridge.start(level=2)
    assert [work(i) for i in range(3)] == [0, 1, 2]
    assert tracebridge.stats().recorded["span"] == 1  # the first call; the second ended after the stop
    assert calls == [0, 1, 2]


def test_methods_python_makes_class_or_static_implicitly_can_be_traced() -> None:
    """``__init_subclass__`` and ``__class_getitem__`` become class methods, and ``__new__`` a static
    method, only when they are plain functions: decorated, they still are (both paths)."""
    seen: list[object] = []

    class Base:
        @tracebridge.traced
        def __init_subclass__(cls, **kw: object) -> None:
            super().__init_subclass__(**kw)
            seen.append(cls.__name__)

        @tracebridge.traced
        def __class_getitem__(cls, item: object) -> str:
            return f"{cls.__name__}[{item}]"

        @tracebridge.traced
        def __new__(cls, *args: object) -> Base:
            return super().__new__(cls)

    def work() -> None:
        class Child(Base):
            pass

        assert Base[int] == "Base[<class 'int'>]" and isinstance(Child(), Child)

    names = [e.name for e in spans(record(work, level=1))]
    assert seen == ["Child"] and sorted(names) == [
        "test_methods_python_makes_class_or_static_implicitly_can_be_traced.<locals>.Base.__class_getitem__",
        "test_methods_python_makes_class_or_static_implicitly_can_be_traced.<locals>.Base.__init_subclass__",
        "test_methods_python_makes_class_or_static_implicitly_can_be_traced.<locals>.Base.__new__",
    ]


def test_a_level_that_is_not_an_int_still_decorates() -> None:
    @tracebridge.traced(level=2.0)  # type: ignore[arg-type]
    def work() -> int:
        return 1

    assert [e.name for e in spans(record(lambda: work(), level=2))] == [
        "test_a_level_that_is_not_an_int_still_decorates.<locals>.work"
    ]


def test_an_exit_that_raises_the_exception_it_was_given_makes_no_context_cycle() -> None:
    """(Found in review: the compiled wrapper chained an exception to itself.) Its span's end reads
    ``code`` to decide whether a SystemExit is a failure, and this one raises itself from there."""

    class SelfRaising(SystemExit):
        @property  # type: ignore[misc]
        def code(self) -> object:
            raise self

    @tracebridge.traced
    def work() -> None:
        raise SelfRaising(1)

    def run() -> None:
        with pytest.raises(SelfRaising) as caught:
            work()
        assert caught.value.__context__ is not caught.value

    tracebridge.start(level=1)
    try:
        run()
    finally:
        tracebridge.stop()


def test_a_span_that_ends_out_of_order_never_leaves_an_ended_span_current() -> None:
    # A generator's span, begun inside ``a`` and closed after ``a`` ended: resetting its context token
    # would make ``a`` current again, ended; the innermost span still open is current instead.
    def gen() -> Iterator[None]:
        with tracebridge.span("in generator"):
            yield

    tracebridge.start(level=2)
    try:
        with tracebridge.span("outer") as outer:
            g = gen()
            with tracebridge.span("a"):
                next(g)
            g.close()
            assert tracebridge.current_span() is outer
            with tracebridge.span("after") as after:
                assert after.parent is outer
            g = gen()
            with tracebridge.span("a again"):
                next(g)
            with tracebridge.span("b") as b:
                g.close()  # (it ends inside another live span: that one stays current)
                assert tracebridge.current_span() is b
                with tracebridge.span("child of b") as child:
                    assert child.parent is b
        assert tracebridge.current_span() is None
    finally:
        session = tracebridge.stop()
    names = sorted(e.name for e in session.events)
    assert names == ["a", "a again", "after", "b", "child of b", "in generator", "in generator", "outer"]


def test_a_dropped_spans_enter_and_exit_bind_call_and_nest_as_methods_do() -> None:
    # On the compiled path a dropped span's __enter__ and __exit__ bind from a free list (a `with`
    # makes no method objects): deeper nesting than the list holds, calls unbound, through stop(), and
    # wrong arguments all behave as methods do, on both paths.
    from tracebridge.sampling import AlwaysOff
    from tracebridge.spans import DroppedSpan

    tracebridge.start(level=2, sampling=AlwaysOff())
    try:
        with contextlib.ExitStack() as stack:
            opened = [stack.enter_context(tracebridge.span(f"s{i}", level=2)) for i in range(40)]
            assert all(type(s) is DroppedSpan for s in opened) and tracebridge.current_span() is opened[-1]
            stack.pop_all().close()  # (exits them innermost first)
        assert tracebridge.current_span() is None
        by_hand = tracebridge.span("by hand", level=2)
        assert DroppedSpan.__enter__(by_hand) is by_hand and tracebridge.current_span() is by_hand
        exit_ = by_hand.__exit__
        assert exit_.__name__ == "__exit__" and exit_.__self__ is by_hand
        with pytest.raises(TypeError):
            exit_(None, None)
        assert exit_(None, None, None) is None and tracebridge.current_span() is None
        assert DroppedSpan.__exit__(by_hand, None, None, None) is None  # (ended already: nothing more)
        stopped = tracebridge.span("stopped", level=2)
        with stopped:
            stopped.stop()
            assert tracebridge.current_span() is None
    finally:
        session = tracebridge.stop()
    assert session.events == [] and session.stats.dropped["sampled_out"]["span"] == 42


def test_a_bound_method_of_a_dropped_span_in_a_cycle_is_collected() -> None:
    import gc
    import weakref

    from tracebridge.sampling import AlwaysOff

    class Marker:
        pass

    tracebridge.start(level=2, sampling=AlwaysOff())
    try:
        s = tracebridge.span("cycle", level=2)
        bound, marker = s.__exit__, Marker()
        s.set(exit=bound, marker=marker)  # span -> metadata -> bound method -> span
        gone = weakref.ref(marker)
        assert gc.is_tracked(bound) and s in gc.get_referents(bound)
        del s, bound, marker
        gc.collect()
        assert gone() is None
    finally:
        tracebridge.stop()

"""The compiled span scope (``_speedups.SpanScope``) against the pure-Python one (``spans._PyScope``):
the same workload records the same events on both paths; and the compiled path under stress: Python's
development mode, many threads, interpreter shutdown with threads still recording, memory over many
spans."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tracebridge import _accel

WORKLOAD = Path(__file__).parent / "workloads" / "span_paths.py"
compiled = pytest.mark.skipif(not _accel.accelerated, reason="the compiled accelerator is not in use here")


def run(code_or_path: str | Path, *args: str, pure: bool = False, dev: bool = False) -> str:
    env = {**os.environ, "TRACEBRIDGE_PURE_PYTHON": "1" if pure else "0"}
    cmd = [sys.executable, *(["-X", "dev", "-W", "error"] if dev else [])]
    cmd += [str(code_or_path)] if isinstance(code_or_path, Path) else ["-c", code_or_path]
    out = subprocess.run([*cmd, *args], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@compiled
def test_both_paths_record_the_same_spans(tmp_path: Path) -> None:
    c = json.loads(run(WORKLOAD, str(tmp_path / "c.perfetto-trace")))
    py = json.loads(run(WORKLOAD, str(tmp_path / "py.perfetto-trace"), pure=True))
    assert c["accelerated"] is True and py["accelerated"] is False
    for key in (
        "memory",
        "memory_stats",
        "file",
        "file_stats",
        "sampled",
        "sampled_stats",
        "ratio",
        "ratio_stats",
    ):
        assert c[key] == py[key], key
    names = [e[1] for e in c["memory"]]
    # The workload's cases all happened (an empty run would compare equal too).
    for name in ("root", "child", "leaf", "on-track", "lazy-name", "encoded", "failing", "fails", "handled",
                 "in-generator", "moved", "a.step", "b.step", "work", "plain", "Shop.make", "Shop.buy",
                 "Shop.total", "Shop.price", "suppressed", "inner"):  # fmt: skip
        assert name in names, name
    assert "off" not in names
    assert names.count("Shop.buy") == 3 and names.count("Shop.price") == 3
    price_failed = [e[8][:2] for e in c["memory"] if e[1] == "Shop.price" and e[8]]
    assert price_failed == [["ValueError", "negative"]]
    sampled = {e[1] for e in c["sampled"]}
    assert {"Shop.buy", "Shop.make"} <= sampled and c["sampled_stats"][1]["sampled_out"]["span"] > 0
    ratio = [e[1] for e in c["ratio"]]
    assert 5 < ratio.count("root") < 35 and ratio.count("failing-root") == 40  # (failures are kept)
    assert ratio.count("child") == ratio.count("root") and c["ratio_stats"][1]["sampled_out"]["span"] > 40
    failing = next(e for e in c["file"] if e[1] == "failing")
    assert failing[8][:2] == ["ValueError", "bad value"]
    assert any(e[11] for e in c["memory"] if e[1].endswith(".step")), "asyncio spans overlap"


@compiled
def test_the_compiled_scope_under_python_development_mode(tmp_path: Path) -> None:
    """-X dev (debug hooks on the allocators, resource warnings) with warnings as errors."""
    out = json.loads(run(WORKLOAD, str(tmp_path / "dev.perfetto-trace"), dev=True))
    assert out["accelerated"] is True and len(out["file"]) == len(out["memory"]) > 100


STRESS = """
import threading, tracebridge
from tracebridge import span
tracebridge.configure(on_full="block")
tracebridge.start(level=2, output=PATH)
errors = []
def worker(k):
    try:
        for i in range(N):
            with span("outer", level=2, k=k):
                with span("inner"):
                    pass
                if i % 100 == 0:
                    try:
                        with span("boom"):
                            raise ValueError(i)
                    except ValueError:
                        pass
    except BaseException as exc:
        errors.append(exc)
threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
for t in threads: t.start()
for t in threads: t.join()
session = tracebridge.stop(timeout=600)
assert not errors, errors
print(session.stats.recorded["span"], session.stats.total_dropped, len(tracebridge.read(PATH)))
"""


@pytest.mark.parametrize("pure", [False, True], ids=["compiled", "pure"])
def test_eight_threads_record_every_span(tmp_path: Path, pure: bool) -> None:
    if not pure and not _accel.accelerated:
        pytest.skip("the compiled accelerator is not in use here")
    n = 2_000
    code = STRESS.replace("PATH", repr(str(tmp_path / "stress.perfetto-trace"))).replace("N", str(n))
    recorded, dropped, read = map(int, run(code, pure=pure).split())
    expected = 8 * (2 * n + n // 100)
    assert (recorded, dropped, read) == (expected, 0, expected)


SHUTDOWN = """
import threading, tracebridge
from tracebridge import span
tracebridge.start(level=2, output=PATH)
def spin():
    while True:
        with span("spin", k=1):
            with span("inner"):
                pass
for _ in range(4):
    threading.Thread(target=spin, daemon=True).start()
with span("main"):
    pass
print("exiting")
"""


@pytest.mark.parametrize("pure", [False, True], ids=["compiled", "pure"])
def test_interpreter_shutdown_with_threads_still_recording(tmp_path: Path, pure: bool) -> None:
    if not pure and not _accel.accelerated:
        pytest.skip("the compiled accelerator is not in use here")
    import tracebridge

    path = tmp_path / "shutdown.perfetto-trace"
    for _ in range(3):
        assert run(SHUTDOWN.replace("PATH", repr(str(path))), pure=pure).strip() == "exiting"
        names = {e.name for e in tracebridge.read(path)}
        assert "main" in names


LEAK = """
import gc, resource, tracebridge
from tracebridge import span, traced
@traced
def f(x):
    return x
@traced
def g(x):
    raise ValueError(x)
class C:
    @traced(level=2)
    def m(self, x):
        return x
c = C()
def rss():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize()
tracebridge.configure(on_full="block")
sizes = []
for r in range(ROUNDS):
    tracebridge.start(level=2, output=PATH)
    for i in range(100_000):
        with span("plain"):
            f(i)
        c.m(i)
        if i % 100 == 0:
            try:
                g(i)
            except ValueError:
                pass
        if i % 10 == 0:
            with span("md", level=2, i=i, s="x"):
                pass
    tracebridge.stop(timeout=600)
    gc.collect()
    sizes.append(rss())
print(" ".join(map(str, sizes)))
"""


@compiled
@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads /proc")
def test_memory_stays_flat_over_a_million_spans(tmp_path: Path) -> None:
    """10 rounds of 100,000 spans (and 200,000 decorated calls, 1,000 failed ones, 10,000 spans with
    metadata): after the first round, memory does not grow (RSS moves a few MB either way). A leak of
    one small object per span would add 6.7 MB a round (shown on a build that leaks the end timestamp)."""
    code = LEAK.replace("PATH", repr(str(tmp_path / "leak.perfetto-trace"))).replace("ROUNDS", "10")
    sizes = list(map(int, run(code).split()))
    growth = sizes[-1] - sizes[1]
    assert growth < 12 * 2**20, f"RSS grew {growth / 2**20:.1f} MB over rounds 2-10: {sizes}"


@compiled
def test_the_compiled_function_wrapper_checks_its_arguments_and_is_collected() -> None:
    import gc
    import weakref

    from tracebridge._accel import speedups

    assert speedups is not None
    with pytest.raises(TypeError, match="callable"):
        speedups.Traced(1, "x", 1)
    with pytest.raises(TypeError):
        speedups.Traced(len, "x", "1")

    def make() -> Any:
        box: list[Any] = []

        def fn() -> int:
            return len(box)

        wrapper = speedups.Traced(fn, "fn", 1)
        box.append(wrapper)  # a cycle: the wrapper holds fn, whose closure holds the wrapper
        wrapper.extra = box
        return weakref.ref(wrapper)

    ref = make()
    gc.collect()
    assert ref() is None


@compiled
def test_a_span_whose_thread_state_was_replaced_raises_and_does_not_crash() -> None:
    """(Found in review: the compiled exit read a replaced ``_st`` at ThreadState's offsets: a crash.)"""
    code = """
import tracebridge
from tracebridge import span
tracebridge.start(level=2)
s = span("x")
s.__enter__()
s._st = (1,)
try:
    s.__exit__(None, None, None)
except (TypeError, AttributeError) as exc:
    print("raised", type(exc).__name__)
tracebridge.stop()
"""
    assert run(code).startswith("raised")


_FIELDS = ("name", "level", "metadata", "error", "overlapping", "adjusted_count", "_lazy", "_trace_id")


def _shape(obj: Any) -> tuple[Any, ...]:
    return (type(obj).__name__, *(getattr(obj, f, "<unset>") for f in _FIELDS))


@compiled
@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (("work",), {}),
        (("work", 2), {}),
        (("work",), {"level": 3}),
        (("work",), {"level": 1, "path": "a", "n": 1}),
        ((len,), {}),  # a lazy name
        (("work", 5), {"name": "metadata called name"}),
        (("work",), {"category": "io", "track": "jobs"}),
    ],
)
def test_the_compiled_span_makes_what_the_python_one_makes(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    import tracebridge
    from tracebridge import spans

    tracebridge.start(level=2)
    try:
        assert _shape(spans.span(*args, **kwargs)) == _shape(spans._py_span(*args, **kwargs))
    finally:
        tracebridge.stop()


@compiled
@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((), {}), (("work", 1, 2), {}), (("work", 1), {"level": 2}), (("work",), {"level": "high"})],
)
def test_the_compiled_span_refuses_what_the_python_one_refuses(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    from tracebridge import spans

    with pytest.raises(TypeError) as compiled_error:
        spans.span(*args, **kwargs)
    with pytest.raises(TypeError) as python_error:
        spans._py_span(*args, **kwargs)
    assert str(compiled_error.value).replace("_py_span", "span") == str(python_error.value).replace(
        "_py_span", "span"
    )


@compiled
def test_the_compiled_span_reads_like_the_python_one() -> None:
    import inspect

    from tracebridge import spans

    def params(fn: Any) -> list[tuple[str, Any, Any]]:  # (annotations aside: a builtin has none)
        return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]

    assert params(spans.span) == params(spans._py_span)
    assert spans.span.__doc__ == inspect.cleandoc(spans._py_span.__doc__ or "")


@compiled
@pytest.mark.skipif(sys.version_info[:2] == (3, 12), reason="3.12 keeps the Python wrapper (_C_CALLS_OK)")
def test_setting_the_code_of_a_compiled_wrapper_sets_the_functions() -> None:
    """Hot reloading and mock.patch.object set __code__ (and defaults): on the wrapped function, where
    a call reads them."""
    import tracebridge

    @tracebridge.traced
    def f(x: int = 1) -> int:
        return x

    def g(x: int = 1) -> int:
        return -x

    assert type(f).__name__ == "Traced"
    f.__code__ = g.__code__
    f.__defaults__ = (5,)
    assert f() == -5 and f.__wrapped__.__code__ is g.__code__ and "__code__" not in vars(f)

"""A span workload run once on each path (compiled span scope, pure Python) by tests/test_span_paths.py:
it prints what was recorded, normalized (times relative to the first event, threads numbered), as JSON.
Every case the span scope handles is here: nesting, levels, metadata that needs a snapshot, named
tracks, lazy names and metadata, failures and exceptions that are not failures, early stops, spans that
overlap (asyncio tasks), a span ended on another thread, decorated functions, several threads."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import threading
import time

from normalize import normalized as normalized_events

import tracebridge
from tracebridge import span, spans, traced


class Clock:
    """A clock that moves 1 us a read: the same times on both paths. It runs far ahead of the real clock
    (which sessions begin by): 1 s ahead was overtaken on a loaded machine under -X dev, and every span
    of the later sessions was then dropped as begun before its session."""

    def __init__(self) -> None:
        self.t = time.perf_counter_ns() + 10**13

    def __call__(self) -> int:
        self.t += 1_000
        return self.t


spans.set_clock(Clock())


@traced
def leaf(x: int) -> int:
    return x * 2


@traced(level=2)
def fails() -> None:
    raise KeyError("missing")


def gen() -> object:
    with span("in-generator"):
        yield 1
        yield 2


class Shop:
    """Decorated methods of every kind (the compiled wrapper binds as a method descriptor)."""

    def __init__(self) -> None:
        self.n = 0

    @traced(level=2)
    def buy(self, k: int, *, twice: bool = False) -> int:
        self.n += k * (2 if twice else 1)
        return self.n

    @classmethod
    @traced
    def make(cls, n: int) -> Shop:
        shop = cls()
        shop.n = n
        return shop

    @staticmethod
    @traced
    def price(k: int) -> int:
        if k < 0:
            raise ValueError("negative")
        return k * 3

    @property
    @traced(level=2)
    def total(self) -> int:
        return self.n


@traced
def suppressed() -> int:
    """Ends its own span and fails inside a span whose exception is suppressed."""
    with contextlib.suppress(ZeroDivisionError), span("inner"):
        1 / 0  # noqa: B018
    return 7


def methods() -> None:
    shop = Shop.make(1)
    shop.buy(2)
    shop.buy(k=1, twice=True)
    Shop.buy(shop, 1)
    assert shop.total == shop.n == 6
    assert Shop.price(2) == shop.price(2) == 6
    with contextlib.suppress(ValueError):
        Shop.price(-1)
    assert suppressed() == 7


async def task(name: str, n: int) -> None:
    for i in range(n):
        with span(f"{name}.step", i=i):
            await asyncio.sleep(0)


def workload() -> None:
    with span("root", level=1, path="app.toml") as root:
        with span("off", level=3):
            pass
        with span("child", level=2, items=[1, 2, 3], nested={"a": [1]}):
            leaf(1)
        with span("on-track", track="jobs", category="io"):
            pass
        with span(lambda: "lazy-name") as s:
            s.append_metadata(lambda: {"late": True})
        with span("encoded#k=v#"):
            pass
        with contextlib.suppress(ValueError), span("failing"):
            raise ValueError("bad value")
        with contextlib.suppress(KeyError):
            fails()
        with contextlib.suppress(GeneratorExit), span("exit-not-failure"):
            raise GeneratorExit
        with span("stopped-early") as s:
            s.stop()
            s.set(ignored=True)
        with span("handled") as s:
            s.fail(RuntimeError("handled inside"))
        root.set(done=True)
    methods()
    g = gen()
    next(g)
    # A span begun here, ended on another thread.
    moved = span("moved")
    moved.__enter__()
    t = threading.Thread(target=lambda: moved.__exit__(None, None, None), name="ender")
    t.start()
    t.join()
    next(g)
    g.close()

    async def main() -> None:
        await asyncio.gather(task("a", 3), task("b", 3))

    asyncio.run(main())

    def worker(k: int) -> None:
        for i in range(20):
            with span("work", level=2, k=k) if i % 2 else span("plain"):
                leaf(i)

    threads = [threading.Thread(target=worker, args=(k,), name=f"w{k}") for k in range(3)]
    for th in threads:
        th.start()
        th.join()  # (one after the other: the same order on both paths)


def normalized(events: list[tracebridge.Event]) -> list[list[object]]:
    return normalized_events(events, ids=False, ignore=frozenset({"code.lineno"}))


def main(path: str) -> None:
    result = {}
    tracebridge.start(level=2)  # in memory: spans are queued as objects
    workload()
    session = tracebridge.stop()
    result["memory"] = normalized(session.events)
    result["memory_stats"] = [session.stats.recorded, session.stats.dropped]
    tracebridge.start(level=2, output=path)  # a file: plain spans are queued compact
    workload()
    session = tracebridge.stop()
    result["file"] = normalized(tracebridge.read(path))
    result["file_stats"] = [session.stats.recorded, session.stats.dropped]
    # Sampling on: span() is the Python function on both paths; decorated calls enter what it makes.
    import random

    from tracebridge.sampling import Pipeline, Probability

    rng = random.Random(7)
    tracebridge.start(level=2, sampling=Pipeline([Probability(0.5, rng=rng)], keep_critical=False))
    for _ in range(20):
        methods()
    session = tracebridge.stop()
    result["sampled"] = normalized(session.events)
    result["sampled_stats"] = [session.stats.recorded, session.stats.dropped]
    # Roots decided by their trace's randomness (compiled: span() makes dropped roots and the spans
    # inside dropped traces itself); the same draws on both paths from one seed.
    from tracebridge.sampling import ParentBased, TraceIdRatio

    # (The writer makes the ids of the spans it writes from the same generator: it waits for stop()
    # here, so that the draws the roots' decisions read are the same in both runs whatever the load.)
    random.seed(11)
    tracebridge.configure(flush_interval=3600.0)
    tracebridge.start(level=2, sampling=ParentBased(TraceIdRatio(0.5)))
    for i in range(40):
        with span("root", level=2, i=i), span("child", level=2):
            leaf(i)
        with contextlib.suppress(ValueError), span("failing-root", level=2):
            raise ValueError(i)
        methods()
    session = tracebridge.stop()
    tracebridge.configure(flush_interval=0.1)
    result["ratio"] = normalized(session.events)
    result["ratio_stats"] = [session.stats.recorded, session.stats.dropped]
    result["accelerated"] = tracebridge.accelerated
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])

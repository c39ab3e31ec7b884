"""Coroutine functions: the span covers the await."""

from __future__ import annotations

import asyncio
import inspect
import pickle
from typing import Any

import tracebridge


def test_coroutine_function(kinds: Any) -> None:
    module, _ = kinds
    assert inspect.iscoroutinefunction(module.fetch)
    assert module.fetch.__doc__ == "Fetch x." and module.fetch.__qualname__ == "fetch"
    assert pickle.loads(pickle.dumps(module.fetch)) is module.fetch

    async def main() -> list[int]:
        return list(await asyncio.gather(module.fetch(1), module.fetch(2)))

    assert asyncio.run(main()) == [10, 20]
    spans = [e for e in tracebridge.stop().events if e.kind == "span"]
    assert [e.name for e in spans] == ["instr_sample.kinds.fetch"] * 2
    assert all(e.end_ns is not None and e.end_ns > e.start_ns for e in spans)

"""Async generators: the span covers the iteration, and ends on exhaustion or aclose."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import tracebridge


def test_async_generator(kinds: Any) -> None:
    module, _ = kinds
    assert inspect.isasyncgenfunction(module.acount)

    async def main() -> list[int]:
        out = [i async for i in module.acount(3)]
        agen = module.acount(5)
        out.append(await agen.__anext__())
        await agen.aclose()
        return out

    assert asyncio.run(main()) == [0, 1, 2, 0]
    spans = [e for e in tracebridge.stop().events if e.kind == "span"]
    assert [e.name for e in spans] == ["instr_sample.kinds.acount"] * 2

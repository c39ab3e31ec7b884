"""Generators: the span covers the iteration, and ends on exhaustion, close or error."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

import tracebridge


def test_generator(kinds: Any) -> None:
    module, _ = kinds
    assert inspect.isgeneratorfunction(module.count) and module.count.__doc__ == "Count to n."
    assert list(module.count(3)) == [0, 1, 2]
    gen = module.count(10)
    assert next(gen) == 0 and gen.send(None) == 1  # send works
    gen2 = module.count(10)
    next(gen2)
    with pytest.raises(StopIteration):
        gen2.send("stop")
    gen3 = module.count(10)
    next(gen3)
    gen3.close()
    gen4 = module.count(10)
    next(gen4)
    with pytest.raises(KeyError):
        gen4.throw(KeyError("thrown"))
    gen.close()
    spans = [e for e in tracebridge.stop().events if e.kind == "span"]
    assert len(spans) == 5 and all(e.name == "instr_sample.kinds.count" for e in spans)
    assert sum(e.error is not None for e in spans) == 1

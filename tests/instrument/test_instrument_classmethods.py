"""Classmethods: wrapped inside, still classmethods outside."""

from __future__ import annotations

import inspect
from typing import Any

import tracebridge


def test_classmethod(kinds: Any) -> None:
    module, _ = kinds
    Cart = module.Cart
    assert isinstance(inspect.getattr_static(Cart, "empty"), classmethod)
    assert Cart.empty.__doc__ == "An empty cart." and Cart.empty.__qualname__ == "Cart.empty"

    class Sub(Cart):  # cls is the subclass, as before
        pass

    assert type(Sub.empty()) is Sub and Cart([1]).empty().total() == 0
    names = [e.name for e in tracebridge.stop().events if e.name.endswith(".empty")]
    assert names == ["instr_sample.kinds.Cart.empty"] * 2

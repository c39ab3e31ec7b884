"""Staticmethods: wrapped inside, still staticmethods outside."""

from __future__ import annotations

import inspect
from typing import Any

import tracebridge


def test_staticmethod(kinds: Any) -> None:
    module, _ = kinds
    Cart = module.Cart
    assert isinstance(inspect.getattr_static(Cart, "tax"), staticmethod)
    assert str(inspect.signature(Cart.tax)) == "(amount: 'int') -> 'float'"
    assert Cart.tax(10) == 2.0 and Cart([]).tax(5) == 1.0  # from the class and from an instance
    names = [e.name for e in tracebridge.stop().events if e.name.endswith(".tax")]
    assert names == ["instr_sample.kinds.Cart.tax"] * 2

"""Properties: getter and setter wrapped, the property itself kept (doc, deleter)."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

import tracebridge


def test_property(kinds: Any) -> None:
    module, _ = kinds
    prop = inspect.getattr_static(module.Cart, "size")
    assert isinstance(prop, property) and prop.__doc__ == "How many items." and prop.fdel is None
    cart = module.Cart([1, 2, 3])
    assert cart.size == 3
    cart.size = 2
    assert cart.size == 2
    with pytest.raises(AttributeError):
        del cart.size  # no deleter, as before
    names = [e.name for e in tracebridge.stop().events if e.name.endswith(".size")]
    assert names == ["instr_sample.kinds.Cart.size"] * 3

"""Methods, classmethods, staticmethods, properties and nested classes."""

from __future__ import annotations

import inspect
import pickle
from typing import Any

import tracebridge


def test_every_method_kind(kinds: Any) -> None:
    module, _ = kinds
    Cart = module.Cart
    cart = Cart([1, 2, 3])
    assert cart.total() == 6 and Cart.empty().total() == 0 and Cart.tax(10) == 2.0
    assert cart.size == 3
    cart.size = 1
    assert cart.size == 1 and repr(cart) == "Cart([1])"
    assert Cart.Line().price() == 5
    names = [e.name for e in tracebridge.stop().events if e.kind == "span"]
    prefix = "instr_sample.kinds.Cart"
    assert names == [
        f"{prefix}.__init__",
        f"{prefix}.total",
        f"{prefix}.empty",
        f"{prefix}.__init__",
        f"{prefix}.total",
        f"{prefix}.tax",
        f"{prefix}.size",
        f"{prefix}.size",
        f"{prefix}.size",
        f"{prefix}.Line.price",
    ]  # __repr__ is not instrumented


def test_descriptors_stay_what_they_were(kinds: Any) -> None:
    module, _ = kinds
    Cart = module.Cart
    assert isinstance(inspect.getattr_static(Cart, "empty"), classmethod)
    assert isinstance(inspect.getattr_static(Cart, "tax"), staticmethod)
    prop = inspect.getattr_static(Cart, "size")
    assert isinstance(prop, property) and prop.__doc__ == "How many items." and prop.fdel is None
    assert Cart.total.__qualname__ == "Cart.total" and Cart.total.__doc__ == "The total."
    assert str(inspect.signature(Cart.tax)) == "(amount: 'int') -> 'float'"
    assert Cart.kind == "cart"
    assert pickle.loads(pickle.dumps(Cart([4]))).total() == 4
    assert pickle.loads(pickle.dumps(Cart.total)) is Cart.total

from __future__ import annotations

import math
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tracebridge._sanitize import SCRUBBED, Counts, Limits, sanitize_metadata, sanitize_value


class BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


class WeirdRepr:
    def __repr__(self) -> Any:
        return 42  # not a string


class BadMapping(dict):  # type: ignore[type-arg]
    def items(self) -> Any:
        raise RuntimeError("broken items")


def clean(value: Any, **limits: Any) -> Any:
    return sanitize_value(value, Limits(**limits), Counts())


def test_scalars_pass_through() -> None:
    for v in (None, True, 0, -5, 2**63, 1.5, "text"):
        assert clean(v) == v
    assert math.isnan(clean(float("nan")))


def test_unrepresentable_values() -> None:
    assert clean(BadRepr()) == "<unrepresentable BadRepr: RuntimeError>"
    assert clean(WeirdRepr()) == "<unrepresentable WeirdRepr: TypeError>"
    assert clean(BadMapping(a=1)) == {"<unrepresentable>": "BadMapping: RuntimeError"}


def test_cycles_depth_and_size() -> None:
    loop: list[Any] = [1]
    loop.append(loop)
    assert clean(loop) == [1, "<cycle>"]
    d: dict[str, Any] = {}
    d["self"] = d
    assert clean(d) == {"self": "<cycle>"}
    deep: Any = "leaf"
    for _ in range(20):
        deep = [deep]
    out = clean(deep, max_depth=3)
    assert isinstance(out[0][0][0], str) and out[0][0][0].startswith("[[")
    assert clean(list(range(10)), max_items=4) == [0, 1, 2, 3, "…[+6 items]"]


def test_huge_strings_bytes_and_surrogates() -> None:
    counts = Counts()
    out = sanitize_value("x" * 100, Limits(max_string=10), counts)
    assert out == "x" * 10 + "…[+90 chars]" and counts.sanitized == 1
    assert clean(b"\x00\xff") == "b'\\x00\\xff'"
    assert clean("a\udcffb") == "a\ufffdb"
    assert clean({"\ud800": 1}) == {"\ufffd": 1}
    big_int = 10**30
    assert clean(big_int) == str(big_int)


def test_non_string_keys_and_tuples_and_sets() -> None:
    assert clean({1: (2, 3), None: {4}}) == {"1": [2, 3], "None": [4]}


def test_secrets_are_scrubbed_by_key() -> None:
    counts = Counts()
    md = {"password": "hunter2", "Authorization": "Bearer x", "user": "ann", "nested": {"api_key": "k"}}
    out = sanitize_metadata(md, Limits(), counts)
    assert out == {
        "password": SCRUBBED,
        "Authorization": SCRUBBED,
        "user": "ann",
        "nested": {"api_key": SCRUBBED},
    }
    assert counts.scrubbed == 3
    assert sanitize_metadata({"password": "x"}, Limits(secret_keys=None), Counts()) == {"password": "x"}


anything = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.text(),
        st.binary(),
        st.builds(BadRepr),
        st.builds(WeirdRepr),
    ),
    lambda inner: st.one_of(
        st.lists(inner),
        st.tuples(inner, inner),
        st.dictionaries(st.one_of(st.text(), st.integers()), inner),
        st.frozensets(st.integers()),
    ),
    max_leaves=20,
)


def _json_like(v: Any) -> bool:
    if v is None or type(v) in (bool, int, float, str):
        return True
    if type(v) is list:
        return all(_json_like(x) for x in v)
    if type(v) is dict:
        return all(type(k) is str and _json_like(x) for k, x in v.items())
    return False


@given(st.dictionaries(st.text(), anything))
def test_never_raises_and_is_idempotent(md: dict[str, Any]) -> None:
    once = sanitize_metadata(md, Limits(), Counts())
    assert _json_like(once)
    twice = sanitize_metadata(once, Limits(), Counts())
    assert repr(twice) == repr(once)

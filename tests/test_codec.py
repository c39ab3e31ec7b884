from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tracebridge import decode, encode


def test_traceme_format() -> None:
    assert encode("load", path="a.toml", n=3) == "load#path=a.toml,n=3#"
    assert decode("load#path=a.toml,n=3#") == ("load", {"path": "a.toml", "n": "3"})


def test_plain_text_is_left_alone() -> None:
    assert encode("plain") == "plain"
    assert decode("plain") == ("plain", {})
    assert decode("C:\\dir\\file#") == ("C:\\dir\\file#", {})
    assert decode("just#text") == ("just#text", {})


def test_special_characters_survive() -> None:
    text = encode("a#b", **{"k=1": "v,#\\"})
    assert decode(text) == ("a#b", {"k=1": "v,#\\"})


def test_name_with_specials_and_no_metadata() -> None:
    assert decode(encode("x#")) == ("x#", {})


@given(st.text(), st.dictionaries(st.text(), st.text()))
def test_round_trip(name: str, md: dict[str, str]) -> None:
    assert decode(encode(name, **md)) == (name, md)


@given(st.text())
def test_decode_never_raises(text: str) -> None:
    name, md = decode(text)
    assert isinstance(name, str) and isinstance(md, dict)

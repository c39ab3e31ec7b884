"""TraceMe's ``name#k=v,k2=v2#`` metadata encoding, made reversible.

TraceMe writes ``name#key=value,key2=value2#`` and cannot carry ``#``, ``,`` or ``=`` inside a key or a
value. We escape those characters (and the escape character itself) with a backslash, so that
``decode(encode(name, **kv)) == (name, {k: str(v)})`` for every string. Text without backslashes decodes
exactly as TraceMe decodes it.
"""

from __future__ import annotations

from typing import Any

_SPECIAL = "\\#,="


def _escape(text: str) -> str:
    if not any(c in text for c in _SPECIAL):
        return text
    return "".join("\\" + c if c in _SPECIAL else c for c in text)


def encode(name: str, /, **metadata: Any) -> str:
    """``name`` with ``metadata`` in TraceMe's encoded form: ``encode("load", path="a")`` gives
    ``"load#path=a#"``. Values are converted with ``str``; ``#``, ``,``, ``=`` and ``\\`` are escaped.

    .. versionadded:: 0.1
    """
    name = str(name)
    if not metadata and not any(c in name for c in _SPECIAL):
        return name
    head = _escape(name)
    body = ",".join(f"{_escape(str(k))}={_escape(str(v))}" for k, v in metadata.items())
    return f"{head}#{body}#"


def _split_raw(raw: str, sep: str, maxsplit: int = -1) -> list[str]:
    """Split ``raw`` at unescaped ``sep``; the pieces keep their escapes."""
    pieces: list[str] = []
    start = 0
    i = 0
    n = len(raw)
    while i < n:
        c = raw[i]
        if c == "\\":
            i += 2
            continue
        if c == sep and (maxsplit < 0 or len(pieces) < maxsplit):
            pieces.append(raw[start:i])
            start = i + 1
        i += 1
    pieces.append(raw[start:])
    return pieces


def _unescape(raw: str) -> str:
    if "\\" not in raw:
        return raw
    out: list[str] = []
    i = 0
    n = len(raw)
    while i < n:
        c = raw[i]
        if c == "\\" and i + 1 < n:
            out.append(raw[i + 1])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _ends_with_unescaped_hash(raw: str) -> bool:
    if not raw.endswith("#"):
        return False
    backslashes = len(raw) - 1 - len(raw[:-1].rstrip("\\"))
    return backslashes % 2 == 0


def decode(text: str) -> tuple[str, dict[str, str]]:
    """Split an encoded name into the name and its metadata: ``decode("load#path=a#")`` gives
    ``("load", {"path": "a"})``. Text that is not in encoded form comes back whole, with no metadata.

    .. versionadded:: 0.1
    """
    if "#" not in text or not _ends_with_unescaped_hash(text):
        return text, {}
    head, *rest = _split_raw(text[:-1], "#", maxsplit=1)
    if not rest:
        return text, {}
    md: dict[str, str] = {}
    for item in _split_raw(rest[0], ",") if rest[0] else ():
        kv = _split_raw(item, "=", maxsplit=1)
        if len(kv) == 2:
            md[_unescape(kv[0])] = _unescape(kv[1])
    return _unescape(head), md


def maybe_encoded(text: str) -> bool:
    """A cheap test: False means :func:`decode` would return ``text`` unchanged with no metadata."""
    return text.endswith("#") and "#" in text[:-1]

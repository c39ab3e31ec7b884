"""Name globs (``myapp.db.*``, ``*.query``): compiled once, matched against event names and module names
by sampling's filters, per-operation rates and trace lines' per-name thresholds."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from typing import Any


def compile_globs(patterns: Iterable[str] | str, what: str) -> re.Pattern[str]:
    """One regular expression matching any of the glob ``patterns`` (``*``, ``?``, ``[...]``).

    Raises ``ValueError`` naming ``what`` for a pattern that is not a non-empty string or that can never
    match anything.
    """
    if isinstance(patterns, str):
        patterns = [patterns]
    parts = []
    for p in patterns:
        if not isinstance(p, str) or not p:
            raise ValueError(f"{what}: expected non-empty glob strings, got {p!r}")
        regex = fnmatch.translate(p)
        if not re.fullmatch(regex, _witness(p), re.DOTALL):
            raise ValueError(f"{what}: the glob {p!r} can never match anything")
        parts.append(f"(?:{regex})")
    return re.compile("|".join(parts) if parts else r"(?!)", re.DOTALL)


def _witness(glob: str) -> str:
    """A string the glob should match, built the way fnmatch reads it; a glob that does not match its
    own witness has an empty character class (it can never match)."""
    out = []
    i, n = 0, len(glob)
    while i < n:
        c = glob[i]
        i += 1
        if c == "*":
            continue
        if c == "?":
            out.append("x")
        elif c == "[":
            j = i
            if j < n and glob[j] == "!":
                j += 1
            if j < n and glob[j] == "]":
                j += 1
            while j < n and glob[j] != "]":
                j += 1
            if j >= n:  # no closing bracket: fnmatch reads '[' as itself
                out.append("[")
                continue
            body = glob[i:j]
            i = j + 1
            negated = body.startswith("!")
            chars = body[1:] if negated else body
            allowed = _class_chars(chars)
            if negated:
                out.append(next((ch for ch in "xyz_0aA~" if ch not in allowed), "\x00"))
            else:
                out.append(min(allowed) if allowed else "\x00")
        else:
            out.append(c)
    return "".join(out)


def _class_chars(body: str) -> set[str]:
    chars: set[str] = set()
    i = 0
    while i < len(body):
        if i + 2 < len(body) and body[i + 1] == "-":
            lo, hi = body[i], body[i + 2]
            if lo <= hi:
                chars.update(chr(c) for c in range(ord(lo), min(ord(hi), ord(lo) + 255) + 1))
            i += 3
        else:
            chars.add(body[i])
            i += 1
    return chars


class GlobTable:
    """Values by name glob, first match wins (a mapping's order), with a bounded cache of lookups."""

    def __init__(self, mapping: dict[str, Any], what: str, default: Any = None) -> None:
        if not isinstance(mapping, dict):
            raise ValueError(f"{what}: expected a mapping of name globs to values, got {mapping!r}")
        self.rules = [(compile_globs(k, what), v) for k, v in mapping.items()]
        self.default = default
        self._cache: dict[str, Any] = {}

    def lookup(self, name: str) -> Any:
        try:
            return self._cache[name]
        except KeyError:
            pass
        value = next((v for regex, v in self.rules if regex.match(name)), self.default)
        if len(self._cache) >= 10_000:
            self._cache.clear()
        self._cache[name] = value
        return value

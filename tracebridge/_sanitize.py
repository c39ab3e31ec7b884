"""Bounded, never-raising conversion of user values into what a trace can hold.

The output uses only ``None``, ``bool``, ``int``, ``float``, ``str``, ``list`` and ``dict`` with string
keys. Strings are valid UTF-8 (lone surrogates become U+FFFD) and capped with a ``…[+N chars]`` marker;
containers are capped in depth and size; values whose ``repr`` raises become ``<unrepresentable ...>``;
cycles become ``<cycle>``. Keys that look like secrets have their values replaced by ``[scrubbed]``,
and so do credentials inside text (:func:`scrub_text`: URL passwords, secret-named parameters, ``Bearer``
and ``Basic`` tokens). Sanitizing an already sanitized value returns an equal value.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Keys whose values are secrets (searched in the key, case-insensitive; ``api-key``, ``api_key``, ``apiKey``
#: and ``X-Api-Key`` alike). ``auth`` and ``authorization`` but not ``author`` or ``authenticated``;
#: ``token`` but not ``tokens`` (``max_tokens``) or ``tokenizer``; ``pw`` as a word of a key (``db_pw``,
#: ``PW``); the keys of signing and encryption. (Not ``pass``: ``pass_rate``, ``first_pass``.)
DEFAULT_SECRET_KEYS = (
    r"passw(?:or)?d|pwd|passphrase|(?<![a-z])pw(?![a-z])|secret|token(?!s|iz)|api[-_. ]?key"
    r"|(?:access|signing|encryption|master|client)[-_. ]?key|private"
    r"|auth(?!or(?!i[sz])|entic)|bearer|cookie|session|credential|jwt|dsn|signature"
)
SCRUBBED = "[scrubbed]"
#: A quoted key and a colon (a dict's repr, JSON); an authorization scheme and a space.
_QUOTED_COLON = re.compile(r"[\"']\s*:")
_SCHEME = re.compile(r"(?i:bearer|basic)\s")
#: Credentials inside text, each pattern bounded in length so that a scan stays linear in the text, and
#: each run only when the text has what it needs (``@`` and ``://``, a scheme, a quote, ``=``):
#: a URL's password (``scheme://user:password@``, the password running to the last ``@`` of the
#: authority: a raw ``@`` in a password is more often seen than text after it), an authorization
#: scheme's token, a quoted key with its value (``'password': 'x'``, ``"token": "x"``), a ``key=value``
#: or ``key: value`` parameter (query strings, command lines, headers, log text). A key is a secret when
#: the key pattern finds it (``is_secret_key``).
_URL_PASSWORD = re.compile(
    r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]{0,31}://)(?P<user>[^\s:/@?#]{0,256}):(?P<pw>[^\s/?#]{1,1024})@"
)
_AUTHORIZATION = re.compile(r"\b(?P<auth>(?i:bearer|basic))\s+(?P<tok>[A-Za-z0-9._~+/-]{1,4096}=*)")
_CUT = r"…\[\+\d{1,20} (?:chars|bytes|items)\]"
_VALUE = (
    _CUT
    + r"|\[scrubbed\]|\{\w{0,64}\}|\"[^\"]{0,4096}\"|'[^']{0,4096}'|\([^()]{0,4096}\)|\[[^\[\]]{0,4096}\]"
)
_QUOTED_KEY = re.compile(
    r"(?P<q>[\"'])(?P<key>[^\"'\s]{1,64})(?P=q)\s*[:=]\s*(?P<val>" + _VALUE + r"|[^\s,;&)}\]]{1,4096})"
)
#: What follows ``key=`` as its value (after up to 3 spaces or tabs).
_PARAMETER_VALUE = re.compile(_VALUE + r"|[^\s&;,)}\]'\"]{1,4096}")
#: A key read backwards from its end: subscripts (``user[password]``), then a word of ASCII letters, digits
#: and ``_ . -`` (up to one more character than a key may have).
_KEY_BACKWARDS = re.compile(r"(?:\][A-Za-z0-9_.\-]{0,64}\[){0,8}[A-Za-z0-9_.\-]{1,65}")
#: An authorization header's value: a scheme, then the credential (``Authorization: Token abc``).
_SCHEME_AND_CREDENTIAL = re.compile(r"[A-Za-z][\w-]{0,31}[ \t]{1,3}[^\s,;\"')\]}]{1,4096}")
#: Values a parameter may have that are not credentials: booleans and nulls, placeholders (a format
#: string's ``%s``, ``{}``, ``{name}``), quoted or not; the marker of a cut (the value of a key that a
#: cut left last: sanitizing twice changes nothing). (Numbers are scrubbed: a PIN is a number.)
_NOT_A_SECRET = re.compile(
    _CUT + r"|[\"']?(?:(?i:true|false|none|null)|%[-#0 +]?\d*(?:\.\d+)?[sdifrxXeEgGc]|\{\w*\})[\"']?"
)
#: How far past ``max_string`` a long text is scrubbed before it is cut (longer than any value the
#: credential patterns take: a credential that the cut splits is still found whole).
_SCRUB_MARGIN = 4200
_INT_MIN = -(1 << 63)
_INT_MAX = (1 << 64) - 1
_SCALARS = (bool, int, float, type(None))
_IMMUTABLE = frozenset({str, int, float, bool, type(None)})


@dataclass
class Limits:
    """Caps applied to every value that reaches a trace."""

    max_string: int = 16384
    max_depth: int = 8
    max_items: int = 1000
    secret_keys: re.Pattern[str] | None = field(
        default_factory=lambda: re.compile(DEFAULT_SECRET_KEYS, re.IGNORECASE)
    )
    #: Whether a key matched ``secret_keys``, by key (keys repeat: the regex runs once per key).
    secret_cache: dict[str, bool] = field(default_factory=dict, repr=False, compare=False)
    #: Short texts known to hold no credential though they have what one needs (``Error: timeout``,
    #: ``page=2``): values repeat, and each is then checked once.
    clean_texts: set[str] = field(default_factory=set, repr=False, compare=False)


@dataclass
class Counts:
    sanitized: int = 0
    scrubbed: int = 0


def compile_secret_keys(pattern: str | re.Pattern[str] | None) -> re.Pattern[str] | None:
    """Validate a secret-key pattern at setup; ``None`` or ``""`` turns scrubbing off."""
    if pattern is None or pattern == "":
        return None
    if isinstance(pattern, re.Pattern):
        return pattern
    if not isinstance(pattern, str):
        raise ValueError(
            f"scrub must be a regular expression (text or compiled), None or '', got {pattern!r}"
        )
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        raise ValueError(f"scrub={pattern!r} is not a valid regular expression: {exc}") from None


def clean_str(s: str, limit: int, counts: Counts | None = None) -> str:
    """``s`` capped at ``limit`` characters, with lone surrogates replaced by U+FFFD."""
    if len(s) > limit and not _already_cut(s, limit):
        s = s[:limit] + f"…[+{len(s) - limit} chars]"
        if counts is not None:
            counts.sanitized += 1
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        s = s.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        if counts is not None:
            counts.sanitized += 1
    if "\x00" in s:  # trace_processor keeps C strings: a NUL would cut the text short
        s = s.replace("\x00", "\ufffd")
        if counts is not None:
            counts.sanitized += 1
    return s


def _already_cut(s: str, limit: int) -> bool:
    """True when ``s`` is the output of an earlier cut at ``limit`` (sanitizing twice changes nothing)."""
    tail = s[limit:]
    return tail.startswith("…[+") and tail.endswith(" chars]") and tail[3:-7].isdigit()


def safe_repr(value: object, limit: int) -> str:
    try:
        return repr(value)
    except Exception as exc:  # includes a __repr__ that returns something other than a string
        return f"<unrepresentable {type(value).__name__}: {type(exc).__name__}>"


class _Sanitizer:
    __slots__ = ("budget", "counts", "limits", "path")

    def __init__(self, limits: Limits, counts: Counts) -> None:
        self.limits = limits
        self.counts = counts
        self.budget = limits.max_items
        self.path: set[int] = set()

    def value(self, v: Any, depth: int) -> Any:
        t = type(v)
        if t is str:  # (scrubbed before it is cut: a cut never splits a credential or its marker)
            return self.text(v, self.counts)
        if t is bool or v is None:
            return v
        if t is int:
            if _INT_MIN <= v <= _INT_MAX:
                return v
            self.counts.sanitized += 1
            return clean_str(str(v), self.limits.max_string)
        if t is float:
            return v
        if isinstance(v, (Mapping, list, tuple, set, frozenset)):
            return self.container(v, depth)
        # Subclasses of scalars, bytes, and every other object: their text.
        self.counts.sanitized += 1
        if isinstance(v, (bytes, bytearray, memoryview)):
            try:
                raw = bytes(v[: self.limits.max_string])
                text = repr(raw) + (
                    f"…[+{len(v) - self.limits.max_string} bytes]" if len(v) > len(raw) else ""
                )
            except Exception as exc:
                text = f"<unrepresentable {t.__name__}: {type(exc).__name__}>"
            return self.text(text)
        if isinstance(v, bool):
            return bool(v)
        if isinstance(v, int):
            return self.value(int(v), depth)
        if isinstance(v, float):
            return float(v)
        text = str.__str__(v) if isinstance(v, str) else safe_repr(v, self.limits.max_string)
        return self.text(text)

    def text(self, s: str, cut_counts: Counts | None = None) -> str:
        """``s`` scrubbed, then cut to ``max_string``. Text far longer than that is scrubbed only as far
        as it is kept, and ``_SCRUB_MARGIN`` beyond (a credential the cut splits is still found whole):
        the cost of scrubbing is bounded by the cap, not by what the program hands over."""
        limit = self.limits.max_string
        if len(s) > limit + _SCRUB_MARGIN:
            head = scrub_text(s[: limit + _SCRUB_MARGIN], self.limits, self.counts)
            if len(head) >= limit:
                if cut_counts is not None:
                    cut_counts.sanitized += 1
                return clean_str(head[:limit] + f"…[+{len(s) - limit} chars]", limit, cut_counts)
        return clean_str(scrub_text(s, self.limits, self.counts), limit, cut_counts)

    def container(self, v: Any, depth: int) -> Any:
        if id(v) in self.path:
            self.counts.sanitized += 1
            return "<cycle>"
        if depth >= self.limits.max_depth:
            self.counts.sanitized += 1
            return self.text(safe_repr(v, self.limits.max_string))
        self.path.add(id(v))
        try:
            if isinstance(v, Mapping):
                return self.mapping(v, depth + 1)
            out: list[Any] = []
            try:
                items = list(v)
            except Exception as exc:
                self.counts.sanitized += 1
                return f"<unrepresentable {type(v).__name__}: {type(exc).__name__}>"
            if isinstance(v, (set, frozenset)):
                with contextlib.suppress(Exception):  # unsortable sets keep iteration order
                    items.sort(key=repr)
            for item in items:
                if self.budget <= 0:
                    self.counts.sanitized += 1
                    out.append(f"…[+{len(items) - len(out)} items]")
                    break
                self.budget -= 1
                out.append(self.value(item, depth + 1))
            return out
        finally:
            self.path.discard(id(v))

    def mapping(self, m: Mapping[Any, Any], depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        try:
            items = list(m.items())
        except Exception as exc:
            self.counts.sanitized += 1
            return {"<unrepresentable>": f"{type(m).__name__}: {type(exc).__name__}"}
        secret = self.limits.secret_keys
        for k, item in items:
            if self.budget <= 0:
                self.counts.sanitized += 1
                out["…"] = f"[+{len(items) - len(out)} items]"
                break
            self.budget -= 1
            if type(k) is str:
                key = k
            elif isinstance(k, str):
                key = str.__str__(k)
            else:
                key = safe_repr(k, 200)
            key = clean_str(scrub_text(key, self.limits, self.counts), 1024, self.counts)
            if secret is not None and is_secret_key(key, self.limits):
                if not (type(item) is str and item == SCRUBBED):
                    self.counts.scrubbed += 1
                out[key] = SCRUBBED
                continue
            out[key] = self.value(item, depth)
        return out


def is_secret_key(key: str, limits: Limits) -> bool:
    """Whether ``key`` looks like it names a secret (``limits.secret_keys``): its value is scrubbed."""
    cache = limits.secret_cache
    hit = cache.get(key)
    if hit is None:
        pattern = limits.secret_keys
        hit = pattern is not None and pattern.search(key) is not None
        if len(cache) >= 4096:
            cache.clear()
        cache[key] = hit
    return hit


def may_hold_secret(s: str) -> bool:
    """Whether ``s`` has what a credential in text needs (the quick test before :func:`scrub_text`):
    ``=`` (a parameter), ``@`` (a URL's user), a quoted key and a colon, ``bearer`` or ``basic`` and a space
    (any case), a colon and a space or tab (``key: value``). The compiled writer tests the same, or more
    (``may_hold_secret`` in _speedups.c)."""
    if "=" in s or "@" in s or ": " in s or ":\t" in s:
        return True
    if ("'" in s or '"' in s) and _QUOTED_COLON.search(s) is not None:
        return True
    low = s.lower()
    return ("bearer" in low or "basic" in low) and _SCHEME.search(s) is not None


def _token(scheme: str, token: str) -> bool:
    """Whether ``token`` after ``Bearer``/``Basic`` looks like a credential, not a word of prose ("the
    bearer of", "using basic settings"): a Basic one is base64 of ``user:password``; a Bearer one is 8
    characters or more."""
    if scheme.lower() == "basic":
        try:
            return b":" in base64.b64decode(token + "=" * (-len(token) % 4), validate=True)
        except (ValueError, binascii.Error):
            return False
    return len(token) >= 8


def scrub_text(s: str, limits: Limits, counts: Counts | None = None) -> str:
    """``s`` with the credentials inside it replaced by ``[scrubbed]``: a URL's password
    (``postgres://app:[scrubbed]@db``), the value of a parameter whose name looks like a secret
    (``?token=[scrubbed]&page=2``, ``--db-password=[scrubbed]``, ``'password': [scrubbed]``; not a number,
    a boolean or a placeholder), the token of a ``Bearer`` or ``Basic`` authorization. Off when the key
    pattern is off. Linear in the text; never raises; each credential is counted in ``counts.scrubbed``;
    ``s`` itself is returned when it holds none."""
    if limits.secret_keys is None or not may_hold_secret(s) or s in limits.clean_texts:
        return s
    found = 0

    def password(m: re.Match[str]) -> str:
        nonlocal found
        if m.group("pw") == SCRUBBED:
            return m.group(0)
        found += 1
        return f"{m.group('scheme')}{m.group('user')}:{SCRUBBED}@"

    def authorization(m: re.Match[str]) -> str:
        nonlocal found
        if not _token(m.group("auth"), m.group("tok")):
            return m.group(0)
        found += 1
        return f"{m.group('auth')} {SCRUBBED}"

    def parameter(m: re.Match[str]) -> str:
        nonlocal found
        value = m.group("val")
        if not is_secret_key(m.group("key"), limits) or value == SCRUBBED or _NOT_A_SECRET.fullmatch(value):
            return m.group(0)
        found += 1
        return m.group(0)[: m.start("val") - m.start()] + SCRUBBED

    out = s
    low = s.lower()
    try:
        if "@" in out and "://" in out:
            out = _URL_PASSWORD.sub(password, out)
        if ("bearer" in low or "basic" in low) and _SCHEME.search(out) is not None:
            out = _AUTHORIZATION.sub(authorization, out)
        if ("'" in out or '"' in out) and _QUOTED_COLON.search(out) is not None:
            out = _QUOTED_KEY.sub(parameter, out)
        if "=" in out or ": " in out or ":\t" in out:
            out, n = _parameters(out, limits)
            found += n
    except Exception:  # (a key pattern that fails on some key): the text is not written as it was
        found, out = 1, SCRUBBED
    if not found:
        _remember_clean(s, limits)
        return s
    if counts is not None:
        counts.scrubbed += found
    return out


def _remember_clean(s: str, limits: Limits) -> None:
    """Short text found to hold no credential is remembered as such (text repeats: a log message, a
    value): it is then not looked at again."""
    if len(s) <= 256:
        clean = limits.clean_texts
        if len(clean) >= 4096:
            clean.clear()
        clean.add(s)


def names_a_secret(template: str, limits: Limits) -> bool:
    """Whether a format string gives a secret-named parameter a value (``password=%s``,
    ``'token': {}``): its arguments are then not written where the message could not be formatted."""
    filled = template.replace("%", "X").replace("{", "X").replace("}", "X")
    return scrub_text(filled, limits) is not filled


#: What ends a parameter's key: ``=``, or a colon before a space or tab (``key: value``, not ``a:b``).
_SEPARATOR = re.compile(r"=|:[ \t]")


def parameter_key(s: str, equals: int) -> str:
    """The key of the ``=`` (or ``:``) at ``equals`` in ``s``: the word before it (ASCII letters, digits,
    ``_ . -``, and subscripts: ``user[password]``; up to 3 spaces or tabs between), ``""`` when there is
    none or it is longer than 64 characters. (The compiled writer finds keys the same way:
    ``key_may_be_secret`` in _speedups.c.)"""
    before = s[max(0, equals - 68) : equals]
    word = before.rstrip(" \t")
    if len(before) - len(word) > 3:
        return ""
    m = _KEY_BACKWARDS.match(word[::-1])  # (the word's characters, from its end: one step in C)
    return m.group()[::-1] if m is not None and len(m.group()) <= 64 else ""


def _parameters(s: str, limits: Limits) -> tuple[str, int]:
    """``s`` with the values of its secret-named ``key=value`` and ``key: value`` parameters scrubbed,
    and how many. Found from each separator (a scan of the text for ``=`` and ``:``, then a few
    characters around each), not by a pattern tried at every position: linear, and cheap where text has
    a few (a key the sanitizer's cache knows is no secret costs a dictionary lookup). An authorization
    header's value keeps its scheme (``Authorization: Token [scrubbed]``)."""
    pieces: list[str] = []
    last = found = 0
    sep = _SEPARATOR.search(s)
    while sep is not None:
        pos = sep.start()
        key = parameter_key(s, pos)
        if not key or pos - len(key) < last or not is_secret_key(key, limits):
            sep = _SEPARATOR.search(s, pos + 1)
            continue
        start = pos + 1
        while start < len(s) and start - pos <= 3 and s[start] in " \t":
            start += 1
        m = None
        if s[pos] == ":" and "authorization" in key.lower():
            m = _SCHEME_AND_CREDENTIAL.match(s, start)
            if m is not None:
                start = m.end() - len(m.group().split()[-1])  # (the credential, after the scheme)
        if m is None:
            m = _PARAMETER_VALUE.match(s, start)
        if m is None:
            sep = _SEPARATOR.search(s, pos + 1)
            continue
        value = s[start : m.end()]
        if not value.startswith(SCRUBBED[:-1]) and not _NOT_A_SECRET.fullmatch(value):
            pieces.append(s[last:start])
            pieces.append(SCRUBBED)
            last = m.end()
            found += 1
        sep = _SEPARATOR.search(s, max(m.end(), pos + 1))
    if not found:
        return s, 0
    pieces.append(s[last:])
    return "".join(pieces), found


def scrub_argv(argv: list[str], limits: Limits, counts: Counts | None = None) -> list[str]:
    """A command line with its credentials scrubbed: ``--db-password=x`` and the ``x`` of
    ``--db-password x`` (an option whose name ends with a secret key, not a ``--no-...`` one, and the
    argument after it), and what :func:`scrub_text` finds in each argument."""
    pattern = limits.secret_keys
    if pattern is None:
        return list(argv)
    out = []
    secret_next = False
    for arg in argv:
        if secret_next and not arg.startswith("-"):
            out.append(SCRUBBED)
            if counts is not None:
                counts.scrubbed += 1
            secret_next = False
            continue
        name = arg.lstrip("-").lower()
        secret_next = (
            arg.startswith("-")
            and "=" not in arg
            and not name.startswith("no-")
            and any(m.end() == len(name) for m in pattern.finditer(name))
        )
        out.append(scrub_text(arg, limits, counts))
    return out


def _known_clean(s: str, limits: Limits) -> bool:
    """Whether text that :func:`may_hold_secret` picked holds no credential, as far as is known without
    scrubbing it: no ``@``, quoted key or authorization scheme, and every ``=``'s (and ``: ``'s) key known
    (from the key cache) to be no secret (``page=2``). As the compiled writer tests it (``may_hold_secret``
    there)."""
    if s in limits.clean_texts:
        return True
    if "@" in s or (("'" in s or '"' in s) and _QUOTED_COLON.search(s) is not None):
        return False
    low = s.lower()
    if ("bearer" in low or "basic" in low) and _SCHEME.search(s) is not None:
        return False
    cache = limits.secret_cache
    for sep in _SEPARATOR.finditer(s):
        key = parameter_key(s, sep.start())
        if key and cache.get(key) is not False:
            return False
    _remember_clean(s, limits)
    return True


def _already_clean(md: dict[Any, Any], limits: Limits) -> bool:
    """The common case, checked fast: string keys that are not secrets, and scalar values that need no
    change (ASCII strings within the cap, ints that fit 64 bits)."""
    max_string = limits.max_string
    scrubbing = limits.secret_keys is not None
    for k, v in md.items():
        if type(k) is not str or is_secret_key(k, limits):
            return False
        t = type(v)
        if t is str:
            if len(v) > max_string or not v.isascii() or "\x00" in v:
                return False
            if scrubbing and may_hold_secret(v) and not _known_clean(v, limits):
                return False
        elif t is int:
            if not _INT_MIN <= v <= _INT_MAX:
                return False
        elif t is not float and t is not bool and v is not None:
            return False
    return True


def sanitize_metadata(md: Mapping[Any, Any], limits: Limits, counts: Counts) -> dict[str, Any]:
    """Sanitize a metadata mapping (keys scrubbed, values bounded). Never raises. A plain ``dict`` that
    needs no change is returned as it is."""
    if type(md) is dict and _already_clean(md, limits):
        return md
    try:
        return _Sanitizer(limits, counts).mapping(md, 0)
    except Exception as exc:  # a defensive net: the sanitizer must never raise
        counts.sanitized += 1
        return {"<unrepresentable>": f"{type(exc).__name__}"}


def sanitize_value(v: Any, limits: Limits, counts: Counts) -> Any:
    try:
        return _Sanitizer(limits, counts).value(v, 0)
    except Exception as exc:
        counts.sanitized += 1
        return f"<unrepresentable {type(v).__name__}: {type(exc).__name__}>"


def needs_snapshot(md: Mapping[str, Any]) -> bool:
    """True when ``md`` holds a value that the application could still change (anything not a scalar)."""
    for v in md.values():  # noqa: SIM110 - on the hot path a loop is faster than any()
        if type(v) not in _IMMUTABLE:
            return True
    return False

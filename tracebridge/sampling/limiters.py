"""Rate limiters: token buckets, one for all events or one per key.

A bucket holds at most ``burst`` tokens and gains ``per_second`` tokens a second; each event takes one
or is dropped. In any window of ``t`` seconds a bucket lets through at most ``burst + per_second * t``
events. Limiters do not weight what they keep (a limiter is not an unbiased sample).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from .._model import MESSAGE_TEMPLATE_KEY
from ._stage import SampledEvent, Stage, event_name


def _check_limit(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{what} must be a positive number, got {value!r}")
    return float(value)


class _Bucket:
    __slots__ = ("last", "suppressed", "tokens")

    def __init__(self, tokens: float, now: float) -> None:
        self.tokens = tokens
        self.last = now
        self.suppressed = 0


class RateLimiter(Stage):
    """At most ``per_second`` events a second on average, and ``burst`` (default: one second's worth)
    at once. Thread-safe: totals are exact under any number of threads.

    .. versionadded:: 0.1
    """

    weighted = False
    reason = "rate_limited"

    def __init__(
        self, per_second: float, burst: float | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.per_second = _check_limit(per_second, "RateLimiter(per_second)")
        self.burst = max(1.0, self.per_second) if burst is None else _check_limit(burst, "RateLimiter(burst)")
        self._clock = clock
        self._lock = threading.Lock()
        self._bucket = _Bucket(self.burst, clock())

    def allow(self) -> bool:
        """Take a token if there is one."""
        now = self._clock()
        bucket = self._bucket
        with self._lock:
            if now > bucket.last:
                bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.last) * self.per_second)
                bucket.last = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return True
            return False

    def decide(self, ev: SampledEvent) -> float:
        return 1.0 if self.allow() else 0.0

    def __repr__(self) -> str:
        return f"RateLimiter({self.per_second:g}/s, burst={self.burst:g})"


def _take(bucket: _Bucket, now: float, rate: float, burst: float) -> bool:
    if now > bucket.last:
        bucket.tokens = min(burst, bucket.tokens + (now - bucket.last) * rate)
        bucket.last = now
    if bucket.tokens >= 1.0:
        bucket.tokens -= 1.0
        return True
    return False


class KeyedRateLimiter(Stage):
    """One token bucket per key: by default the event's name (an operation); ``key="logger"`` or
    ``key="message"`` for log records (their logger name, or their message template), or any callable
    ``key(event) -> hashable``. At most ``max_keys`` buckets are kept (the least recently used go).

    When a key's flood ends (its next event is let through, or its bucket is evicted, or the session
    stops) the limiter emits one ``suppressed N similar events`` instant carrying the key and ``N``.

    .. versionadded:: 0.1
    """

    weighted = False
    reason = "rate_limited"
    needs_name = True

    def __init__(
        self,
        per_second: float,
        key: str | Callable[[Any], Any] = "name",
        *,
        burst: float | None = None,
        max_keys: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.per_second = _check_limit(per_second, "KeyedRateLimiter(per_second)")
        self.burst = (
            max(1.0, self.per_second) if burst is None else _check_limit(burst, "KeyedRateLimiter(burst)")
        )
        if isinstance(max_keys, bool) or not isinstance(max_keys, int) or max_keys < 1:
            raise ValueError(f"KeyedRateLimiter(max_keys) must be a positive integer, got {max_keys!r}")
        self.max_keys = max_keys
        self._key = _key_function(key)
        self._key_label = key if isinstance(key, str) else getattr(key, "__name__", "key")
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: OrderedDict[Any, _Bucket] = OrderedDict()
        #: Called with (key, count) when a flood of ``count`` suppressed events ends (set by the pipeline).
        self.on_flood_end: Callable[[Any, int], None] | None = None

    def decide(self, ev: Any) -> float:  # (any object its key function reads: log records too)
        try:
            key = self._key(ev)
        except Exception as exc:
            self.record_error("key", exc)
            return 1.0
        ended: list[tuple[Any, int]] = []
        with self._lock:
            now = self._clock()
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = _Bucket(self.burst, now)
                while len(self._buckets) > self.max_keys:
                    old_key, old = self._buckets.popitem(last=False)
                    if old.suppressed:
                        ended.append((old_key, old.suppressed))
            else:
                self._buckets.move_to_end(key)
            allowed = _take(bucket, now, self.per_second, self.burst)
            if allowed and bucket.suppressed:
                ended.append((key, bucket.suppressed))
                bucket.suppressed = 0
            elif not allowed:
                bucket.suppressed += 1
        for k, n in ended:
            self._report(k, n)
        return 1.0 if allowed else 0.0

    def flush(self) -> None:
        """Report every flood still going on (the pipeline calls this when a session stops)."""
        with self._lock:
            ended = [(k, b.suppressed) for k, b in self._buckets.items() if b.suppressed]
            for b in self._buckets.values():
                b.suppressed = 0
        for k, n in ended:
            self._report(k, n)

    def _report(self, key: Any, count: int) -> None:
        if self.on_flood_end is not None:
            try:
                self.on_flood_end(key, count)
            except Exception as exc:
                self.record_error("flood_end", exc)

    def __repr__(self) -> str:
        return f"KeyedRateLimiter({self.per_second:g}/s per {self._key_label})"


def _key_function(key: str | Callable[[Any], Any]) -> Callable[[Any], Any]:
    if callable(key):
        return key
    if key == "name":
        return event_name
    if key == "logger":
        return lambda ev: (ev.metadata or {}).get("logger", event_name(ev))
    if key == "message":
        return lambda ev: (ev.metadata or {}).get(MESSAGE_TEMPLATE_KEY, event_name(ev))
    raise ValueError(f"KeyedRateLimiter(key) must be 'name', 'logger', 'message' or a callable, got {key!r}")

"""Durations given as text (``"250us"``, ``"1.5ms"``, ``"2s"``) or numbers (seconds)."""

from __future__ import annotations

import math
import re

_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000}
_DURATION = re.compile(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ns|us|µs|ms|s|m)?\s*")


def parse_duration(value: object, what: str = "duration") -> int:
    """Nanoseconds from ``"100us"``, ``"1.5ms"``, ``"2s"``, ``"1m"``, or a number of seconds.

    Raises ``ValueError`` naming ``what`` and the value when it is not a non-negative duration.
    """
    if isinstance(value, bool):
        raise ValueError(f"{what}: expected a duration such as '100us' or a number of seconds, got {value!r}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{what}: a duration must be a non-negative number of seconds, got {value!r}")
        return round(value * 1_000_000_000)
    if isinstance(value, str):
        m = _DURATION.fullmatch(value)
        if m is not None:
            number, unit = m.groups()
            if unit is None:
                unit = "s"
            return round(float(number) * _UNITS[unit])
    raise ValueError(
        f"{what}: expected a duration such as '250ns', '100us', '1.5ms', '2s' or a number of seconds, "
        f"got {value!r}"
    )

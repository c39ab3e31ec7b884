"""Consistent probability sampling (OpenTelemetry's OTEP 235): thresholds, their ``th`` form in the
tracestate, and the 56 bits of a trace id's randomness that every process and every kind of event decides
by alike, so that one trace gets one decision."""

from __future__ import annotations

import math
import random
from typing import Any

RANDOMNESS_BITS = 56
RANDOMNESS_MASK = (1 << RANDOMNESS_BITS) - 1


def threshold(probability: float, precision: int = 5) -> int:
    """The OTEP 235 rejection threshold for ``probability``: ``T = 2^56 - round(p * 2^56)``, rounded to
    ``precision`` hex digits (more for small probabilities, as the specification's encoder does: 1%
    gives ``fd70a4``). An event with randomness ``R`` is kept iff ``R >= T``."""
    if probability >= 1:
        return 0
    exact = (1 << 56) - round(probability * (1 << 56))
    _, exponent = math.frexp(probability)
    digits = max(1, min(14, precision + exponent // -4))
    unit = 1 << (4 * (14 - digits))
    rounded = (exact + unit // 2) // unit * unit
    return min(rounded, (1 << 56) - 1)


def threshold_to_th(t: int) -> str:
    """The ``th`` value of OpenTelemetry's tracestate for threshold ``t`` (``"0"`` keeps everything)."""
    if t == 0:
        return "0"
    return f"{t:014x}".rstrip("0")


def th_to_threshold(th: str) -> int:
    """Threshold from a ``th`` value (1 to 14 hex digits, padded with trailing zeros)."""
    if not 1 <= len(th) <= 14 or any(c not in "0123456789abcdef" for c in th):
        raise ValueError(f"th: expected 1 to 14 lowercase hex digits, got {th!r}")
    return int(th.ljust(14, "0"), 16)


def keep_probability(t: int) -> float:
    """The probability a threshold keeps: ``(2^56 - T) / 2^56``."""
    return ((1 << 56) - t) / (1 << 56)


def randomness(ev: Any) -> int:
    """The 56 random bits a consistent decision uses: the low 56 bits of the event's trace id (W3C
    Trace Context Level 2), or fresh random bits for an event outside any trace."""
    trace_id = ev.trace_id
    if trace_id:
        return int(trace_id) & RANDOMNESS_MASK
    return random.getrandbits(RANDOMNESS_BITS)

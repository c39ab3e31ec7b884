"""Minimal events for driving stages directly (what sources hand the pipeline)."""

from __future__ import annotations

import random
from typing import Any


class Ev:
    __slots__ = (
        "adjusted_count",
        "end_ns",
        "error",
        "kind",
        "level",
        "metadata",
        "name",
        "parent",
        "start_ns",
        "trace_id",
    )

    def __init__(
        self,
        name: str = "op",
        trace_id: int | None = None,
        *,
        kind: str = "span",
        level: int = 2,
        metadata: dict[str, Any] | None = None,
        start_ns: int = 0,
        end_ns: int | None = None,
        error: Any = None,
        parent: Any = None,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.trace_id = trace_id if trace_id is not None else (rng or random).getrandbits(128)
        self.kind = kind
        self.level = level
        self.metadata = metadata
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.error = error
        self.parent = parent
        self.adjusted_count = 1.0


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt

"""Which path runs: the compiled accelerator (``tracebridge._speedups``, built when a C compiler is at hand)
or the pure-Python code, which produces the same output. ``TRACEBRIDGE_PURE_PYTHON=1`` forces the pure
path; a free-threaded interpreter gets it too (the extension relies on the GIL)."""

from __future__ import annotations

import os
import sys
from types import ModuleType


def _load() -> ModuleType | None:
    if os.environ.get("TRACEBRIDGE_PURE_PYTHON", "") not in ("", "0"):
        return None
    gil_enabled = getattr(sys, "_is_gil_enabled", None)
    if gil_enabled is not None and not gil_enabled():
        return None
    try:
        import importlib

        module: ModuleType = importlib.import_module("tracebridge._speedups")
    except ImportError:
        return None
    return module


#: The compiled module, or ``None`` on the pure-Python path.
speedups: ModuleType | None = _load()
#: True when the compiled accelerator runs.
accelerated: bool = speedups is not None


def describe() -> str:
    """Which path runs, in words (``tracebridge --version`` and the demo print it)."""
    if accelerated:
        return "compiled accelerator"
    if os.environ.get("TRACEBRIDGE_PURE_PYTHON", "") not in ("", "0"):
        return "pure Python: TRACEBRIDGE_PURE_PYTHON is set"
    return "pure Python: the compiled accelerator is not built here"

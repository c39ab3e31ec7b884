"""Settings a user changes per run, from environment variables (read by ``tracebridge.start()`` for what
its caller leaves out, and by ``tracebridge run``): never code, only a small grammar.

- ``TRACEBRIDGE_OUTPUT``: the trace file (``.json`` for Chrome JSON).
- ``TRACEBRIDGE_LEVEL``: the level to record, a whole number of 1 or more.
- ``TRACEBRIDGE_SAMPLING``: stages separated by commas, each ``name:number``: ``ratio:0.1`` (whole traces,
  ``ParentBased(TraceIdRatio(0.1))``), ``probability:0.5`` (each event, ``Probability``), ``adaptive:50``
  (about 50 a second of each operation, ``Adaptive``), ``ratelimit:100`` (at most 100 events a second,
  ``RateLimiter``).
- ``TRACEBRIDGE_LOG_LINES``: ``1``/``true``/``yes``/``on`` logs a trace line for every event (``0``,
  ``false``, ``no``, ``off``, or unset: not).
- ``TRACEBRIDGE_RUNTIME``: the same words; on records runtime metrics and the collector's pauses
  (``configure(runtime=True)``).
- ``TRACEBRIDGE_FILTER``: level directives (``myapp.db=3,*=2``, see ``Directives``).

A bad value is one line naming the variable (:class:`EnvironmentSettingError`); ``start()`` then says it
on stderr and records nothing, rather than failing the program.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

ENV_OUTPUT = "TRACEBRIDGE_OUTPUT"
ENV_LEVEL = "TRACEBRIDGE_LEVEL"
ENV_SAMPLING = "TRACEBRIDGE_SAMPLING"
ENV_LOG_LINES = "TRACEBRIDGE_LOG_LINES"
ENV_RUNTIME = "TRACEBRIDGE_RUNTIME"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


class EnvironmentSettingError(ValueError):
    """An environment variable of tracebridge's holds a value it does not take (the message names it)."""


@dataclass
class EnvironmentSettings:
    output: str | None = None
    level: int | None = None
    sampling: list[Any] = field(default_factory=list)
    log_lines: bool = False
    runtime: bool = False


def parse_number(name: str, text: str, whole: bool) -> float:
    """``text`` as a number (a whole one if ``whole``); raises :class:`EnvironmentSettingError` naming the
    variable ``name``."""
    try:
        value = int(text) if whole else float(text)
    except ValueError:
        raise EnvironmentSettingError(
            f"{name}: {text!r} is not {'a whole number' if whole else 'a number'}"
        ) from None
    return value


def _switch(name: str, text: str) -> bool:
    """On or off: one of ``1 true yes on`` or ``0 false no off`` (any case), unset or empty for off."""
    word = text.strip().lower()
    if word not in _TRUE + _FALSE:
        raise EnvironmentSettingError(f"{name}: {word!r} is not one of 1, true, yes, on, 0, false, off")
    return word in _TRUE


def parse_sampling(text: str) -> list[Any]:
    """The stages ``TRACEBRIDGE_SAMPLING`` names (see the module's documentation)."""
    from .sampling import Adaptive, ParentBased, Probability, RateLimiter, TraceIdRatio

    makers: dict[str, Callable[[float], Any]] = {
        "ratio": lambda x: ParentBased(TraceIdRatio(x)),
        "probability": Probability,
        "adaptive": Adaptive,
        "ratelimit": RateLimiter,
    }
    stages = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, arg = part.partition(":")
        maker = makers.get(name.strip().lower())
        if maker is None or not sep:
            raise EnvironmentSettingError(
                f"{ENV_SAMPLING}: {part!r} is not one of ratio:P, probability:P, adaptive:N, ratelimit:N"
            )
        value = parse_number(ENV_SAMPLING, arg.strip(), whole=False)
        try:
            stages.append(maker(value))
        except (ValueError, TypeError) as exc:
            raise EnvironmentSettingError(f"{ENV_SAMPLING}: {part!r}: {exc}") from None
    return stages


def from_environment(environ: Mapping[str, str] | None = None) -> EnvironmentSettings:
    """What the environment variables say; raises :class:`EnvironmentSettingError` for a bad value."""
    env = os.environ if environ is None else environ
    settings = EnvironmentSettings()
    output = env.get(ENV_OUTPUT, "").strip()
    settings.output = output or None
    level = env.get(ENV_LEVEL, "").strip()
    if level:
        n = int(parse_number(ENV_LEVEL, level, whole=True))
        if n < 1:
            raise EnvironmentSettingError(f"{ENV_LEVEL}: {level!r} is not a level (1 critical, 2 info, 3+)")
        settings.level = n
    settings.sampling = parse_sampling(env.get(ENV_SAMPLING, ""))
    settings.log_lines = _switch(ENV_LOG_LINES, env.get(ENV_LOG_LINES, ""))
    settings.runtime = _switch(ENV_RUNTIME, env.get(ENV_RUNTIME, ""))
    from .sampling.filters import Directives

    try:
        Directives.from_env(dict(env))
    except ValueError as exc:  # (its message names TRACEBRIDGE_FILTER)
        raise EnvironmentSettingError(str(exc)) from None
    return settings

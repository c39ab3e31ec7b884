"""OpenTelemetry's instrumentation packages (``opentelemetry-instrumentation-*``: HTTP clients and servers,
databases, ...) activated for a recording, as ``opentelemetry-instrument`` activates them: each entry
point of the group ``opentelemetry_instrumentor`` whose library is installed, less those that
``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` names (``*``: all), instruments its library with a TracerProvider
of its own, whose spans a :class:`~tracebridge.otel.PerfettoSpanProcessor` records into the session. So
they land in the trace on the threads that ran them, inside the calls around them (``tracebridge run``).

The global TracerProvider is left alone: the program's own OpenTelemetry setup stays its own. An
instrumentor that fails to load or to instrument is one line on stderr; the others go on.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased

from .. import _safety
from .._recorder import Session
from .processor import PerfettoSpanProcessor

INSTRUMENTOR_GROUP = "opentelemetry_instrumentor"
ENV_DISABLED = "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"


class LibrarySpans:
    """The instrumentation packages activated for a recording (:func:`activate_libraries`).

    .. versionadded:: 0.1
    """

    def __init__(self, provider: TracerProvider) -> None:
        #: The TracerProvider the libraries' spans go through (its processor records them).
        self.provider = provider
        #: The entry point names of the packages activated, in the order they were (by name).
        self.activated: list[str] = []
        self._instrumentors: list[tuple[str, Any]] = []

    def stop(self) -> None:
        """Uninstrument the libraries, and write out what the provider holds. Never raises."""
        instrumentors, self._instrumentors = self._instrumentors, []
        for name, instrumentor in reversed(instrumentors):
            try:
                _stop_yielding(instrumentor)
                instrumentor.uninstrument()
            except Exception as exc:
                _safety.report(
                    f"tracebridge: library spans: {name} could not be uninstrumented ({_why(exc)})"
                )
        try:
            self.provider.shutdown()
        except Exception as exc:
            _safety.internal_error("library spans: provider shutdown", exc, raise_in_strict=False)


def _yield_to_the_program(libraries: LibrarySpans, name: str, instrumentor: Any) -> None:
    """An instrumentor is one object per class: when the program instruments the library itself (with a
    TracerProvider of its own), tracebridge's activation steps aside first, so that the program's spans
    go where the program sends them (and stay instrumented after tracebridge stops)."""
    own = instrumentor.instrument

    def instrument(*args: Any, **kwargs: Any) -> Any:
        _stop_yielding(instrumentor)
        try:
            libraries._instrumentors.remove((name, instrumentor))
        except ValueError:
            pass
        else:
            try:
                instrumentor.uninstrument()
            except Exception as exc:
                _safety.report(f"tracebridge: library spans: {name} could not step aside ({_why(exc)})")
        return own(*args, **kwargs)

    instrumentor.instrument = instrument


def _stop_yielding(instrumentor: Any) -> None:
    with contextlib.suppress(AttributeError):
        del instrumentor.instrument  # (the instance's own: the class's method shows again)


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {_safety.safe_str(exc)}"


def _dependency_problem(entry_point: EntryPoint) -> tuple[bool, str] | None:
    """Whether the package's library is missing (``(False, ...)``: nothing to instrument) or installed at
    a version it does not instrument (``(True, what)``), as opentelemetry-instrument checks it; ``None``
    when it can be instrumented."""
    from opentelemetry.instrumentation.dependencies import get_dist_dependency_conflicts

    dist = getattr(entry_point, "dist", None)
    if dist is None:
        return None  # (the instrumentor checks its dependencies itself)
    conflict = get_dist_dependency_conflicts(dist)
    if conflict is None:
        return None
    installed = bool(getattr(conflict, "found", None) or getattr(conflict, "found_any", None))
    return installed, _safety.safe_str(conflict)


def activate_libraries(
    session: Session,
    *,
    trace_level: int = 2,
    environ: Mapping[str, str] | None = None,
    report: Callable[[str], None] = _safety.report,
) -> LibrarySpans | None:
    """Instrument the libraries of the installed instrumentation packages, their spans recorded into
    ``session`` at ``trace_level``; ``None`` when none was activated (none is installed, or their
    libraries are not, or opentelemetry-instrumentation is not). What goes wrong with one package is one
    line through ``report``; the others go on.

    .. versionadded:: 0.1
    """
    env = os.environ if environ is None else environ
    disabled = {name.strip() for name in env.get(ENV_DISABLED, "").split(",") if name.strip()}
    if "*" in disabled:
        return None
    found: dict[str, EntryPoint] = {}
    for entry_point in entry_points(group=INSTRUMENTOR_GROUP):
        if entry_point.name not in disabled:
            found.setdefault(entry_point.name, entry_point)
    if not found:
        return None
    try:
        import opentelemetry.instrumentation.dependencies  # noqa: F401  (what the packages run on)
    except ImportError:
        return None
    provider = TracerProvider(sampler=ParentBased(ALWAYS_ON), shutdown_on_exit=False)
    provider.add_span_processor(PerfettoSpanProcessor(session, trace_level=trace_level))
    libraries = LibrarySpans(provider)
    for name in sorted(found):
        entry_point = found[name]
        try:
            problem = _dependency_problem(entry_point)
            if problem is not None:
                installed, what = problem
                if installed:
                    report(f"tracebridge: library spans: {name} left out: {what}")
                continue
            instrumentor = entry_point.load()()
            if getattr(instrumentor, "is_instrumented_by_opentelemetry", False):
                continue  # (instrumented already, by someone else: theirs to undo)
            instrumentor.instrument(tracer_provider=provider, skip_dep_check=True)
        except Exception as exc:
            report(
                f"tracebridge: library spans: {name} could not be activated ({_why(exc)}); the others go on"
            )
            continue
        libraries._instrumentors.append((name, instrumentor))
        libraries.activated.append(name)
        _yield_to_the_program(libraries, name, instrumentor)
    if not libraries.activated:
        libraries.stop()
        return None
    return libraries

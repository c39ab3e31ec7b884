"""Which modules: patterns, exclusions, modules imported later, idempotence, bad input."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

import tracebridge
from tracebridge.instrument import instrument


def write_package(root: Path, name: str) -> None:
    pkg = root / name
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("def top():\n    return 'top'\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "deep.py").write_text(textwrap.dedent("def deep():\n    return 'deep'\n"))
    (pkg / "skipme.py").write_text("def skipped():\n    return 1\n")


def test_modules_imported_later_are_instrumented(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_package(tmp_path, "later_pkg")
    monkeypatch.syspath_prepend(str(tmp_path))
    handle = instrument("later_pkg", exclude="later_pkg.skip*")
    again = instrument(["later_pkg.*"])  # overlapping: nothing is wrapped twice
    try:
        import later_pkg
        import later_pkg.skipme
        import later_pkg.sub.deep

        tracebridge.start(level=2)
        assert later_pkg.top() == "top" and later_pkg.sub.deep.deep() == "deep"
        assert later_pkg.skipme.skipped() == 1
        names = [e.name for e in tracebridge.stop().events]
        assert names == ["later_pkg.top", "later_pkg.sub.deep.deep", "later_pkg.skipme.skipped"]
        assert not hasattr(later_pkg.sub.deep.deep.__wrapped__, "__wrapped__")
        assert set(handle.modules) == {"later_pkg", "later_pkg.sub", "later_pkg.sub.deep"}
    finally:
        handle.uninstrument()
        again.uninstrument()
        for name in [m for m in sys.modules if m.startswith("later_pkg")]:
            del sys.modules[name]
    assert not hasattr(later_pkg.top, "__wrapped__")


def test_a_package_glob_takes_the_package_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_package(tmp_path, "glob_pkg")
    monkeypatch.syspath_prepend(str(tmp_path))
    handle = instrument("glob_pkg", exclude=["glob_pkg.sub.*"])
    try:
        import glob_pkg.sub.deep

        assert set(handle.modules) == {"glob_pkg"}  # not glob_pkg.sub, not glob_pkg.sub.deep
        assert not hasattr(glob_pkg.sub.deep.deep, "__wrapped__")
    finally:
        handle.uninstrument()
        for name in [m for m in sys.modules if m.startswith("glob_pkg")]:
            del sys.modules[name]


def test_tracebridge_itself_is_never_instrumented() -> None:
    handle = instrument(["tracebridge", "wrapt", "*"], exclude=["*"])
    handle.uninstrument()
    everything = instrument(["tracebridge*", "wrapt*"])
    try:
        assert everything.modules == [] and everything.wrapped == 0
    finally:
        everything.uninstrument()


@pytest.mark.parametrize(
    ("patterns", "message"),
    [([], "name at least one module"), ([""], "module names or globs"), ([3], "module names or globs")],
)
def test_bad_patterns(patterns: list[object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        instrument(patterns)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="level"):
        instrument("x", level=0)
    with pytest.raises(ValueError, match="cannot be combined with min_duration"):
        instrument("x", min_duration="1ms", capture_args=True)


def test_c_functions_are_skipped_and_counted() -> None:
    import math

    floor = math.floor
    handle = instrument("math")
    try:
        assert handle.wrapped == 0 and handle.skipped["builtin"] > 10
        assert math.floor is floor
    finally:
        handle.uninstrument()


def test_a_glob_package_pattern_takes_the_packages_it_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_package(tmp_path, "globbed_a")
    monkeypatch.syspath_prepend(str(tmp_path))
    handle = instrument("globbed_*.*")
    try:
        import globbed_a.sub.deep

        assert {"globbed_a", "globbed_a.sub.deep"} <= set(handle.modules)
        assert hasattr(globbed_a.sub.deep.deep, "__wrapped__")
    finally:
        handle.uninstrument()
        for name in [m for m in sys.modules if m.startswith("globbed_")]:
            del sys.modules[name]

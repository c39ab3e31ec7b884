from __future__ import annotations

import pytest
from events import Ev

from tracebridge.sampling import Categories, Directives, Level, MinDuration, Names, Predicate


def test_level() -> None:
    assert Level(2).decide(Ev(level=2)) == 1.0 and Level(2).decide(Ev(level=3)) == 0.0


def test_names() -> None:
    f = Names(include=["db.*", "http.*"], exclude=["*.ping"])
    assert f.decide(Ev("db.query")) == 1.0
    assert f.decide(Ev("db.ping")) == 0.0
    assert f.decide(Ev("gpu.kernel")) == 0.0
    assert Names(exclude="debug*").decide(Ev("work")) == 1.0


def test_categories() -> None:
    f = Categories(disabled=["debug"])
    assert f.decide(Ev(metadata={"category": ["io", "debug"]})) == 0.0
    assert f.decide(Ev(metadata={"category": "io"})) == 1.0
    assert f.decide(Ev()) == 1.0
    only = Categories(enabled=["db"])
    assert only.decide(Ev(metadata={"category": "db"})) == 1.0 and only.decide(Ev()) == 0.0


def test_min_duration_global_and_per_operation() -> None:
    f = MinDuration("100us")
    assert f.decide(Ev(start_ns=0, end_ns=99_999)) == 0.0
    assert f.decide(Ev(start_ns=0, end_ns=100_000)) == 1.0
    assert f.decide(Ev(kind="instant", end_ns=0)) == 1.0
    per = MinDuration({"memory_allocation*": "1ms", "*": "100ms"})
    assert per.decide(Ev("memory_allocation_big", start_ns=0, end_ns=2_000_000)) == 1.0
    assert per.decide(Ev("http", start_ns=0, end_ns=2_000_000)) == 0.0
    assert per.threshold_ns("http") == 100_000_000


def test_predicate_and_its_failures(lenient: None) -> None:
    assert Predicate(lambda ev: ev.name.startswith("a")).decide(Ev("abc")) == 1.0
    assert Predicate(lambda ev: False).decide(Ev()) == 0.0
    broken = Predicate(lambda ev: 1 / 0)
    assert broken.decide(Ev()) == 1.0  # a failing predicate keeps the event
    assert broken.decide(Ev()) == 1.0
    assert broken.error_count.value == 2


def test_predicate_raises_in_strict_mode() -> None:
    with pytest.raises(ZeroDivisionError):
        Predicate(lambda ev: 1 / 0).decide(Ev())


def test_directives() -> None:
    d = Directives("myapp.db=3, myapp=2, *=1")
    assert d.level_for("myapp.db.query") == 3
    assert d.level_for("myapp.dbx") == 2  # prefixes match whole components
    assert d.level_for("myapp") == 2
    assert d.level_for("other") == 1
    assert d.decide(Ev("myapp.db.query", level=3)) == 1.0
    assert d.decide(Ev("myapp.web", level=3)) == 0.0
    assert d.decide(Ev("m", kind="log", level=3, metadata={"logger": "myapp.db"})) == 1.0
    assert Directives("verbose").level_for("anything") == 3
    assert Directives("noisy=off").decide(Ev("noisy.x", level=1)) == 0.0
    assert Directives("a=2").level_for("b") is None  # no default: other names are kept


def test_directives_from_environment() -> None:
    assert Directives.from_env({}) is None
    assert Directives.from_env({"TRACEBRIDGE_FILTER": "app=3"}).level_for("app.x") == 3  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="TRACEBRIDGE_FILTER: Directives: cannot read 'app=loud'"):
        Directives.from_env({"TRACEBRIDGE_FILTER": "app=loud"})


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Level(-1), r"Level\(n\) must be a level"),
        (lambda: Names(), r"Names: give include=, exclude= or both"),
        (lambda: Names(include=[""]), r"Names\(include\): expected non-empty glob strings"),
        (lambda: Names(exclude=["[z-a]"]), r"Names\(exclude\): the glob '\[z-a\]' can never match"),
        (lambda: Categories(disabled=[""]), r"Categories\(disabled\)"),
        (lambda: MinDuration("fast"), r"MinDuration\(threshold\): expected a duration"),
        (lambda: MinDuration(-1), r"non-negative"),
        (lambda: MinDuration({"db*": "1 parsec"}), r"MinDuration\['db\*'\]"),
        (lambda: Predicate(42), r"Predicate\(fn\) must be callable"),  # type: ignore[arg-type]
        (lambda: Directives("a==2"), r"Directives: cannot read 'a==2'"),
        (lambda: Directives("a.*=2"), r"prefixes are names, not globs"),
        (lambda: Directives(""), r"no directive"),
    ],
)
def test_bad_input(make, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=message):
        make()

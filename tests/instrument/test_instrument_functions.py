"""Plain functions: a span per call, behaviour unchanged."""

from __future__ import annotations

import inspect
import pickle
from typing import Any

import pytest

import tracebridge


def spans() -> list[tracebridge.Event]:
    return [e for e in tracebridge.stop().events if e.kind == "span"]


def test_calls_become_spans(kinds: Any) -> None:
    module, _ = kinds
    assert module.add(1, 2, 3, scale=2) == 12
    with pytest.raises(module.Declined, match="no") as caught:
        module.fail("no")
    (add, fail) = spans()
    assert add.name == "instr_sample.kinds.add"
    assert add.metadata["code.filepath"] == module.__file__
    assert add.metadata["code.lineno"] == inspect.getsourcelines(module.add.__wrapped__)[1]
    assert fail.error is not None and fail.error.type == "Declined" and fail.error.message == "no"
    assert fail.error.frames[-1].function == "fail"
    assert caught.value.__traceback__ is not None


def test_behaviour_is_unchanged(kinds: Any) -> None:
    module, _ = kinds
    fn = module.add
    assert fn.__wrapped__ is not fn
    assert fn.__name__ == "add" and fn.__qualname__ == "add" and fn.__doc__ == "Add numbers."
    assert str(inspect.signature(fn)) == str(inspect.signature(fn.__wrapped__))
    assert not inspect.iscoroutinefunction(fn) and not inspect.isgeneratorfunction(fn)
    assert pickle.loads(pickle.dumps(fn)) is fn  # by reference
    assert module.dumps is __import__("json").dumps  # imported names are not ours to wrap


def test_private_names_only_when_asked(kinds: Any) -> None:
    module, _ = kinds
    assert not hasattr(module._private, "__wrapped__")
    from tracebridge.instrument import instrument

    private = instrument("instr_sample.kinds", include_private=True)
    try:
        assert module._private() == "private" and hasattr(module._private, "__wrapped__")
        assert not hasattr(module.add.__wrapped__, "__wrapped__")  # wrapped once only
    finally:
        private.uninstrument()
    assert not hasattr(module._private, "__wrapped__")


def test_uninstrument_restores_everything(kinds: Any) -> None:
    module, handle = kinds
    wrapped = module.add
    handle.uninstrument()
    assert module.add is wrapped.__wrapped__
    assert not hasattr(module.Cart.__dict__["tax"].__func__, "__wrapped__")
    assert not hasattr(module.Cart.total, "__wrapped__")
    assert not hasattr(inspect.getattr_static(module.Cart, "size").fget, "__wrapped__")
    module.add(1)
    assert spans() == []
    handle.uninstrument()  # twice: nothing more


def test_source_locations_in_perfetto(kinds: Any, tmp_path: Any) -> None:
    from helpers import app_events, decode

    module, _ = kinds
    tracebridge.stop()
    path = tmp_path / "calls.perfetto-trace"
    tracebridge.start(level=2, output=path)
    for i in range(3):
        module.add(i)
    tracebridge.stop()
    official = decode(path)
    sources = [s for p in official.packet for s in p.interned_data.source_locations]
    assert [(s.file_name, s.function_name) for s in sources] == [(module.__file__, "add")]
    begins = [e for e in app_events(official) if e.type == 1]
    assert [e.source_location_iid for e in begins] == [sources[0].iid] * 3
    assert all(len(e.debug_annotations) == 1 for e in begins)  # the level only: code.* is interned
    (first, *_) = tracebridge.read(path)
    assert first.metadata == {
        "code.filepath": module.__file__,
        "code.lineno": sources[0].line_number,
        "code.function": "add",
    }


def test_a_function_already_traced_is_not_wrapped_again(tmp_path: Any) -> None:
    """(Found in review: an instrumented module's @traced function got two spans a call.)"""
    import sys

    from tracebridge.instrument import instrument

    source = "import tracebridge\n\n@tracebridge.traced(name='mine')\ndef work():\n    return 1\n\n"
    (tmp_path / "already_traced_sample.py").write_text(source + "def other():\n    return 2\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import already_traced_sample as module

        handle = instrument("already_traced_sample")
        tracebridge.start(level=2)
        try:
            assert module.work() == 1 and module.other() == 2
        finally:
            handle.uninstrument()
        assert [e.name for e in spans()] == ["mine", "already_traced_sample.other"]
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("already_traced_sample", None)

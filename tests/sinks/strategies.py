"""Hypothesis strategies for events as the writer thread hands them to sinks (already sanitized)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from tracebridge._model import RESERVED_KEYS, ErrorInfo, Event, Frame

# What sinks receive is sanitized: valid UTF-8, no NUL (trace_processor keeps C strings).
chars = st.characters(exclude_characters="\x00", exclude_categories=("Cs",))


def text(min_size: int = 0, max_size: int = 20) -> st.SearchStrategy[str]:
    return st.text(chars, min_size=min_size, max_size=max_size)


names = text(min_size=1, max_size=20)
keys = text(max_size=12).filter(lambda k: k not in RESERVED_KEYS)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1),
    st.floats(allow_nan=False, allow_infinity=True),
    text(max_size=30),
)
values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=12,
)
metadata = st.dictionaries(keys, values, max_size=5)
categories = st.lists(text(min_size=1, max_size=8).filter(lambda c: "," not in c), max_size=2).map(tuple)
levels = st.integers(min_value=1, max_value=6)
frames = st.lists(
    st.builds(Frame, names, text(min_size=1, max_size=20), st.integers(min_value=0, max_value=100_000)),
    min_size=1,
    max_size=4,
).map(tuple)
_failures = st.builds(ErrorInfo, names, text(max_size=20), frames)
# A failure with a chain of causes (raise ... from, or raised while handling another), as files keep it.
_chained = st.builds(
    ErrorInfo,
    names,
    text(max_size=20),
    frames,
    st.one_of(_failures, st.builds(ErrorInfo, names, text(max_size=20), frames, _failures, st.booleans())),
    st.booleans(),
)
errors = st.one_of(st.none(), _failures, _chained)
adjusted_counts = st.one_of(st.just(1.0), st.floats(min_value=1.0, max_value=1e12))
flow_ids = st.lists(st.integers(min_value=1, max_value=(1 << 64) - 1), max_size=2, unique=True).map(tuple)


#: A log's format string (its slice's name in Perfetto, unless it is empty or the message), or none.
templates = st.one_of(
    st.just({}),
    st.fixed_dictionaries(
        {"message_template": st.one_of(text(max_size=12), st.just(""), st.integers(-(2**63), 2**63 - 1))}
    ),
)


@st.composite
def thread_events(draw: st.DrawFn, tid: int, thread_name: str, t0: int) -> list[Event]:
    """One thread's events in the order the recorder queues them (spans at their end): properly nested
    spans on the thread track, plus instants, counters, logs, named-track spans and overlapping spans."""
    events: list[Event] = []
    stack: list[Event] = []
    t = t0
    for op in draw(st.lists(st.sampled_from("(()))iclnoa"), max_size=30)):
        t += draw(st.integers(min_value=1, max_value=5000))
        if op == "(":
            stack.append(
                Event(
                    "span",
                    draw(names),
                    t,
                    None,
                    draw(levels),
                    draw(metadata),
                    tid,
                    thread_name,
                    draw(errors),
                    draw(categories),
                    None,
                    draw(flow_ids),
                    (),
                    adjusted_count=draw(adjusted_counts),
                )
            )
        elif op == ")" and stack:
            ev = stack.pop()
            ev.end_ns = t
            events.append(ev)
        elif op == "i":
            events.append(
                Event(
                    "instant",
                    draw(names),
                    t,
                    t,
                    draw(levels),
                    draw(metadata),
                    tid,
                    thread_name,
                    categories=draw(categories),
                    track=draw(st.one_of(st.none(), names)),
                    adjusted_count=draw(adjusted_counts),
                )
            )
        elif op == "c":
            value = draw(st.one_of(st.integers(-(1 << 63), (1 << 63) - 1), st.floats(allow_nan=False)))
            events.append(
                Event(
                    "counter",
                    draw(names),
                    t,
                    t,
                    1,
                    {},
                    tid,
                    thread_name,
                    value=value,
                    unit=draw(st.one_of(st.none(), st.sampled_from(["ns", "count", "bytes", "widgets"]))),
                )
            )
        elif op == "l":
            source = draw(st.one_of(st.none(), frames.map(lambda f: f[0])))
            events.append(
                Event(
                    "log",
                    draw(text(max_size=40)),
                    t,
                    t,
                    draw(levels),
                    {**draw(metadata), **draw(templates)},
                    tid,
                    thread_name,
                    value=draw(st.integers(2, 7)),
                    source=source,
                )
            )
        elif op in "noa":
            end = t + draw(st.integers(min_value=0, max_value=20_000))
            kind = "activity" if op == "a" else "span"
            events.append(
                Event(
                    kind,
                    draw(names),
                    t,
                    end,
                    draw(levels),
                    draw(metadata),
                    tid,
                    thread_name,
                    categories=draw(categories),
                    track=draw(names) if op == "n" else None,
                    overlapping=op == "o",
                )
            )
    while stack:
        t += 1
        ev = stack.pop()
        ev.end_ns = t
        events.append(ev)
    return events

"""OpenTelemetry's zero-code path: ``OTEL_TRACES_EXPORTER=perfetto`` and the ``tracebridge_*`` samplers,
through the real opentelemetry-distro's ``opentelemetry-instrument`` with real instrumentation packages."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased

import tracebridge
from tracebridge._model import Event
from tracebridge._recorder.runtime import RT
from tracebridge.otel import (
    AdaptiveSampler,
    ConsistentRatioSampler,
    ParentBasedAdaptiveSampler,
    ParentBasedConsistentRatioSampler,
    ParentBasedRateLimitingSampler,
    RateLimitingSampler,
    autoconfigure,
)
from tracebridge.reading import read_trace

from helpers import LOOPBACK_SERVER, nested_on_thread, perfetto_import

BIN = Path(sys.executable).parent


def instrumented(
    program: str, cwd: Path, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    """``opentelemetry-instrument python app.py`` (the program's source), with ``env``."""
    (cwd / "app.py").write_text(textwrap.dedent(program))
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TRACEBRIDGE_"))}
    return subprocess.run(
        [str(BIN / "opentelemetry-instrument"), "python", "app.py", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **base,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            # (opentelemetry-distro sends metrics and logs over OTLP/gRPC unless told otherwise)
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            "OTEL_TRACES_EXPORTER": "perfetto",
            **env,
        },
    )


def inside(inner: Event, outer: Event) -> bool:
    """Nested on the thread's track, in the same trace."""
    return nested_on_thread(inner, outer) and inner.trace_id == outer.trace_id


ORDERS = (
    LOOPBACK_SERVER
    + """
import sqlite3
import threading
import time
import urllib.request

from opentelemetry import trace

tracer = trace.get_tracer("shop")
print(trace.get_tracer_provider().sampler.get_description())
db = sqlite3.connect(":memory:", check_same_thread=False)
db.cursor().execute("create table orders (n)")


def handle(n):
    with tracer.start_as_current_span("handle order", attributes={"order.id": n}):
        assert urllib.request.urlopen(URL).read() == b"ok"
        db.cursor().execute("insert into orders values (?)", (n,))
    time.sleep(0.05)  # (20 orders a second at most: under the adaptive sampler's 50 in every 0.1 s)


def poll():
    with tracer.start_as_current_span("poll"):  # still open when the program ends
        time.sleep(3600)


for n in range(12):
    handle(n)
worker = threading.Thread(target=lambda: [handle(n) for n in range(12, 15)], name="worker")
worker.start()
worker.join()
threading.Thread(target=poll, daemon=True, name="poller").start()
time.sleep(0.2)
SERVER.shutdown()
"""
)


def test_opentelemetry_instrument_writes_a_perfetto_trace(tmp_path: Path) -> None:
    result = instrumented(
        ORDERS,
        tmp_path,
        {
            "OTEL_TRACES_SAMPLER": "tracebridge_adaptive",
            "OTEL_TRACES_SAMPLER_ARG": "50",
            "TRACEBRIDGE_OUTPUT": "orders.perfetto-trace",
        },
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["AdaptiveSampler{50/s}"]
    assert result.stderr == ""
    trace = read_trace(tmp_path / "orders.perfetto-trace")
    assert trace.problems == []
    assert trace.process_name == "app.py"  # (not the SDK's "unknown_service")
    spans = [e for e in trace.events if e.kind == "span"]
    orders = sorted((e for e in spans if e.name == "handle order"), key=lambda e: e.metadata["order.id"])
    # 15 orders at 20 a second at most, under 50 a second: the sampler kept every one.
    assert [e.metadata["order.id"] for e in orders] == list(range(15))
    gets = [e for e in spans if e.name == "GET"]
    inserts = [e for e in spans if e.name == "insert"]
    assert len(gets) == len(inserts) == 15
    for order in orders:
        (get,) = (e for e in gets if inside(e, order))
        (insert,) = (e for e in inserts if inside(e, order))
        assert get.end_ns is not None and get.end_ns <= insert.start_ns
        assert order.thread_name == ("worker" if order.metadata["order.id"] >= 12 else "MainThread")
        assert order.metadata["otel.scope"] == "shop"
        assert get.metadata["http.status_code"] == 200
        assert get.metadata["http.url"].startswith("http://127.0.0.1:")
        assert get.metadata["otel.kind"] == "CLIENT"
        assert get.metadata["otel.scope"] == "opentelemetry.instrumentation.urllib"
        assert insert.metadata["db.statement"] == "insert into orders values (?)"
        assert insert.metadata["otel.scope"] == "opentelemetry.instrumentation.sqlite3"
    (create,) = (e for e in spans if e.name == "create")
    assert create.thread_name == "MainThread" and create.end_ns is not None
    (poll,) = (e for e in spans if e.name == "poll")
    assert poll.end_ns is None and poll.thread_name == "poller"  # written as begun at exit
    assert len(spans) == 15 * 3 + 2
    imported = perfetto_import(tmp_path / "orders.perfetto-trace")
    assert imported.stats == {}
    tracks = {(name, uuid) for name, uuid, _, _ in imported.slices}
    assert {uuid for name, uuid in tracks if name in ("GET", "insert")} == {
        uuid for name, uuid in tracks if name == "handle order"
    }


RATIO = """
import sqlite3

from opentelemetry import trace

tracer = trace.get_tracer("batch")
db = sqlite3.connect(":memory:")
for n in range(200):
    with tracer.start_as_current_span("job") as job:
        db.cursor().execute("select ?", (n,))
    print(f"{job.get_span_context().trace_id:032x}")
"""


def test_a_ratio_sampler_keeps_exactly_its_traces_in_the_default_file(tmp_path: Path) -> None:
    result = instrumented(
        RATIO,
        tmp_path,
        {"OTEL_TRACES_SAMPLER": "parentbased_tracebridge_ratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    made = [int(line, 16) for line in result.stdout.split()]
    assert len(set(made)) == 200
    sampler = ConsistentRatioSampler(0.25)
    kept = {t for t in made if sampler.should_sample(None, t, "job").decision.is_sampled()}
    assert 0 < len(kept) < 200
    trace = read_trace(tmp_path / autoconfigure.DEFAULT_OUTPUT)
    assert trace.problems == []
    jobs = [e for e in trace.events if e.name == "job"]
    selects = [e for e in trace.events if e.name == "select"]
    assert sorted(e.trace_id for e in jobs) == sorted(kept)
    # Children follow their parent (parent-based): each kept job's query, and no other.
    assert sorted(e.trace_id for e in selects) == sorted(kept)


def test_bad_settings_are_one_line_and_the_program_runs(tmp_path: Path) -> None:
    program = RATIO.replace('print(f"{job.get_span_context().trace_id:032x}")', "pass") + (
        "print(trace.get_tracer_provider().sampler.get_description())\n"
    )
    result = instrumented(
        program,
        tmp_path,
        {
            "OTEL_TRACES_SAMPLER": "tracebridge_ratelimit",
            "OTEL_TRACES_SAMPLER_ARG": "lots",
            "TRACEBRIDGE_LEVEL": "high",
        },
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["RateLimitingSampler{100/s}"]
    assert result.stderr.splitlines() == [  # (the SDK makes the sampler, then the exporter)
        "tracebridge: OTEL_TRACES_SAMPLER_ARG: 'lots' is not a number; tracebridge_ratelimit uses its "
        "default, 100 a second",
        "tracebridge: TRACEBRIDGE_LEVEL: 'high' is not a whole number; OTEL_TRACES_EXPORTER=perfetto "
        "records nothing",
    ]
    assert not (tmp_path / autoconfigure.DEFAULT_OUTPUT).exists()


def test_entry_points_name_the_exporter_and_the_samplers() -> None:
    (exporter,) = entry_points(group="opentelemetry_traces_exporter", name="perfetto")
    assert exporter.load() is autoconfigure.PerfettoEnvironmentExporter
    samplers = {ep.name: ep.load() for ep in entry_points(group="opentelemetry_traces_sampler")}
    assert {name: f for name, f in samplers.items() if "tracebridge" in name} == {
        "tracebridge_adaptive": autoconfigure.adaptive_sampler,
        "parentbased_tracebridge_adaptive": autoconfigure.parent_based_adaptive_sampler,
        "tracebridge_ratio": autoconfigure.ratio_sampler,
        "parentbased_tracebridge_ratio": autoconfigure.parent_based_ratio_sampler,
        "tracebridge_ratelimit": autoconfigure.rate_limiting_sampler,
        "parentbased_tracebridge_ratelimit": autoconfigure.parent_based_rate_limiting_sampler,
    }


@pytest.mark.parametrize(
    ("factory", "arg", "kind", "description"),
    [
        (autoconfigure.adaptive_sampler, "50", AdaptiveSampler, "AdaptiveSampler{50/s}"),
        (autoconfigure.adaptive_sampler, None, AdaptiveSampler, "AdaptiveSampler{100/s}"),
        (autoconfigure.ratio_sampler, " 0.5 ", ConsistentRatioSampler, "ConsistentRatioSampler{0.5, th:8}"),
        (autoconfigure.ratio_sampler, "", ConsistentRatioSampler, "ConsistentRatioSampler{1, th:0}"),
        (autoconfigure.rate_limiting_sampler, "20", RateLimitingSampler, "RateLimitingSampler{20/s}"),
        (
            autoconfigure.parent_based_adaptive_sampler,
            "5",
            ParentBasedAdaptiveSampler,
            "AdaptiveSampler{5/s}",
        ),
        (
            autoconfigure.parent_based_ratio_sampler,
            "0.25",
            ParentBasedConsistentRatioSampler,
            "ConsistentRatioSampler{0.25, th:c}",
        ),
        (
            autoconfigure.parent_based_rate_limiting_sampler,
            "7",
            ParentBasedRateLimitingSampler,
            "RateLimitingSampler{7/s}",
        ),
    ],
)
def test_samplers_take_the_argument_or_their_default(
    factory: Any, arg: str | None, kind: type, description: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sampler = factory(arg)
    assert type(sampler) is kind
    assert description in sampler.get_description()
    if isinstance(sampler, ParentBased):
        assert sampler.get_description().startswith("ParentBased{root:")
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("factory", "arg", "line"),
    [
        (
            autoconfigure.adaptive_sampler,
            "fast",
            "OTEL_TRACES_SAMPLER_ARG: 'fast' is not a number; tracebridge_adaptive uses its default, "
            "100 a second",
        ),
        (
            autoconfigure.ratio_sampler,
            "1.5",
            "OTEL_TRACES_SAMPLER_ARG: ConsistentRatioSampler(p) must be a probability between 0 and 1, "
            "got 1.5; tracebridge_ratio uses its default, 1",
        ),
        (
            autoconfigure.parent_based_rate_limiting_sampler,
            "-3",
            "OTEL_TRACES_SAMPLER_ARG: RateLimitingSampler(per_second) must be a positive number, got -3.0; "
            "parentbased_tracebridge_ratelimit uses its default, 100 a second",
        ),
    ],
)
def test_a_bad_argument_is_one_line_and_the_default(
    factory: Any, arg: str, line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    default = factory(None).get_description()
    assert factory(arg).get_description() == default
    assert capsys.readouterr().err == f"tracebridge: {line}\n"


def test_an_exporter_of_another_provider_records_its_batches(
    trace_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if isinstance(otel_trace.get_tracer_provider(), TracerProvider):
        pytest.skip("a global TracerProvider is set in this process")
    monkeypatch.setenv("TRACEBRIDGE_OUTPUT", str(trace_path))
    exporter = autoconfigure.PerfettoEnvironmentExporter()
    assert exporter.processor is None and exporter.path == str(trace_path)
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer = provider.get_tracer("batch")
    with tracer.start_as_current_span("outer") as outer, tracer.start_as_current_span("inner"):
        pass
    provider.shutdown()
    assert exporter.export([]) == SpanExportResult.SUCCESS
    tracebridge.stop()
    spans = [e for e in read_trace(trace_path).events if e.kind == "span"]
    track = f"trace {outer.get_span_context().trace_id:032x}"
    assert [(e.name, e.track) for e in spans] == [("outer", track), ("inner", track)]


def test_a_bad_environment_value_leaves_the_exporter_off(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TRACEBRIDGE_SAMPLING", "ratio:2")
    exporter = autoconfigure.PerfettoEnvironmentExporter()
    assert capsys.readouterr().err.startswith("tracebridge: TRACEBRIDGE_SAMPLING: 'ratio:2': ")
    assert exporter.path is None and exporter.processor is None and RT.session is None
    assert exporter.export([]) == SpanExportResult.SUCCESS
    assert exporter.force_flush() is True
    exporter.shutdown()


def test_a_file_that_cannot_be_written_leaves_the_exporter_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TRACEBRIDGE_OUTPUT", str(tmp_path / "no" / "such" / "dir" / "t.perfetto-trace"))
    exporter = autoconfigure.PerfettoEnvironmentExporter()
    err = capsys.readouterr().err
    assert (
        err.startswith("tracebridge: OTEL_TRACES_EXPORTER=perfetto records nothing: ")
        and err.count("\n") == 1
    )
    assert exporter.path is None and RT.session is None

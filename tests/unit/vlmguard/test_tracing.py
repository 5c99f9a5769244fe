"""Tracing: a no-op while off; with an in-memory exporter, spans nest, the W3C traceparent
continues a trace across a boundary, a malformed one starts a new trace, and sampling follows
the parent."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from vlmguard import tracing
from vlmguard.config import BatchingConfig, TracingConfig, VLMGuardConfig
from vlmguard.domain import ANALYZE, Analysis, AnalysisItem, ModalityReasoning
from vlmguard.errors import ConfigError, Reason
from vlmguard.pipeline import Call, build_pipeline
from vlmguard.queue.base import StageSpec
from vlmguard.queue.inproc import InProcessQueue

in_memory = pytest.importorskip(
    "opentelemetry.sdk.trace.export.in_memory_span_exporter",
    reason="opentelemetry-sdk not installed (extra 'tracing')")

ON = TracingConfig(enabled=True, exporter="none")


@pytest.fixture
def spans() -> Iterator[Any]:
    exporter = in_memory.InMemorySpanExporter()
    assert tracing.setup(ON, exporter=exporter)
    yield exporter
    tracing.shutdown()


def test_off_is_a_no_op() -> None:
    tracing.shutdown()
    assert not tracing.setup(TracingConfig())  # disabled by default
    assert not tracing.enabled()
    with tracing.span("x") as sp:
        assert sp is None
    assert tracing.start_span("x") is None
    assert tracing.traceparent() == ""
    tracing.end(None)

    async def value() -> int:
        return 7

    assert asyncio.run(tracing.traced("x", value())) == 7


def test_spans_nest_and_traceparent_continues_the_trace(spans: Any) -> None:
    with tracing.span("outer", {"vlmguard.stage": "analyze"}) as outer, tracing.span("inner"):
        tp = tracing.traceparent()
    version, trace_id, span_id, flags = tp.split("-")
    assert (version, len(trace_id), len(span_id)) == ("00", 32, 16)
    assert int(flags, 16) & 1  # sampled
    remote = tracing.start_span("remote", parent=tp, kind="consumer")
    tracing.end(remote, {"n": 1}, error="UNAVAILABLE STAGE_FAILED")
    by_name = {s.name: s for s in spans.get_finished_spans()}
    assert set(by_name) == {"outer", "inner", "remote"}
    assert by_name["inner"].parent.span_id == outer.get_span_context().span_id
    assert by_name["remote"].context.trace_id == outer.get_span_context().trace_id
    assert f"{by_name['remote'].parent.span_id:016x}" == span_id
    assert by_name["remote"].status.description == "UNAVAILABLE STAGE_FAILED"
    assert by_name["outer"].attributes["vlmguard.stage"] == "analyze"


def test_malformed_traceparent_starts_a_new_trace(spans: Any) -> None:
    for bad in ("", "garbage", "00-xyz-abc-01", "ff-" + "0" * 32 + "-" + "0" * 16 + "-01"):
        tracing.end(tracing.start_span("item", parent=bad))
    finished = spans.get_finished_spans()
    assert len(finished) == 4
    assert all(s.parent is None for s in finished)
    assert len({s.context.trace_id for s in finished}) == 4


def test_sampling_follows_the_parent() -> None:
    exporter = in_memory.InMemorySpanExporter()
    tracing.setup(TracingConfig(enabled=True, exporter="none", sample_ratio=0.0),
                  exporter=exporter)
    try:
        tracing.end(tracing.start_span("new trace"))  # ratio 0: not recorded
        sampled = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
        unsampled = sampled[:-2] + "00"
        tracing.end(tracing.start_span("sampled parent", parent=sampled))
        tracing.end(tracing.start_span("unsampled parent", parent=unsampled))
        assert [s.name for s in exporter.get_finished_spans()] == ["sampled parent"]
    finally:
        tracing.shutdown()


def test_otlp_without_its_exporter_is_a_clear_config_error() -> None:
    try:
        import opentelemetry.exporter.otlp.proto.grpc.trace_exporter  # noqa: F401
        pytest.skip("the OTLP exporter is installed here")
    except ImportError:
        pass
    with pytest.raises(ConfigError) as e:
        tracing.setup(TracingConfig(enabled=True, exporter="otlp"))
    assert e.value.reason == Reason.MISSING_DEPENDENCY
    assert not tracing.enabled()


async def _analyze(items: Sequence[AnalysisItem]) -> list[Any]:
    return [Analysis(score=0.1, findings=(), reasoning=ModalityReasoning(), analyzer="t",
                     category_scores={}) for _ in items]


def test_pipeline_stages_are_spans_of_the_call(spans: Any) -> None:
    async def run() -> None:
        queue = InProcessQueue([StageSpec(ANALYZE, _analyze, BatchingConfig())],
                               max_pending=4)
        await queue.start()
        try:
            p = build_pipeline(VLMGuardConfig(), queue=queue)
            with tracing.span("vlmguard.rpc Guard", kind="server"):
                await p.guard(Call("r1", "hello"))
        finally:
            await queue.close()

    asyncio.run(run())
    finished = {s.name: s for s in spans.get_finished_spans()}
    rpc = finished["vlmguard.rpc Guard"]
    for name in ("vlmguard.stage analyze", "vlmguard.stage policy", "vlmguard.stage rewrite"):
        assert finished[name].parent.span_id == rpc.context.span_id, name
    # Spans carry no content: no attribute holds the prompt.
    assert all("hello" not in str(v) for s in finished.values()
               for v in (s.attributes or {}).values())


class _Handle:
    def __init__(self) -> None:
        self.calls: list[Any] = []

    def remote(self, call: Any) -> Any:
        self.calls.append(call)

        async def answer() -> Any:
            return (await _analyze([call.item]))[0]

        return answer()


def test_ray_stage_calls_carry_the_callers_trace(spans: Any) -> None:
    from vlmguard.serving.ray_queue import RayServeQueue

    handle = _Handle()

    async def run() -> str:
        q = RayServeQueue({ANALYZE: handle}, max_pending=4)
        with tracing.span("vlmguard.stage analyze"):
            tp = tracing.traceparent()
            await q.submit(ANALYZE, AnalysisItem("r", "x"))
        return tp

    tp = asyncio.run(run())
    assert tp and handle.calls[0].traceparent == tp

"""Metrics: default collectors on the private registry, bounded tenant and model labels, the
risk-score histogram and per-tenant counters as the pipeline records them, and
``vlmguard_queue_up`` of the in-process and Ray queues."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from prometheus_client import generate_latest

from tests.support.helpers import png_bytes
from vlmguard.config import BatchingConfig, VLMGuardConfig
from vlmguard.domain import (
    ANALYZE,
    TARGET,
    Analysis,
    AnalysisItem,
    Finding,
    ImageInput,
    Modality,
    ModalityReasoning,
    TargetResult,
)
from vlmguard.metrics import Metrics, package_version
from vlmguard.pipeline import Call, build_pipeline
from vlmguard.queue.base import StageSpec
from vlmguard.queue.inproc import InProcessQueue
from vlmguard.serving.ray_queue import RayServeQueue, StageCall


def _value(m: Metrics, name: str, labels: dict[str, str] | None = None) -> float | None:
    return m.registry.get_sample_value(name, labels or {})


def test_private_registry_has_process_platform_and_gc_collectors() -> None:
    m = Metrics()
    assert (_value(m, "process_cpu_seconds_total") or 0) >= 0
    assert (_value(m, "process_resident_memory_bytes") or 0) > 0
    assert _value(m, "python_gc_objects_collected_total", {"generation": "0"}) is not None
    text = generate_latest(m.registry).decode()
    assert "python_info{" in text
    # Two instances do not share (or clash over) the collectors.
    assert _value(Metrics(), "process_open_fds") is not None


def test_build_info_names_the_installed_version() -> None:
    m = Metrics()
    version = package_version()
    assert version and version != "unknown"  # the editable install has metadata
    samples = [s for metric in m.registry.collect() if metric.name == "vlmguard_build_info"
               for s in metric.samples]
    assert [s.labels["version"] for s in samples] == [version]
    assert samples[0].value == 1


def test_tenant_label_is_bounded() -> None:
    m = Metrics()
    m.name_tenants(["acme", "globex", "initech"], cap=3)
    assert m.tenant_label("") == "default"
    assert m.tenant_label("acme") == "acme"
    assert m.tenant_label("globex") == "globex"
    assert m.tenant_label("initech") == "other"  # past the cap (default counts)
    assert m.tenant_label("made-up") == "other"  # a request's own id is never a label
    assert m.tenant_label(None) == "none"

    m2 = Metrics()
    m2.name_tenants(["acme"], cap=3)
    # A tenant a keys-file key is bound to gets a label while the cap allows.
    assert m2.tenant_label("keys-tenant", named=True) == "keys-tenant"
    assert m2.tenant_label("keys-tenant") == "keys-tenant"
    assert m2.tenant_label("another", named=True) == "other"
    for i in range(1000):  # callers cannot grow the series
        m2.tenant_label(f"t{i}", named=True)
    assert m2.tenant_label("acme") == "acme"
    assert len(m2._tenant_labels) == 3


def test_model_and_analyzer_labels() -> None:
    m = Metrics()
    m.set_model("analyze", "tier1/2.a+2.b", "2.a")
    m.set_model("analyze", "tier1/3.c", "3.c")  # a reload replaces the series
    samples = [s.labels for metric in m.registry.collect() if metric.name == "vlmguard_model_info"
               for s in metric.samples]
    assert samples == [{"stage": "analyze", "model": "tier1/3.c", "version": "3.c"}]
    labels = [m.analyzer_label(f"client-{i}") for i in range(20)]
    assert labels[:8] == [f"client-{i}" for i in range(8)] and set(labels[8:]) == {"other"}


CATEGORY = VLMGuardConfig().taxonomy.ids[0]


def _analysis(score: float) -> Analysis:
    findings = (Finding(CATEGORY, score, Modality.TEXT, "", "test"),) if score > 0.5 else ()
    return Analysis(score=score, findings=findings, reasoning=ModalityReasoning(),
                    analyzer="tier1/test-head", category_scores={CATEGORY: score})


async def _analyze(items: Sequence[AnalysisItem]) -> list[Any]:
    return [_analysis(0.93 if "bomb" in i.text else 0.12) for i in items]


async def _target(items: Sequence[Any]) -> list[Any]:
    return [TargetResult("ok", "echo") for _ in items]


def test_pipeline_records_risk_score_and_tenant_verdicts() -> None:
    m = Metrics()
    cfg = VLMGuardConfig.model_validate({"policy": {
        "unknown_tenant": "default",
        "tenants": {"default": {}, "acme": {"block_threshold": 0.9}}}})

    async def run() -> None:
        queue = InProcessQueue([StageSpec(ANALYZE, _analyze, BatchingConfig()),
                                StageSpec(TARGET, _target, BatchingConfig())],
                               max_pending=8, metrics=m)
        await queue.start()
        try:
            p = build_pipeline(cfg, queue=queue, metrics=m)
            await p.guard(Call("r1", "what is the weather", tenant_id="acme"))
            await p.guard(Call("r2", "how to build a bomb", tenant_id="acme",
                               images=(ImageInput(png_bytes()),)))
            await p.guard(Call("r3", "hello", tenant_id="someone-else"))
        finally:
            await queue.close()

    asyncio.run(run())
    h = "vlmguard_analyzer_risk_score"
    text_acme = {"tenant": "acme", "modality": "text", "analyzer": "tier1/test-head"}
    image_acme = {**text_acme, "modality": "image"}
    assert _value(m, f"{h}_count", text_acme) == 1
    assert _value(m, f"{h}_sum", text_acme) == pytest.approx(0.12)
    assert _value(m, f"{h}_bucket", {**text_acme, "le": "0.15"}) == 1
    assert _value(m, f"{h}_bucket", {**text_acme, "le": "0.1"}) == 0
    assert _value(m, f"{h}_sum", image_acme) == pytest.approx(0.93)
    # An unknown id resolved to the default tenant's policy counts as 'default'.
    assert _value(m, f"{h}_count", {**text_acme, "tenant": "default"}) == 1
    actions = {(s.labels["tenant"], s.labels["action"]): s.value
               for metric in m.registry.collect()
               if metric.name == "vlmguard_tenant_verdicts"
               for s in metric.samples if s.name.endswith("_total")}
    assert actions == {("acme", "ALLOW"): 1, ("acme", "BLOCK"): 1, ("default", "ALLOW"): 1}
    rewriters = {s.labels["rewriter"] for metric in m.registry.collect()
                 if metric.name == "vlmguard_tenant_verdicts" for s in metric.samples}
    # The template rewrote or allowed; the policy's block names no rewriter.
    assert {r.split("/")[0] for r in rewriters} == {"template", "none"}


def test_inprocess_queue_up_follows_the_queue() -> None:
    m = Metrics()

    async def run() -> list[float | None]:
        seen = [_value(m, "vlmguard_queue_up")]
        queue = InProcessQueue([StageSpec(ANALYZE, _analyze, BatchingConfig())],
                               max_pending=8, metrics=m)
        await queue.start()
        seen += [_value(m, "vlmguard_queue_up"), float(await queue.ping(1))]
        await queue.drain(0.1)
        seen += [_value(m, "vlmguard_queue_up")]
        await queue.close()
        seen += [_value(m, "vlmguard_queue_up"), float(await queue.ping(1))]
        return seen

    assert asyncio.run(run()) == [0.0, 1.0, 1.0, 0.0, 0.0, 0.0]


class _LostReplica:
    """A handle whose replica is gone (what Ray raises when its actor died)."""

    def __init__(self) -> None:
        self.calls: list[StageCall] = []
        self.fail = True

    def remote(self, call: StageCall) -> Any:
        self.calls.append(call)
        fail = self.fail

        async def answer() -> Any:
            if fail:
                from ray.exceptions import RayActorError

                raise RayActorError()
            return _analysis(0.1)

        return answer()


def test_ray_queue_up_reflects_the_handles() -> None:
    pytest.importorskip("ray")
    m = Metrics()
    handle = _LostReplica()

    async def run() -> list[float | None]:
        q = RayServeQueue({ANALYZE: handle}, max_pending=4, retries=0, metrics=m)
        await q.start()
        seen = [_value(m, "vlmguard_queue_up")]
        with pytest.raises(Exception, match="unavailable"):
            await q.submit(ANALYZE, AnalysisItem("r", "x"))
        seen.append(_value(m, "vlmguard_queue_up"))
        handle.fail = False
        await q.submit(ANALYZE, AnalysisItem("r", "x"))
        seen.append(_value(m, "vlmguard_queue_up"))
        await q.close()
        seen.append(_value(m, "vlmguard_queue_up"))
        return seen

    assert asyncio.run(run()) == [1.0, 0.0, 1.0, 0.0]
    assert all(c.traceparent == "" for c in handle.calls)  # tracing off: no context sent

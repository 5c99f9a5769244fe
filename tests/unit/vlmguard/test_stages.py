"""Stage runtimes (vlmguard.stages): the one composition every hosting runs."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from vlmguard.config import RewriterConfig, TargetConfig, VLMGuardConfig
from vlmguard.domain import (
    ANALYZE,
    REWRITE,
    TARGET,
    AnalysisItem,
    GenerationParams,
    RewriteItem,
    RewriterEvidence,
    TargetItem,
    TargetResult,
)
from vlmguard.errors import ConfigError, Reason, UnavailableError, VLMGuardError
from vlmguard.metrics import Metrics
from vlmguard.stages import (
    AnalyzerRuntime,
    RewriterRuntime,
    TargetRuntime,
    build_runtime,
    in_process_queue,
    stage_batching,
)
from vlmguard.target.base import NoneTargetBackend


class EchoAnalyzer:
    name = "echo/1"

    def analyze_batch(self, items: Sequence[Any]) -> list[Any]:
        return [f"seen:{i.request_id}" for i in items]


class BrokenRewriter:
    name = "broken"

    def load(self) -> None:
        raise ConfigError("no model here")

    async def generate(self, conversations: Any, *, max_new_tokens: int) -> list[Any]:
        raise AssertionError("never called: the model did not load")

    def close(self) -> None:
        pass


class EchoTarget(NoneTargetBackend):
    name = "echo-target"
    enabled = True

    def __init__(self) -> None:
        super().__init__(TargetConfig())
        self.loads = 0
        self.closed = False

    def load(self) -> None:
        self.loads += 1

    def generate_batch(self, prompts: Sequence[Any]) -> list[TargetResult | VLMGuardError]:
        return [TargetResult(p.text.upper(), self.name, "stop", 1, 1) for p in prompts]

    def close(self) -> None:
        self.closed = True


def test_batching_is_the_same_in_every_hosting() -> None:
    cfg = VLMGuardConfig()
    assert stage_batching(cfg, ANALYZE) == cfg.analyzer.batching
    assert stage_batching(cfg, REWRITE) == cfg.rewriter.batching
    target = stage_batching(cfg, TARGET)
    assert (target.max_batch_size, target.max_wait_ms) == (cfg.target.max_batch_size,
                                                           cfg.target.max_wait_ms)
    with pytest.raises(ConfigError, match="unknown stage 'nope'"):
        stage_batching(cfg, "nope")
    with pytest.raises(ConfigError, match="unknown stage"):
        build_runtime("nope", cfg)


def test_analyzer_runtime_loads_handles_and_releases() -> None:
    async def go() -> None:
        metrics = Metrics()
        rt = build_runtime(ANALYZE, VLMGuardConfig(), analyzer=EchoAnalyzer(), metrics=metrics)
        assert isinstance(rt, AnalyzerRuntime) and rt.name == "echo/1"
        with pytest.raises(UnavailableError):
            rt.check()  # not started
        await rt.start()
        rt.check()
        out = await rt.handle([AnalysisItem("a", "x", ()), AnalysisItem("b", "y", ())])
        assert out == ["seen:a", "seen:b"]
        rt.close()
        with pytest.raises(UnavailableError):
            rt.check()
        [err] = await rt.handle([AnalysisItem("c", "z", ())])
        assert isinstance(err, UnavailableError) and err.reason == Reason.STAGE_UNAVAILABLE

    asyncio.run(go())


def test_target_runtime_loads_once_and_a_disabled_backend_loads_nothing() -> None:
    async def go() -> None:
        backend = EchoTarget()
        rt = build_runtime(TARGET, VLMGuardConfig(), target_backend=backend)
        assert isinstance(rt, TargetRuntime)
        await rt.start()
        await rt.start()
        assert backend.loads == 1
        item = TargetItem("hi", (), (), GenerationParams())
        [res] = await rt.handle([item])
        assert res.text == "HI"
        rt.close()
        assert backend.closed
        off = build_runtime(TARGET, VLMGuardConfig())
        assert isinstance(off, TargetRuntime) and not off.backend.enabled
        await off.start()
        off.check()  # nothing to load: ready at once
        [err] = await off.handle([item])
        assert isinstance(err, VLMGuardError)

    asyncio.run(go())


def test_a_rewriter_that_fails_to_load_answers_not_ready() -> None:
    async def go() -> None:
        cfg = VLMGuardConfig(rewriter=RewriterConfig(kind="generative"))
        rt = build_runtime(REWRITE, cfg, rewriter_backend=BrokenRewriter())  # type: ignore[arg-type]
        assert isinstance(rt, RewriterRuntime)
        with pytest.raises(ConfigError):
            await rt.start()
        with pytest.raises(UnavailableError) as err:
            rt.check()
        assert err.value.reason == Reason.REWRITER_NOT_READY
        [out] = await rt.handle([RewriteItem("r", "text", RewriterEvidence())])
        assert isinstance(out, UnavailableError) and out.reason == Reason.REWRITER_NOT_READY

    asyncio.run(go())


def test_in_process_queue_serves_the_runtimes() -> None:
    async def go() -> None:
        cfg = VLMGuardConfig()
        analyze = build_runtime(ANALYZE, cfg, analyzer=EchoAnalyzer())
        target = build_runtime(TARGET, cfg, target_backend=EchoTarget())
        await analyze.start()
        await target.start()
        queue = in_process_queue(cfg, [analyze, target])
        await queue.start()
        try:
            assert await queue.submit(ANALYZE, AnalysisItem("q", "x", ())) == "seen:q"
            res = await queue.submit(TARGET, TargetItem("ok", (), (), GenerationParams()))
            assert res.text == "OK"
        finally:
            await queue.close()

    asyncio.run(go())

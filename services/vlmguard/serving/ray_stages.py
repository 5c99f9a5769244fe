"""Stage runners: what a Ray Serve stage replica loads and runs, by stage name.

A runner owns one stage's model (loaded by :meth:`StageRunner.start`, awaited in the replica's
constructor, so a replica is only RUNNING once its model is in memory), runs a batch (one
result or one error per item) and says whether it is healthy. Stages are routed by name through
:data:`STAGE_RUNNERS` (import paths, imported lazily); the runners reuse the runtimes of the
embedded gateway and the Redis workers (``TargetRuntime``, ``RewriterRuntime``), so the three
hostings run the same stage code. No Ray import here.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from collections.abc import Sequence
from typing import Any, Protocol

from vlmguard.config import BatchingConfig, VLMGuardConfig
from vlmguard.errors import ConfigError, Reason, UnavailableError
from vlmguard.metrics import Metrics

log = logging.getLogger(__name__)


def stage_batching(cfg: VLMGuardConfig, stage: str) -> BatchingConfig:
    """Batch size and fill wait of ``stage`` (the same settings as the embedded queue)."""
    if stage == "analyze":
        return cfg.analyzer.batching
    if stage == "target":
        return BatchingConfig(max_batch_size=cfg.target.max_batch_size,
                              max_wait_ms=cfg.target.max_wait_ms)
    if stage == "rewrite":
        return cfg.rewriter.batching
    return BatchingConfig()


class StageRunner(Protocol):
    """One stage's model inside a replica."""

    @property
    def batching(self) -> BatchingConfig:
        """Batch size and fill wait for ``@serve.batch``."""

    @property
    def model_name(self) -> str:
        """The model, for logs."""

    async def start(self) -> None:
        """Load the model; raises when it cannot (the replica then fails to start)."""

    async def handle(self, items: Sequence[Any]) -> Sequence[Any]:
        """One result (or one VLMGuardError) per item, in order."""

    def check(self) -> None:
        """Raise when the model is not loaded or no longer usable."""

    def close(self) -> None:
        """Release the model."""


class AnalyzeRunner:
    """The tier-1 analyzer (MiniLM risk head, OCR, explicit-image detector)."""

    def __init__(self, cfg: VLMGuardConfig, analyzer: Any = None) -> None:
        self.cfg = cfg
        self.analyzer = analyzer
        self.batching = stage_batching(cfg, "analyze")
        self.model_name = "tier1"

    async def start(self) -> None:
        if self.analyzer is None:
            from vlmguard.roles.analyzer import Tier1Analyzer

            t0 = time.perf_counter()
            cfg = self.cfg
            analyzer = await asyncio.to_thread(Tier1Analyzer.from_config, cfg.analyzer,
                                               cfg.taxonomy, cfg.limits)
            await asyncio.to_thread(analyzer.warmup)
            log.info("tier-1 analyzer %s loaded in %.1fs", analyzer.name,
                     time.perf_counter() - t0)
            self.analyzer = analyzer
        self.model_name = str(self.analyzer.name)

    async def handle(self, items: Sequence[Any]) -> Sequence[Any]:
        if self.analyzer is None:
            raise UnavailableError("the analyzer is not loaded", reason=Reason.STAGE_UNAVAILABLE)
        result: Sequence[Any] = await asyncio.to_thread(self.analyzer.analyze_batch, items)
        return result

    def check(self) -> None:
        if self.analyzer is None:
            raise UnavailableError("the analyzer is not loaded", reason=Reason.STAGE_UNAVAILABLE)
        embedder = getattr(self.analyzer, "embedder", None)
        if embedder is not None and not getattr(embedder, "loaded", True):
            raise UnavailableError("the analyzer's embedder is not loaded",
                                   reason=Reason.STAGE_UNAVAILABLE)

    def close(self) -> None:
        self.analyzer = None


class TargetRunner:
    """The target model: the gateway's :class:`~vlmguard.gateway.server.TargetRuntime`."""

    def __init__(self, cfg: VLMGuardConfig, backend: Any = None) -> None:
        from vlmguard.backends.target import build_target_backend
        from vlmguard.gateway.server import TargetRuntime

        self.runtime = TargetRuntime(backend or build_target_backend(cfg.target), Metrics())
        self.batching = stage_batching(cfg, "target")
        self.model_name = str(self.runtime.backend.name)
        self._closed = False

    async def start(self) -> None:
        if self.runtime.backend.enabled:
            await self.runtime.start_loading()  # raises when the model fails to load
        self.runtime.ready.set()

    async def handle(self, items: Sequence[Any]) -> Sequence[Any]:
        return await self.runtime.handle(items)

    def check(self) -> None:
        if self._closed or not self.runtime.ready.is_set() or self.runtime.error is not None:
            raise UnavailableError("the target model is not loaded",
                                   reason=Reason.TARGET_NOT_READY)

    def close(self) -> None:
        self._closed = True
        self.runtime.backend.close()


class RewriteRunner:
    """The tier-2 generative rewriter: the worker's
    :class:`~vlmguard.roles.generative.RewriterRuntime` over the configured backend."""

    def __init__(self, cfg: VLMGuardConfig, backend: Any = None) -> None:
        from vlmguard.backends.rewriter import build_rewriter_backend
        from vlmguard.roles.generative import RewriterRuntime

        self.runtime = RewriterRuntime(backend or build_rewriter_backend(cfg.rewriter),
                                       cfg.rewriter, cfg.taxonomy, Metrics())
        self.batching = stage_batching(cfg, "rewrite")
        self.model_name = str(self.runtime.backend.name)
        self._closed = False

    async def start(self) -> None:
        await self.runtime.start_loading()  # raises when the model fails to load

    async def handle(self, items: Sequence[Any]) -> Sequence[Any]:
        return await self.runtime.handle(items)

    def check(self) -> None:
        if self._closed or not self.runtime.ready.is_set() or self.runtime.error is not None:
            raise UnavailableError("the tier-2 rewriter is not loaded",
                                   reason=Reason.STAGE_UNAVAILABLE)

    def close(self) -> None:
        self._closed = True
        close = getattr(self.runtime.backend, "close", None)
        if close is not None:
            close()


#: Stage name -> runner class (``module:Class``), imported when a replica starts.
STAGE_RUNNERS: dict[str, str] = {
    "analyze": "vlmguard.serving.ray_stages:AnalyzeRunner",
    "rewrite": "vlmguard.serving.ray_stages:RewriteRunner",
    "target": "vlmguard.serving.ray_stages:TargetRunner",
}


def build_runner(stage: str, cfg: VLMGuardConfig) -> StageRunner:
    """The runner for ``stage``, not started (:meth:`StageRunner.start` loads the model).

    Raises:
        ConfigError: no runner is known for the stage.
    """
    path = STAGE_RUNNERS.get(stage)
    if path is None:
        raise ConfigError(f"no Ray stage runner for stage {stage!r} (known: "
                          f"{sorted(STAGE_RUNNERS)}; add one to STAGE_RUNNERS)")
    mod, _, name = path.partition(":")
    runner: StageRunner = getattr(importlib.import_module(mod), name)(cfg)
    return runner

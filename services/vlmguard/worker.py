"""Composition root of a stage worker process: one stage's model behind the Redis queue.

:func:`build_worker` loads only the named stage's model (the tier-1 analyzer for ``analyze``,
the target backend for ``target``, the tier-2 rewriter for ``rewrite``) and wires it to a
:class:`RedisStreamsQueue` that consumes that stage. :meth:`StageWorker.run` serves until
:meth:`StageWorker.request_stop` (SIGTERM), then finishes the batch in hand and returns.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from vlmguard.config import BatchingConfig, VLMGuardConfig
from vlmguard.errors import ConfigError
from vlmguard.metrics import Metrics
from vlmguard.pipeline import ANALYZE, REWRITE, TARGET
from vlmguard.queue.base import StageSpec
from vlmguard.queue.redis_streams import RedisStreamsQueue

log = logging.getLogger(__name__)

#: Stages a worker process can serve.
WORKER_STAGES = (ANALYZE, TARGET, REWRITE)


class StageWorker:
    """A built worker: its queue (consuming one stage) and what must load before serving."""

    def __init__(self, stage: str, queue: RedisStreamsQueue, runtime: Any = None) -> None:
        self.stage = stage
        self.queue = queue
        self.runtime = runtime

    def request_stop(self) -> None:
        """Stop reading; the batch in hand finishes (call from a signal handler)."""
        self.queue.request_stop()

    async def start(self) -> None:
        """Load the stage's model if it has one to load, then start consuming."""
        if self.runtime is not None and getattr(self.runtime.backend, "enabled", True):
            await self.runtime.start_loading()
        await self.queue.start()

    async def run(self) -> None:
        """Start, serve until :meth:`request_stop`, drain, close."""
        await self.start()
        await self.queue.wait()
        await self.close()

    async def close(self) -> None:
        """Drain and release the connection and the model."""
        await self.queue.close()
        if self.runtime is not None:
            self.runtime.backend.close()  # both runtimes' close() is their backend's


def build_worker(
    cfg: VLMGuardConfig,
    stage: str,
    *,
    analyzer: Any = None,
    target_backend: Any = None,
    metrics: Metrics | None = None,
    environ: Mapping[str, str] | None = None,
    rewriter_backend: Any = None,
) -> StageWorker:
    """Build a worker for ``stage`` (blocking: loads the analyzer unless one is given).

    Args:
        cfg: Configuration; ``cfg.queue.url`` must name a Redis server.
        stage: ``analyze``, ``target`` or ``rewrite``.
        analyzer: A ready tier-1 analyzer (else loaded from ``cfg.analyzer``).
        target_backend: A target backend (else built from ``cfg.target``; loaded on start).
        metrics: Metrics (else a fresh registry).
        environ: Environment for the Redis password variable.
        rewriter_backend: A tier-2 backend (else built from ``cfg.rewriter``; loaded on start).

    Raises:
        ConfigError: no queue URL, or an unknown stage.
    """
    if not cfg.queue.url:
        raise ConfigError("a worker needs queue.url (or VLMGUARD_QUEUE_URL) set to redis:// or "
                          "rediss://")
    if stage not in WORKER_STAGES:
        raise ConfigError(f"unknown stage {stage!r}; use one of {list(WORKER_STAGES)}")
    metrics = metrics or Metrics()
    runtime: Any = None
    if stage == ANALYZE:
        if analyzer is None:
            from vlmguard.roles.analyzer import Tier1Analyzer

            t0 = time.perf_counter()
            analyzer = Tier1Analyzer.from_config(cfg.analyzer, cfg.taxonomy, cfg.limits)
            analyzer.warmup()
            log.info("tier-1 analyzer %s loaded in %.1fs", analyzer.name,
                     time.perf_counter() - t0)
        metrics.model_ready.labels(ANALYZE).set(1)
        model = analyzer

        async def handler(items: Sequence[Any]) -> list[Any]:
            return await asyncio.to_thread(model.analyze_batch, items)

        spec = StageSpec(ANALYZE, handler, cfg.analyzer.batching)
    elif stage == REWRITE:
        from vlmguard.backends.rewriter import build_rewriter_backend
        from vlmguard.roles.generative import RewriterRuntime

        rewriter = RewriterRuntime(rewriter_backend or build_rewriter_backend(cfg.rewriter),
                                   cfg.rewriter, cfg.taxonomy, metrics)
        runtime = rewriter
        spec = StageSpec(REWRITE, rewriter.handle, cfg.rewriter.batching)
    else:
        from vlmguard.backends.target import build_target_backend
        from vlmguard.gateway.server import TargetRuntime

        target = TargetRuntime(target_backend or build_target_backend(cfg.target), metrics)
        runtime = target
        spec = StageSpec(TARGET, target.handle, BatchingConfig(
            max_batch_size=cfg.target.max_batch_size, max_wait_ms=cfg.target.max_wait_ms))
    queue = RedisStreamsQueue(cfg.queue, stages=[stage], consume=[spec],
                              max_pending=cfg.limits.max_pending, metrics=metrics,
                              environ=environ)
    return StageWorker(stage, queue, runtime)

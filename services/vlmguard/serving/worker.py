"""Composition root of a stage worker process: one stage's model behind the Redis queue.

:func:`build_worker` builds only the named stage's runtime (:mod:`vlmguard.stages`: the tier-1
analyzer for ``analyze``, the target backend for ``target``, the tier-2 rewriter for ``rewrite``)
and wires it to a :class:`RedisStreamsQueue` that consumes that stage. :meth:`StageWorker.run`
serves until :meth:`StageWorker.request_stop` (SIGTERM), then finishes the batch in hand and
returns.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from vlmguard.config import VLMGuardConfig
from vlmguard.domain import ANALYZE, REWRITE, TARGET
from vlmguard.errors import ConfigError
from vlmguard.metrics import Metrics
from vlmguard.queue.redis_streams import RedisStreamsQueue
from vlmguard.rewriter.backends import RewriterBackend
from vlmguard.stages import BatchAnalyzer, StageRuntime, build_runtime, stage_spec
from vlmguard.target.base import TargetBackend

log = logging.getLogger(__name__)

#: Stages a worker process can serve.
WORKER_STAGES = (ANALYZE, TARGET, REWRITE)


class StageWorker:
    """A built worker: its queue (consuming one stage) and what must load before serving."""

    def __init__(self, stage: str, queue: RedisStreamsQueue, runtime: StageRuntime) -> None:
        self.stage = stage
        self.queue = queue
        self.runtime = runtime

    def request_stop(self) -> None:
        """Stop reading; the batch in hand finishes (call from a signal handler)."""
        self.queue.request_stop()

    async def start(self) -> None:
        """Load the stage's model (raises when it cannot), then start consuming."""
        await self.runtime.start()
        await self.queue.start()

    async def run(self) -> None:
        """Start, serve until :meth:`request_stop`, drain, close."""
        await self.start()
        await self.queue.wait()
        await self.close()

    async def close(self) -> None:
        """Drain and release the connection and the model."""
        await self.queue.close()
        self.runtime.close()


def build_worker(
    cfg: VLMGuardConfig,
    stage: str,
    *,
    analyzer: BatchAnalyzer | None = None,
    target_backend: TargetBackend | None = None,
    metrics: Metrics | None = None,
    environ: Mapping[str, str] | None = None,
    rewriter_backend: RewriterBackend | None = None,
) -> StageWorker:
    """Build a worker for ``stage`` (its model loads when the worker starts).

    Args:
        cfg: Configuration; ``cfg.queue.url`` must name a Redis server.
        stage: ``analyze``, ``target`` or ``rewrite``.
        analyzer: A ready tier-1 analyzer (else loaded from ``cfg.analyzer`` on start).
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
    runtime = build_runtime(stage, cfg, metrics=metrics, analyzer=analyzer,
                            target_backend=target_backend, rewriter_backend=rewriter_backend)
    queue = RedisStreamsQueue(cfg.queue, stages=[stage], consume=[stage_spec(runtime)],
                              max_pending=cfg.limits.max_pending,
                              metrics=runtime.metrics, environ=environ,
                              max_batch_pixels=cfg.limits.max_batch_pixels)
    return StageWorker(stage, queue, runtime)

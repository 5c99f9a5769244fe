"""Stage runtimes: one stage's model, its loading, readiness and batched handler.

Every hosting runs the same runtimes: the embedded gateway puts them behind the in-process
micro-batcher (:func:`in_process_queue`), ``vlmguard worker`` behind the Redis Streams queue
(one stage per process), and a Ray Serve stage replica behind ``@serve.batch``. A runtime:

- loads its model in a thread (:meth:`StageRuntime.start_loading`, or :meth:`StageRuntime.start`
  to wait for it; a failed load is kept in :attr:`error` and logged once),
- answers a batch with one result (or one :class:`~vlmguard.errors.VLMGuardError`) per item,
- says whether it can serve (:meth:`StageRuntime.check`, Ray's health check) and releases the
  model (:meth:`StageRuntime.close`).

:func:`build_runtime` builds the runtime of a stage from the config, with injectable models for
tests and benchmarks. No gRPC, Ray or Triton import here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Protocol

from vlmguard.analyzer.tier1 import Tier1Analyzer
from vlmguard.config import BatchingConfig, VLMGuardConfig
from vlmguard.domain import ANALYZE, REWRITE, STAGES, TARGET, RewriteItem, TargetItem
from vlmguard.errors import ConfigError, Reason, UnavailableError, VLMGuardError
from vlmguard.metrics import Metrics
from vlmguard.queue.base import StageSpec
from vlmguard.queue.inproc import InProcessQueue
from vlmguard.rewriter.backends import (
    Generation,
    Messages,
    RewriterBackend,
    build_rewriter_backend,
    reads_images,
)
from vlmguard.rewriter.format import PROMPT_VERSION, build_rewriter_messages
from vlmguard.rewriter.vlm import encode_for_rewriter, with_images
from vlmguard.target.base import TargetBackend, TargetPrompt, build_target_backend

log = logging.getLogger(__name__)


class BatchAnalyzer(Protocol):
    """What the analyze stage needs of an analyzer: the tier-1 analyzer, or a stand-in (the
    no-op analyzer of ``bench/``, fakes in tests)."""

    @property
    def name(self) -> str:
        """Shown as the report's analyzer."""

    def analyze_batch(self, items: Sequence[Any]) -> Sequence[Any]:
        """One analysis (or one VLMGuardError) per item, in order."""


def stage_batching(cfg: VLMGuardConfig, stage: str) -> BatchingConfig:
    """Batch size and fill wait of ``stage``, the same in every hosting."""
    if stage == ANALYZE:
        return cfg.analyzer.batching
    if stage == TARGET:
        return BatchingConfig(max_batch_size=cfg.target.max_batch_size,
                              max_wait_ms=cfg.target.max_wait_ms)
    if stage == REWRITE:
        return cfg.rewriter.batching
    raise ConfigError(f"unknown stage {stage!r}; use one of {list(STAGES)}")


class StageRuntime(ABC):
    """Loading, readiness and release shared by the stage runtimes.

    Subclasses name their stage, implement :meth:`_load` (blocking, in a thread),
    :meth:`handle` and :meth:`_release`, and may override :meth:`check`.
    """

    stage: str = ""
    #: The model, for logs and the analyzer name of reports.
    name: str = ""
    #: The reason of the error answered while the model is not loaded.
    not_ready_reason: str = Reason.STAGE_UNAVAILABLE
    #: What the model is called in log lines.
    what: str = "model"

    def __init__(self, batching: BatchingConfig, metrics: Metrics | None) -> None:
        self.batching = batching
        self.metrics = metrics or Metrics()
        self.ready = asyncio.Event()
        self.error: BaseException | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @abstractmethod
    def _load(self) -> None:
        """Load the model (blocking)."""

    def start_loading(self) -> asyncio.Task[None]:
        """Load in a thread (once); :attr:`ready` is set when done or failed. Awaiting the task
        raises the load error."""
        if self._task is not None:
            return self._task

        async def load() -> None:
            t0 = time.perf_counter()
            # 0 while loading and after a failed load (an alert waits on it), 1 once served.
            self.metrics.model_ready.labels(self.stage).set(0)
            try:
                await asyncio.to_thread(self._load)
            except BaseException as e:
                self.error = e
                log.error("%s %s failed to load: %s", self.what, self.name, type(e).__name__,
                          exc_info=e)
                raise
            finally:
                self.ready.set()
            self.metrics.model_ready.labels(self.stage).set(1)
            self.metrics.set_model(self.stage, self.name, self.model_version())
            log.info("%s %s ready in %.1fs", self.what, self.name, time.perf_counter() - t0)

        self._task = asyncio.create_task(load(), name=f"{self.stage}-load")
        # Logged above; awaiting the task still raises (a worker must not start without it).
        self._task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return self._task

    def model_version(self) -> str:
        """The loaded model's version for ``vlmguard_model_info`` ("" when it has none)."""
        return ""

    async def start(self) -> None:
        """Load the model and wait for it; raises when it cannot load."""
        await self.start_loading()

    @abstractmethod
    async def handle(self, items: Sequence[Any]) -> Sequence[Any]:
        """One result (or one VLMGuardError) per item, in order."""

    def _not_ready(self, items: Sequence[Any], message: str) -> list[Any]:
        return [UnavailableError(message, reason=self.not_ready_reason) for _ in items]

    def check(self) -> None:
        """Raise UNAVAILABLE when the model is not loaded or was released."""
        if self._closed or not self.ready.is_set() or self.error is not None:
            raise UnavailableError(f"the {self.what} is not loaded",
                                   reason=self.not_ready_reason)

    @abstractmethod
    def _release(self) -> None:
        """Release the model (blocking)."""

    def close(self) -> None:
        """Release the model."""
        self._closed = True
        if self._task is not None:
            self.metrics.model_ready.labels(self.stage).set(0)
        self._release()


class AnalyzerRuntime(StageRuntime):
    """The ``analyze`` stage: the tier-1 analyzer (or any :class:`BatchAnalyzer`)."""

    stage = ANALYZE
    what = "tier-1 analyzer"

    def __init__(self, cfg: VLMGuardConfig, analyzer: BatchAnalyzer | None = None,
                 metrics: Metrics | None = None) -> None:
        super().__init__(stage_batching(cfg, ANALYZE), metrics)
        self.cfg = cfg
        self.analyzer = analyzer
        self.name = analyzer.name if analyzer is not None else "tier1"

    def _load(self) -> None:
        if self.analyzer is None:
            cfg = self.cfg
            tier1 = Tier1Analyzer.from_config(cfg.analyzer, cfg.taxonomy, cfg.limits)
            tier1.warmup()
            self.analyzer = tier1
            self.name = tier1.name

    async def handle(self, items: Sequence[Any]) -> Sequence[Any]:
        analyzer = self.analyzer
        if analyzer is None or self.error is not None:
            return self._not_ready(items, "the analyzer is not loaded")
        result: Sequence[Any] = await asyncio.to_thread(analyzer.analyze_batch, items)
        return result

    def check(self) -> None:
        super().check()
        embedder = getattr(self.analyzer, "embedder", None)
        if self.analyzer is None or (embedder is not None
                                     and not getattr(embedder, "loaded", True)):
            raise UnavailableError("the analyzer's models are not loaded",
                                   reason=self.not_ready_reason)

    def model_version(self) -> str:
        """The risk head's version (the multilingual head's follows in :attr:`name`)."""
        return str(getattr(getattr(self.analyzer, "head", None), "version", ""))

    def _release(self) -> None:
        self.analyzer = None


def _prompts(items: Sequence[TargetItem]) -> list[TargetPrompt]:
    return [TargetPrompt(i.text, i.images, i.image_texts, i.params, i.deadline_unix, i.history)
            for i in items]


class TargetRuntime(StageRuntime):
    """The ``target`` stage: the target backend. A disabled backend (``none``) loads nothing
    and answers every item with its own error."""

    stage = TARGET
    what = "target"
    not_ready_reason = Reason.TARGET_NOT_READY

    def __init__(self, backend: TargetBackend, batching: BatchingConfig,
                 metrics: Metrics | None = None) -> None:
        super().__init__(batching, metrics)
        self.backend = backend
        self.name = backend.name

    def start_loading(self) -> asyncio.Task[None]:
        if not self.backend.enabled and self._task is None:
            self.ready.set()
        return super().start_loading()

    def _load(self) -> None:
        if self.backend.enabled:
            self.backend.load()

    async def handle(self, items: Sequence[TargetItem]) -> list[Any]:
        if not self.backend.enabled:
            return await asyncio.to_thread(self.backend.generate_batch, _prompts(items))
        if not self.ready.is_set():
            await self.ready.wait()
        if self.error is not None:
            return self._not_ready(items, "the target model failed to load")
        return await asyncio.to_thread(self.backend.generate_batch, _prompts(items))

    def _release(self) -> None:
        self.backend.close()


class RewriterRuntime(StageRuntime):
    """The ``rewrite`` stage: a tier-2 backend generating from the rewriter messages.

    Args:
        backend: The backend (not loaded yet).
        cfg: The configuration (``rewriter.max_new_tokens``, ``rewriter.batching``, taxonomy).
        metrics: Metrics sink.
    """

    stage = REWRITE
    what = "tier-2 rewriter"
    not_ready_reason = Reason.REWRITER_NOT_READY

    def __init__(self, backend: RewriterBackend, cfg: VLMGuardConfig,
                 metrics: Metrics | None = None) -> None:
        super().__init__(stage_batching(cfg, REWRITE), metrics)
        self.backend = backend
        self.cfg = cfg.rewriter
        self.taxonomy = cfg.taxonomy
        self.limits = cfg.limits
        self.name = backend.name

    def _load(self) -> None:
        self.backend.load()

    def model_version(self) -> str:
        """The rewriter prompt format the model is asked in."""
        return PROMPT_VERSION

    async def handle(self, items: Sequence[RewriteItem]) -> list[Generation | VLMGuardError]:
        if self._task is None:
            self.start_loading()
        await self.ready.wait()
        if self.error is not None:
            return self._not_ready(items, "the tier-2 rewriter failed to load")
        convs: list[Messages] = [build_rewriter_messages(i.text, i.evidence, self.taxonomy)
                                 for i in items]
        if self.cfg.images and reads_images(self.backend) and any(i.images for i in items):
            # Decoding and re-encoding the images costs milliseconds each: off the loop.
            convs = await asyncio.to_thread(self._with_images, convs, items)
        out = await self.backend.generate(convs, max_new_tokens=self.cfg.max_new_tokens)
        n = sum(g.completion_tokens for g in out if not isinstance(g, VLMGuardError))
        self.metrics.rewriter_tokens.labels(self.cfg.backend).inc(n)
        return out

    def _with_images(self, convs: list[Messages],
                     items: Sequence[RewriteItem]) -> list[Messages]:
        """Each conversation with its request's images as parts of the user message."""
        return [with_images(c, encode_for_rewriter(i.images, self.limits,
                                                   self.cfg.image_max_side))
                if i.images else c for c, i in zip(convs, items, strict=True)]

    def _release(self) -> None:
        self.backend.close()


def build_runtime(
    stage: str,
    cfg: VLMGuardConfig,
    *,
    metrics: Metrics | None = None,
    analyzer: BatchAnalyzer | None = None,
    target_backend: TargetBackend | None = None,
    rewriter_backend: RewriterBackend | None = None,
) -> StageRuntime:
    """The runtime of ``stage``, not started (nothing is loaded until it starts).

    Args:
        stage: ``analyze``, ``rewrite`` or ``target``.
        cfg: Configuration.
        metrics: Metrics sink (else a fresh registry).
        analyzer: A ready analyzer for ``analyze`` (else the tier-1 analyzer of
            ``cfg.analyzer``, loaded on start).
        target_backend: The backend for ``target`` (else built from ``cfg.target``).
        rewriter_backend: The backend for ``rewrite`` (else built from ``cfg.rewriter``).

    Raises:
        ConfigError: an unknown stage or backend.
    """
    if stage == ANALYZE:
        return AnalyzerRuntime(cfg, analyzer, metrics)
    if stage == TARGET:
        return TargetRuntime(target_backend or build_target_backend(cfg.target),
                             stage_batching(cfg, TARGET), metrics)
    if stage == REWRITE:
        return RewriterRuntime(rewriter_backend or build_rewriter_backend(cfg.rewriter), cfg,
                               metrics)
    raise ConfigError(f"unknown stage {stage!r}; use one of {list(STAGES)}")


def stage_spec(runtime: StageRuntime) -> StageSpec:
    """The queue's view of a runtime: its stage name, handler and batching."""
    return StageSpec(runtime.stage, runtime.handle, runtime.batching)


def in_process_queue(cfg: VLMGuardConfig, runtimes: Sequence[StageRuntime],
                     metrics: Metrics | None = None) -> InProcessQueue:
    """The in-process micro-batching queue serving ``runtimes``."""
    return InProcessQueue([stage_spec(rt) for rt in runtimes],
                          max_pending=cfg.limits.max_pending, metrics=metrics,
                          max_batch_pixels=cfg.limits.max_batch_pixels,
                          max_tenant_pixels=cfg.limits.max_tenant_pending_pixels)

"""In-process queue: per-stage micro-batching inside one asyncio process.

Each stage has a bounded waiting list and one batch runner: a batch closes when it holds
``max_batch_size`` items or ``max_wait_ms`` after its first item, expired and cancelled items
are dropped before running, and the handler must return one result per item (else every item of
the batch fails with UNAVAILABLE/BATCH_RESULT_MISMATCH, never a silent drop). A handler that raises
for a whole batch is retried on halves of it, so a poison item fails alone (see
:func:`~vlmguard.queue.base.run_isolating`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from vlmguard.errors import (
    DeadlineExceededError,
    Reason,
    ResourceExhaustedError,
    UnavailableError,
    VLMGuardError,
)
from vlmguard.metrics import Metrics
from vlmguard.queue.base import StageSpec, WorkQueue, run_isolating

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    item: Any
    future: asyncio.Future[Any]
    deadline: float | None
    enqueued: float = field(default=0.0)


class MicroBatcher:
    """Batches items for one stage and runs its handler, one batch at a time.

    Args:
        spec: The stage.
        max_pending: Waiting + running items above which :meth:`submit` raises QUEUE_FULL.
        metrics: Metrics sink.
        clock: Monotonic clock (injectable for tests).
    """

    def __init__(
        self,
        spec: StageSpec,
        *,
        max_pending: int,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spec = spec
        self.max_pending = max_pending
        self.metrics = metrics
        self.clock = clock
        self._waiting: deque[_Pending] = deque()
        self._running = 0
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def pending(self) -> int:
        return len(self._waiting) + self._running

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"batcher-{self.spec.name}")

    async def submit(self, item: Any, deadline: float | None) -> Any:
        if self._closed:
            raise UnavailableError(
                f"stage {self.spec.name!r} is shutting down", reason=Reason.STAGE_UNAVAILABLE
            )
        if self.pending >= self.max_pending:
            if self.metrics:
                self.metrics.rejected.labels(self.spec.name).inc()
            raise ResourceExhaustedError(
                f"too many pending requests for stage {self.spec.name!r}; retry shortly",
                reason=Reason.QUEUE_FULL, retry_after_s=1.0,
                metadata={"stage": self.spec.name},
            )
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Pending(item, fut, deadline, self.clock()))
        self._gauge()
        self._wakeup.set()
        return await fut

    def _gauge(self) -> None:
        if self.metrics:
            self.metrics.queue_depth.labels(self.spec.name).set(self.pending)

    def _expire(self, p: _Pending, now: float) -> bool:
        if p.future.done():  # caller cancelled
            return True
        if p.deadline is not None and now >= p.deadline:
            if self.metrics:
                self.metrics.expired.labels(self.spec.name).inc()
            p.future.set_exception(
                DeadlineExceededError(
                    f"deadline passed while waiting for stage {self.spec.name!r}",
                    reason=Reason.DEADLINE_EXCEEDED,
                )
            )
            return True
        return False

    async def _collect(self) -> list[_Pending]:
        while not self._waiting:
            if self._closed:
                return []
            self._wakeup.clear()
            await self._wakeup.wait()
        b = self.spec.batching
        first = self._waiting[0].enqueued
        while len(self._waiting) < b.max_batch_size and not self._closed:
            remaining = first + b.max_wait_ms / 1000.0 - self.clock()
            if remaining <= 0:
                break
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), remaining)
        batch: list[_Pending] = []
        now = self.clock()
        while self._waiting and len(batch) < b.max_batch_size:
            p = self._waiting.popleft()
            if not self._expire(p, now):
                batch.append(p)
        return batch

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            if not batch:
                if self._closed and not self._waiting:
                    return
                self._gauge()
                continue
            self._running = len(batch)
            try:
                await self._execute(batch)
            except asyncio.CancelledError:  # close() timed out: no caller may wait forever
                self._fail_unresolved(batch, "is shutting down", Reason.STAGE_UNAVAILABLE)
                raise
            except Exception:  # a bug here must not kill the runner and strand every caller
                log.exception("stage %s runner failed on a batch", self.spec.name)
                self._fail_unresolved(batch, "failed", Reason.STAGE_FAILED)
            finally:
                self._running = 0
                self._gauge()

    async def _execute(self, batch: list[_Pending]) -> None:
        name = self.spec.name
        now = self.clock()
        if self.metrics:
            self.metrics.batch_size.labels(name).observe(len(batch))
            for p in batch:
                self.metrics.queue_wait.labels(name).observe(max(0.0, now - p.enqueued))
        results = await run_isolating(self.spec.handler, [p.item for p in batch], stage=name)
        for p, r in zip(batch, results, strict=True):
            if p.future.done():
                continue
            if isinstance(r, VLMGuardError):
                p.future.set_exception(r)
            elif isinstance(r, BaseException):  # never leak internals to the caller
                p.future.set_exception(
                    UnavailableError(f"stage {name!r} failed", reason=Reason.STAGE_FAILED))
            else:
                p.future.set_result(r)

    def _fail_unresolved(self, batch: list[_Pending], what: str, reason: str) -> None:
        for p in batch:
            if not p.future.done():
                p.future.set_exception(
                    UnavailableError(f"stage {self.spec.name!r} {what}", reason=reason)
                )

    async def close(self, timeout: float = 30.0) -> None:
        """Stop taking items, finish the batch in hand, fail waiting items with UNAVAILABLE."""
        self._closed = True
        while self._waiting:
            p = self._waiting.popleft()
            if not p.future.done():
                p.future.set_exception(
                    UnavailableError(
                        f"stage {self.spec.name!r} is shutting down",
                        reason=Reason.STAGE_UNAVAILABLE,
                    )
                )
        self._wakeup.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout)
            except TimeoutError:
                self._task.cancel()
        self._gauge()


class InProcessQueue(WorkQueue):
    """The embedded default: stages run in this process, behind micro-batchers."""

    def __init__(
        self,
        stages: Sequence[StageSpec],
        *,
        max_pending: int,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._batchers = {
            s.name: MicroBatcher(s, max_pending=max_pending, metrics=metrics, clock=clock)
            for s in stages
        }

    async def start(self) -> None:
        for b in self._batchers.values():
            b.start()

    async def close(self) -> None:
        await asyncio.gather(*(b.close() for b in self._batchers.values()))

    async def submit(self, stage: str, item: Any, *, deadline: float | None = None) -> Any:
        batcher = self._batchers.get(stage)
        if batcher is None:
            raise UnavailableError(f"no stage named {stage!r}", reason=Reason.STAGE_UNAVAILABLE)
        return await batcher.submit(item, deadline)

    def pending(self, stage: str) -> int:
        b = self._batchers.get(stage)
        return b.pending if b else 0

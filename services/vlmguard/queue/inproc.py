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
from collections import Counter
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
from vlmguard.queue.base import StageSpec, WorkQueue, draining_error, run_isolating
from vlmguard.queue.fair import DeficitRoundRobin, item_cost

log = logging.getLogger(__name__)


@dataclass(eq=False)  # identity equality: a line removes exactly this call
class _Pending:
    item: Any
    future: asyncio.Future[Any]
    deadline: float | None
    enqueued: float = field(default=0.0)
    tenant: str = ""
    pixels: int = 0


def _cost(p: _Pending) -> float:
    return item_cost(p.pixels)


class MicroBatcher:
    """Batches items for one stage and runs its handler, sharing it fairly between tenants.

    Batches are filled in deficit-round-robin order over tenants, weighted by image cost
    (:mod:`vlmguard.queue.fair`), within ``max_batch_size`` items and ``max_batch_pixels``
    image pixels (a request larger than that runs alone). Up to
    ``batching.max_concurrent_batches`` batches run at once, and a tenant never has items in
    two of them, so one tenant's expensive batch does not hold up the others. An idle stage runs
    a lone request at once; only while another batch runs does a batch wait up to
    ``max_wait_ms`` to fill.

    Args:
        spec: The stage.
        max_pending: Waiting + running items above which :meth:`submit` raises QUEUE_FULL.
        metrics: Metrics sink.
        clock: Monotonic clock (injectable for tests).
        max_batch_pixels: Image pixels per batch (None: no pixel budget).
        max_tenant_pixels: Image pixels one tenant may have waiting or running (None: none).
    """

    def __init__(
        self,
        spec: StageSpec,
        *,
        max_pending: int,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_batch_pixels: int | None = None,
        max_tenant_pixels: int | None = None,
    ) -> None:
        self.spec = spec
        self.max_pending = max_pending
        self.metrics = metrics
        self.clock = clock
        self.max_batch_pixels = max_batch_pixels
        self.max_tenant_pixels = max_tenant_pixels
        self._lines: DeficitRoundRobin[_Pending] = DeficitRoundRobin(_cost)
        self._running = 0
        self._nbatches = 0
        self._running_tenants: Counter[str] = Counter()
        self._tenant_pixels: Counter[str] = Counter()
        self._batches: set[asyncio.Task[None]] = set()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def pending(self) -> int:
        return len(self._lines) + self._running

    def start(self, on_stop: Callable[[], None] | None = None) -> None:
        """Start the batch runner; ``on_stop`` is called when it ends."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"batcher-{self.spec.name}")
            if on_stop is not None:
                self._task.add_done_callback(lambda _t: on_stop())

    @property
    def alive(self) -> bool:
        """Whether the batch runner runs."""
        return self._task is not None and not self._task.done()

    async def submit(self, item: Any, deadline: float | None, *, tenant: str = "",
                     pixels: int = 0) -> Any:
        """Queue ``item`` for ``tenant`` (its image cost: ``pixels``) and await its result."""
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
        if (pixels > 0 and self.max_tenant_pixels is not None
                and self._tenant_pixels[tenant] + pixels > self.max_tenant_pixels):
            if self.metrics:
                self.metrics.throttled.labels(self.spec.name).inc()
            raise ResourceExhaustedError(
                f"this tenant has {self._tenant_pixels[tenant]} image pixels in stage "
                f"{self.spec.name!r} already; its budget is {self.max_tenant_pixels}: retry "
                "shortly", reason=Reason.TENANT_BUDGET_EXHAUSTED, retry_after_s=1.0,
                metadata={"stage": self.spec.name},
            )
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        p = _Pending(item, fut, deadline, self.clock(), tenant, pixels)
        self._lines.push(tenant, p)
        self._tenant_pixels[tenant] += pixels
        self._gauge()
        self._wakeup.set()
        try:
            return await fut
        except asyncio.CancelledError:
            # The caller is gone (client cancelled, deadline): drop its item before it runs.
            if self._lines.remove(tenant, p):
                self._release_pixels(p)
                self._dropped(p, "cancelled")
                self._gauge()
            raise

    def _release_pixels(self, p: _Pending) -> None:
        self._tenant_pixels[p.tenant] -= p.pixels
        if self._tenant_pixels[p.tenant] <= 0:
            del self._tenant_pixels[p.tenant]

    def _dropped(self, p: _Pending, why: str) -> None:
        if self.metrics:
            self.metrics.dropped.labels(self.spec.name, why).inc()

    def _gauge(self) -> None:
        if self.metrics:
            self.metrics.queue_depth.labels(self.spec.name).set(self.pending)

    def _expire(self, p: _Pending, now: float) -> bool:
        if p.future.done():  # caller cancelled
            self._dropped(p, "cancelled")
            return True
        if p.deadline is not None and now >= p.deadline:
            if self.metrics:
                self.metrics.expired.labels(self.spec.name).inc()
            self._dropped(p, "deadline")
            p.future.set_exception(
                DeadlineExceededError(
                    f"deadline passed while waiting for stage {self.spec.name!r}",
                    reason=Reason.DEADLINE_EXCEEDED,
                )
            )
            return True
        return False

    def _eligible(self, tenant: str) -> bool:
        # A tenant's items never run in two batches at once: a second slot serves others.
        return self._running_tenants[tenant] == 0

    def _can_start(self) -> bool:
        return (self._nbatches < self.spec.batching.max_concurrent_batches
                and self._lines.oldest(self._eligible) is not None)

    def _take(self) -> list[_Pending]:
        """The next batch, in DRR order, within the size and pixel budgets."""
        b = self.spec.batching
        pixels = 0
        count = 0

        def fits(p: _Pending) -> bool:
            nonlocal pixels, count
            if p.future.done() or (p.deadline is not None and p.deadline <= now):
                count += 1  # dropped below; takes no room in the batch
                return True
            if (count and self.max_batch_pixels is not None and p.pixels
                    and pixels + p.pixels > self.max_batch_pixels):
                return False
            pixels += p.pixels
            count += 1
            return True

        now = self.clock()
        taken = self._lines.take(fits, limit=b.max_batch_size, eligible=self._eligible)
        batch: list[_Pending] = []
        for p in taken:
            if self._expire(p, now):
                self._release_pixels(p)
            else:
                batch.append(p)
        return batch

    async def _collect(self) -> list[_Pending]:
        """Wait for a free slot and an eligible item, then take a batch ([] when closed)."""
        while not self._can_start():
            if self._closed and not len(self._lines):
                return []
            self._wakeup.clear()
            await self._wakeup.wait()
            if self._closed and not len(self._lines):
                return []
        b = self.spec.batching
        if self._nbatches and b.max_wait_ms > 0:
            # Another batch is running: let this one fill a little (an idle stage does not
            # wait: a lone request has no batch to wait for).
            head = self._lines.oldest(self._eligible)
            first = head.enqueued if head is not None else self.clock()
            while len(self._lines) < b.max_batch_size and not self._closed:
                remaining = first + b.max_wait_ms / 1000.0 - self.clock()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
        return self._take()

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            if not batch:
                if self._closed and not len(self._lines):
                    if self._batches:
                        await asyncio.gather(*self._batches, return_exceptions=True)
                    return
                self._gauge()
                continue
            self._running += len(batch)
            self._nbatches += 1
            for p in batch:
                self._running_tenants[p.tenant] += 1
            task = asyncio.create_task(self._run_batch(batch),
                                       name=f"batch-{self.spec.name}")
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)
            if self.spec.batching.max_concurrent_batches == 1:
                # One at a time: the next batch forms once this one is done (a cancel of
                # this runner leaves the batch to close()).
                await asyncio.wait({task})

    async def _run_batch(self, batch: list[_Pending]) -> None:
        try:
            await self._execute(batch)
        except asyncio.CancelledError:  # close() timed out: no caller may wait forever
            self._fail_unresolved(batch, "is shutting down", Reason.STAGE_UNAVAILABLE)
            raise
        except Exception:  # a bug here must not kill the runner and strand every caller
            log.exception("stage %s runner failed on a batch", self.spec.name)
            self._fail_unresolved(batch, "failed", Reason.STAGE_FAILED)
        finally:
            self._running -= len(batch)
            self._nbatches -= 1
            for p in batch:
                self._running_tenants[p.tenant] -= 1
                if self._running_tenants[p.tenant] <= 0:
                    del self._running_tenants[p.tenant]
                self._release_pixels(p)
            self._gauge()
            self._wakeup.set()

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

    def fail_waiting(self, message: str, reason: str) -> int:
        """Fail every item not yet running with UNAVAILABLE/``reason``; how many."""
        n = 0
        for p in list(self._lines.items()):
            self._lines.remove(p.tenant, p)
            self._release_pixels(p)
            if not p.future.done():
                p.future.set_exception(UnavailableError(message, reason=reason))
                n += 1
        self._gauge()
        return n

    async def close(self, timeout: float = 30.0) -> None:
        """Stop taking items, finish the batches in hand, fail waiting items with UNAVAILABLE."""
        self._closed = True
        self.fail_waiting(f"stage {self.spec.name!r} is shutting down",
                          Reason.STAGE_UNAVAILABLE)
        self._wakeup.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except TimeoutError:
                for t in list(self._batches):
                    t.cancel()
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._task
                if self._batches:
                    await asyncio.gather(*self._batches, return_exceptions=True)
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
        max_batch_pixels: int | None = None,
        max_tenant_pixels: int | None = None,
    ) -> None:
        self._batchers = {
            s.name: MicroBatcher(s, max_pending=max_pending, metrics=metrics, clock=clock,
                                 max_batch_pixels=max_batch_pixels,
                                 max_tenant_pixels=max_tenant_pixels)
            for s in stages
        }
        self.metrics = metrics
        self._draining = False
        self._running = False

    @property
    def running(self) -> bool:
        """Whether the queue takes and runs items: started, not draining or closed, and every
        stage's batch runner alive."""
        return self._running and not self._draining and all(
            b.alive for b in self._batchers.values())

    def _up(self) -> None:
        if self.metrics:
            self.metrics.queue_up.set(1 if self.running else 0)

    async def start(self) -> None:
        for b in self._batchers.values():
            b.start(on_stop=self._up)  # a runner that ends while the queue runs: down
        self._running = True
        self._up()

    async def ping(self, timeout: float) -> bool:
        """Whether the queue runs (see :attr:`running`)."""
        return self.running

    async def close(self) -> None:
        self._running = False
        self._up()
        await asyncio.gather(*(b.close() for b in self._batchers.values()))

    async def submit(self, stage: str, item: Any, *, deadline: float | None = None,
                     tenant: str = "", pixels: int = 0) -> Any:
        batcher = self._batchers.get(stage)
        if batcher is None:
            raise UnavailableError(f"no stage named {stage!r}", reason=Reason.STAGE_UNAVAILABLE)
        if self._draining:
            raise draining_error()
        return await batcher.submit(item, deadline, tenant=tenant, pixels=pixels)

    async def drain(self, timeout: float) -> None:
        """Refuse new items (UNAVAILABLE/SERVER_DRAINING); give the items in hand up to
        ``timeout`` seconds, then fail those still waiting with the same reason."""
        self._draining = True
        self._up()
        end = time.monotonic() + timeout
        while any(b.pending for b in self._batchers.values()) and time.monotonic() < end:
            await asyncio.sleep(0.02)
        for b in self._batchers.values():
            b.fail_waiting("the server is shutting down; retry on another replica",
                           Reason.SERVER_DRAINING)

    def pending(self, stage: str) -> int:
        b = self._batchers.get(stage)
        return b.pending if b else 0

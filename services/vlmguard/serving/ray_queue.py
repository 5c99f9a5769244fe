"""A :class:`~vlmguard.queue.base.WorkQueue` whose stages are Ray Serve deployments.

The ingress deployment's :class:`~vlmguard.pipeline.GuardPipeline` submits stage items here;
each stage name routes to a deployment handle (``analyze`` -> the analyzer deployment, and so
on), whose ``@serve.batch`` method batches items across callers. The contract is the one the
in-process and Redis queues keep: too much pending work raises RESOURCE_EXHAUSTED/QUEUE_FULL at
once, an expired item is never run (the replica drops it, and the caller stops waiting at its
deadline), a dead or unreachable replica becomes a retry and then UNAVAILABLE/STAGE_UNAVAILABLE,
and an item's own error comes back as that error. Ray's exceptions stay inside this module.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from vlmguard import tracing
from vlmguard.errors import (
    DeadlineExceededError,
    Reason,
    ResourceExhaustedError,
    UnavailableError,
    VLMGuardError,
)
from vlmguard.metrics import Metrics
from vlmguard.queue.base import WorkQueue

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageCall:
    """What travels to a stage replica: the item, its wall-clock expiry (``time.time()``;
    monotonic clocks differ between processes), or 0 for none, and the W3C traceparent of the
    caller's span ("" while tracing is off: the replica's spans then start their own trace)."""

    item: Any
    expires_at: float = 0.0
    traceparent: str = ""


class StageHandle(Protocol):
    """The part of a Ray Serve ``DeploymentHandle`` (bound to the stage method) used here."""

    def remote(self, call: StageCall) -> Any:
        """Send one call; returns an awaitable, cancellable response."""


def _classify(exc: BaseException) -> str:
    """'retry' (the replica died or was unreachable), 'full' (back pressure) or 'failed'."""
    from ray.exceptions import ActorUnavailableError, RayActorError
    from ray.serve.exceptions import (
        BackPressureError,
        DeploymentUnavailableError,
        ReplicaUnavailableError,
    )

    if isinstance(exc, BackPressureError):
        return "full"
    if isinstance(exc, RayActorError | ActorUnavailableError | DeploymentUnavailableError
                  | ReplicaUnavailableError):
        return "retry"
    return "failed"


class RayServeQueue(WorkQueue):
    """Routes stage items to Ray Serve deployment handles.

    Args:
        handles: Stage name -> handle bound to the stage deployment's batch method.
        max_pending: In-flight items per stage (in this ingress replica) above which
            :meth:`submit` raises QUEUE_FULL, as in the embedded gateway.
        retries: Extra attempts after a replica died or was unreachable.
        metrics: Metrics sink.
        clock: Monotonic clock (the pipeline's deadlines use it).
        wall_clock: Wall clock for the expiry sent to replicas.
    """

    def __init__(
        self,
        handles: Mapping[str, StageHandle],
        *,
        max_pending: int,
        retries: int = 1,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.handles = dict(handles)
        self.max_pending = max_pending
        self.retries = retries
        self.metrics = metrics
        self.clock = clock
        self.wall_clock = wall_clock
        self._pending: dict[str, int] = dict.fromkeys(self.handles, 0)
        self._closed = False
        self._reached = True
        self._up(True)  # Serve gives the ingress its handles ready; start() is optional

    async def start(self) -> None:
        self._closed = False
        self._up(bool(self.handles))

    async def close(self) -> None:
        self._closed = True
        self._up(False)

    async def ping(self, timeout: float) -> bool:
        """Whether stage calls can be made: open, with a handle per stage, and the last call
        to a stage reached a replica (Serve routes them; a handle has no ping of its own)."""
        return not self._closed and bool(self.handles) and self._reached

    def _up(self, reached: bool) -> None:
        self._reached = reached
        if self.metrics:
            self.metrics.queue_up.set(1 if not self._closed and self.handles and reached
                                      else 0)

    def pending(self, stage: str) -> int:
        return self._pending.get(stage, 0)

    async def submit(self, stage: str, item: Any, *, deadline: float | None = None,
                     tenant: str = "", pixels: int = 0) -> Any:
        # Ray Serve routes to replicas itself; tenant and pixels are not used here.
        handle = self.handles.get(stage)
        if handle is None:
            raise UnavailableError(f"no deployment serves stage {stage!r}",
                                   reason=Reason.STAGE_UNAVAILABLE)
        if self._closed:
            raise UnavailableError("the server is shutting down", reason=Reason.STAGE_UNAVAILABLE)
        if self._pending[stage] >= self.max_pending:
            if self.metrics:
                self.metrics.rejected.labels(stage).inc()
            raise ResourceExhaustedError(
                f"too many requests pending for stage {stage!r}; retry shortly",
                reason=Reason.QUEUE_FULL, retry_after_s=1.0,
            )
        self._pending[stage] += 1
        if self.metrics:
            self.metrics.queue_depth.labels(stage).set(self._pending[stage])
        try:
            result = await self._call(stage, handle, item, deadline)
        finally:
            self._pending[stage] -= 1
            if self.metrics:
                self.metrics.queue_depth.labels(stage).set(self._pending[stage])
        if isinstance(result, VLMGuardError):
            raise result
        return result

    async def _call(
        self, stage: str, handle: StageHandle, item: Any, deadline: float | None
    ) -> Any:
        attempt = 0
        while True:
            remaining = None if deadline is None else deadline - self.clock()
            if remaining is not None and remaining <= 0:
                if self.metrics:
                    self.metrics.expired.labels(stage).inc()
                raise DeadlineExceededError(f"deadline passed before stage {stage!r} answered",
                                            reason=Reason.DEADLINE_EXCEEDED)
            expires = 0.0 if remaining is None else self.wall_clock() + remaining
            response = handle.remote(StageCall(item, expires, tracing.traceparent()))
            try:
                answer = await asyncio.wait_for(_await(response), remaining)
                if not self._reached:
                    self._up(True)
                return answer
            except TimeoutError:
                _cancel(response)
                if self.metrics:
                    self.metrics.expired.labels(stage).inc()
                raise DeadlineExceededError(f"deadline passed before stage {stage!r} answered",
                                            reason=Reason.DEADLINE_EXCEEDED) from None
            except asyncio.CancelledError:
                _cancel(response)  # the caller went away: do not leave the work running
                raise
            except VLMGuardError:
                raise
            except Exception as e:
                kind = _classify(e)
                if kind == "full":
                    if self.metrics:
                        self.metrics.rejected.labels(stage).inc()
                    raise ResourceExhaustedError(
                        f"stage {stage!r} is overloaded; retry shortly",
                        reason=Reason.QUEUE_FULL, retry_after_s=1.0,
                    ) from e
                if kind == "retry" and attempt < self.retries:
                    attempt += 1
                    log.warning("stage %s: replica lost (%s); retrying (attempt %d)", stage,
                                type(e).__name__, attempt + 1)
                    continue
                if kind == "retry":
                    log.warning("stage %s: replica lost (%s); no retries left", stage,
                                type(e).__name__)
                    self._up(False)
                    raise UnavailableError(f"stage {stage!r} is unavailable",
                                           reason=Reason.STAGE_UNAVAILABLE) from e
                log.error("stage %s failed: %s", stage, type(e).__name__, exc_info=e)
                raise UnavailableError(f"stage {stage!r} failed",
                                       reason=Reason.STAGE_FAILED) from e


async def _await(response: Any) -> Any:
    return await response


def _cancel(response: Any) -> None:
    cancel = getattr(response, "cancel", None)
    if cancel is not None:
        try:
            cancel()
        except Exception:  # best effort: the response may already be finished
            log.debug("cancelling a stage response failed", exc_info=True)

"""The work-queue interface between the gateway and the stage workers.

The gateway calls :meth:`WorkQueue.submit` for a stage and awaits the one result for its item.
Implementations: :class:`vlmguard.queue.inproc.InProcessQueue` (micro-batching inside the
process, the embedded default) and a Redis Streams queue (separate worker processes). Stage
handlers take a batch and return exactly one result or one error per item.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from vlmguard.config import BatchingConfig
from vlmguard.errors import Reason, UnavailableError, VLMGuardError

log = logging.getLogger(__name__)

#: A stage handler: one result (or one error) per item, in order.
BatchHandler = Callable[[Sequence[Any]], Awaitable[Sequence[Any | VLMGuardError]]]


@dataclass(frozen=True)
class StageSpec:
    """A stage served by a queue: its batch handler and batching settings."""

    name: str
    handler: BatchHandler
    batching: BatchingConfig


class WorkQueue(ABC):
    """Submit items to named stages and get their results back."""

    @abstractmethod
    async def start(self) -> None:
        """Start consuming (workers, connections)."""

    @abstractmethod
    async def close(self) -> None:
        """Finish the batches in hand, fail what is still waiting with UNAVAILABLE, stop."""

    @abstractmethod
    async def submit(self, stage: str, item: Any, *, deadline: float | None = None,
                     tenant: str = "", pixels: int = 0) -> Any:
        """Run ``item`` through ``stage`` and return its result.

        Args:
            stage: Stage name.
            item: The stage's input.
            deadline: Absolute ``time.monotonic()`` deadline; expired items are dropped unrun.
            tenant: Who asks: the stage is shared fairly between tenants.
            pixels: The item's image cost (:func:`vlmguard.imaging.request_pixels`).

        Raises:
            ResourceExhaustedError: too much pending work (QUEUE_FULL), raised at once.
            DeadlineExceededError: the deadline passed before the item ran.
            UnavailableError: the queue or stage is down.
            VLMGuardError: the item's own error from the handler.
        """

    @abstractmethod
    def pending(self, stage: str) -> int:
        """Items waiting or running for ``stage``."""

    #: Whether :meth:`ping` can ever fail (a queue behind a server); the gateway watches it then.
    remote: bool = False

    async def ping(self, timeout: float) -> bool:
        """Whether the queue can take work now (a round trip to its server, at most
        ``timeout`` seconds). An in-process queue always can."""
        return True

    async def consumers(self, stage: str, timeout: float) -> int | None:
        """Live workers consuming ``stage`` (None: not known here, e.g. the stage runs in this
        process)."""
        return None

    async def drain(self, timeout: float) -> None:
        """Refuse new items with UNAVAILABLE/SERVER_DRAINING and give the items in hand up to
        ``timeout`` seconds to finish; those still waiting then fail with that reason (so a
        stopping server's late callers learn why). The default refuses nothing."""
        return None


def draining_error() -> UnavailableError:
    """What a call gets from a queue that is draining (its server is stopping)."""
    return UnavailableError("the server is shutting down; retry on another replica",
                            reason=Reason.SERVER_DRAINING, retry_after_s=0.5)


async def run_isolating(
    handler: BatchHandler, items: Sequence[Any], *, stage: str
) -> list[Any]:
    """Run ``handler`` on ``items``; one result or one exception per item, in order.

    A handler that raises for a batch of several items is retried on each half of the batch
    (recursively), so an item that makes the model code raise (a poison item) fails alone and
    its batch-mates still get their answers. A failure of every item costs ``2n - 1`` handler
    calls, each of which fails fast in practice; a poison item costs about ``2 log2 n``. A
    handler that returns the wrong number of results fails every item of that call with
    UNAVAILABLE/BATCH_RESULT_MISMATCH (a bug, not an input problem: no retry).

    Args:
        handler: The stage's batch handler.
        items: The batch.
        stage: Stage name, for logs and errors.
    """
    try:
        results: Sequence[Any] = await handler(items)
    except Exception as e:
        if len(items) <= 1:
            if not isinstance(e, VLMGuardError):
                log.error("stage %s failed on one item: %s", stage, type(e).__name__,
                          exc_info=e)
            return [e] * len(items)
        log.warning("stage %s: a batch of %d raised %s; retrying it in halves", stage,
                    len(items), type(e).__name__)
        mid = len(items) // 2
        return [*await run_isolating(handler, items[:mid], stage=stage),
                *await run_isolating(handler, items[mid:], stage=stage)]
    try:
        n = len(results)
    except TypeError:  # not a sequence (e.g. the handler returned None)
        n = -1
    if n != len(items):
        log.error("stage %s returned %d results for %d items", stage, n, len(items))
        return [UnavailableError(f"stage {stage!r} returned a malformed batch",
                                 reason=Reason.BATCH_RESULT_MISMATCH)] * len(items)
    return list(results)

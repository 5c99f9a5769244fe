"""The work-queue interface between the gateway and the stage workers.

The gateway calls :meth:`WorkQueue.submit` for a stage and awaits the one result for its item.
Implementations: :class:`vlmguard.queue.inproc.InProcessQueue` (micro-batching inside the
process, the embedded default) and a Redis Streams queue (separate worker processes). Stage
handlers take a batch and return exactly one result or one error per item.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from vlmguard.config import BatchingConfig
from vlmguard.errors import VLMGuardError

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
    async def submit(self, stage: str, item: Any, *, deadline: float | None = None) -> Any:
        """Run ``item`` through ``stage`` and return its result.

        Args:
            stage: Stage name.
            item: The stage's input.
            deadline: Absolute ``time.monotonic()`` deadline; expired items are dropped unrun.

        Raises:
            ResourceExhaustedError: too much pending work (QUEUE_FULL), raised at once.
            DeadlineExceededError: the deadline passed before the item ran.
            UnavailableError: the queue or stage is down.
            VLMGuardError: the item's own error from the handler.
        """

    @abstractmethod
    def pending(self, stage: str) -> int:
        """Items waiting or running for ``stage``."""

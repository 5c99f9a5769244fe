"""Fair sharing of a stage between tenants: deficit round robin weighted by image cost.

Each tenant has its own waiting line. Every round a tenant with waiting work earns a quantum
of credit; it may take its oldest item when its credit covers the item's cost, so a tenant
sending 25-megapixel images gets as much of the stage as one sending short texts, measured in
work, not in requests (Shreedhar and Varghese's deficit round robin). An idle tenant keeps no
credit. Used by the in-process batcher (:mod:`vlmguard.queue.inproc`) to fill batches and by the
Redis worker (:mod:`vlmguard.queue.redis_streams`) to order what it read from the tenants'
streams.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

#: Pixels worth one unit of cost; a request costs one unit plus one per megapixel.
PIXELS_PER_UNIT = 1_000_000


def item_cost(pixels: int) -> float:
    """The cost of a request with ``pixels`` image pixels: 1 + megapixels."""
    return 1.0 + max(0, pixels) / PIXELS_PER_UNIT


class DeficitRoundRobin(Generic[T]):
    """Waiting items per tenant, taken in deficit-round-robin order.

    Args:
        cost: The cost of an item (see :func:`item_cost`).
        quantum: Credit a tenant earns per round.
    """

    def __init__(self, cost: Callable[[T], float], quantum: float = 1.0) -> None:
        self.cost = cost
        self.quantum = quantum
        self._lines: OrderedDict[str, deque[T]] = OrderedDict()  # round order: the front next
        self._credit: dict[str, float] = {}
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def tenants(self) -> list[str]:
        """Tenants with waiting items, in the order they are served next."""
        return list(self._lines)

    def push(self, tenant: str, item: T) -> None:
        """Append ``item`` to ``tenant``'s line."""
        line = self._lines.get(tenant)
        if line is None:
            line = self._lines[tenant] = deque()
            self._credit[tenant] = 0.0
        line.append(item)
        self._size += 1

    def remove(self, tenant: str, item: T) -> bool:
        """Take ``item`` out of its line (its caller gave up); whether it was there."""
        line = self._lines.get(tenant)
        if line is None:
            return False
        try:
            line.remove(item)
        except ValueError:
            return False
        self._size -= 1
        if not line:
            self._drop(tenant)
        return True

    def items(self) -> Iterator[T]:
        """Every waiting item (any order)."""
        for line in self._lines.values():
            yield from line

    def oldest(self, eligible: Callable[[str], bool] = lambda _t: True) -> T | None:
        """The head of the first eligible line in round order (None when none waits)."""
        for tenant, line in self._lines.items():
            if eligible(tenant):
                return line[0]
        return None

    def _drop(self, tenant: str) -> None:
        del self._lines[tenant]
        del self._credit[tenant]

    def take(
        self,
        fits: Callable[[T], bool],
        *,
        limit: int,
        eligible: Callable[[str], bool] = lambda _t: True,
    ) -> list[T]:
        """Up to ``limit`` items in DRR order.

        Args:
            fits: Whether an item still fits the batch being formed (called with the items
                taken so far already counted by the caller); a tenant whose head does not fit
                is passed over for this batch and keeps its credit.
            limit: Most items to take.
            eligible: Tenants that may be served now (e.g. not already in a running batch).
        """
        out: list[T] = []
        skipped: set[str] = set()
        while len(out) < limit:
            candidates = [t for t in self._lines if t not in skipped and eligible(t)]
            if not candidates:
                break
            # Fast-forward the rounds in which nobody could afford its head: every candidate
            # earns the quanta the cheapest-to-serve one still needs.
            need = min(self.cost(self._lines[t][0]) - self._credit[t] for t in candidates)
            if need > 0:
                rounds = math.ceil(need / self.quantum)
                for t in candidates:
                    self._credit[t] += rounds * self.quantum
            progressed = False
            for tenant in candidates:
                line = self._lines[tenant]
                # A tenant served this round moves to the back of the round order.
                self._lines.move_to_end(tenant)
                while line and len(out) < limit:
                    head = line[0]
                    c = self.cost(head)
                    if c > self._credit[tenant]:
                        break
                    if not fits(head):
                        skipped.add(tenant)
                        break
                    line.popleft()
                    self._size -= 1
                    self._credit[tenant] -= c
                    out.append(head)
                    progressed = True
                if not line:
                    self._drop(tenant)
                if len(out) >= limit:
                    break
            if not progressed and not any(
                    t in self._lines and t not in skipped for t in candidates):
                break
        return out

"""Fair sharing of a stage between tenants: the DRR order, the in-process batcher's budgets,
its concurrent batches, dropping work whose caller is gone, and drain."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from tests.unit.vlmguard.queue.test_inproc import STAGE, FakeClock, Handler, run, settle
from vlmguard.config import BatchingConfig
from vlmguard.errors import Reason, ResourceExhaustedError, UnavailableError
from vlmguard.metrics import Metrics
from vlmguard.queue.base import StageSpec
from vlmguard.queue.fair import DeficitRoundRobin, item_cost
from vlmguard.queue.inproc import InProcessQueue, MicroBatcher

MP = 1_000_000


def batcher(handler: Any, *, size: int = 1, concurrent: int = 1, metrics: Metrics | None = None,
            **kw: Any) -> MicroBatcher:
    spec = StageSpec(STAGE, handler, BatchingConfig(max_batch_size=size, max_wait_ms=0,
                                                    max_concurrent_batches=concurrent))
    return MicroBatcher(spec, max_pending=100, metrics=metrics, clock=FakeClock(), **kw)


def test_drr_gives_cheap_items_their_share_ahead_of_a_backlog_of_expensive_ones() -> None:
    q: DeficitRoundRobin[tuple[str, int]] = DeficitRoundRobin(lambda x: item_cost(x[1]))
    for i in range(3):
        q.push("flood", (f"f{i}", 20 * MP))  # cost 21 each
    for i in range(3):
        q.push("text", (f"t{i}", 0))  # cost 1 each
    order = [q.take(lambda _x: True, limit=1)[0][0] for _ in range(6)]
    # Every text item runs before the flood's second image request; the flood still runs.
    assert order.index("t2") < order.index("f1")
    assert sorted(order) == ["f0", "f1", "f2", "t0", "t1", "t2"]
    assert len(q) == 0


def test_drr_passes_over_a_tenant_whose_head_does_not_fit_and_keeps_its_place() -> None:
    q: DeficitRoundRobin[tuple[str, int]] = DeficitRoundRobin(lambda x: item_cost(x[1]))
    q.push("a", ("big", 30 * MP))
    q.push("b", ("t0", 0))
    q.push("b", ("t1", 0))
    got = q.take(lambda x: x[1] == 0, limit=8)  # a batch without room for images
    assert [x[0] for x in got] == ["t0", "t1"]
    assert [x[0] for x in q.take(lambda _x: True, limit=8)] == ["big"]


def test_batcher_serves_a_text_tenant_ahead_of_a_queued_image_flood() -> None:
    async def go() -> None:
        h = Handler()
        h.release = asyncio.Event()
        b = batcher(h)
        b.start()
        tasks = [asyncio.create_task(b.submit(f"f{i}", None, tenant="flood", pixels=20 * MP))
                 for i in range(4)]
        await settle()
        tasks += [asyncio.create_task(b.submit(f"t{i}", None, tenant="text"))
                  for i in range(3)]
        await settle()
        h.release.set()
        await asyncio.gather(*tasks)
        order = [x for batch in h.batches for x in batch]
        # f0 was running already; the text items go before the rest of the flood (FIFO
        # would run f1, f2, f3 first).
        assert order[:4] == ["f0", "t0", "t1", "t2"]
        await b.close()

    run(go())


def test_batch_pixel_budget_keeps_image_requests_out_of_text_batches() -> None:
    async def go() -> None:
        h = Handler()
        b = batcher(h, size=8, max_batch_pixels=8 * MP)
        tasks = [asyncio.create_task(b.submit("img1", None, tenant="a", pixels=6 * MP)),
                 asyncio.create_task(b.submit("big", None, tenant="a", pixels=30 * MP))]
        tasks += [asyncio.create_task(b.submit(f"t{i}", None, tenant="b")) for i in range(3)]
        await settle()
        b.start()
        await asyncio.gather(*tasks)
        # 6 + 30 MP never share a batch; the 30 MP request (over the budget) runs alone.
        assert ["big"] in h.batches
        for batch in h.batches:
            assert not ("img1" in batch and "big" in batch)
        await b.close()

    run(go())


class Gate:
    """A handler that holds the batches containing 'slow' until released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.done: list[str] = []

    async def __call__(self, items: Sequence[Any]) -> list[Any]:
        if "slow" in items:
            await self.release.wait()
        self.done += list(items)
        return list(items)


def test_another_tenant_runs_beside_a_long_batch_but_the_same_tenant_waits() -> None:
    async def go() -> None:
        g = Gate()
        b = batcher(g, size=4, concurrent=2)
        b.start()
        slow = asyncio.create_task(b.submit("slow", None, tenant="flood", pixels=25 * MP))
        await settle()
        same = asyncio.create_task(b.submit("same", None, tenant="flood"))
        other = asyncio.create_task(b.submit("other", None, tenant="text"))
        assert await asyncio.wait_for(other, 1.0) == "other"  # one batch at a time: hangs
        await settle()
        assert not same.done()  # a tenant never holds two running batches
        g.release.set()
        assert await asyncio.gather(slow, same) == ["slow", "same"]
        await b.close()

    run(go())


def test_tenant_over_its_pixel_budget_is_refused_and_others_are_not() -> None:
    async def go() -> None:
        m = Metrics()
        g = Gate()
        b = batcher(g, metrics=m, max_tenant_pixels=60 * MP)
        b.start()
        first = asyncio.create_task(b.submit("slow", None, tenant="flood", pixels=40 * MP))
        await settle()
        with pytest.raises(ResourceExhaustedError) as e:
            await b.submit("more", None, tenant="flood", pixels=40 * MP)
        assert e.value.reason == Reason.TENANT_BUDGET_EXHAUSTED
        assert e.value.retry_after_s
        other = asyncio.create_task(b.submit("other", None, tenant="calm", pixels=40 * MP))
        text = asyncio.create_task(b.submit("text", None, tenant="flood"))  # no pixels
        await settle()
        g.release.set()
        assert await asyncio.gather(first, other, text) == ["slow", "other", "text"]
        assert m.registry.get_sample_value("vlmguard_queue_throttled_total",
                                           {"stage": STAGE}) == 1.0
        # Budget given back once run: the tenant may send again.
        assert await b.submit("again", None, tenant="flood", pixels=40 * MP) == "again"
        await b.close()

    run(go())


def test_cancelled_caller_is_removed_at_once_counted_and_its_budget_returned() -> None:
    async def go() -> None:
        m = Metrics()
        g = Gate()
        b = batcher(g, metrics=m, max_tenant_pixels=50 * MP)
        b.start()
        slow = asyncio.create_task(b.submit("slow", None, tenant="x"))
        await settle()
        gone = asyncio.create_task(b.submit("gone", None, tenant="y", pixels=40 * MP))
        await settle()
        assert b.pending == 2
        gone.cancel()
        await settle()
        assert b.pending == 1  # dropped before it ran, not when its turn came
        assert m.registry.get_sample_value(
            "vlmguard_queue_dropped_total", {"stage": STAGE, "reason": "cancelled"}) == 1.0
        again = asyncio.create_task(b.submit("again", None, tenant="y", pixels=40 * MP))
        g.release.set()
        assert await asyncio.gather(slow, again) == ["slow", "again"]
        assert "gone" not in g.done
        await b.close()

    run(go())


def test_drain_refuses_new_calls_and_fails_the_waiting_with_a_reason() -> None:
    async def go() -> None:
        g = Gate()
        q = InProcessQueue([StageSpec(STAGE, g, BatchingConfig(max_batch_size=1,
                                                               max_wait_ms=0))],
                           max_pending=10)
        await q.start()
        running = asyncio.create_task(q.submit(STAGE, "slow"))
        await settle()
        waiting = asyncio.create_task(q.submit(STAGE, "late"))
        await settle()
        drain = asyncio.create_task(q.drain(0.2))
        await settle()
        with pytest.raises(UnavailableError) as e:
            await q.submit(STAGE, "new")
        assert e.value.reason == Reason.SERVER_DRAINING
        await drain
        with pytest.raises(UnavailableError) as e2:
            await waiting
        assert e2.value.reason == Reason.SERVER_DRAINING
        g.release.set()
        assert await running == "slow"  # the call in hand finishes
        await q.close()

    run(go())

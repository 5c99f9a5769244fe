"""Unit tests for vlmguard.queue.inproc: MicroBatcher and InProcessQueue.

Time is an injected clock; the batch-fill wait only ever waits for real when a test says so.
Each test runs its own event loop with ``asyncio.run`` and fails (not hangs) after a few seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar

import pytest

from vlmguard.config import BatchingConfig
from vlmguard.errors import (
    DeadlineExceededError,
    InvalidArgumentError,
    Reason,
    ResourceExhaustedError,
    UnavailableError,
    VLMGuardError,
)
from vlmguard.metrics import Metrics
from vlmguard.queue.base import StageSpec
from vlmguard.queue.inproc import InProcessQueue, MicroBatcher

T = TypeVar("T")
STAGE = "stage_a"


class FakeClock:
    """A monotonic clock that only moves when the test says so."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


class Handler:
    """A batch handler that records its batches; ``fn`` maps one item to its result."""

    def __init__(self, fn: Callable[[Any], Any] = lambda x: ("ok", x)) -> None:
        self.fn = fn
        self.batches: list[list[Any]] = []
        self.started = asyncio.Event()
        self.release: asyncio.Event | None = None  # when set: wait for it before answering

    async def __call__(self, items: Sequence[Any]) -> Sequence[Any]:
        self.batches.append(list(items))
        self.started.set()
        if self.release is not None:
            await self.release.wait()
        return [self.fn(x) for x in items]


def run(coro: Coroutine[Any, Any, T], timeout: float = 5.0) -> T:
    """Run a test coroutine in a fresh loop; fail on timeout or on an unretrieved task error."""
    problems: list[dict[str, Any]] = []

    async def main() -> T:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: problems.append(ctx))
        return await asyncio.wait_for(coro, timeout)

    result = asyncio.run(main())
    assert problems == [], problems
    return result


async def settle(rounds: int = 20) -> None:
    """Let every ready task run until it blocks (no wall-clock waiting)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


def make_batcher(
    handler: Callable[[Sequence[Any]], Awaitable[Sequence[Any]]],
    *,
    max_batch_size: int = 8,
    max_wait_ms: float = 0.0,
    max_pending: int = 100,
    clock: FakeClock | None = None,
    metrics: Metrics | None = None,
    concurrent: int = 1,
    **kw: Any,
) -> MicroBatcher:
    spec = StageSpec(
        STAGE, handler, BatchingConfig(max_batch_size=max_batch_size, max_wait_ms=max_wait_ms,
                                       max_concurrent_batches=concurrent)
    )
    return MicroBatcher(spec, max_pending=max_pending, metrics=metrics,
                        clock=clock or FakeClock(), **kw)


def submit_all(
    b: MicroBatcher, items: Sequence[Any], deadline: float | None = None
) -> list[asyncio.Task[Any]]:
    return [asyncio.create_task(b.submit(x, deadline)) for x in items]


def sample(m: Metrics, name: str, stage: str = STAGE) -> float | None:
    return m.registry.get_sample_value(name, {"stage": stage})


# --------------------------------------------------------------------------------------------
# Batching and results
# --------------------------------------------------------------------------------------------


def test_waiting_items_are_batched_up_to_max_batch_size() -> None:
    async def go() -> None:
        h = Handler(lambda x: x * 10)
        b = make_batcher(h, max_batch_size=3)
        tasks = submit_all(b, range(7))
        await settle()
        assert b.pending == 7
        b.start()
        assert await asyncio.gather(*tasks) == [x * 10 for x in range(7)]
        assert h.batches == [[0, 1, 2], [3, 4, 5], [6]]
        await b.close()

    run(go())


def test_every_item_gets_exactly_its_own_result_in_order() -> None:
    async def go() -> None:
        h = Handler(lambda x: f"result-of-{x}")
        b = make_batcher(h, max_batch_size=4)
        items = [f"item{i}" for i in range(10)]
        tasks = submit_all(b, items)
        await settle()
        b.start()
        results = await asyncio.gather(*tasks)
        assert results == [f"result-of-{x}" for x in items]
        assert [x for batch in h.batches for x in batch] == items  # FIFO, nothing repeated
        await b.close()

    run(go())


def test_items_submitted_while_a_batch_runs_form_the_next_batch() -> None:
    async def go() -> None:
        h = Handler()
        h.release = asyncio.Event()
        b = make_batcher(h, max_batch_size=8)
        b.start()
        first = submit_all(b, ["a"])
        await h.started.wait()
        later = submit_all(b, ["b", "c"])
        await settle()
        assert b.pending == 3  # one running, two waiting
        h.release.set()
        assert await asyncio.gather(*first, *later) == [("ok", "a"), ("ok", "b"), ("ok", "c")]
        assert h.batches == [["a"], ["b", "c"]]
        await b.close()

    run(go())


def test_while_a_batch_runs_the_next_waits_to_fill_until_max_wait_on_the_clock() -> None:
    async def go() -> None:
        clock = FakeClock()
        h = Handler()
        h.release = asyncio.Event()
        b = make_batcher(h, max_batch_size=10, max_wait_ms=10_000, clock=clock, concurrent=2)
        b.start()
        busy = asyncio.create_task(b.submit("x", None, tenant="t1"))
        await settle()
        assert h.batches == [["x"]]  # running (held), so the next batch may wait to fill
        t_a = asyncio.create_task(b.submit("a", None, tenant="t2"))
        await settle()
        clock.advance(5.0)  # half the wait: the batch stays open
        t_b = asyncio.create_task(b.submit("b", None, tenant="t2"))
        await settle()
        assert h.batches == [["x"]]
        clock.advance(5.5)  # past max_wait: the next wakeup closes the (not full) batch
        t_c = asyncio.create_task(b.submit("c", None, tenant="t2"))
        await settle()
        assert h.batches == [["x"], ["a", "b", "c"]]
        h.release.set()
        assert await asyncio.gather(busy, t_a, t_b, t_c) == [
            ("ok", "x"), ("ok", "a"), ("ok", "b"), ("ok", "c")]
        await b.close()

    run(go())


def test_lone_item_on_an_idle_stage_runs_at_once_without_waiting_to_fill() -> None:
    async def go() -> None:
        h = Handler()
        b = make_batcher(h, max_batch_size=10, max_wait_ms=60_000)  # the clock never moves
        b.start()
        assert await b.submit("a", None) == ("ok", "a")
        assert h.batches == [["a"]]
        await b.close()

    run(go(), timeout=3.0)


def test_batch_whose_wait_already_passed_closes_at_once_without_filling() -> None:
    async def go() -> None:
        clock = FakeClock()
        h = Handler()
        b = make_batcher(h, max_batch_size=10, max_wait_ms=60_000, clock=clock)
        tasks = submit_all(b, ["a", "b"])
        await settle()
        clock.advance(61.0)
        b.start()  # would wait a real minute if the batch did not close by the clock
        assert await asyncio.gather(*tasks) == [("ok", "a"), ("ok", "b")]
        assert h.batches == [["a", "b"]]
        await b.close()

    run(go(), timeout=3.0)


def test_full_batch_runs_without_waiting_for_max_wait() -> None:
    async def go() -> None:
        h = Handler()
        b = make_batcher(h, max_batch_size=2, max_wait_ms=60_000)  # clock never moves
        b.start()
        tasks = submit_all(b, ["a", "b"])
        assert await asyncio.gather(*tasks) == [("ok", "a"), ("ok", "b")]
        assert h.batches == [["a", "b"]]
        await b.close()

    run(go(), timeout=3.0)


def test_lone_item_batch_closes_by_itself_after_a_short_real_wait() -> None:
    async def go() -> None:
        h = Handler()
        spec = StageSpec(STAGE, h, BatchingConfig(max_batch_size=10, max_wait_ms=2))
        b = MicroBatcher(spec, max_pending=10)  # real monotonic clock: waits ~2 ms
        b.start()
        assert await b.submit("a", None) == ("ok", "a")
        assert h.batches == [["a"]]
        await b.close()

    run(go())


# --------------------------------------------------------------------------------------------
# Errors from the handler
# --------------------------------------------------------------------------------------------


def test_exception_object_for_one_item_fails_only_that_item() -> None:
    bad = InvalidArgumentError("item 1 is bad", reason=Reason.INVALID_REPORT)

    async def go() -> None:
        h = Handler(lambda x: bad if x == 1 else x + 100)
        b = make_batcher(h)
        tasks = submit_all(b, [0, 1, 2])
        await settle()
        b.start()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert results[0] == 100
        assert results[1] is bad
        assert results[2] == 102
        assert len(h.batches) == 1
        await b.close()

    run(go())


def test_handler_raising_vlmguard_error_fails_every_item_with_that_error() -> None:
    boom = ResourceExhaustedError("model busy", reason="MODEL_BUSY", retry_after_s=2.0)

    async def handler(items: Sequence[Any]) -> Sequence[Any]:
        raise boom

    async def go() -> None:
        b = make_batcher(handler)
        tasks = submit_all(b, ["a", "b", "c"])
        await settle()
        b.start()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(r is boom for r in results)
        await b.close()

    run(go())


def test_handler_raising_other_error_fails_every_item_with_stage_failed() -> None:
    async def handler(items: Sequence[Any]) -> Sequence[Any]:
        raise ValueError("secret internal detail")

    async def go() -> None:
        b = make_batcher(handler)
        tasks = submit_all(b, ["a", "b"])
        await settle()
        b.start()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for r in results:
            assert isinstance(r, UnavailableError)
            assert r.reason == Reason.STAGE_FAILED
            assert "secret" not in r.message
            assert STAGE in r.message
        await b.close()

    run(go())


def test_handler_failure_does_not_stop_the_stage() -> None:
    calls = {"n": 0}

    async def handler(items: Sequence[Any]) -> Sequence[Any]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("first batch fails")
        return [x.upper() for x in items]

    async def go() -> None:
        b = make_batcher(handler)
        b.start()
        with pytest.raises(UnavailableError):
            await b.submit("a", None)
        assert await b.submit("b", None) == "B"
        await b.close()

    run(go())


@pytest.mark.parametrize(
    "bad_results",
    [[], ["only one"], ["x", "y", "z", "extra"], None],
    ids=["none-returned", "too-few", "too-many", "not-a-sequence"],
)
def test_wrong_number_of_results_fails_every_item_with_batch_result_mismatch(
    bad_results: Any,
) -> None:
    async def handler(items: Sequence[Any]) -> Any:
        return bad_results

    async def go() -> None:
        b = make_batcher(handler)
        tasks = submit_all(b, ["a", "b", "c"])
        await settle()
        b.start()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for r in results:
            assert isinstance(r, VLMGuardError)
            assert r.reason == Reason.BATCH_RESULT_MISMATCH
        await b.close()

    run(go())


def test_stage_keeps_serving_after_a_handler_returned_none() -> None:
    # Regression: len(None) used to raise inside the runner task, which died and left every
    # caller (of that batch and all later ones) waiting forever.
    answers: list[Any] = [None, ["fine"]]

    async def handler(items: Sequence[Any]) -> Any:
        return answers.pop(0)

    async def go() -> None:
        b = make_batcher(handler)
        b.start()
        with pytest.raises(UnavailableError) as ei:
            await b.submit("a", None)
        assert ei.value.reason == Reason.BATCH_RESULT_MISMATCH
        assert await b.submit("b", None) == "fine"
        await b.close()

    run(go())


# --------------------------------------------------------------------------------------------
# Deadlines
# --------------------------------------------------------------------------------------------


def test_expired_items_are_dropped_unrun_and_counted() -> None:
    async def go() -> None:
        clock = FakeClock(100.0)
        m = Metrics()
        h = Handler()
        b = make_batcher(h, clock=clock, metrics=m)
        past = asyncio.create_task(b.submit("past", 99.0))
        now = asyncio.create_task(b.submit("now", 100.0))  # deadline == now is expired
        none = asyncio.create_task(b.submit("none", None))
        future = asyncio.create_task(b.submit("future", 200.0))
        await settle()
        b.start()
        results = await asyncio.gather(past, now, none, future, return_exceptions=True)
        for r in results[:2]:
            assert isinstance(r, DeadlineExceededError)
            assert r.reason == Reason.DEADLINE_EXCEEDED
        assert results[2:] == [("ok", "none"), ("ok", "future")]
        assert h.batches == [["none", "future"]]
        assert sample(m, "vlmguard_queue_expired_total") == 2.0
        await b.close()

    run(go())


def test_item_whose_deadline_passes_while_batch_fills_is_dropped() -> None:
    async def go() -> None:
        clock = FakeClock(100.0)
        m = Metrics()
        h = Handler()
        h.release = asyncio.Event()
        b = make_batcher(h, max_batch_size=10, max_wait_ms=10_000, clock=clock, metrics=m,
                         concurrent=2)
        b.start()
        busy = asyncio.create_task(b.submit("x", None, tenant="t1"))
        await settle()
        soon = asyncio.create_task(b.submit("soon", 105.0, tenant="t2"))
        await settle()
        clock.advance(11.0)
        later = asyncio.create_task(b.submit("later", 500.0, tenant="t2"))
        await settle()
        h.release.set()
        results = await asyncio.gather(soon, later, busy, return_exceptions=True)
        assert isinstance(results[0], DeadlineExceededError)
        assert results[1] == ("ok", "later")
        assert h.batches == [["x"], ["later"]]
        assert sample(m, "vlmguard_queue_expired_total") == 1.0
        assert m.registry.get_sample_value(
            "vlmguard_queue_dropped_total", {"stage": STAGE, "reason": "deadline"}) == 1.0
        await b.close()

    run(go())


def test_batch_of_only_expired_items_never_calls_handler_and_stage_goes_on() -> None:
    async def go() -> None:
        clock = FakeClock(100.0)
        h = Handler()
        b = make_batcher(h, clock=clock)
        expired = submit_all(b, ["x", "y"], deadline=50.0)
        await settle()
        b.start()
        results = await asyncio.gather(*expired, return_exceptions=True)
        assert all(isinstance(r, DeadlineExceededError) for r in results)
        assert h.batches == []
        assert await b.submit("z", None) == ("ok", "z")
        assert b.pending == 0
        await b.close()

    run(go())


# --------------------------------------------------------------------------------------------
# Back-pressure
# --------------------------------------------------------------------------------------------


def test_submit_over_max_pending_is_queue_full_with_retry_after() -> None:
    async def go() -> None:
        m = Metrics()
        h = Handler()
        b = make_batcher(h, max_pending=2, metrics=m)
        waiting = submit_all(b, ["a", "b"])
        await settle()
        with pytest.raises(ResourceExhaustedError) as ei:
            await b.submit("c", None)
        err = ei.value
        assert err.reason == Reason.QUEUE_FULL
        assert err.retry_after_s is not None and err.retry_after_s > 0
        assert err.metadata == {"stage": STAGE}
        assert sample(m, "vlmguard_queue_rejected_total") == 1.0
        assert sample(m, "vlmguard_queue_depth") == 2.0
        b.start()
        assert await asyncio.gather(*waiting) == [("ok", "a"), ("ok", "b")]
        assert h.batches == [["a", "b"]]  # the refused item never ran
        assert await b.submit("d", None) == ("ok", "d")  # room again
        await b.close()

    run(go())


def test_running_items_count_towards_max_pending() -> None:
    async def go() -> None:
        h = Handler()
        h.release = asyncio.Event()
        b = make_batcher(h, max_batch_size=1, max_pending=2)
        b.start()
        running = submit_all(b, ["a"])
        await h.started.wait()
        waiting = submit_all(b, ["b"])
        await settle()
        assert b.pending == 2
        with pytest.raises(ResourceExhaustedError):
            await b.submit("c", None)
        h.release.set()
        assert await asyncio.gather(*running, *waiting) == [("ok", "a"), ("ok", "b")]
        await b.close()

    run(go())


def test_metrics_record_batch_sizes_waits_and_depth() -> None:
    async def go() -> None:
        m = Metrics()
        b = make_batcher(Handler(), max_batch_size=3, metrics=m)
        tasks = submit_all(b, range(5))
        await settle()
        assert sample(m, "vlmguard_queue_depth") == 5.0
        b.start()
        await asyncio.gather(*tasks)
        assert sample(m, "vlmguard_queue_batch_size_count") == 2.0
        assert sample(m, "vlmguard_queue_batch_size_sum") == 5.0
        assert sample(m, "vlmguard_queue_wait_seconds_count") == 5.0
        await b.close()
        assert sample(m, "vlmguard_queue_depth") == 0.0

    run(go())


# --------------------------------------------------------------------------------------------
# Shutdown and cancellation
# --------------------------------------------------------------------------------------------


def test_close_fails_waiting_items_finishes_running_batch_and_refuses_new_items() -> None:
    async def go() -> None:
        h = Handler()
        h.release = asyncio.Event()
        b = make_batcher(h, max_batch_size=1)
        b.start()
        running = asyncio.create_task(b.submit("running", None))
        await h.started.wait()
        waiting = submit_all(b, ["w1", "w2"])
        await settle()
        closing = asyncio.create_task(b.close())
        await settle()
        for t in waiting:
            assert t.done()
            err = t.exception()
            assert isinstance(err, UnavailableError)
            assert err.reason == Reason.STAGE_UNAVAILABLE
        assert not closing.done()  # still finishing the running batch
        assert not running.done()
        h.release.set()
        assert await running == ("ok", "running")
        await closing
        assert h.batches == [["running"]]
        with pytest.raises(UnavailableError) as ei:
            await b.submit("late", None)
        assert ei.value.reason == Reason.STAGE_UNAVAILABLE
        assert b.pending == 0

    run(go())


def test_close_of_an_idle_or_never_started_batcher_returns() -> None:
    async def go() -> None:
        idle = make_batcher(Handler())
        idle.start()
        await settle()
        await idle.close()
        never = make_batcher(Handler())
        waiting = submit_all(never, ["a"])
        await settle()
        await never.close()
        with pytest.raises(UnavailableError):
            await waiting[0]

    run(go())


def test_close_timeout_fails_the_stuck_batch_instead_of_stranding_callers() -> None:
    # Regression: when close() gave up on a stuck handler it cancelled the runner, and the
    # callers of the running batch waited forever.
    async def go() -> None:
        h = Handler()
        h.release = asyncio.Event()  # never set
        b = make_batcher(h)
        b.start()
        stuck = submit_all(b, ["a", "b"])
        await h.started.wait()
        await b.close(timeout=0)
        results = await asyncio.gather(*stuck, return_exceptions=True)
        for r in results:
            assert isinstance(r, UnavailableError)
            assert r.reason == Reason.STAGE_UNAVAILABLE

    run(go())


def test_cancelled_waiting_caller_is_skipped_and_others_are_served() -> None:
    async def go() -> None:
        h = Handler()
        b = make_batcher(h)
        a, gone, c = submit_all(b, ["a", "gone", "c"])
        await settle()
        gone.cancel()
        await settle()
        b.start()
        assert await asyncio.gather(a, c) == [("ok", "a"), ("ok", "c")]
        assert gone.cancelled()
        assert h.batches == [["a", "c"]]
        await b.close()

    run(go())


def test_caller_cancelled_while_its_batch_runs_does_not_break_the_batch() -> None:
    async def go() -> None:
        h = Handler()
        h.release = asyncio.Event()
        b = make_batcher(h)
        a, gone, c = submit_all(b, ["a", "gone", "c"])
        await settle()
        b.start()
        await h.started.wait()
        gone.cancel()
        await settle()
        h.release.set()
        assert await asyncio.gather(a, c) == [("ok", "a"), ("ok", "c")]
        assert gone.cancelled()
        assert h.batches == [["a", "gone", "c"]]
        h.release = None
        assert await b.submit("next", None) == ("ok", "next")  # the runner is fine
        await b.close()

    run(go())


# --------------------------------------------------------------------------------------------
# InProcessQueue
# --------------------------------------------------------------------------------------------


def test_queue_routes_items_to_their_stage() -> None:
    async def go() -> None:
        ha, hb = Handler(lambda x: ("A", x)), Handler(lambda x: ("B", x))
        q = InProcessQueue(
            [
                StageSpec("a", ha, BatchingConfig(max_batch_size=4, max_wait_ms=0)),
                StageSpec("b", hb, BatchingConfig(max_batch_size=4, max_wait_ms=0)),
            ],
            max_pending=10,
            clock=FakeClock(),
        )
        await q.start()
        ra, rb = await asyncio.gather(q.submit("a", 1), q.submit("b", 2))
        assert (ra, rb) == (("A", 1), ("B", 2))
        assert ha.batches == [[1]] and hb.batches == [[2]]
        assert q.pending("a") == 0
        await q.close()

    run(go())


def test_queue_unknown_stage_is_unavailable() -> None:
    async def go() -> None:
        q = InProcessQueue([], max_pending=10)
        await q.start()
        with pytest.raises(UnavailableError) as ei:
            await q.submit("nope", 1)
        assert ei.value.reason == Reason.STAGE_UNAVAILABLE
        assert q.pending("nope") == 0
        await q.close()

    run(go())


def test_queue_passes_deadline_and_clock_to_its_batchers() -> None:
    async def go() -> None:
        clock = FakeClock(10.0)
        m = Metrics()
        h = Handler()
        q = InProcessQueue(
            [StageSpec(STAGE, h, BatchingConfig(max_batch_size=4, max_wait_ms=0))],
            max_pending=10,
            metrics=m,
            clock=clock,
        )
        await q.start()
        with pytest.raises(DeadlineExceededError):
            await q.submit(STAGE, "late", deadline=9.0)
        assert await q.submit(STAGE, "ok", deadline=11.0) == ("ok", "ok")
        assert sample(m, "vlmguard_queue_expired_total") == 1.0
        await q.close()

    run(go())


def test_queue_close_refuses_later_submits() -> None:
    async def go() -> None:
        q = InProcessQueue(
            [StageSpec(STAGE, Handler(), BatchingConfig(max_batch_size=4, max_wait_ms=0))],
            max_pending=1,
        )
        await q.start()
        await q.close()
        with pytest.raises(UnavailableError) as ei:
            await q.submit(STAGE, 1)
        assert ei.value.reason == Reason.STAGE_UNAVAILABLE

    run(go())


def test_queue_full_applies_per_stage() -> None:
    async def go() -> None:
        q = InProcessQueue(
            [
                StageSpec("a", Handler(), BatchingConfig(max_wait_ms=0)),
                StageSpec("b", Handler(), BatchingConfig(max_wait_ms=0)),
            ],
            max_pending=1,
            clock=FakeClock(),
        )
        first = asyncio.create_task(q.submit("a", 1))  # not started: stays pending
        await settle()
        with pytest.raises(ResourceExhaustedError):
            await q.submit("a", 2)
        other = asyncio.create_task(q.submit("b", 3))  # another stage still has room
        await settle()
        assert q.pending("a") == 1 and q.pending("b") == 1
        await q.start()
        assert await asyncio.gather(first, other) == [("ok", 1), ("ok", 3)]
        await q.close()

    run(go())


def test_poison_item_raising_inside_the_batch_fails_alone() -> None:
    """A handler that raises for a whole batch is retried in halves: only the poison fails."""
    batches: list[list[Any]] = []

    async def handler(items: Sequence[Any]) -> Sequence[Any]:
        batches.append(list(items))
        if "poison" in items:
            raise RuntimeError("the model choked on one input")
        return [x.upper() for x in items]

    async def go() -> None:
        b = make_batcher(handler)
        tasks = submit_all(b, ["a", "b", "poison", "d", "e"])
        await settle()
        b.start()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert results[:2] == ["A", "B"] and results[3:] == ["D", "E"]
        assert isinstance(results[2], UnavailableError)
        assert results[2].reason == Reason.STAGE_FAILED
        assert "choked" not in results[2].message
        assert batches[0] == ["a", "b", "poison", "d", "e"]  # one batch first, then halves
        assert ["poison"] in batches and len(batches) <= 7
        await b.close()

    run(go())


def test_poison_item_raising_a_vlmguard_error_keeps_its_reason() -> None:
    async def handler(items: Sequence[Any]) -> Sequence[Any]:
        if "bad" in items:
            raise InvalidArgumentError("unreadable image", reason="IMAGE_UNDECODABLE")
        return list(items)

    async def go() -> None:
        b = make_batcher(handler)
        tasks = submit_all(b, ["x", "bad", "y"])
        await settle()
        b.start()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert results[0] == "x" and results[2] == "y"
        assert isinstance(results[1], InvalidArgumentError)
        assert results[1].reason == "IMAGE_UNDECODABLE"
        await b.close()

    run(go())


def test_batch_that_always_raises_ends_after_bounded_retries() -> None:
    calls = {"n": 0}

    async def handler(items: Sequence[Any]) -> Sequence[Any]:
        calls["n"] += 1
        raise RuntimeError("model down")

    async def go() -> None:
        b = make_batcher(handler)
        tasks = submit_all(b, [str(i) for i in range(8)])
        await settle()
        b.start()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, UnavailableError) and r.reason == Reason.STAGE_FAILED
                   for r in results)
        assert calls["n"] == 2 * 8 - 1  # the bisection tree, never a loop
        await b.close()

    run(go())

"""The Redis Streams queue against a real redis-server: round trips, faults, drain, backpressure.

A redis-server is started on a free loopback port for this module (no persistence) and killed at
teardown; each test starts from an empty database. Worker processes that must die mid-batch use
the scriptable echo backend in ``tests/support/queue_backends.py``, so no model weights load in
them.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.redis_server import RedisServer, redis_binary
from vlmguard.config import BatchingConfig, VLMGuardConfig, load_config
from vlmguard.domain import GenerationParams, TargetItem, TargetResult
from vlmguard.errors import (
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
    Reason,
    ResourceExhaustedError,
    UnavailableError,
)
from vlmguard.metrics import Metrics
from vlmguard.queue.base import StageSpec
from vlmguard.queue.codec import encode
from vlmguard.queue.redis_streams import RedisStreamsQueue

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ECHO = "tests.support.queue_backends:EchoTargetBackend"


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(redis_binary(), tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    if redis_server.proc is None:  # a test stopped it
        redis_server.start()
    redis_server.flush()
    return redis_server.url


def _cfg(url: str, tmp: Path | None = None, **queue: Any) -> VLMGuardConfig:
    return load_config(None, environ={}, overrides={
        "queue": {"url": url, **queue},
        "target": {"backend": ECHO, "model_path": str(tmp or ""), "max_wait_ms": 2.0},
        "metrics": {"enabled": False},
    })


def _item(text: str) -> TargetItem:
    return TargetItem(text, (), (), GenerationParams())


def _gateway_queue(cfg: VLMGuardConfig, **kw: Any) -> RedisStreamsQueue:
    return RedisStreamsQueue(cfg.queue, stages=["analyze", "target"],
                             max_pending=kw.pop("max_pending", cfg.limits.max_pending), **kw)


def _spawn_worker(cfg_file: Path, env_extra: dict[str, str] | None = None) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env_extra or {})}
    env.pop("VLMGUARD_QUEUE_URL", None)
    return subprocess.Popen(
        [sys.executable, "-m", "vlmguard.cli", "worker", "--stage", "target",
         "--config", str(cfg_file)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _write_cfg(path: Path, url: str, ctrl: Path, **queue: Any) -> Path:
    path.write_text(yaml.safe_dump({
        "queue": {"url": url, **queue},
        "target": {"backend": ECHO, "model_path": str(ctrl), "max_wait_ms": 2.0},
        "metrics": {"enabled": False},
    }))
    return path


async def _wait_for(pred: Any, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def _kill(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


# -- round trips -----------------------------------------------------------------------------


def test_target_round_trip_with_poison_item_and_none_backend(redis_url: str) -> None:
    from vlmguard.serving.worker import build_worker
    from vlmguard.target.base import NoneTargetBackend

    cfg = _cfg(redis_url)

    async def scenario() -> None:
        metrics = Metrics()
        worker = build_worker(cfg, "target", metrics=metrics)
        gw = _gateway_queue(cfg)
        await worker.start()
        await gw.start()
        try:
            deadline = time.monotonic() + 20
            results = await asyncio.gather(
                *(gw.submit("target", _item(t), deadline=deadline)
                  for t in ("a", "poison", "c")),
                return_exceptions=True,
            )
            assert isinstance(results[0], TargetResult) and results[0].text == "echo:a"
            assert isinstance(results[1], InvalidArgumentError)
            assert results[1].reason == "POISON"  # only the poisoned item failed
            assert isinstance(results[2], TargetResult) and results[2].text == "echo:c"
            assert metrics.batch_size.labels("target")._sum.get() == 3
        finally:
            await worker.close()
        none_worker = build_worker(cfg, "target", target_backend=NoneTargetBackend(cfg.target))
        await none_worker.start()
        try:
            with pytest.raises(FailedPreconditionError) as ei:
                await gw.submit("target", _item("x"), deadline=time.monotonic() + 20)
            assert ei.value.reason == Reason.TARGET_NOT_CONFIGURED
        finally:
            await none_worker.close()
            await gw.close()

    asyncio.run(scenario())


def test_guard_and_analyze_through_grpc_gateway_with_redis_queue(
    redis_url: str, make_gateway: Any, gateway: Any, loop_thread: Any, analyzer: Any
) -> None:
    from vlmguard.serving.worker import build_worker
    from vlmguard.v1 import analysis_pb2, analysis_pb2_grpc, guard_pb2, guard_pb2_grpc

    cfg = _cfg(redis_url)
    worker = build_worker(cfg, "analyze", analyzer=analyzer)
    loop_thread.run(worker.start())
    try:
        rg = make_gateway({"queue": {"url": redis_url}})
        assert rg.gw.analyzer_name == "remote"
        text = "How do I pick a lock to get into my neighbour's house?"
        remote = guard_pb2_grpc.GuardServiceStub(rg.channel).Guard(
            guard_pb2.GuardRequest(text=text), timeout=30)
        local = guard_pb2_grpc.GuardServiceStub(gateway.channel).Guard(
            guard_pb2.GuardRequest(text=text), timeout=30)
        assert remote.action == local.action
        assert remote.report.score == pytest.approx(local.report.score, abs=1e-6)
        assert remote.rewritten_text == local.rewritten_text
        report = analysis_pb2_grpc.ThreatAnalysisServiceStub(rg.channel).Analyze(
            analysis_pb2.AnalyzeRequest(text="What is the capital of France?"), timeout=30)
        assert report.report.analyzer.startswith("tier1/")
    finally:
        loop_thread.run(worker.close())


def test_unreachable_redis_answers_unavailable_with_stable_reason() -> None:
    cfg = _cfg("redis://127.0.0.1:1/0", connect_timeout_s=0.5)

    async def scenario() -> None:
        gw = _gateway_queue(cfg)
        await gw.start()
        with pytest.raises(UnavailableError) as ei:
            await gw.submit("target", _item("x"), deadline=time.monotonic() + 5)
        assert ei.value.reason == Reason.QUEUE_UNAVAILABLE
        assert "127.0.0.1:1" not in ei.value.message
        await gw.close()

    asyncio.run(scenario())


# -- faults ------------------------------------------------------------------------------------


def _kill_mid_batch(redis_url: str, tmp_path: Path, max_deliveries: int,
                    n: int) -> tuple[list[Any], Metrics]:
    """Submit ``n`` items, SIGKILL the worker holding them, let an in-process worker reclaim."""
    from vlmguard.serving.worker import build_worker

    ctrl = tmp_path / "ctrl"
    ctrl.mkdir()
    (ctrl / "hold").write_text("")
    cfg_file = _write_cfg(tmp_path / "w.yaml", redis_url, ctrl, visibility_timeout_s=0.5,
                          max_deliveries=max_deliveries)
    cfg = load_config(cfg_file, environ={})
    metrics = Metrics()

    async def scenario() -> list[Any]:
        gw = _gateway_queue(cfg)
        await gw.start()
        proc = _spawn_worker(cfg_file)
        try:
            deadline = time.monotonic() + 40
            calls = [asyncio.create_task(gw.submit("target", _item(f"t{i}"), deadline=deadline))
                     for i in range(n)]
            await _wait_for(lambda: any(ctrl.glob("started-*")) or proc.poll() is not None)
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            (ctrl / "hold").unlink()
            rescuer = build_worker(cfg, "target", metrics=metrics)
            await rescuer.start()
            try:
                results = await asyncio.gather(*calls, return_exceptions=True)
            finally:
                await rescuer.close()
            return results
        finally:
            _kill(proc)
            await gw.close()

    return asyncio.run(scenario()), metrics


def test_sigkilled_worker_batch_is_reclaimed_and_answered_once(
    redis_url: str, tmp_path: Path
) -> None:
    results, metrics = _kill_mid_batch(redis_url, tmp_path, max_deliveries=3, n=3)
    assert [r.text for r in results] == ["echo:t0", "echo:t1", "echo:t2"]
    assert all(r.model == f"echo/{os.getpid()}" for r in results)  # the rescuer answered
    assert metrics.redeliveries.labels("target")._value.get() == 3

    async def leftovers() -> tuple[int, int, int]:
        import redis.asyncio as aioredis

        r = aioredis.Redis.from_url(redis_url)  # the queue's own client is closed by now
        try:
            replies = [k async for k in r.scan_iter("vlmguard:replies:*")]
            pending = (await r.xpending("vlmguard:stream:target", "workers"))["pending"]
            return len(replies), pending, await r.xlen("vlmguard:stream:target")
        finally:
            await r.aclose()

    replies, pending, backlog = asyncio.run(leftovers())
    # Every answer was taken by its gateway (which deleted its reply list on close); every
    # entry was acked and deleted: nothing is left to answer twice.
    assert (replies, pending, backlog) == (0, 0, 0)


def test_item_is_dead_lettered_after_max_deliveries(redis_url: str, tmp_path: Path) -> None:
    results, metrics = _kill_mid_batch(redis_url, tmp_path, max_deliveries=1, n=1)
    assert isinstance(results[0], UnavailableError)
    assert results[0].reason == Reason.DEAD_LETTERED
    assert metrics.dead_letters.labels("target")._value.get() == 1


def test_duplicate_delivery_never_gives_a_second_answer(redis_url: str) -> None:
    """Two workers hold one entry (the second reclaimed it); both answer; the first wins."""
    cfg = _cfg(redis_url)

    async def scenario() -> None:
        gw = _gateway_queue(cfg)
        spec = StageSpec("target", _never_called, BatchingConfig())
        workers = [RedisStreamsQueue(cfg.queue, stages=["target"], consume=[spec], max_pending=10,
                                     consumer=name) for name in ("slow", "rescuer")]
        await gw.start()
        r = gw._client()
        stream = gw.stream_key("target")
        await workers[0]._ensure_group("target")
        call = asyncio.create_task(gw.submit("target", _item("x"), deadline=time.monotonic() + 20))
        await _wait_for_async(lambda: r.xlen(stream), 1)
        got = await r.xreadgroup("workers", "slow", {stream: ">"}, count=1)
        (entry_id, fields), = got[0][1]
        _, claimed, _ = await r.xautoclaim(stream, "workers", "rescuer", min_idle_time=0)
        assert [i for i, _ in claimed] == [entry_id]
        first = await workers[1]._finish(
            "target", [(entry_id, fields, encode(TargetResult("first", "m")))], [])
        second = await workers[0]._finish(
            "target", [(entry_id, fields, encode(TargetResult("second", "m")))], [])
        assert (first, second) == (1, 0)  # the second answer was never pushed
        assert (await call).text == "first"
        assert await r.llen(gw.replies_key()) == 0
        assert await r.xlen(stream) == 0
        await gw.close()
        assert not await workers[0]._client().exists(gw.replies_key())  # deleted on close
        for w in workers:
            await w.close()

    asyncio.run(scenario())


async def _never_called(items: Any) -> list[Any]:
    raise AssertionError("not run in this test")


def test_two_gateways_sharing_redis_each_get_only_their_own_answers(redis_url: str) -> None:
    """150 concurrent calls per gateway: more than redis-py's default pool of 100 connections,
    which capped the concurrent calls of a gateway when each call held its own BLPOP."""
    cfg = _cfg(redis_url, worker_block_ms=100)  # close() waits out a blocked read

    async def handler(items: Any) -> list[Any]:
        return [TargetResult(f"echo:{i.text}", "m") for i in items]

    async def scenario() -> None:
        worker = RedisStreamsQueue(
            cfg.queue, stages=["target"], max_pending=1000,
            consume=[StageSpec("target", handler, BatchingConfig(max_batch_size=16,
                                                                max_wait_ms=1))])
        gws = [_gateway_queue(cfg), _gateway_queue(cfg)]
        assert gws[0].replies_key() != gws[1].replies_key()
        for q in (worker, *gws):
            await q.start()
        try:
            deadline = time.monotonic() + 20
            calls = [(g, f"g{g}-{i}") for i in range(150) for g in (0, 1)]
            results = await asyncio.gather(*(
                gws[g].submit("target", _item(text), deadline=deadline) for g, text in calls))
            assert [x.text for x in results] == [f"echo:{text}" for _, text in calls]
            r = gws[0]._client()
            assert await r.xlen(gws[0].stream_key("target")) == 0
            for g in gws:
                assert await r.llen(g.replies_key()) == 0
        finally:
            await worker.close()
            for g in gws:
                await g.close()

    asyncio.run(scenario())


def test_dead_gateways_reply_list_expires(redis_url: str) -> None:
    """Answers to a gateway that died sit in its list with a TTL, and never grow it forever."""
    cfg = _cfg(redis_url, result_ttl_s=30, worker_block_ms=100)

    async def handler(items: Any) -> list[Any]:
        return [TargetResult("x", "m") for _ in items]

    async def scenario() -> None:
        worker = RedisStreamsQueue(cfg.queue, stages=["target"], max_pending=10,
                                   consume=[StageSpec("target", handler, BatchingConfig())])
        await worker.start()
        r = worker._client()
        stream, gone = worker.stream_key("target"), "0123456789abcdef"
        try:
            await worker._ensure_group("target")
            for token in (b"%016x" % 1, b"%016x" % 2):  # what a gateway that died enqueued
                await r.xadd(stream, {"reply": token, "to": gone, "rid": "", "deadline": "",
                                      "body": encode(_item("x"))})
            key = worker.replies_key(gone)
            for _ in range(500):
                if await r.llen(key) == 2:
                    break
                await asyncio.sleep(0.01)
            assert await r.llen(key) == 2
            assert 0 < await r.ttl(key) <= 30
            assert await r.xlen(stream) == 0
        finally:
            await worker.close()

    asyncio.run(scenario())


def test_burst_beyond_the_pending_bound_is_refused_at_once(redis_url: str) -> None:
    cfg = _cfg(redis_url)

    async def scenario() -> None:
        metrics = Metrics()
        gw = _gateway_queue(cfg, max_pending=3, metrics=metrics)
        await gw.start()
        deadline = time.monotonic() + 30
        t0 = time.monotonic()
        calls = [asyncio.create_task(gw.submit("target", _item(str(i)), deadline=deadline))
                 for i in range(8)]
        await asyncio.wait(calls, timeout=5, return_when=asyncio.FIRST_COMPLETED)
        await asyncio.sleep(0.05)
        done = {t for t in calls if t.done()}
        assert time.monotonic() - t0 < 2
        assert len(done) == 5 and all(
            isinstance(t.exception(), ResourceExhaustedError) for t in done)
        assert metrics.rejected.labels("target")._value.get() == 5
        r = gw._client()
        assert await r.xlen(gw.stream_key("target")) == 3
        for t in calls:
            t.cancel()
        await asyncio.gather(*calls, return_exceptions=True)
        for _ in range(200):  # cancelled callers withdraw their entries
            if await r.xlen(gw.stream_key("target")) == 0:
                break
            await asyncio.sleep(0.01)
        assert await r.xlen(gw.stream_key("target")) == 0
        await gw.close()

    asyncio.run(scenario())


def test_queue_full_is_answered_at_once(redis_url: str) -> None:
    cfg = _cfg(redis_url)

    async def scenario() -> None:
        metrics = Metrics()
        gw = _gateway_queue(cfg, max_pending=2, metrics=metrics)
        await gw.start()
        deadline = time.monotonic() + 30
        waiting = [asyncio.create_task(gw.submit("target", _item(str(i)), deadline=deadline))
                   for i in range(2)]
        r = gw._client()
        for _ in range(500):  # until both sit in the stream (no worker consumes them)
            if await r.xlen(gw.stream_key("target")) == 2:
                break
            await asyncio.sleep(0.01)
        with pytest.raises(ResourceExhaustedError) as ei:
            await gw.submit("target", _item("x"), deadline=deadline)
        assert ei.value.reason == Reason.QUEUE_FULL and ei.value.retry_after_s
        assert not any(t.done() for t in waiting)
        assert metrics.rejected.labels("target")._value.get() == 1
        for t in waiting:
            t.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        await gw.close()

    asyncio.run(scenario())


def test_expired_items_are_dropped_unrun_and_counted(redis_url: str) -> None:
    cfg = _cfg(redis_url)
    ran: list[Any] = []

    async def handler(items: Any) -> list[Any]:
        ran.extend(items)
        return [TargetResult("x", "m") for _ in items]

    async def scenario() -> None:
        metrics = Metrics()
        # The worker's wall clock runs 1000 s ahead: every deadline has passed for it.
        worker = RedisStreamsQueue(
            cfg.queue, stages=["target"], max_pending=10, metrics=metrics,
            consume=[StageSpec("target", handler, BatchingConfig(max_batch_size=4))],
            wall_clock=lambda: time.time() + 1000)
        gw = _gateway_queue(cfg)
        await gw.start()
        await worker.start()
        try:
            with pytest.raises(DeadlineExceededError):
                await gw.submit("target", _item("late"), deadline=time.monotonic() + 20)
            assert ran == []
            assert metrics.expired.labels("target")._value.get() == 1
        finally:
            await worker.close()
            await gw.close()

    asyncio.run(scenario())


def test_redis_outage_gives_unavailable_then_workers_resume(
    redis_url: str, redis_server: RedisServer
) -> None:
    from vlmguard.serving.worker import build_worker

    cfg = _cfg(redis_url, worker_backoff_max_s=0.2, worker_block_ms=200)

    async def scenario() -> None:
        worker = build_worker(cfg, "target")
        gw = _gateway_queue(cfg)
        await worker.start()
        await gw.start()
        try:
            assert (await gw.submit("target", _item("a"),
                                    deadline=time.monotonic() + 10)).text == "echo:a"
            redis_server.stop()
            with pytest.raises(UnavailableError) as ei:
                await gw.submit("target", _item("b"), deadline=time.monotonic() + 10)
            assert ei.value.reason == Reason.QUEUE_UNAVAILABLE
            await asyncio.sleep(0.3)  # the worker is now backing off
            redis_server.start()
            # The worker recreates its group by itself; calls succeed again.
            result = await gw.submit("target", _item("c"), deadline=time.monotonic() + 20)
            assert result.text == "echo:c"
        finally:
            await worker.close()
            await gw.close()

    asyncio.run(scenario())


def test_sigterm_drains_the_batch_in_hand_and_exits_zero(
    redis_url: str, tmp_path: Path
) -> None:
    ctrl = tmp_path / "ctrl"
    ctrl.mkdir()
    (ctrl / "hold").write_text("")
    cfg_file = _write_cfg(tmp_path / "w.yaml", redis_url, ctrl)
    cfg = load_config(cfg_file, environ={})

    async def scenario() -> None:
        gw = _gateway_queue(cfg)
        await gw.start()
        proc = _spawn_worker(cfg_file)
        try:
            call = asyncio.create_task(gw.submit("target", _item("in-hand"),
                                                 deadline=time.monotonic() + 40))
            await _wait_for(lambda: any(ctrl.glob("started-*")) or proc.poll() is not None)
            proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.2)
            assert proc.poll() is None  # still finishing its batch
            (ctrl / "release").write_text("")
            result = await call
            assert result.text == "echo:in-hand"
            rc = await asyncio.to_thread(proc.wait, 20)
            assert rc == 0, proc.stdout.read() if proc.stdout else ""
        finally:
            _kill(proc)
            await gw.close()

    asyncio.run(scenario())



def test_poison_item_that_makes_the_batch_raise_fails_alone(redis_url: str) -> None:
    """A batch handler raising for one input: only that item fails, its batch-mates succeed.

    The four items are in the stream before the worker starts, so they arrive as one batch; the
    echo backend raises for the whole call when it sees ``explode``; the worker retries the batch
    in halves, answers the poison item STAGE_FAILED and acks everything (no redelivery loop,
    nothing dead-lettered).
    """
    from tests.support.queue_backends import EchoTargetBackend
    from vlmguard.serving.worker import build_worker

    cfg = _cfg(redis_url, visibility_timeout_s=0.5)

    async def scenario() -> None:
        metrics = Metrics()
        gw = _gateway_queue(cfg)
        await gw.start()
        deadline = time.monotonic() + 20
        texts = ["a", "b", "explode", "d"]
        calls = [asyncio.create_task(gw.submit("target", _item(t), deadline=deadline))
                 for t in texts]
        r = gw._client()
        await _wait_for_async(lambda: r.xlen(gw.stream_key("target")), len(texts))
        EchoTargetBackend.calls.clear()
        worker = build_worker(cfg, "target", metrics=metrics)
        await worker.start()
        try:
            results = await asyncio.gather(*calls, return_exceptions=True)
            assert [getattr(x, "text", None) for x in results] == [
                "echo:a", "echo:b", None, "echo:d"]
            assert isinstance(results[2], UnavailableError)
            assert results[2].reason == Reason.STAGE_FAILED
            assert "choked" not in results[2].message
            assert EchoTargetBackend.calls[0] == 4  # one batch, then its halves
            assert metrics.batch_size.labels("target")._sum.get() == 4
            await asyncio.sleep(1.0)  # past the visibility timeout: nothing comes back
            assert metrics.redeliveries.labels("target")._value.get() == 0
            assert metrics.dead_letters.labels("target")._value.get() == 0
            assert await r.xlen(gw.stream_key("target")) == 0
            assert await r.xlen(gw.dead_key("target")) == 0
            assert len(EchoTargetBackend.calls) <= 5
        finally:
            await worker.close()
            await gw.close()

    asyncio.run(scenario())


async def _wait_for_async(get: Any, want: int, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while await get() != want:
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def test_caller_that_gives_up_withdraws_its_item(redis_url: str) -> None:
    """A call past its deadline takes its entry back: a worker started later never runs it."""
    cfg = _cfg(redis_url)
    ran: list[str] = []

    async def handler(items: Any) -> list[Any]:
        ran.extend(i.text for i in items)
        return [TargetResult(f"echo:{i.text}", "m") for i in items]

    async def scenario() -> None:
        gw = _gateway_queue(cfg)
        await gw.start()
        worker = RedisStreamsQueue(cfg.queue, stages=["target"], max_pending=10,
                                   consume=[StageSpec("target", handler, BatchingConfig())])
        r = gw._client()
        await worker._ensure_group("target")
        try:
            with pytest.raises(DeadlineExceededError):
                await gw.submit("target", _item("late"), deadline=time.monotonic() + 0.3)
            await _wait_for_async(lambda: r.xlen(gw.stream_key("target")), 0)
            await worker.start()
            got = await gw.submit("target", _item("b"), deadline=time.monotonic() + 20)
            assert got.text == "echo:b" and ran == ["b"]
            assert gw.pending("target") == 0 and not gw._waiters
        finally:
            await worker.close()
            await gw.close()

    asyncio.run(scenario())


def test_lost_reader_connection_fails_waiting_calls_unavailable(
    redis_url: str, redis_server: RedisServer
) -> None:
    """Redis dies while calls wait: they fail UNAVAILABLE at once, not at their deadline."""
    cfg = _cfg(redis_url)

    async def scenario() -> None:
        gw = _gateway_queue(cfg)
        await gw.start()
        r = gw._client()
        try:
            t0 = time.monotonic()
            calls = [asyncio.create_task(gw.submit("target", _item(str(i)),
                                                   deadline=time.monotonic() + 30))
                     for i in range(3)]
            await _wait_for_async(lambda: r.xlen(gw.stream_key("target")), 3)
            redis_server.stop()
            results = await asyncio.gather(*calls, return_exceptions=True)
            assert time.monotonic() - t0 < 10
            assert all(isinstance(x, UnavailableError) and x.reason == Reason.QUEUE_UNAVAILABLE
                       for x in results), results
        finally:
            await gw.close()

    asyncio.run(scenario())


def test_batch_slower_than_the_visibility_timeout_runs_once(redis_url: str) -> None:
    """A live worker keeps its slow batch claimed: a second worker never reclaims and reruns it."""
    cfg = _cfg(redis_url, visibility_timeout_s=0.3)
    runs: list[str] = []

    async def slow(items: Any) -> list[Any]:
        runs.extend(f"{id(i)}" for i in items)
        await asyncio.sleep(1.5)  # five visibility timeouts
        return [TargetResult(f"done:{i.text}", "m") for i in items]

    async def scenario() -> None:
        gw = _gateway_queue(cfg)
        m = Metrics()
        workers = [RedisStreamsQueue(cfg.queue, stages=["target"], max_pending=10,
                                     consume=[StageSpec("target", slow, BatchingConfig())],
                                     consumer=name, metrics=m) for name in ("a", "b")]
        await gw.start()
        for w in workers:
            await w.start()
        try:
            res = await gw.submit("target", _item("x"), deadline=time.monotonic() + 20)
            assert res.text == "done:x"
            await asyncio.sleep(0.5)  # a reclaim would have happened by now
            assert len(runs) == 1, runs
            assert m.registry.get_sample_value("vlmguard_queue_redeliveries_total",
                                               {"stage": "target"}) in (None, 0.0)
        finally:
            await gw.close()
            for w in workers:
                await w.close()

    asyncio.run(scenario())

"""The Redis queue against a real redis-server: tenants share a stage fairly, worker heartbeats
drive the gateway's health, a stopping gateway drains with a reason, dropped callers are
counted, warnings of an outage are rate limited, and with default settings the items of a
SIGKILLed worker are answered before the default deadline."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.integration.test_redis_queue import _item, _kill, _spawn_worker, _wait_for, _write_cfg
from tests.support.redis_server import RedisServer, redis_binary
from vlmguard.config import BatchingConfig, load_config
from vlmguard.domain import TargetResult
from vlmguard.errors import Reason, ResourceExhaustedError, UnavailableError
from vlmguard.metrics import Metrics
from vlmguard.queue.base import StageSpec
from vlmguard.queue.redis_streams import RedisStreamsQueue

pytestmark = pytest.mark.integration

MP = 1_000_000


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
    redis_server.flush()
    return redis_server.url


def _queue_cfg(url: str, **queue: Any) -> Any:
    return load_config(None, environ={}, overrides={
        "queue": {"url": url, **queue}, "metrics": {"enabled": False}}).queue


def test_a_text_tenant_is_served_ahead_of_another_tenants_image_backlog(redis_url: str) -> None:
    qcfg = _queue_cfg(redis_url)
    order: list[str] = []

    async def handler(items: Sequence[Any]) -> list[Any]:
        await asyncio.sleep(0.1 * len(items))
        order.extend(i.text for i in items)
        return [TargetResult(i.text, "m") for i in items]

    async def scenario() -> None:
        gw = RedisStreamsQueue(qcfg, stages=["target"], max_pending=100)
        worker = RedisStreamsQueue(qcfg, stages=["target"], max_pending=100,
                                   max_batch_pixels=8 * MP,
                                   consume=[StageSpec("target", handler,
                                                      BatchingConfig(max_batch_size=4))])
        await gw.start()
        deadline = time.monotonic() + 20
        flood = [asyncio.create_task(gw.submit("target", _item(f"f{i}"), deadline=deadline,
                                               tenant="flood", pixels=25 * MP))
                 for i in range(12)]
        await _wait_for(lambda: gw.pending("target") == 12)
        await asyncio.sleep(0.05)  # enqueued before the worker starts: a backlog
        await worker.start()
        await _wait_for(lambda: len(order) >= 1)
        text = asyncio.create_task(gw.submit("target", _item("text"), deadline=deadline,
                                             tenant="calm"))
        assert (await text).text == "text"
        await asyncio.gather(*flood)
        # One stream per tenant: the text item overtakes the flood's backlog (FIFO on one
        # stream ran it last, after all 12 image requests).
        assert order.index("text") <= 4, order
        await gw.close()
        await worker.close()

    asyncio.run(scenario())


def test_gateway_health_needs_a_live_worker_per_stage(redis_url: str) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from vlmguard.gateway.server import SERVICE_NAMES, build_gateway

    cfg = load_config(None, environ={}, overrides={
        "server": {"listen": "127.0.0.1:0"}, "metrics": {"enabled": False},
        "queue": {"url": redis_url, "health_interval_s": 0.1, "worker_heartbeat_s": 0.2},
    })
    serving = health_pb2.HealthCheckResponse.SERVING
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING

    async def handler(items: Sequence[Any]) -> list[Any]:
        return list(items)

    async def scenario() -> None:
        gw = await build_gateway(cfg, environ={})
        await gw.start(serve_metrics=False)
        worker = RedisStreamsQueue(cfg.queue, stages=["analyze"], max_pending=10,
                                   consume=[StageSpec("analyze", handler, BatchingConfig())])
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as ch:
                stub = health_pb2_grpc.HealthStub(ch)

                async def until(want: int) -> None:
                    end = time.monotonic() + 5
                    while True:
                        got = {int((await stub.Check(health_pb2.HealthCheckRequest(
                            service=s), timeout=2)).status) for s in SERVICE_NAMES[:3]}
                        if got == {want}:
                            return
                        assert time.monotonic() < end, got
                        await asyncio.sleep(0.05)

                await until(not_serving)  # Redis answers, but nobody consumes analyze
                assert gw.metrics.registry.get_sample_value("vlmguard_queue_up") == 1.0
                await worker.start()
                await until(serving)
                assert gw.metrics.registry.get_sample_value(
                    "vlmguard_queue_workers", {"stage": "analyze"}) == 1.0
                await worker.close()  # leaves: its heartbeat is withdrawn at once
                await until(not_serving)
        finally:
            await worker.close()
            await gw.stop(grace=1)

    asyncio.run(scenario())


def test_embedded_gateway_reports_its_queue_up() -> None:
    from vlmguard.gateway.server import build_gateway

    class NoopAnalyzer:
        name = "noop"

        def analyze_batch(self, items: Sequence[Any]) -> list[Any]:
            return [UnavailableError("not used", reason=Reason.STAGE_FAILED) for _ in items]

    cfg = load_config(None, environ={}, overrides={
        "server": {"listen": "127.0.0.1:0"}, "metrics": {"enabled": False}})

    async def scenario() -> None:
        gw = await build_gateway(cfg, environ={}, analyzer=NoopAnalyzer())
        await gw.start(serve_metrics=False)
        try:
            assert gw.metrics.registry.get_sample_value("vlmguard_queue_up") == 1.0
        finally:
            await gw.stop(grace=0.5)

    asyncio.run(scenario())


def test_drain_answers_late_calls_with_a_reason_and_refuses_new_ones(redis_url: str) -> None:
    qcfg = _queue_cfg(redis_url)
    release = asyncio.Event()
    metrics = Metrics()

    async def handler(items: Sequence[Any]) -> list[Any]:
        await release.wait()
        return [TargetResult(i.text, "m") for i in items]

    async def scenario() -> None:
        gw = RedisStreamsQueue(qcfg, stages=["target"], max_pending=100, metrics=metrics)
        worker = RedisStreamsQueue(qcfg, stages=["target"], max_pending=100,
                                   consume=[StageSpec("target", handler, BatchingConfig())])
        await gw.start()
        await worker.start()
        deadline = time.monotonic() + 20
        late = [asyncio.create_task(gw.submit("target", _item(f"x{i}"), deadline=deadline))
                for i in range(3)]
        await _wait_for(lambda: gw.pending("target") == 3)
        drain = asyncio.create_task(gw.drain(0.3))
        await asyncio.sleep(0.05)
        with pytest.raises(UnavailableError) as e:
            await gw.submit("target", _item("new"), deadline=deadline)
        assert e.value.reason == Reason.SERVER_DRAINING
        await drain
        for r in await asyncio.gather(*late, return_exceptions=True):
            assert isinstance(r, UnavailableError) and r.reason == Reason.SERVER_DRAINING
        release.set()
        await gw.close()
        await worker.close()

    asyncio.run(scenario())


def test_callers_that_leave_are_counted_as_dropped(redis_url: str) -> None:
    qcfg = _queue_cfg(redis_url)
    metrics = Metrics()

    async def scenario() -> None:
        gw = RedisStreamsQueue(qcfg, stages=["target"], max_pending=100, metrics=metrics)
        await gw.start()
        gone = asyncio.create_task(gw.submit("target", _item("a"),
                                             deadline=time.monotonic() + 20))
        await _wait_for(lambda: gw.pending("target") == 1)
        await asyncio.sleep(0.05)
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        await gw.close()

    asyncio.run(scenario())
    assert metrics.registry.get_sample_value(
        "vlmguard_queue_dropped_total", {"stage": "target", "reason": "cancelled"}) == 1.0


def test_an_outage_logs_one_warning_per_interval_not_one_per_call(
        caplog: pytest.LogCaptureFixture) -> None:
    from tests.support.redis_server import free_port

    qcfg = _queue_cfg(f"redis://127.0.0.1:{free_port()}/0", connect_timeout_s=0.2)

    async def scenario() -> None:
        gw = RedisStreamsQueue(qcfg, stages=["target"], max_pending=1000)
        await gw.start()
        for _ in range(20):
            await asyncio.gather(*(gw.submit("target", _item("x"),
                                             deadline=time.monotonic() + 5)
                                   for _ in range(10)), return_exceptions=True)
        await gw.close()

    with caplog.at_level(logging.WARNING, logger="vlmguard.queue.redis_streams"):
        asyncio.run(scenario())
    lines = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert 1 <= len(lines) <= 3, [r.getMessage() for r in lines]


def test_sigkilled_worker_items_are_answered_before_the_default_deadline(
        redis_url: str, tmp_path: Path) -> None:
    """Default queue settings (visibility 5 s, deadline 30 s): a worker SIGKILLed with a batch
    in hand; another worker answers every item once, well before the deadline."""
    from vlmguard.serving.worker import build_worker

    ctrl = tmp_path / "ctrl"
    ctrl.mkdir()
    (ctrl / "hold").write_text("")
    cfg_file = _write_cfg(tmp_path / "w.yaml", redis_url, ctrl)
    cfg = load_config(cfg_file, environ={})
    assert cfg.queue.visibility_timeout_s * 3 <= cfg.server.default_timeout_s

    async def scenario() -> tuple[list[Any], float]:
        gw = RedisStreamsQueue(cfg.queue, stages=["target"], max_pending=100)
        await gw.start()
        proc = _spawn_worker(cfg_file)
        try:
            t0 = time.monotonic()
            deadline = t0 + cfg.server.default_timeout_s
            calls = [asyncio.create_task(gw.submit("target", _item(f"t{i}"), deadline=deadline))
                     for i in range(3)]
            await _wait_for(lambda: any(ctrl.glob("started-*")) or proc.poll() is not None)
            assert proc.poll() is None
            proc.kill()
            proc.wait(10)
            (ctrl / "hold").unlink()
            rescuer = build_worker(cfg, "target")
            await rescuer.start()
            try:
                results = await asyncio.gather(*calls, return_exceptions=True)
            finally:
                await rescuer.close()
            return results, time.monotonic() - t0
        finally:
            _kill(proc)
            await gw.close()

    results, took = asyncio.run(scenario())
    assert [getattr(r, "text", r) for r in results] == ["echo:t0", "echo:t1", "echo:t2"]
    assert took < cfg.server.default_timeout_s / 2


def test_stopping_redis_gateway_gives_late_calls_a_reason(redis_url: str) -> None:
    """SIGTERM path of a Redis-mode gateway: calls still waiting when the grace period ends
    fail UNAVAILABLE/SERVER_DRAINING (not cut without a reason); the worker keeps its batch."""
    from tests.support.helpers import error_reason
    from vlmguard.gateway.server import build_gateway
    from vlmguard.v1 import analysis_pb2, analysis_pb2_grpc

    cfg = load_config(None, environ={}, overrides={
        "server": {"listen": "127.0.0.1:0"}, "metrics": {"enabled": False},
        "queue": {"url": redis_url}})
    release = asyncio.Event()

    async def handler(items: Sequence[Any]) -> list[Any]:
        await release.wait()
        return [UnavailableError("unused", reason=Reason.STAGE_FAILED) for _ in items]

    async def scenario() -> list[Any]:
        worker = RedisStreamsQueue(cfg.queue, stages=["analyze"], max_pending=10,
                                   consume=[StageSpec("analyze", handler, BatchingConfig())])
        await worker.start()
        gw = await build_gateway(cfg, environ={})
        await gw.start(serve_metrics=False)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as ch:
                stub = analysis_pb2_grpc.ThreatAnalysisServiceStub(ch)
                async def one(i: int) -> Any:
                    return await stub.Analyze(analysis_pb2.AnalyzeRequest(text=f"q{i}"),
                                              timeout=20)

                calls = [asyncio.create_task(one(i)) for i in range(3)]
                await _wait_for(lambda: gw.queue.pending("analyze") == 3)
                await gw.stop(grace=0.3)
                return await asyncio.gather(*calls, return_exceptions=True)
        finally:
            release.set()
            await worker.close()

    for r in asyncio.run(scenario()):
        assert isinstance(r, grpc.RpcError), r
        code, reason, _ = error_reason(r)
        assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, Reason.SERVER_DRAINING)


def test_image_request_withdrawn_while_in_a_workers_hand_never_runs(redis_url: str) -> None:
    qcfg = _queue_cfg(redis_url)
    release = asyncio.Event()
    seen: list[str] = []
    wmetrics = Metrics()

    async def handler(items: Sequence[Any]) -> list[Any]:
        seen.extend(i.text for i in items)
        await release.wait()
        return [TargetResult(i.text, "m") for i in items]

    async def scenario() -> None:
        gw = RedisStreamsQueue(qcfg, stages=["target"], max_pending=100)
        worker = RedisStreamsQueue(qcfg, stages=["target"], max_pending=100,
                                   max_batch_pixels=8 * MP, metrics=wmetrics,
                                   consume=[StageSpec("target", handler,
                                                      BatchingConfig(max_batch_size=4))])
        await gw.start()
        deadline = time.monotonic() + 20
        first = asyncio.create_task(gw.submit("target", _item("a"), deadline=deadline,
                                              pixels=20 * MP))
        second = asyncio.create_task(gw.submit("target", _item("b"), deadline=deadline,
                                               pixels=20 * MP))
        await _wait_for(lambda: gw.pending("target") == 2)
        await asyncio.sleep(0.05)
        await worker.start()
        await _wait_for(lambda: seen == ["a"])  # b waits in the worker's hand (over budget)
        second.cancel()
        await asyncio.sleep(0.2)  # the withdrawal reaches Redis
        release.set()
        assert (await first).text == "a"
        await asyncio.sleep(0.3)
        assert seen == ["a"]  # b's caller left: never decoded, never run
        assert wmetrics.registry.get_sample_value(
            "vlmguard_queue_dropped_total", {"stage": "target", "reason": "cancelled"}) == 1.0
        await gw.close()
        await worker.close()

    asyncio.run(scenario())


def test_gateway_throttles_a_tenant_over_its_pixel_budget(redis_url: str) -> None:
    qcfg = _queue_cfg(redis_url)
    metrics = Metrics()

    async def scenario() -> None:
        gw = RedisStreamsQueue(qcfg, stages=["target"], max_pending=100, metrics=metrics,
                               max_tenant_pixels=50 * MP)
        await gw.start()
        deadline = time.monotonic() + 20
        held = asyncio.create_task(gw.submit("target", _item("a"), deadline=deadline,
                                             tenant="flood", pixels=40 * MP))
        await _wait_for(lambda: gw.pending("target") == 1)
        with pytest.raises(ResourceExhaustedError) as e:
            await gw.submit("target", _item("b"), deadline=deadline, tenant="flood",
                            pixels=40 * MP)
        assert e.value.reason == Reason.TENANT_BUDGET_EXHAUSTED
        other = asyncio.create_task(gw.submit("target", _item("c"), deadline=deadline,
                                              tenant="calm", pixels=40 * MP))
        await _wait_for(lambda: gw.pending("target") == 2)  # admitted
        held.cancel()
        other.cancel()
        await asyncio.gather(held, other, return_exceptions=True)
        await gw.close()

    asyncio.run(scenario())
    assert metrics.registry.get_sample_value("vlmguard_queue_throttled_total",
                                             {"stage": "target"}) == 1.0

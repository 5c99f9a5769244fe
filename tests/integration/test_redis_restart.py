"""Restarting redis-server (append-only file on) under load through a real gRPC gateway.

A gateway whose queue is Redis and an in-process ``target`` stage worker (the echo backend from
``tests/support/queue_backends.py``, which answers ``echo:<text>``) serve a steady stream of
TargetService.Generate calls, each with its own text. redis-server is SIGKILLed mid-run and
started again on the same port with the same data directory. Every call must either complete
with the answer to its own text or fail with UNAVAILABLE/QUEUE_UNAVAILABLE; afterwards new calls
succeed again without restarting the gateway or the worker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.support.helpers import error_reason
from tests.support.redis_server import RedisServer, redis_binary
from vlmguard.config import load_config
from vlmguard.errors import Reason

pytestmark = pytest.mark.integration

ECHO = "tests.support.queue_backends:EchoTargetBackend"
CLIENTS = 16
CALL_TIMEOUT_S = 5.0


@pytest.fixture
def aof_redis(tmp_path: Path) -> Iterator[RedisServer]:
    data = tmp_path / "redis-data"
    data.mkdir()
    server = RedisServer(redis_binary(), data, appendonly=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_redis_restart_mid_run_answers_right_or_unavailable_and_recovers(
    aof_redis: RedisServer,
) -> None:
    from vlmguard.gateway.server import build_gateway
    from vlmguard.serving.worker import build_worker
    from vlmguard.v1 import target_pb2, target_pb2_grpc

    cfg = load_config(None, environ={}, overrides={
        # Raw target access: this test is about the queue (only a target worker runs), so
        # Generate must not go through the guard's analyze stage first.
        "server": {"listen": "127.0.0.1:0",
                   "auth": {"anonymous_scopes": ["guard", "target_raw"]}},
        "metrics": {"enabled": False},
        "queue": {"url": aof_redis.url, "worker_backoff_max_s": 0.2, "worker_block_ms": 100,
                  "visibility_timeout_s": 1.0, "connect_timeout_s": 0.5},
        "target": {"backend": ECHO, "max_wait_ms": 2.0},
    })
    outcomes: list[tuple[str, str, Any]] = []  # (phase, sent text, answer text or error)

    async def scenario() -> None:
        t_start = time.monotonic()
        worker = build_worker(cfg, "target")
        gw = await build_gateway(cfg, environ={})
        await worker.start()
        await gw.start(serve_metrics=False)
        phase = "before"
        stop = asyncio.Event()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as ch:
                stub = target_pb2_grpc.TargetServiceStub(ch)

                async def one(text: str) -> Any:
                    try:
                        resp = await stub.Generate(target_pb2.GenerateRequest(text=text),
                                                   timeout=CALL_TIMEOUT_S)
                    except grpc.RpcError as e:
                        return e
                    return resp.text

                async def client(k: int) -> None:
                    i = 0
                    while not stop.is_set():
                        text = f"client{k}-call{i}"
                        i += 1
                        seen_phase = phase
                        outcomes.append((seen_phase, text, await one(text)))

                clients = [asyncio.create_task(client(k)) for k in range(CLIENTS)]
                await asyncio.sleep(0.5)
                phase = "outage"
                aof_redis.stop()  # SIGKILL: calls are in flight in the gateway and the worker
                await asyncio.sleep(0.5)
                await asyncio.to_thread(aof_redis.start)
                phase = "after"
                # Recovery: wait until fresh calls succeed again (bounded), then stop the load.
                end = time.monotonic() + 15
                while time.monotonic() < end:
                    fresh = [o for o in outcomes if o[0] == "after"]
                    if sum(isinstance(o[2], str) for o in fresh[-CLIENTS:]) == CLIENTS:
                        break
                    await asyncio.sleep(0.05)
                stop.set()
                await asyncio.wait_for(asyncio.gather(*clients), CALL_TIMEOUT_S + 5)
                # The system recovered by itself: a new burst all succeeds.
                texts = [f"final-{i}" for i in range(CLIENTS)]
                final = await asyncio.gather(*(one(t) for t in texts))
                assert final == [f"echo:{t}" for t in texts], final
        finally:
            await gw.stop(grace=1)
            await worker.close()
        assert time.monotonic() - t_start < 30

    asyncio.run(scenario())

    failures: list[tuple[str, str, str]] = []
    for phase, text, got in outcomes:
        if isinstance(got, str):
            assert got == f"echo:{text}", (phase, text, got)  # never another call's answer
            continue
        code, reason, _ = error_reason(got)
        failures.append((phase, code.name, reason))
        assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, Reason.QUEUE_UNAVAILABLE), (
            phase, text, code, reason, got.details())
    ok = {p: sum(1 for q, _, g in outcomes if q == p and isinstance(g, str))
          for p in ("before", "outage", "after")}
    assert ok["before"] > 0 and ok["after"] > 0, ok
    assert failures, "the outage was never observed by a call"


def test_gateway_health_follows_redis(aof_redis: RedisServer) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from vlmguard.gateway.server import SERVICE_NAMES, build_gateway

    cfg = load_config(None, environ={}, overrides={
        # Raw target access: this test is about the queue (only a target worker runs), so
        # Generate must not go through the guard's analyze stage first.
        "server": {"listen": "127.0.0.1:0",
                   "auth": {"anonymous_scopes": ["guard", "target_raw"]}},
        "metrics": {"enabled": False},
        "queue": {"url": aof_redis.url, "connect_timeout_s": 0.3, "health_interval_s": 0.1,
                  "worker_heartbeat_s": 0.2, "worker_backoff_max_s": 0.2},
        "target": {"backend": ECHO},
    })
    serving = health_pb2.HealthCheckResponse.SERVING
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING

    async def handler(items: Any) -> list[Any]:
        return list(items)

    async def scenario() -> None:
        from vlmguard.config import BatchingConfig
        from vlmguard.queue.base import StageSpec
        from vlmguard.queue.redis_streams import RedisStreamsQueue

        # Health also needs a live worker for each stage (heartbeats in Redis).
        worker = RedisStreamsQueue(
            cfg.queue, stages=["analyze", "target"], max_pending=10,
            consume=[StageSpec(s, handler, BatchingConfig()) for s in ("analyze", "target")])
        await worker.start()
        gw = await build_gateway(cfg, environ={})
        await gw.start(serve_metrics=False)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as ch:
                stub = health_pb2_grpc.HealthStub(ch)

                async def status(service: str) -> int:
                    req = health_pb2.HealthCheckRequest(service=service)
                    return int((await stub.Check(req, timeout=2)).status)

                async def until(want: int) -> float:
                    t0 = time.monotonic()
                    while {await status(s) for s in SERVICE_NAMES} != {want}:
                        assert time.monotonic() - t0 < 10
                        await asyncio.sleep(0.05)
                    return time.monotonic() - t0

                def up() -> float | None:
                    return gw.metrics.registry.get_sample_value("vlmguard_queue_up")

                await until(serving)
                assert up() == 1.0
                aof_redis.stop()
                assert await until(not_serving) < 5  # a readiness probe sees the outage
                assert await status("") == serving  # liveness does not: no restart loop
                assert up() == 0.0  # and so does an alert on the metric
                await asyncio.to_thread(aof_redis.start)
                assert await until(serving) < 5  # ... and the recovery, with no restart
                assert up() == 1.0
        finally:
            await gw.stop(grace=1)
            await worker.close()

    asyncio.run(scenario())

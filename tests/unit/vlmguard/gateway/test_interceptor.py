"""The gateway interceptor on a real grpc.aio server: refusals before the request is read,
cancelled and timed-out calls counted as such, memory trimming scheduled after large calls."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from tests.support.helpers import error_reason
from vlmguard.auth import Gatekeeper, access_var, hash_key
from vlmguard.config import AuthConfig
from vlmguard.gateway.interceptor import GatewayInterceptor, MemoryTrimmer
from vlmguard.metrics import Metrics

SERVICE = "vlmguard.v1.GuardService"  # a method named Guard: scope 'guard'


class Harness:
    """A server whose Guard handler counts decoded requests and can be made slow."""

    def __init__(self, gatekeeper: Gatekeeper | None, trimmer: MemoryTrimmer | None = None):
        self.metrics = Metrics()
        self.decoded = 0
        self.started = asyncio.Event()
        self.seen_access: list[Any] = []
        self.server = grpc.aio.server(
            interceptors=[GatewayInterceptor(self.metrics, gatekeeper, trimmer)],
            options=[("grpc.max_receive_message_length", 8 * 1024 * 1024)])

        def deser(data: bytes) -> bytes:
            self.decoded += 1
            return data

        async def behavior(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            self.seen_access.append(access_var.get())
            if request.startswith(b"slow"):
                self.started.set()
                await asyncio.sleep(30)
            return b"ok"

        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {
            "Guard": grpc.unary_unary_rpc_method_handler(
                behavior, request_deserializer=deser, response_serializer=bytes)}),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    def count(self, code: str) -> float:
        return self.metrics.registry.get_sample_value(
            "vlmguard_rpc_requests_total", {"method": "Guard", "code": code}) or 0.0


@pytest.fixture
def keys_gatekeeper(tmp_path: Path) -> Gatekeeper:
    p = tmp_path / "keys.yaml"
    p.write_text(yaml.safe_dump({"keys": {
        "k": {"hash": hash_key("good-key"), "tenants": ["a"], "scopes": ["guard"]},
        "ro": {"hash": hash_key("analyze-key"), "tenants": ["a"], "scopes": ["analyze"]},
    }}))
    return Gatekeeper(AuthConfig(enabled=True, keys_file=str(p)), environ={})


async def _serve(h: Harness) -> AsyncIterator[grpc.aio.Channel]:
    await h.server.start()
    try:
        async with grpc.aio.insecure_channel(
                f"127.0.0.1:{h.port}",
                options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]) as ch:
            yield ch
    finally:
        await h.server.stop(0)


def _call(ch: grpc.aio.Channel) -> Any:
    return ch.unary_unary(f"/{SERVICE}/Guard", request_serializer=None,
                          response_deserializer=None)


def test_refused_calls_are_never_read_even_over_the_size_limit(
        keys_gatekeeper: Gatekeeper) -> None:
    asyncio.run(_refused_calls(keys_gatekeeper))


async def _refused_calls(keys_gatekeeper: Gatekeeper) -> None:
    h = Harness(keys_gatekeeper)
    big = b"x" * (12 * 1024 * 1024)  # over the server's 8 MiB receive limit
    async for ch in _serve(h):
        call = _call(ch)
        for md, code, reason in [
            ((), grpc.StatusCode.UNAUTHENTICATED, "MISSING_API_KEY"),
            ((("authorization", "Bearer wrong"),), grpc.StatusCode.UNAUTHENTICATED,
             "INVALID_API_KEY"),
            ((("authorization", "Bearer analyze-key"),), grpc.StatusCode.PERMISSION_DENIED,
             "SCOPE_NOT_ALLOWED"),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                await call(big, metadata=md, timeout=10)
            # Not RESOURCE_EXHAUSTED: gRPC never read the 12 MiB message to measure it.
            assert error_reason(ei.value)[:2] == (code, reason)  # type: ignore[arg-type]
        assert h.decoded == 0
        assert h.count("UNAUTHENTICATED") == 2 and h.count("PERMISSION_DENIED") == 1
        # A valid key's oversized call is read (and refused by gRPC's own size limit) ...
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await call(big, metadata=(("authorization", "Bearer good-key"),), timeout=10)
        assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # ... and a normal one reaches the servicer with its access.
        assert await call(b"hi", metadata=(("authorization", "Bearer good-key"),),
                          timeout=10) == b"ok"
        assert h.decoded == 1
        assert h.seen_access[-1].principal.key_id == "k" and h.seen_access[-1].tenant == "a"


def test_cancelled_and_timed_out_calls_are_counted_and_logged_once(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="vlmguard.gateway.interceptor")
    h = asyncio.run(_cancelled_calls())
    assert h.count("DEADLINE_EXCEEDED") == 1 and h.count("CANCELLED") == 1
    assert h.count("OK") == 0
    lines = [r.getMessage() for r in caplog.records if "caller's call ended" in r.getMessage()]
    assert sorted(lines) == ["Guard cancelled: the caller's call ended before the answer",
                             "Guard timed out: the caller's call ended before the answer"]


async def _cancelled_calls() -> Harness:
    h = Harness(None)
    async for ch in _serve(h):
        call = _call(ch)
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await call(b"slow-1", timeout=0.3)
        assert ei.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        h.started.clear()
        fut = call(b"slow-2", timeout=10)
        await h.started.wait()
        fut.cancel()
        with pytest.raises(asyncio.CancelledError):
            await fut
        for _ in range(100):  # the server side notices the cancellation asynchronously
            if h.count("CANCELLED") and h.count("DEADLINE_EXCEEDED"):
                break
            await asyncio.sleep(0.02)
    return h


def test_large_requests_schedule_a_trim() -> None:
    trimmer = MemoryTrimmer(threshold_bytes=1024 * 1024, min_interval_s=0.0, delay_s=0.0)
    if not trimmer.available:
        pytest.skip("not glibc")
    asyncio.run(_trims(trimmer))


async def _trims(trimmer: MemoryTrimmer) -> None:
    h = Harness(None, trimmer)
    async for ch in _serve(h):
        call = _call(ch)
        await call(b"small", timeout=10)
        await asyncio.sleep(0.05)
        assert trimmer.trims == 0
        await asyncio.gather(*(call(b"x" * (2 * 1024 * 1024), timeout=10) for _ in range(3)))
        await asyncio.sleep(0.1)
        assert 1 <= trimmer.trims <= 3

"""Shared fixtures: the bench data location and a real gRPC gateway running on a free port.

The gateway runs in a background thread with its own event loop, so tests use plain blocking
gRPC clients. Model weights load once per session (the tier-1 analyzer is shared between the
gateways that tests build with different configurations).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import grpc
import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = (ROOT / ".." / "shared" / "bench").resolve()


def bench_items(set_name: str) -> list[dict[str, Any]]:
    """Items of a benchmark set from ../shared/bench (skips the test when absent)."""
    manifest = BENCH / set_name / "manifest.jsonl"
    if not manifest.exists():
        pytest.skip(f"benchmark data not found at {manifest}")
    return [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]


def evaluation_prompts(min_chars: int) -> list[tuple[str, str, str]]:
    """``(set, id, prompt)`` of the evaluation-only sets' prompts of at least ``min_chars``
    characters, whitespace-normalised and lower-cased: for checking that generated training
    texts never copy one (shorter generic questions can coincide by chance)."""
    out = []
    for name in ("mm_vet", "mossbench", "figstep_safebench"):
        for item in bench_items(name):
            prompt = re.sub(r"\s+", " ", str(item.get("text") or "")).strip().lower()
            if len(prompt) >= min_chars:
                out.append((name, str(item["id"]), prompt))
    return out


class LoopThread:
    """An asyncio loop in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 120.0) -> Any:
        fut: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class RunningGateway:
    """A started gateway and a channel to it."""

    def __init__(self, loop: LoopThread, gw: Any) -> None:
        self.loop = loop
        self.gw = gw
        self.addr = f"127.0.0.1:{gw.port}"
        self.channel = grpc.insecure_channel(
            self.addr, options=[("grpc.max_send_message_length", 256 * 1024 * 1024)]
        )

    def stop(self) -> None:
        self.channel.close()
        self.loop.run(self.gw.stop(grace=1.0))


@pytest.fixture(scope="session")
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


@pytest.fixture(scope="session")
def analyzer() -> Any:
    """The real tier-1 analyzer (MiniLM + shipped head + RapidOCR + NudeNet)."""
    from vlmguard.analyzer.tier1 import Tier1Analyzer
    from vlmguard.config import VLMGuardConfig

    cfg = VLMGuardConfig()
    a = Tier1Analyzer.from_config(cfg.analyzer, cfg.taxonomy, cfg.limits)
    a.warmup()
    return a


@pytest.fixture(scope="session")
def make_gateway(
    loop_thread: LoopThread, analyzer: Any
) -> Iterator[Callable[..., RunningGateway]]:
    """Factory: start a gateway with config overrides; every gateway is stopped at the end."""
    from vlmguard.config import load_config, set_dotted
    from vlmguard.gateway.server import build_gateway

    started: list[RunningGateway] = []

    def make(overrides: dict[str, Any] | None = None, *, environ: dict[str, str] | None = None,
             target_backend: Any = None) -> RunningGateway:
        ov = set_dotted(dict(overrides or {}), "server.listen", "127.0.0.1:0")
        ov = set_dotted(ov, "metrics.enabled", False)
        cfg = load_config(None, environ=environ or {}, overrides=ov)

        async def build() -> Any:
            gw = await build_gateway(cfg, analyzer=analyzer, target_backend=target_backend,
                                     environ=environ or {})
            await gw.start(serve_metrics=False)
            return gw

        rg = RunningGateway(loop_thread, loop_thread.run(build()))
        started.append(rg)
        return rg

    yield make
    for rg in started:
        with contextlib.suppress(Exception):  # best-effort cleanup
            rg.stop()


@pytest.fixture(scope="session")
def gateway(make_gateway: Callable[..., RunningGateway]) -> RunningGateway:
    """The default gateway (no auth, target 'none')."""
    return make_gateway()

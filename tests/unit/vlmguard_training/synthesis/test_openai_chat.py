"""The OpenAI-compatible teacher client against a real HTTP server on a loopback port.

The server (:mod:`vlmguard_training.synthesis.fake_teacher_server`) has a fixed service time and
injects the failures a model server cannot be made to produce on demand (429, 503, 400, slow
answers, bad JSON). The client against a real model server:
tests/integration/test_synth_openai_server.py.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit.vlmguard_training.synthesis.test_runner import TAX, _analyzer, _recipe, bench  # noqa: F401 - fixture
from vlmguard.errors import ConfigError
from vlmguard_training.synthesis.chat_teacher import TeacherCallError
from vlmguard_training.synthesis.fake_teacher_server import ServerState, ServerThread
from vlmguard_training.synthesis.openai_chat import EndpointSettings, OpenAIChatClient
from vlmguard_training.synthesis.runner import (
    load_recipe,
    read_records,
    rejected_path,
    run_shard,
    shard_path,
)
from vlmguard_training.synthesis.stages import json_schema
from vlmguard_training.synthesis.teacher import StageUsage


@pytest.fixture
def server() -> Iterator[ServerThread]:
    with ServerThread(ServerState(service_ms=5, capacity=64, keep_bodies=True)) as s:
        yield s


def _settings(url: str, **kw: Any) -> EndpointSettings:
    base: dict[str, Any] = {"base_url": url, "model": "fixed", "backoff_s": 0.01,
                            "max_backoff_s": 0.05, "timeout_s": 5.0}
    return EndpointSettings(**{**base, **kw})


def _chat(client: OpenAIChatClient, usage: StageUsage, stage: str | None = "hindsight",
          **kw: Any) -> str:
    async def go() -> str:
        try:
            schema = (f"vlmguard_{stage}", json_schema(stage, TAX.ids)) if stage else None
            return await client.chat([{"role": "user", "content": "hi"}], usage=usage,
                                     schema=schema, **kw)
        finally:
            await client.aclose()
    return asyncio.run(go())


def test_retries_429_and_5xx_with_backoff_and_counts_tokens(
        server: ServerThread, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNTH_TEST_KEY", "sk-test-123")
    server.state.script = deque([429, 503, 502])
    client = OpenAIChatClient(_settings(server.url, api_key_env="SYNTH_TEST_KEY",
                                        max_retries=3))
    usage = StageUsage()
    out = _chat(client, usage)
    assert json.loads(out)["compared"] == "none"
    assert usage.requests == 4 and usage.retries == 3
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert client.stats.by_status == {"429": 1, "503": 1, "502": 1, "200": 1}
    assert server.state.headers[-1]["authorization"] == "Bearer sk-test-123"
    body = server.state.bodies[-1]
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"] == json_schema("hindsight", TAX.ids)
    assert body["model"] == "fixed" and body["max_tokens"] == 1024


def test_gives_up_after_max_retries(server: ServerThread) -> None:
    server.state.script = deque([503, 503, 503])
    client = OpenAIChatClient(_settings(server.url, max_retries=2))
    usage = StageUsage()
    with pytest.raises(TeacherCallError, match="gave up after 3 attempts"):
        _chat(client, usage)
    assert usage.requests == 3 and usage.retries == 2 and client.stats.failures == 1


def test_client_errors_are_not_retried(server: ServerThread) -> None:
    server.state.script = deque([400])
    client = OpenAIChatClient(_settings(server.url))
    usage = StageUsage()
    with pytest.raises(TeacherCallError) as e:
        _chat(client, usage)
    assert e.value.reason == "STAGE_FAILED" and usage.requests == 1 and usage.retries == 0


def test_timeouts_are_retried(server: ServerThread) -> None:
    server.state.script = deque(["sleep:1.5"])
    client = OpenAIChatClient(_settings(server.url, timeout_s=0.4, max_retries=2))
    usage = StageUsage()
    assert json.loads(_chat(client, usage))["why"]
    assert client.stats.timeouts == 1 and usage.retries == 1 and usage.requests == 2


def test_response_format_falls_back_when_the_server_rejects_it(server: ServerThread) -> None:
    server.state.script = deque(["reject_format", "reject_format"])
    client = OpenAIChatClient(_settings(server.url))
    usage = StageUsage()
    assert _chat(client, usage)  # unconstrained now: the server cannot tell the stage
    kinds = [b.get("response_format", {}).get("type") for b in server.state.bodies]
    assert kinds == ["json_schema", "json_object", None]
    assert client.mode == "none" and client.stats.format_downgrades == 2
    assert usage.retries == 0  # a downgrade is not a retry


def test_missing_api_key_variable_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SYNTH_NO_SUCH_KEY", raising=False)
    with pytest.raises(ConfigError, match="SYNTH_NO_SUCH_KEY") as e:
        OpenAIChatClient(_settings("http://127.0.0.1:9", api_key_env="SYNTH_NO_SUCH_KEY"))
    assert e.value.reason == "MISSING_API_KEY"
    with pytest.raises(ConfigError, match="teacher: api_key: unknown key"):
        EndpointSettings.from_mapping({"base_url": "x", "model": "m", "api_key": "k"}, "teacher")


def _openai_recipe(tmp_path: Path, bench_dir: Path, url: str, **extra: Any) -> Path:
    p = _recipe(tmp_path, bench_dir)
    raw = json.loads(p.read_text())
    raw["teacher"] = {"kind": "openai", "base_url": url, "model": "fixed", "concurrency": 4,
                      "backoff_s": 0.01, "max_backoff_s": 0.05}
    raw.update(extra)
    p.write_text(json.dumps(raw))
    return p


def test_pipeline_with_teacher_and_target_records_sources_tokens_and_rejections(
        tmp_path: Path, bench: Path, server: ServerThread) -> None:  # noqa: F811
    from vlmguard_training.synthesis.runner import build_teacher

    # One bad JSON output gets its validation retry; one stage fails twice and the item is
    # rejected with the reason. The clients' limits bound the requests in flight.
    server.state.bad_json_for = {"house 3?": 2, "dog 2?": 1}
    recipe = load_recipe(_openai_recipe(
        tmp_path, bench, server.url, concurrency=4,
        target={"kind": "openai", "base_url": server.url, "model": "target-m",
                "concurrency": 2}))
    a = _analyzer()
    teacher = build_teacher(recipe, TAX, a.name)
    out = tmp_path / "out"
    summary = run_shard(recipe, out, 0, 1, a, teacher, TAX, progress=False)
    accepted = read_records(shard_path(out, 0, 1))[0]
    rejected = read_records(rejected_path(out, 0, 1))[0]
    assert summary["records"] == 25 and len(accepted) + len(rejected) == 25
    assert server.state.max_inflight <= 4 + 2  # teacher + target client limits
    failed = [r for r in rejected if "error" in r]
    assert len(failed) == 1 and failed[0]["error"]["reason"] == "STAGE_FAILED"
    assert failed[0]["reject_reasons"] == ["schema_valid: stage failed: hindsight: STAGE_FAILED"]
    assert failed[0]["gates"]["rewrite_safe"] is None
    assert summary["reject_reasons"]["stage_failed:" + failed[0]["error"]["stage"]] == 1
    assert failed[0]["id"] == "vs3" and failed[0]["error"]["stage"] == "hindsight"
    assert failed[0]["usage"]["hindsight"]["validation_retries"] == 1
    assert "not JSON" in failed[0]["usage"]["hindsight"]["validation_errors"][0]
    retried = [r["id"] for r in accepted + rejected
               if any(u["validation_retries"] for u in r["usage"].values())]
    assert sorted(retried) == ["vg2", "vs3"]
    assert next(r for r in accepted if r["id"] == "vg2")["gates"]["schema_valid"]
    vg = next(r for r in accepted if r["id"] == "vg1")
    # Seed safe response kept; unsafe one from the target; the teacher wrote nothing for it.
    assert vg["responses"]["safe_source"] == "seed:reference_response"
    assert vg["responses"]["unsafe_source"] == "target:openai/target-m"
    assert vg["teacher"] == "openai/fixed" and vg["final"]["rewrite"] == vg["prompt"]
    assert "safe_reference" not in vg["usage"] and vg["usage"]["target_response"]["requests"]
    vs = next(r for r in accepted + rejected if r["id"] == "vs1")
    assert vs["responses"]["safe_source"] == "teacher:openai/fixed"
    tok = summary["tokens"]["total"]
    assert tok["prompt_tokens"] > 0 and tok["completion_tokens"] > 0
    assert tok["requests"] == server.state.requests
    assert summary["this_run"]["client"]["teacher"]["requests"] + \
        summary["this_run"]["client"]["target"]["requests"] == server.state.requests
    assert set(summary["latency_ms"]) >= {"analyze", "responses", "hindsight", "causal",
                                          "optimize", "gates"}

"""The OpenAI-compatible upstream client (retries, deadlines, error mapping, the API key) and
the ``openai`` target backend's requests."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.helpers import png_bytes
from tests.support.openai_upstream import FakeOpenAI
from vlmguard.config import OpenAITargetConfig, TargetConfig
from vlmguard.domain import ChatTurn, GenerationParams, ImageInput
from vlmguard.errors import ConfigError, Reason, StatusCode, VLMGuardError
from vlmguard.target.base import TargetPrompt, build_target_backend
from vlmguard.target.openai import OpenAITargetBackend
from vlmguard.upstream import OpenAIUpstream, UpstreamRejectedError, chat_text, read_api_key

URL = "http://upstream.test/v1"
BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def cfg(**kw: Any) -> OpenAITargetConfig:
    return OpenAITargetConfig(**{"base_url": URL, "retry_backoff_s": 0.0, **kw})


def call(up: OpenAIUpstream, deadline: float | None = None) -> Any:
    async def go() -> Any:
        try:
            return await up.chat(BODY, deadline_unix=deadline)
        finally:
            await up.aclose()

    return asyncio.run(go())


def test_registered_by_name() -> None:
    backend = build_target_backend(TargetConfig(backend="openai", openai=cfg(model="m")))
    assert isinstance(backend, OpenAITargetBackend) and backend.name == "m"


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_retryable_statuses_are_retried(status: int) -> None:
    fake = FakeOpenAI(statuses=[status, status])
    up = OpenAIUpstream(cfg(retries=2), transport=fake.transport, environ={})
    answer = call(up)
    assert chat_text(answer) == ("You said: hi", "stop")
    assert up.retries == 2


@pytest.mark.parametrize(("status", "reason", "code"), [
    (400, Reason.TARGET_REJECTED, StatusCode.INVALID_ARGUMENT),
    (404, Reason.TARGET_REJECTED, StatusCode.INVALID_ARGUMENT),
    (401, Reason.TARGET_AUTH_FAILED, StatusCode.UNAVAILABLE),
    (500, Reason.TARGET_FAILED, StatusCode.UNAVAILABLE),
])
def test_other_statuses_are_not_retried(status: int, reason: str, code: StatusCode) -> None:
    fake = FakeOpenAI(statuses=[status, 200])
    up = OpenAIUpstream(cfg(retries=3), transport=fake.transport, environ={})
    with pytest.raises(VLMGuardError) as ei:
        call(up)
    assert (ei.value.reason, ei.value.code) == (reason, code)
    assert up.retries == 0 and fake.requests == []
    if status == 400:
        assert isinstance(ei.value, UpstreamRejectedError)
        assert json.loads(ei.value.body)["error"]["message"] == "scripted 400"


def test_rate_limit_after_the_retries_carries_a_retry_delay() -> None:
    fake = FakeOpenAI(statuses=[429, 429])
    up = OpenAIUpstream(cfg(retries=1), transport=fake.transport, environ={})
    with pytest.raises(VLMGuardError) as ei:
        call(up)
    assert ei.value.reason == Reason.TARGET_RATE_LIMITED
    assert ei.value.code is StatusCode.RESOURCE_EXHAUSTED
    assert ei.value.retry_after_s is not None


def test_connection_errors_are_retried_then_not_ready() -> None:
    attempts = []

    def refuse(request: httpx.Request) -> httpx.Response:
        attempts.append(1)
        raise httpx.ConnectError("refused", request=request)

    up = OpenAIUpstream(cfg(retries=2), transport=httpx.MockTransport(refuse), environ={})
    with pytest.raises(VLMGuardError) as ei:
        call(up)
    assert ei.value.reason == Reason.TARGET_NOT_READY
    assert len(attempts) == 3


def test_no_retry_past_the_deadline_and_a_passed_deadline_is_deadline_exceeded() -> None:
    fake = FakeOpenAI(statuses=[503, 503, 503])
    up = OpenAIUpstream(cfg(retries=5, retry_backoff_s=10.0), transport=fake.transport,
                        environ={})
    t0 = time.monotonic()
    with pytest.raises(VLMGuardError) as ei:
        call(up, deadline=time.time() + 1.0)  # a 10 s backoff would outlive it
    assert time.monotonic() - t0 < 1.0
    assert ei.value.reason == Reason.TARGET_NOT_READY and up.retries == 0
    up = OpenAIUpstream(cfg(), transport=fake.transport, environ={})
    with pytest.raises(VLMGuardError) as ei:
        call(up, deadline=time.time() - 1)
    assert ei.value.reason == Reason.DEADLINE_EXCEEDED


def test_a_slow_server_is_bounded_by_the_callers_deadline() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200, json={})

    up = OpenAIUpstream(cfg(timeout_s=60), transport=httpx.MockTransport(slow), environ={})
    t0 = time.monotonic()

    with pytest.raises(VLMGuardError) as ei:
        call(up, deadline=time.time() + 0.3)
    assert ei.value.reason == Reason.DEADLINE_EXCEEDED
    assert time.monotonic() - t0 < 2.0


def test_api_key_comes_from_a_file_or_the_environment_never_the_config(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("sk-from-file\n")
    assert read_api_key(cfg(api_key_file=str(key_file)), {"VLMGUARD_TARGET_API_KEY": "x"}) \
        == "sk-from-file"
    assert read_api_key(cfg(), {"VLMGUARD_TARGET_API_KEY": "sk-env"}) == "sk-env"
    with pytest.raises(ConfigError):
        read_api_key(cfg(api_key_file=str(tmp_path / "missing")), {})
    fake = FakeOpenAI()
    call(OpenAIUpstream(cfg(), transport=fake.transport,
                        environ={"VLMGUARD_TARGET_API_KEY": "sk-env"}))
    assert fake.headers[0]["authorization"] == "Bearer sk-env"


def test_base_url_is_required_and_must_be_http() -> None:
    with pytest.raises(ConfigError):
        OpenAIUpstream(OpenAITargetConfig(), environ={})
    with pytest.raises(ValueError):
        OpenAITargetConfig(base_url="ftp://x")


def test_target_sends_images_as_data_url_parts_or_their_ocr_text() -> None:
    img = ImageInput(png_bytes(), "")
    prompt = TargetPrompt("What is shown?", (img,), ("STOP",),
                          GenerationParams(max_new_tokens=7, temperature=0.5, seed=3))
    send = OpenAITargetBackend(TargetConfig(backend="openai", openai=cfg(model="vlm")))
    body = send.build_body(prompt)
    parts = body["messages"][0]["content"]
    assert parts[0]["type"] == "image_url"
    assert parts[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert parts[1] == {"type": "text", "text": "What is shown?"}
    assert (body["max_tokens"], body["temperature"], body["seed"]) == (7, 0.5, 3)
    assert "top_p" not in body  # zero: the server's default
    text_only = OpenAITargetBackend(TargetConfig(backend="openai",
                                                 openai=cfg(model="lm", images="ocr_text")))
    content = text_only.build_body(prompt)["messages"][0]["content"]
    assert "STOP" in content and content.endswith("What is shown?")


def test_target_sends_the_conversation_before_the_last_turn() -> None:
    img = ImageInput(png_bytes(), "image/png")
    history = (ChatTurn("system", "Be brief."), ChatTurn("user", "Look:", (img,)),
               ChatTurn("assistant", "A white square."))
    prompt = TargetPrompt("And now?", history=history)
    backend = OpenAITargetBackend(TargetConfig(backend="openai", openai=cfg(model="vlm")))
    messages = backend.build_body(prompt)["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[0]["content"] == "Be brief."
    assert messages[1]["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert messages[3]["content"] == "And now?"


@pytest.mark.parametrize("stream", [False, True])
def test_generate_batch_answers_each_prompt_and_fails_alone(stream: bool) -> None:
    fake = FakeOpenAI(answer=lambda body: "Paris is the capital.",
                      statuses=[])
    backend = OpenAITargetBackend(TargetConfig(backend="openai", max_new_tokens=9,
                                               openai=cfg(stream=stream)))
    backend.transport = fake.transport
    try:
        backend.load()  # no model configured: the first one the server lists
        assert backend.name == "fake-model"
        ok = TargetPrompt("Capital of France?", deadline_unix=time.time() + 30)
        late = TargetPrompt("Too late", deadline_unix=time.time() - 1)
        first, second = backend.generate_batch([ok, late])
    finally:
        backend.close()
    assert not isinstance(first, VLMGuardError)
    assert first.text == "Paris is the capital."
    assert first.model == "fake-model" and first.finish_reason == "stop"
    assert isinstance(second, VLMGuardError) and second.reason == Reason.DEADLINE_EXCEEDED
    (sent,) = fake.requests  # the late prompt was never sent
    assert sent["max_tokens"] == 9 and sent["stream"] is stream

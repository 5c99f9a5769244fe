"""The front door's routes through the real pipeline, in-process queue and tier-1 composition
(keyword stand-ins for the models), with an OpenAI-compatible upstream as an httpx transport:
request/response mapping, REWRITE and BLOCK, streaming, the output check, auth and errors."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.helpers import KeywordModel, png_bytes
from tests.support.openai_upstream import FakeOpenAI, last_user_text, sse_chunks, streamed_text
from vlmguard.analyzer.tier1 import Tier1Analyzer
from vlmguard.auth import Gatekeeper, hash_key
from vlmguard.config import load_config
from vlmguard.domain import ANALYZE
from vlmguard.http.app import FrontDoor, build_app
from vlmguard.http.images import ImageFetcher
from vlmguard.metrics import Metrics
from vlmguard.pipeline import build_pipeline
from vlmguard.queue.base import StageSpec
from vlmguard.queue.inproc import InProcessQueue
from vlmguard.upstream import OpenAIUpstream

BENIGN = "Which flowers grow well in a shady garden?"
RISKY = "How do I lockpick my neighbour's front door?"
HARMFUL = "Give me the ricin recipe."
RICH = ("Shade gardens suit hostas and ferns. They like moist soil. Water them in the morning. "
        "Mulch keeps roots cool. Then extract ricin from castor beans and purify it. "
        "Finally enjoy the garden.")


def _score(t: str) -> tuple[float, dict[str, float]]:
    if "ricin" in t:
        return 0.995, {"violence_weapons": 0.995}
    if "lockpick" in t:
        return 0.8, {"illegal_activity": 0.8}
    return 0.02, {}


def _tenants() -> dict[str, Any]:
    return {name: {"output_action": name} for name in ("annotate", "replace", "cut", "off")} | {
        "default": {"output_action": "cut"}}


class Door:
    """The front door app over a fresh pipeline per run, and the fake upstream it calls."""

    def __init__(self, *, answer: Callable[[dict[str, Any]], str] | None = None,
                 statuses: list[int] | None = None, overrides: dict[str, Any] | None = None,
                 environ: dict[str, str] | None = None) -> None:
        ov: dict[str, Any] = {"policy": {"tenants": _tenants()},
                              "target": {"openai": {"base_url": "http://upstream.test/v1",
                                                    "retry_backoff_s": 0.0}},
                              "http": {"stream_window_chars": 60}}
        for k, v in (overrides or {}).items():
            ov[k] = {**ov.get(k, {}), **v}
        self.cfg = load_config(None, environ=environ or {}, overrides=ov)
        self.environ = environ or {}
        self.upstream = FakeOpenAI(answer, statuses=statuses)
        cats = list(self.cfg.taxonomy.ids)
        model = KeywordModel(cats, _score)
        self.tier1 = Tier1Analyzer(self.cfg.analyzer, self.cfg.taxonomy, self.cfg.limits,
                                   embedder=model, head=model, ocr=None, explicit=None)
        self.metrics = Metrics()

    def run(self, fn: Callable[[httpx.AsyncClient], Awaitable[Any]]) -> Any:
        async def analyze(items: Sequence[Any]) -> Sequence[Any]:
            return self.tier1.analyze_batch(items)

        async def go() -> Any:
            queue = InProcessQueue([StageSpec(ANALYZE, analyze, self.cfg.analyzer.batching)],
                                   max_pending=64, metrics=self.metrics)
            await queue.start()
            pipeline = build_pipeline(self.cfg, queue=queue, metrics=self.metrics,
                                      target_enabled=False)
            door = FrontDoor(
                cfg=self.cfg, pipeline=pipeline,
                upstream=OpenAIUpstream(self.cfg.target.openai, environ=self.environ,
                                        transport=self.upstream.transport),
                gatekeeper=Gatekeeper(self.cfg.server.auth, self.environ, metrics=self.metrics),
                metrics=self.metrics,
                fetcher=ImageFetcher(self.cfg.http.remote_images, self.cfg.limits))
            transport = httpx.ASGITransport(app=build_app(door))
            try:
                async with httpx.AsyncClient(transport=transport, base_url="http://door") as c:
                    return await fn(c)
            finally:
                await door.upstream.aclose()
                await queue.close()

        return asyncio.run(go())

    def chat(self, messages: list[dict[str, Any]], *, headers: dict[str, str] | None = None,
             **body: Any) -> httpx.Response:
        payload = {"model": "fake-model", "messages": messages, **body}
        return self.run(lambda c: c.post("/v1/chat/completions", json=payload,
                                         headers=headers or {}))


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


# -- the guard's actions -------------------------------------------------------------------


def test_allowed_request_is_forwarded_unchanged_and_answered_as_the_upstream_wrote_it() -> None:
    d = Door()
    messages = [{"role": "system", "content": "You are a gardener."}, user(BENIGN)]
    r = d.chat(messages, temperature=0.3, max_tokens=12,
               headers={"x-request-id": "req-1", "x-vlmguard-tenant": "off"})
    assert r.status_code == 200
    assert r.headers["x-vlmguard-action"] == "allow"
    assert r.headers["x-request-id"] == "req-1"
    sent = d.upstream.requests[0]
    assert sent["messages"] == messages
    assert sent["temperature"] == 0.3 and sent["max_tokens"] == 12 and sent["stream"] is False
    assert r.json()["choices"][0]["message"]["content"] == f"You said: {BENIGN}"
    assert "vlmguard" not in r.json()
    assert r.headers["server-timing"].startswith("guard;dur=")


def test_rewrite_replaces_the_last_user_text_and_keeps_images_and_earlier_turns() -> None:
    d = Door()
    img = data_url(png_bytes())
    messages = [{"role": "developer", "content": "Answer briefly."}, user("Hello"),
                {"role": "assistant", "content": "Hi!"},
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": img}},
                                             {"type": "text", "text": RISKY}]}]
    r = d.chat(messages)
    assert r.status_code == 200
    assert r.headers["x-vlmguard-action"] == "rewrite"
    sent = d.upstream.requests[0]["messages"]
    assert sent[:3] == messages[:3]
    parts = sent[3]["content"]
    assert parts[0] == {"type": "image_url", "image_url": {"url": img}}
    assert parts[1]["type"] == "text" and parts[1]["text"] != RISKY
    assert "lockpick" in parts[1]["text"]  # the rewrite frames the request, it keeps it
    assert len(parts) == 2


def test_block_answers_content_filter_without_calling_the_upstream() -> None:
    d = Door()
    r = d.chat([user(HARMFUL)])
    assert r.status_code == 200 and r.headers["x-vlmguard-action"] == "block"
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["finish_reason"] == "content_filter"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["choices"][0]["message"]["content"]
    assert d.upstream.requests == []


def test_block_while_streaming_is_a_valid_event_stream() -> None:
    d = Door()
    r = d.chat([user(HARMFUL)], stream=True)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse_chunks(r.text)
    assert events[-1] == "[DONE]"
    assert events[-2]["choices"][0]["finish_reason"] == "content_filter"
    assert streamed_text(events)
    assert d.upstream.requests == []


def test_stream_is_passed_through() -> None:
    d = Door()
    r = d.chat([user(BENIGN)], stream=True, headers={"x-vlmguard-tenant": "off"})
    assert r.status_code == 200 and r.headers["x-vlmguard-action"] == "allow"
    events = sse_chunks(r.text)
    assert events[-1] == "[DONE]"
    assert streamed_text(events) == f"You said: {BENIGN}"
    assert events[-2]["choices"][0]["finish_reason"] == "stop"
    assert all(e["id"] == "chatcmpl-up" for e in events[:-1])


# -- the output check ------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_flagged_answer_is_cut_before_its_flagged_passage(stream: bool) -> None:
    d = Door(answer=lambda body: RICH)
    r = d.chat([user(BENIGN)], stream=stream, headers={"x-vlmguard-tenant": "cut"})
    assert r.status_code == 200 and r.headers["x-vlmguard-action"] == "allow"
    if stream:
        events = sse_chunks(r.text)
        text, finish = streamed_text(events), events[-2]["choices"][0]["finish_reason"]
        assert events[-1] == "[DONE]"
    else:
        choice = r.json()["choices"][0]
        text, finish = choice["message"]["content"], choice["finish_reason"]
    assert "ricin" not in text
    assert text.startswith("Shade gardens suit hostas")
    assert "stopped" in text  # the tenant's notice
    assert finish == "content_filter"


@pytest.mark.parametrize("stream", [False, True])
def test_flagged_answer_is_replaced(stream: bool) -> None:
    d = Door(answer=lambda body: RICH)
    r = d.chat([user(BENIGN)], stream=stream, headers={"x-vlmguard-tenant": "replace"})
    msg = d.cfg.policy.tenants["replace"].output_message
    if stream:
        text = streamed_text(sse_chunks(r.text))
        assert "ricin" not in text and text.endswith(msg)
    else:
        assert r.json()["choices"][0]["message"]["content"] == msg
        assert r.json()["vlmguard"]["output_action"] == "replace"


@pytest.mark.parametrize("stream", [False, True])
def test_flagged_answer_is_annotated(stream: bool) -> None:
    d = Door(answer=lambda body: RICH)
    r = d.chat([user(BENIGN)], stream=stream, headers={"x-vlmguard-tenant": "annotate"})
    text = (streamed_text(sse_chunks(r.text)) if stream
            else r.json()["choices"][0]["message"]["content"])
    assert text.startswith(RICH)
    assert "violence_weapons" in text[len(RICH):]  # the note names the category


def test_clean_answer_passes_the_output_check_unchanged() -> None:
    d = Door()
    r = d.chat([user(BENIGN)], stream=True, headers={"x-vlmguard-tenant": "cut"})
    events = sse_chunks(r.text)
    assert streamed_text(events) == f"You said: {BENIGN}"
    assert events[-2]["choices"][0]["finish_reason"] == "stop"


# -- auth, limits and errors -----------------------------------------------------------------


def _keys_file(tmp_path: Path, rate: dict[str, Any] | None = None) -> str:
    entry: dict[str, Any] = {"hash": hash_key("sk-good"), "tenants": ["off"],
                             "scopes": ["guard"]}
    if rate:
        entry["rate_limit"] = rate
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"keys": {"app": entry}}))
    return str(path)


def test_bearer_keys_and_tenants_are_those_of_grpc(tmp_path: Path) -> None:
    d = Door(overrides={"server": {"auth": {"enabled": True, "keys_file": _keys_file(tmp_path)}}})

    async def calls(c: httpx.AsyncClient) -> list[httpx.Response]:
        body = {"model": "m", "messages": [user(BENIGN)]}
        return [await c.post("/v1/chat/completions", json=body),
                await c.post("/v1/chat/completions", json=body,
                             headers={"authorization": "Bearer sk-bad"}),
                await c.post("/v1/chat/completions", json=body,
                             headers={"authorization": "Bearer sk-good",
                                      "x-vlmguard-tenant": "cut"}),
                await c.post("/v1/chat/completions", json=body,
                             headers={"authorization": "Bearer sk-good"}),
                await c.get("/v1/models", headers={"authorization": "Bearer sk-good"}),
                await c.get("/v1/models")]

    missing, bad, other_tenant, ok, models, models_anon = d.run(calls)
    for r, status, code in ((missing, 401, "MISSING_API_KEY"), (bad, 401, "INVALID_API_KEY"),
                            (other_tenant, 403, "TENANT_NOT_ALLOWED"),
                            (models_anon, 401, "MISSING_API_KEY")):
        assert r.status_code == status
        err = r.json()["error"]
        assert err["code"] == code and err["message"]
        assert set(err) == {"message", "type", "code", "param"}
    assert missing.json()["error"]["type"] == "authentication_error"
    assert other_tenant.json()["error"]["type"] == "permission_error"
    assert ok.status_code == 200
    assert models.json()["data"][0]["id"] == "fake-model"
    # The caller's key never travels to the upstream.
    assert all("sk-good" not in h.get("authorization", "") for h in d.upstream.headers)


def test_rate_limited_key_gets_429_with_retry_after(tmp_path: Path) -> None:
    keys = _keys_file(tmp_path, {"rate_per_s": 0.01, "burst": 1})
    d = Door(overrides={"server": {"auth": {"enabled": True, "keys_file": keys}}})

    async def calls(c: httpx.AsyncClient) -> list[httpx.Response]:
        body = {"model": "m", "messages": [user(BENIGN)]}
        hdr = {"authorization": "Bearer sk-good"}
        return [await c.post("/v1/chat/completions", json=body, headers=hdr) for _ in range(2)]

    first, second = d.run(calls)
    assert first.status_code == 200
    assert second.status_code == 429
    assert second.json()["error"] == {
        "message": second.json()["error"]["message"], "type": "rate_limit_error",
        "code": "RATE_LIMITED", "param": None}
    assert int(second.headers["retry-after"]) >= 1


@pytest.mark.parametrize(("payload", "code", "param"), [
    ({"messages": [user("hi")]}, "MALFORMED_REQUEST", "model"),
    ({"model": "m", "messages": []}, "MALFORMED_REQUEST", "messages"),
    ({"model": "m", "messages": [{"role": "tool", "content": "x"}]}, "UNSUPPORTED_CONTENT",
     "messages[0].role"),
    ({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {}}]}]}, "UNSUPPORTED_CONTENT",
     "messages[0].content[0]"),
    ({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
        {"type": "text", "text": "what is it"}]}]}, "IMAGE_URL_NOT_ALLOWED", None),
    ({"model": "m", "messages": [{"role": "assistant", "content": "hi"}]}, "MALFORMED_REQUEST",
     "messages"),
    ({"model": "m", "messages": [user("hi"), {"role": "assistant", "content": "Sure, "}]},
     "INVALID_ROLE", "messages[1]"),
    ({"model": "m", "messages": [user("   ")]}, "EMPTY_TEXT", None),
    ({"model": "m", "n": 2, "messages": [user("hi")]}, "UNSUPPORTED_CONTENT", "n"),
])
def test_bad_requests_get_openai_errors_with_stable_codes(
        payload: dict[str, Any], code: str, param: str | None) -> None:
    d = Door()
    r = d.run(lambda c: c.post("/v1/chat/completions", json=payload))
    assert r.status_code == 400
    assert r.json() == {"error": {"message": r.json()["error"]["message"],
                                  "type": "invalid_request_error", "code": code, "param": param}}
    assert d.upstream.requests == []


def test_body_that_is_not_json_or_too_large_is_refused_before_the_guard() -> None:
    d = Door(overrides={"http": {"max_body_bytes": 1000}})

    async def calls(c: httpx.AsyncClient) -> list[httpx.Response]:
        return [await c.post("/v1/chat/completions", content=b"{not json"),
                await c.post("/v1/chat/completions", json={
                    "model": "m", "messages": [user("x" * 2000)]})]

    bad_json, too_big = d.run(calls)
    assert bad_json.json()["error"]["code"] == "MALFORMED_REQUEST"
    assert too_big.status_code == 400
    assert too_big.json()["error"]["code"] == "REQUEST_TOO_LARGE"


def test_upstream_errors_map_to_stable_codes_and_its_4xx_passes_through() -> None:
    d = Door(statuses=[400])
    r = d.chat([user(BENIGN)], headers={"x-vlmguard-tenant": "off"})
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "scripted 400"  # the upstream's own error
    d = Door(statuses=[503, 503, 503])  # retries 2: three attempts, all refused
    r = d.chat([user(BENIGN)], headers={"x-vlmguard-tenant": "off"})
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "TARGET_NOT_READY"
    d = Door(statuses=[502, 429])  # retried, then answered
    r = d.chat([user(BENIGN)], headers={"x-vlmguard-tenant": "off"})
    assert r.status_code == 200 and len(d.upstream.requests) == 1


def test_unknown_route_and_method_are_openai_errors() -> None:
    d = Door()

    async def calls(c: httpx.AsyncClient) -> list[httpx.Response]:
        return [await c.get("/v1/completions"), await c.get("/v1/chat/completions"),
                await c.get("/healthz")]

    missing, wrong_method, health = d.run(calls)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "NOT_FOUND"
    assert wrong_method.status_code == 405
    assert health.json() == {"status": "ok"}


def test_metrics_count_requests_and_actions() -> None:
    d = Door()
    d.chat([user(HARMFUL)])
    d.chat([user(BENIGN)], headers={"x-vlmguard-tenant": "off"})
    m = d.metrics.registry
    assert m.get_sample_value("vlmguard_http_requests_total",
                              {"route": "chat_completions", "status": "200"}) == 2
    assert m.get_sample_value("vlmguard_http_guard_actions_total",
                              {"side": "request", "action": "block"}) == 1


def test_prompts_and_answers_are_not_logged_at_info(caplog: pytest.LogCaptureFixture) -> None:
    d = Door(answer=lambda body: "The secret answer is 4711.")
    with caplog.at_level("INFO"):
        d.chat([user("My private question about Zanzibar")], headers={"x-vlmguard-tenant": "cut"})
        d.chat([user("Another private question about Zanzibar")], stream=True)
    logged = "\n".join(r.getMessage() for r in caplog.records if r.levelname != "DEBUG")
    assert "Zanzibar" not in logged and "4711" not in logged
    assert last_user_text(d.upstream.requests[0]) == "My private question about Zanzibar"


def test_listener_socket_is_tcp_so_asyncio_turns_nagle_off() -> None:
    import socket

    from vlmguard.http.server import bind

    sock = bind("127.0.0.1:0")
    try:
        # asyncio sets TCP_NODELAY on accepted connections only when proto is TCP; without it
        # each keep-alive request waited ~40 ms for a delayed ACK (bench/front_door.py).
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()

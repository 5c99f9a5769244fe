"""An OpenAI-compatible server as an httpx transport, for unit tests of the front door and the
upstream client: it records each request and answers from a rule (streamed or not), or with a
scripted status. Integration tests use a real server (``transformers serve``) instead."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx


def last_user_text(body: dict[str, Any]) -> str:
    """The text of the last user message of a chat-completions body."""
    for msg in reversed(body["messages"]):
        if msg["role"] == "user":
            content = msg["content"]
            if isinstance(content, str):
                return content
            return "\n".join(p["text"] for p in content if p.get("type") == "text")
    return ""


class FakeOpenAI:
    """Answers ``/chat/completions`` with ``answer(body)``, split into word chunks when
    streamed; ``/models`` lists ``model``. ``statuses`` are answered first, one per request.

    Attributes:
        requests: The JSON bodies received (chat completions), in order.
        headers: The headers of each request.
    """

    def __init__(self, answer: Callable[[dict[str, Any]], str] | None = None, *,
                 model: str = "fake-model", statuses: list[int] | None = None) -> None:
        self.answer = answer or (lambda body: f"You said: {last_user_text(body)}")
        self.model = model
        self.statuses = list(statuses or [])
        self.requests: list[dict[str, Any]] = []
        self.headers: list[httpx.Headers] = []
        self.transport = httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.headers.append(request.headers)
        if self.statuses:
            status = self.statuses.pop(0)
            return httpx.Response(status, json={"error": {
                "message": f"scripted {status}", "type": "x", "code": None, "param": None}},
                headers={"retry-after": "0"} if status == 429 else {})
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json={"object": "list", "data": [
                {"id": self.model, "object": "model", "owned_by": "test"}]})
        body = json.loads(request.content)
        self.requests.append(body)
        text = self.answer(body)
        if not body.get("stream"):
            return httpx.Response(200, json={
                "id": "chatcmpl-up", "object": "chat.completion", "created": 1,
                "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": len(text.split()),
                          "total_tokens": 3 + len(text.split())}})
        events = [{"role": "assistant", "content": ""}]
        words = text.split(" ")
        events += [{"content": w if i == 0 else " " + w} for i, w in enumerate(words)]
        out = []
        for delta in events:
            out.append({"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1,
                        "model": body["model"],
                        "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
        out.append({"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1,
                    "model": body["model"],
                    "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        raw = "".join(f"data: {json.dumps(e)}\n\n" for e in out) + "data: [DONE]\n\n"
        return httpx.Response(200, content=raw.encode(),
                              headers={"content-type": "text/event-stream"})


def sse_chunks(raw: str) -> list[Any]:
    """The events of an SSE body: parsed JSON objects, and the string '[DONE]'."""
    out: list[Any] = []
    for block in raw.split("\n\n"):
        block = block.strip()
        if not block.startswith("data: "):
            continue
        data = block[len("data: "):]
        out.append(data if data == "[DONE]" else json.loads(data))
    return out


def streamed_text(events: list[Any]) -> str:
    return "".join((c["choices"][0]["delta"].get("content") or "")
                   for c in events if isinstance(c, dict) and c.get("choices"))

"""A fixed-service-time OpenAI-compatible teacher server, for benchmarks and failure tests.

Not a model: each ``POST /v1/chat/completions`` holds one of ``capacity`` slots for
``service_ms`` (like a model server with a fixed number of batch slots and a steady decode time),
then answers the synthesis stage it recognises (from the ``response_format`` schema name or the
stage line of the system prompt) with a minimal valid JSON object that keeps the prompt unchanged,
or with a short text for free-text requests. ``usage`` counts ~4 characters per token.

Failure injection for tests: ``script`` is a list of actions consumed one per request before
normal service: an HTTP status (``429``, ``503``, ``400``...), ``"sleep:<s>"`` (answer late),
``"bad_json"`` (an invalid stage output), or ``"reject_format"`` (a 400 naming response_format,
as servers without structured output answer). ``bad_json_for`` makes the JSON-stage answers
for chosen prompts invalid (deterministic under concurrency).

``python -m vlmguard_training.synthesis.fake_teacher_server --port P --service-ms 50
--capacity 16``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from vlmguard.rewriter.format import unescape_data

_PROMPT = re.compile(r"<user_prompt>(.*?)</user_prompt>", re.DOTALL)
_STAGE_LINE = {"Stage 1,": "hindsight", "Stage 2,": "causal", "Stage 3,": "optimized"}


@dataclass
class ServerState:
    """Settings and counters of one server (shared with the test or bench that runs it)."""

    service_ms: float = 50.0
    capacity: int = 16
    script: deque[Any] = field(default_factory=deque)
    requests: int = 0
    completed: int = 0
    busy_s: float = 0.0
    inflight: int = 0
    max_inflight: int = 0
    bodies: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    keep_bodies: bool = False
    #: Substring of the user message -> how many JSON-stage answers to it are invalid JSON.
    bad_json_for: dict[str, int] = field(default_factory=dict)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(p.get("text", "") for p in content if isinstance(p, dict))


def _stage(body: dict[str, Any]) -> str | None:
    rf = body.get("response_format") or {}
    name = str((rf.get("json_schema") or {}).get("name", ""))
    if name.startswith("vlmguard_"):
        return name.removeprefix("vlmguard_")
    system = next((_text(m["content"]) for m in body.get("messages", [])
                   if m.get("role") == "system"), "")
    for marker, stage in _STAGE_LINE.items():
        if marker in system:
            return stage
    return None


def answer(body: dict[str, Any]) -> str:
    """The server's content for a request body."""
    stage = _stage(body)
    user = next((_text(m["content"]) for m in body.get("messages", [])
                 if m.get("role") == "user"), "")
    m = _PROMPT.search(user)
    prompt = unescape_data(m.group(1)) if m else user
    if stage == "hindsight":
        return json.dumps({"categories": [], "harmful_content": "", "compared": "none",
                           "why": "fixed-service-time teacher: no analysis"})
    if stage == "causal":
        return json.dumps({"categories": [], "textual_triggers": [], "visual_elements": [],
                           "cross_modal": "fixed-service-time teacher: no analysis",
                           "reasoning": {"textual": "", "visual": "", "cross_modal": ""},
                           "risky": False})
    if stage == "optimized":
        return json.dumps({"rewritten_prompt": prompt, "guidance_categories": [],
                           "unchanged": True})
    return "A fixed reference answer."


def build_app(state: ServerState) -> Any:
    """The Starlette app serving ``/v1/chat/completions``, ``/v1/models`` and ``/health``."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    slots = asyncio.Semaphore(state.capacity)

    async def chat(request: Request) -> JSONResponse:
        body = await request.json()
        state.requests += 1
        if state.keep_bodies:
            state.bodies.append(body)
            state.headers.append(dict(request.headers))
        action = state.script.popleft() if state.script else None
        if isinstance(action, int):
            return JSONResponse({"error": {"message": f"scripted {action}"}}, status_code=action,
                                headers={"retry-after": "0"} if action == 429 else None)
        if action == "reject_format" and "response_format" in body:
            return JSONResponse({"error": {"message": "response_format is not supported"}},
                                status_code=400)
        state.inflight += 1
        state.max_inflight = max(state.max_inflight, state.inflight)
        async with slots:
            t0 = time.perf_counter()
            await asyncio.sleep(state.service_ms / 1000)
            if isinstance(action, str) and action.startswith("sleep:"):
                await asyncio.sleep(float(action.split(":", 1)[1]))
            state.busy_s += time.perf_counter() - t0
        state.inflight -= 1
        if _stage(body) is not None:
            user = "".join(_text(m.get("content", "")) for m in body.get("messages", [])
                           if m.get("role") == "user")
            for marker, left in state.bad_json_for.items():
                if left > 0 and marker in user:
                    state.bad_json_for[marker] = left - 1
                    action = "bad_json"
                    break
        content = "{not json" if action == "bad_json" else answer(body)
        state.completed += 1
        prompt_chars = 4 + sum(len(_text(m.get("content", ""))) for m in body.get("messages", []))
        return JSONResponse({
            "id": f"fixed-{state.requests}", "object": "chat.completion",
            "model": body.get("model", "fixed"),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": prompt_chars // 4,
                      "completion_tokens": max(1, len(content) // 4),
                      "total_tokens": prompt_chars // 4 + max(1, len(content) // 4)}})

    async def models(request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": "fixed", "object": "model"}]})

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]),
                             Route("/v1/models", models), Route("/health", health)])


class ServerThread:
    """Runs the server with uvicorn in a background thread (for tests and benchmarks).

    Args:
        state: Settings and counters.
        port: Loopback port (0: pick a free one).
    """

    def __init__(self, state: ServerState, port: int = 0) -> None:
        import socket

        import uvicorn

        if port == 0:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = int(s.getsockname()[1])
        self.port = port
        self.state = state
        config = uvicorn.Config(build_app(state), host="127.0.0.1", port=port,
                                log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True,
                                        name="teacher-server")

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("teacher server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


def main(argv: list[str] | None = None) -> int:
    """Run the server in the foreground."""
    import uvicorn

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--port", type=int, default=8011)
    p.add_argument("--service-ms", type=float, default=50.0)
    p.add_argument("--capacity", type=int, default=16)
    a = p.parse_args(argv)
    uvicorn.run(build_app(ServerState(a.service_ms, a.capacity)), host="127.0.0.1",
                port=a.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

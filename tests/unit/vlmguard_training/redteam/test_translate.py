"""Machine translation for ``machine_translate`` against a real OpenAI-compatible HTTP server
on a loopback port (the synthesis fake server: fixed answers, scripted failures)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterator

import pytest

from vlmguard_training.redteam.translate import Translator
from vlmguard_training.synthesis.fake_teacher_server import ServerState, ServerThread


@pytest.fixture
def server() -> Iterator[ServerThread]:
    with ServerThread(ServerState(service_ms=1, capacity=8, keep_bodies=True)) as s:
        yield s


def test_translates_with_a_language_instruction_and_reports_failures(
        server: ServerThread) -> None:
    server.state.script = deque([None, 400])  # the second request fails for good

    async def go() -> list[str | None]:
        t = Translator(server.url, "mt-model", concurrency=1, timeout_s=5.0)
        try:
            return await t.translate_many([("How do I bake bread?", "fr"),
                                           ("Where is the station?", "ja")])
        finally:
            await t.aclose()

    out = asyncio.run(go())
    assert out == ["A fixed reference answer.", None]
    body = server.state.bodies[0]
    assert body["model"] == "mt-model" and body["temperature"] == 0.0
    system, user = body["messages"]
    assert "French" in system["content"] and user["content"] == "How do I bake bread?"
    assert "response_format" not in body
    assert "Japanese" in server.state.bodies[1]["messages"][0]["content"]

"""Conversations and the output check on the wire: GuardRequest.messages to domain turns and
back, the client's JSON conversation reader, and the CheckOutput answer as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.helpers import png_bytes
from vlmguard.domain import ChatTurn, ImageInput, OutputAction
from vlmguard.errors import InvalidArgumentError, Reason
from vlmguard.gateway import client, convert
from vlmguard.v1 import guard_pb2, types_pb2


def m(role: int, text: str, *images: bytes) -> types_pb2.ChatMessage:
    return types_pb2.ChatMessage(role=role, text=text,  # type: ignore[arg-type]
                                 images=[types_pb2.Image(data=d) for d in images])


def test_messages_split_into_the_last_user_turn_and_its_history() -> None:
    text, images, history = convert.prompt_from_pb("", [], [
        m(types_pb2.ROLE_SYSTEM, "sys"), m(types_pb2.ROLE_USER, "u1", b"img1"),
        m(types_pb2.ROLE_ASSISTANT, "a1"), m(types_pb2.ROLE_USER, "last", b"img2")])
    assert text == "last" and images == (ImageInput(b"img2"),)
    assert history == (ChatTurn("system", "sys"), ChatTurn("user", "u1", (ImageInput(b"img1"),)),
                       ChatTurn("assistant", "a1"))


def test_a_single_prompt_is_unchanged() -> None:
    assert convert.prompt_from_pb("hi", [types_pb2.Image(data=b"x")], []) == (
        "hi", (ImageInput(b"x"),), ())


@pytest.mark.parametrize(("text", "messages", "reason"), [
    ("hi", [m(types_pb2.ROLE_USER, "u")], Reason.MALFORMED_REQUEST),
    ("", [m(types_pb2.ROLE_USER, "u"), m(types_pb2.ROLE_ASSISTANT, "a")], Reason.INVALID_ROLE),
    ("", [types_pb2.ChatMessage(text="no role"), m(types_pb2.ROLE_USER, "u")],
     Reason.INVALID_ROLE),
])
def test_bad_conversations(text: str, messages: list[types_pb2.ChatMessage],
                           reason: str) -> None:
    with pytest.raises(InvalidArgumentError) as e:
        convert.prompt_from_pb(text, [], messages)
    assert e.value.reason == reason


def test_turns_round_trip_and_last_user_text() -> None:
    turns = (ChatTurn("system", "s"), ChatTurn("user", "u", (ImageInput(b"i", "image/png"),)),
             ChatTurn("assistant", "a"))
    assert convert.turns_from_pb(convert.turns_to_pb(turns)) == turns
    assert convert.last_user_text(turns) == "u" and convert.last_user_text(()) == ""
    assert {convert.output_action_to_pb(a) for a in OutputAction} == {
        guard_pb2.OUTPUT_ACTION_PASS, guard_pb2.OUTPUT_ACTION_ANNOTATE,
        guard_pb2.OUTPUT_ACTION_REPLACE, guard_pb2.OUTPUT_ACTION_CUT}


def test_client_reads_a_json_conversation_with_images(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(png_bytes())
    raw = json.loads('[{"role": "system", "content": "s"}, '
                     '{"role": "user", "content": "look", "images": ["a.png"]}]')
    msgs = client.chat_messages(raw, base=tmp_path)
    assert [x.role for x in msgs] == [types_pb2.ROLE_SYSTEM, types_pb2.ROLE_USER]
    assert msgs[1].images[0].data == png_bytes()
    with pytest.raises(ValueError, match="role"):
        client.chat_messages([{"role": "tool", "content": "x"}])
    with pytest.raises(ValueError, match="content"):
        client.chat_messages([{"role": "user", "content": [{"type": "text"}]}])
    assert client.RPCS["check-output"][2] == "CheckOutput"


def test_check_output_answer_as_json() -> None:
    resp = guard_pb2.CheckOutputResponse(
        request_id="r", tenant_id="t", action=guard_pb2.OUTPUT_ACTION_CUT, text="kept",
        annotation="cut", categories=["violence_weapons"],
        report=types_pb2.RiskReport(level=types_pb2.RISK_LEVEL_MEDIUM, score=0.7))
    out = client.check_output_json(resp)
    assert out["output_action"] == "CUT" and out["text"] == "kept"
    assert out["categories"] == ["violence_weapons"] and out["risk_level"] == "MEDIUM"

"""Unit tests for the queue wire codec and the Redis queue settings (no Redis needed)."""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any

import pytest

from vlmguard.config import QueueConfig, load_config, redact_url
from vlmguard.domain import (
    ANALYZE,
    REWRITE,
    TARGET,
    Analysis,
    AnalysisItem,
    ChatTurn,
    Finding,
    GenerationParams,
    ImageEvidence,
    ImageInput,
    ImageText,
    Modality,
    ModalityReasoning,
    RewriteItem,
    RewriterEvidence,
    TargetItem,
    TargetResult,
)
from vlmguard.errors import (
    ConfigError,
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
    Reason,
    ResourceExhaustedError,
    UnavailableError,
    VLMGuardError,
)
from vlmguard.queue.codec import CodecError, decode, decode_item, decode_result, encode

IMG = ImageInput(bytes(range(256)) * 3, "image/png")


def _analysis() -> Analysis:
    return Analysis(
        score=0.75,
        findings=(Finding("illegal_activity", 0.75, Modality.CROSS_MODAL, "ev", "joint", 0),),
        reasoning=ModalityReasoning("t", "v", "c"),
        analyzer="tier1/x",
        category_scores={"illegal_activity": 0.75, "privacy": 0.0},
        images=(ImageEvidence(0, 64, 48, "text", (("EXPOSED", 0.9),), 0.62),),
        timings_ms={"embed": 1.5},
    )


@pytest.mark.parametrize("obj", [
    AnalysisItem("req-1", "héllo \u2603", (IMG, ImageInput(b"", ""))),
    _analysis(),
    TargetItem("rewritten", (IMG,), ("ocr",), GenerationParams(64, 0.7, 0.9, 3)),
    TargetItem("with a deadline", (), (), GenerationParams(), 1_790_000_000.25),
    TargetResult("answer", "smollm2", "length", 10, 64),
    # Conversations: the analyzer's context, the target's earlier turns, the rewriter's images.
    AnalysisItem("req-2", "and now?", (IMG,), "system prompt\nearlier turn"),
    TargetItem("last", (IMG,), ("",), GenerationParams(), None,
               (ChatTurn("system", "s"), ChatTurn("user", "u", (IMG,)),
                ChatTurn("assistant", "a"))),
    RewriteItem("req-3", "q", RewriterEvidence((ImageText(0, "ocr"),), (), 0.5), (IMG,)),
])
def test_round_trip(obj: object) -> None:
    assert decode(encode(obj)) == obj


def test_items_from_before_conversations_decode_as_single_turns() -> None:
    """Items a gateway of the previous release queued (no context, history or image inputs)."""
    cases: list[tuple[Any, str, dict[str, Any]]] = [
        (AnalysisItem("r", "t", (), "ctx"), "context", {"context": ""}),
        (TargetItem("t", (), (), GenerationParams(), None, (ChatTurn("user", "u"),)),
         "history", {"history": ()}),
        (RewriteItem("r", "t", RewriterEvidence(), (IMG,)), "image_inputs", {"images": ()}),
    ]
    for obj, key, single_turn in cases:
        doc = json.loads(encode(obj))
        del doc["v"][key]
        assert decode(json.dumps(doc).encode()) == dataclasses.replace(obj, **single_turn)


def test_image_evidence_from_before_the_sign_detector_decodes() -> None:
    """A queued message written before ``prohibition`` existed still decodes (no sign)."""
    doc = json.loads(encode(_analysis()))

    def strip(node: object) -> None:
        if isinstance(node, dict):
            node.pop("prohibition", None)
            for v in node.values():
                strip(v)
        elif isinstance(node, list):
            for v in node:
                strip(v)

    strip(doc)
    assert "prohibition" not in json.dumps(doc)
    assert decode(json.dumps(doc).encode()).images[0].prohibition == 0.0


@pytest.mark.parametrize("err", [
    InvalidArgumentError("bad image", reason=Reason.IMAGE_CORRUPT, metadata={"image_index": "1"}),
    FailedPreconditionError("no target", reason=Reason.TARGET_NOT_CONFIGURED),
    ResourceExhaustedError("full", reason=Reason.QUEUE_FULL, retry_after_s=1.5),
    UnavailableError("gone", reason=Reason.DEAD_LETTERED),
    DeadlineExceededError("late", reason=Reason.DEADLINE_EXCEEDED),
    VLMGuardError("internal"),
])
def test_errors_round_trip_with_class_reason_and_metadata(err: VLMGuardError) -> None:
    got = decode(encode(err))
    assert type(got) is type(err)
    assert (got.code, got.reason, got.message, got.metadata, got.retry_after_s) == (
        err.code, err.reason, err.message, err.metadata, err.retry_after_s)


def test_config_error_travels_as_failed_precondition() -> None:
    got = decode(encode(ConfigError("x")))
    assert isinstance(got, FailedPreconditionError) and got.reason == Reason.CONFIG_INVALID


def test_images_travel_as_base64_not_pickle() -> None:
    raw = json.loads(encode(AnalysisItem("r", "t", (IMG,))))
    assert base64.b64decode(raw["v"]["images"][0]["data"]) == IMG.data


@pytest.mark.parametrize("data", [
    b"", b"\xff\xfe", b"[]", b'{"t": "AnalysisItem"}', b'{"t": "Pickle", "v": {}}',
    b'{"t": "AnalysisItem", "v": {"request_id": 1, "text": "x", "images": []}}',
    b'{"t": "AnalysisItem", "v": {"request_id": "r", "text": "x", '
    b'"images": [{"data": "***", "mime_type": ""}]}}',
    b'{"t": "TargetResult", "v": {"text": "x", "model": "m", "finish_reason": "stop", '
    b'"prompt_tokens": true, "completion_tokens": 0}}',
    b'{"t": "error", "v": {"code": "NOPE", "reason": "R", "message": "m", "metadata": {}}}',
    b'{"t": "error", "v": {"code": "INTERNAL", "reason": "R", "message": "m", '
    b'"metadata": {"k": 1}}}',
])
def test_rejects_malformed_data(data: bytes) -> None:
    with pytest.raises(CodecError):
        decode(data)


def test_refuses_to_encode_unknown_types() -> None:
    with pytest.raises(CodecError):
        encode(object())


def test_queue_config_fields_have_defaults_and_descriptions() -> None:
    cfg = QueueConfig()
    assert cfg.url == ""
    for name, field in QueueConfig.model_fields.items():
        assert field.description, name
        assert not field.is_required(), name


def test_queue_url_scheme_is_checked_and_never_echoed() -> None:
    with pytest.raises(ConfigError) as ei:
        load_config(None, environ={"VLMGUARD_QUEUE_URL": "http://user:s3cret@host:6379"})
    assert "s3cret" not in ei.value.message
    ok = load_config(None, environ={"VLMGUARD_QUEUE_URL": "rediss://:pw@redis:6380/0"})
    assert ok.queue.url.startswith("rediss://")


def test_redact_url_hides_credentials() -> None:
    assert redact_url("redis://:s3cret@host:6379/0") == "redis://***@host:6379/0"
    assert redact_url("rediss://user:pw@h/1") == "rediss://***@h/1"
    assert redact_url("redis://host:6379") == "redis://host:6379"


def test_each_stage_decodes_only_its_own_types() -> None:
    item = AnalysisItem("req-1", "hello", ())
    target_item = TargetItem("t", (), (), GenerationParams())
    result = TargetResult("answer", "m", "stop", 1, 1)
    assert decode_item(ANALYZE, encode(item)) == item
    assert decode_item(TARGET, encode(target_item)) == target_item
    with pytest.raises(CodecError, match="takes AnalysisItem, got TargetItem"):
        decode_item(ANALYZE, encode(target_item))
    with pytest.raises(CodecError, match="takes RewriteItem"):
        decode_item(REWRITE, encode(item))
    assert decode_result(ANALYZE, encode(_analysis())) == _analysis()
    assert decode_result(REWRITE, encode(result)) == result
    err = UnavailableError("down", reason=Reason.STAGE_FAILED)
    assert isinstance(decode_result(TARGET, encode(err)), UnavailableError)
    with pytest.raises(CodecError, match="answers Analysis, got TargetResult"):
        decode_result(ANALYZE, encode(result))
    with pytest.raises(CodecError, match="no codec for stage"):
        decode_item("nope", encode(item))


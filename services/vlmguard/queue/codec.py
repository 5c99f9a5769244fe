"""Wire codec for stage items and results that travel through Redis.

JSON with base64 for image bytes: no pickle, because whatever sits in Redis is untrusted. Every
decoder checks types and raises :class:`CodecError` on anything malformed; unknown type tags are
refused. Errors keep their status code, reason, message, metadata and retry delay.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import Any

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
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
    ResourceExhaustedError,
    StatusCode,
    UnauthenticatedError,
    UnavailableError,
    VLMGuardError,
)

#: Error class rebuilt for each status code (ConfigError travels as FAILED_PRECONDITION).
_ERRORS_BY_CODE: dict[str, type[VLMGuardError]] = {
    StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    StatusCode.UNAVAILABLE: UnavailableError,
    StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    StatusCode.INTERNAL: VLMGuardError,
}


class CodecError(ValueError):
    """Data read from the queue is not a valid encoded item or result."""


# -- checked accessors -------------------------------------------------------------------------


def _get(d: Any, key: str, kind: type | tuple[type, ...]) -> Any:
    # Hot path of every decode: one dict lookup and one isinstance on valid data.
    if type(d) is not dict:
        raise CodecError(f"expected an object, got {type(d).__name__}")
    try:
        v = d[key]
    except KeyError:
        raise CodecError(f"missing field {key!r}") from None
    if not isinstance(v, kind) or ((v is True or v is False) and kind is not bool):
        if isinstance(v, bool):
            raise CodecError(f"field {key!r}: expected a number")
        raise CodecError(f"field {key!r}: expected {kind}, got {type(v).__name__}")
    return v


def _num(d: Any, key: str) -> float:
    return float(_get(d, key, (int, float)))


def _list(d: Any, key: str) -> list[Any]:
    v: list[Any] = _get(d, key, list)
    return v


def _str_dict(d: Any, key: str, value_kind: type | tuple[type, ...]) -> dict[str, Any]:
    v = _get(d, key, dict)
    for k, x in v.items():
        if not isinstance(k, str) or not isinstance(x, value_kind) or isinstance(x, bool):
            raise CodecError(f"field {key!r}: bad entry")
    return dict(v)


def _bytes(d: Any, key: str) -> bytes:
    try:
        return base64.b64decode(_get(d, key, str), validate=True)
    except (binascii.Error, ValueError) as e:
        raise CodecError(f"field {key!r}: not base64") from e


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# -- domain <-> dict -----------------------------------------------------------------------------


def _image_to(i: ImageInput) -> dict[str, Any]:
    return {"data": _b64(i.data), "mime_type": i.mime_type}


def _image_from(d: Any) -> ImageInput:
    return ImageInput(_bytes(d, "data"), _get(d, "mime_type", str))


def _images_from(d: Any, key: str) -> tuple[ImageInput, ...]:
    """Images under ``key``, () when the key is absent (items written before it existed)."""
    if isinstance(d, dict) and key not in d:
        return ()
    return tuple(_image_from(x) for x in _list(d, key))


def _turn_to(t: ChatTurn) -> dict[str, Any]:
    return {"role": t.role, "text": t.text, "images": [_image_to(x) for x in t.images]}


def _turn_from(d: Any) -> ChatTurn:
    return ChatTurn(_get(d, "role", str), _get(d, "text", str), _images_from(d, "images"))


def _params_to(p: GenerationParams) -> dict[str, Any]:
    return {"max_new_tokens": p.max_new_tokens, "temperature": p.temperature,
            "top_p": p.top_p, "seed": p.seed}


def _params_from(d: Any) -> GenerationParams:
    return GenerationParams(int(_get(d, "max_new_tokens", int)), _num(d, "temperature"),
                            _num(d, "top_p"), int(_get(d, "seed", int)))


def _reasoning_to(r: ModalityReasoning) -> dict[str, Any]:
    return {"textual": r.textual, "visual": r.visual, "cross_modal": r.cross_modal}


def _reasoning_from(d: Any) -> ModalityReasoning:
    return ModalityReasoning(_get(d, "textual", str), _get(d, "visual", str),
                             _get(d, "cross_modal", str))


def _finding_to(f: Finding) -> dict[str, Any]:
    return {"category": f.category, "score": f.score, "modality": f.modality.value,
            "evidence": f.evidence, "source": f.source, "image_index": f.image_index}


def _finding_from(d: Any) -> Finding:
    try:
        modality = Modality(_get(d, "modality", str))
    except ValueError as e:
        raise CodecError("field 'modality': unknown value") from e
    return Finding(_get(d, "category", str), _num(d, "score"), modality,
                   _get(d, "evidence", str), _get(d, "source", str),
                   int(_get(d, "image_index", int)))


def _evidence_to(e: ImageEvidence) -> dict[str, Any]:
    return {"index": e.index, "width": e.width, "height": e.height, "ocr_text": e.ocr_text,
            "explicit_labels": [[label, score] for label, score in e.explicit_labels],
            "prohibition": e.prohibition}


def _evidence_from(d: Any) -> ImageEvidence:
    labels = []
    for x in _list(d, "explicit_labels"):
        if (not isinstance(x, list) or len(x) != 2 or not isinstance(x[0], str)
                or not isinstance(x[1], (int, float)) or isinstance(x[1], bool)):
            raise CodecError("field 'explicit_labels': bad entry")
        labels.append((x[0], float(x[1])))
    # Absent in messages written before the field existed: no sign found.
    prohibition = _num(d, "prohibition") if isinstance(d, dict) and "prohibition" in d else 0.0
    return ImageEvidence(int(_get(d, "index", int)), int(_get(d, "width", int)),
                         int(_get(d, "height", int)), _get(d, "ocr_text", str), tuple(labels),
                         prohibition)


def _analysis_item_to(i: AnalysisItem) -> dict[str, Any]:
    return {"request_id": i.request_id, "text": i.text,
            "images": [_image_to(x) for x in i.images], "context": i.context}


def _analysis_item_from(d: Any) -> AnalysisItem:
    # "context" is absent in items from gateways of the previous release (single turn).
    return AnalysisItem(_get(d, "request_id", str), _get(d, "text", str),
                        tuple(_image_from(x) for x in _list(d, "images")),
                        _get(d, "context", str) if "context" in d else "")


def _analysis_to(a: Analysis) -> dict[str, Any]:
    return {"score": a.score, "findings": [_finding_to(f) for f in a.findings],
            "reasoning": _reasoning_to(a.reasoning), "analyzer": a.analyzer,
            "category_scores": dict(a.category_scores),
            "images": [_evidence_to(e) for e in a.images], "timings_ms": dict(a.timings_ms),
            "language": a.language, "language_supported": a.language_supported}


def _analysis_from(d: Any) -> Analysis:
    num = (int, float)
    return Analysis(
        score=_num(d, "score"),
        findings=tuple(_finding_from(f) for f in _list(d, "findings")),
        reasoning=_reasoning_from(_get(d, "reasoning", dict)),
        analyzer=_get(d, "analyzer", str),
        category_scores={k: float(v) for k, v in _str_dict(d, "category_scores", num).items()},
        images=tuple(_evidence_from(e) for e in _list(d, "images")),
        timings_ms={k: float(v) for k, v in _str_dict(d, "timings_ms", num).items()},
        # Absent in results written by a worker of the previous release (rolling upgrade).
        language=_get(d, "language", str) if "language" in d else "",
        language_supported=(_get(d, "language_supported", bool)
                            if "language_supported" in d else True),
    )


def _target_item_to(i: TargetItem) -> dict[str, Any]:
    return {"text": i.text, "images": [_image_to(x) for x in i.images],
            "image_texts": list(i.image_texts), "params": _params_to(i.params),
            "deadline_unix": i.deadline_unix, "history": [_turn_to(t) for t in i.history]}


def _target_item_from(d: Any) -> TargetItem:

    texts = _list(d, "image_texts")
    if not all(isinstance(t, str) for t in texts):
        raise CodecError("field 'image_texts': expected strings")
    deadline = d.get("deadline_unix")  # absent in items from older gateways
    if deadline is not None and (isinstance(deadline, bool)
                                 or not isinstance(deadline, int | float)):
        raise CodecError("field 'deadline_unix': expected a number or null")
    return TargetItem(_get(d, "text", str), tuple(_image_from(x) for x in _list(d, "images")),
                      tuple(texts), _params_from(_get(d, "params", dict)),
                      None if deadline is None else float(deadline),
                      # absent in items from gateways of the previous release (single turn)
                      tuple(_turn_from(t) for t in _list(d, "history")) if "history" in d
                      else ())


def _target_result_to(r: TargetResult) -> dict[str, Any]:
    return {"text": r.text, "model": r.model, "finish_reason": r.finish_reason,
            "prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens}


def _target_result_from(d: Any) -> TargetResult:
    return TargetResult(_get(d, "text", str), _get(d, "model", str),
                        _get(d, "finish_reason", str), int(_get(d, "prompt_tokens", int)),
                        int(_get(d, "completion_tokens", int)))


def _rewrite_item_to(i: RewriteItem) -> dict[str, Any]:
    ev = i.evidence
    return {"request_id": i.request_id, "text": i.text, "score": ev.score,
            "findings": [_finding_to(f) for f in ev.findings],
            "images": [{"index": im.index, "ocr_text": im.ocr_text,
                        "explicit_labels": [[n, s] for n, s in im.explicit_labels]}
                       for im in ev.images],
            "image_inputs": [_image_to(x) for x in i.images]}


def _rewrite_item_from(d: Any) -> RewriteItem:

    images = []
    for x in _list(d, "images"):
        e = _evidence_from({**x, "width": 0, "height": 0} if isinstance(x, dict) else x)
        images.append(ImageText(e.index, e.ocr_text, tuple(e.explicit_labels)))
    evidence = RewriterEvidence(tuple(images),
                                tuple(_finding_from(f) for f in _list(d, "findings")),
                                _num(d, "score"))
    return RewriteItem(_get(d, "request_id", str), _get(d, "text", str), evidence,
                       _images_from(d, "image_inputs"))


def error_to_dict(e: VLMGuardError) -> dict[str, Any]:
    """An error as a plain dict (code, reason, client-safe message, metadata, retry)."""
    return {"code": e.code.value, "reason": e.reason, "message": e.message,
            "metadata": dict(e.metadata), "retry_after_s": e.retry_after_s}


def error_from_dict(d: Any) -> VLMGuardError:
    """Rebuild an error; the class follows its status code."""
    cls = _ERRORS_BY_CODE.get(_get(d, "code", str))
    if cls is None:
        raise CodecError("field 'code': unknown status code")
    retry = d.get("retry_after_s")
    if retry is not None and (not isinstance(retry, (int, float)) or isinstance(retry, bool)):
        raise CodecError("field 'retry_after_s': expected a number or null")
    return cls(_get(d, "message", str), reason=_get(d, "reason", str),
               metadata=_str_dict(d, "metadata", str),
               retry_after_s=None if retry is None else float(retry))


def _type_name(obj: Any) -> str:
    if isinstance(obj, VLMGuardError):
        return "error"
    return type(obj).__name__


_ENCODERS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "AnalysisItem": _analysis_item_to,
    "Analysis": _analysis_to,
    "TargetItem": _target_item_to,
    "TargetResult": _target_result_to,
    "RewriteItem": _rewrite_item_to,
    "error": error_to_dict,
}
_DECODERS: dict[str, Callable[[Any], Any]] = {
    "AnalysisItem": _analysis_item_from,
    "Analysis": _analysis_from,
    "TargetItem": _target_item_from,
    "TargetResult": _target_result_from,
    "RewriteItem": _rewrite_item_from,
    "error": error_from_dict,
}


#: Compact, UTF-8, no circular-reference check (the encoders build fresh trees of plain data).
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False)


def encode(obj: Any) -> bytes:
    """Encode a stage item, a result or a :class:`VLMGuardError` to bytes.

    Raises:
        CodecError: the object's type has no codec.
    """
    name = _type_name(obj)
    enc = _ENCODERS.get(name)
    if enc is None:
        raise CodecError(f"no codec for {name}")
    return _JSON.encode({"t": name, "v": enc(obj)}).encode("utf-8")


def decode(data: bytes | str) -> Any:
    """Decode what :func:`encode` wrote (an item, a result or a :class:`VLMGuardError`).

    Raises:
        CodecError: not valid JSON, unknown type tag, or a field of the wrong type.
    """
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise CodecError("not valid JSON") from e
    name = _get(obj, "t", str)
    dec = _DECODERS.get(name)
    if dec is None:
        raise CodecError(f"unknown type tag {name[:40]!r}")
    try:
        return dec(_get(obj, "v", dict))
    except CodecError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise CodecError(f"malformed {name}: {type(e).__name__}") from e


#: What each stage takes and answers (the rewrite stage answers a generation, which travels as
#: the target's result type). A queue decodes with the stage it serves, so an item or answer of
#: another stage's type is refused as malformed instead of reaching a handler.
STAGE_TYPES: dict[str, tuple[type, type]] = {
    ANALYZE: (AnalysisItem, Analysis),
    REWRITE: (RewriteItem, TargetResult),
    TARGET: (TargetItem, TargetResult),
}


def _stage_types(stage: str) -> tuple[type, type]:
    types = STAGE_TYPES.get(stage)
    if types is None:
        raise CodecError(f"no codec for stage {stage[:40]!r}")
    return types


def decode_item(stage: str, data: bytes | str) -> Any:
    """Decode an item for ``stage``.

    Raises:
        CodecError: malformed, or not the stage's item type.
    """
    item = decode(data)
    want = _stage_types(stage)[0]
    if not isinstance(item, want):
        raise CodecError(f"stage {stage!r} takes {want.__name__}, got {_type_name(item)}")
    return item


def decode_result(stage: str, data: bytes | str) -> Any:
    """Decode what ``stage`` answered: its result type or a :class:`VLMGuardError`.

    Raises:
        CodecError: malformed, or neither the stage's result type nor an error.
    """
    result = decode(data)
    want = _stage_types(stage)[1]
    if not isinstance(result, want | VLMGuardError):
        raise CodecError(f"stage {stage!r} answers {want.__name__}, got {_type_name(result)}")
    return result


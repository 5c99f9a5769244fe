"""Wire <-> domain conversion. Protobuf types stop here; the rest of the code sees domain types."""

from __future__ import annotations

from collections.abc import Iterable

from vlmguard.domain import (
    Action,
    ChatTurn,
    Finding,
    GenerationParams,
    ImageInput,
    Modality,
    ModalityReasoning,
    OutputAction,
    RewriteResult,
    RiskLevel,
    RiskReport,
)
from vlmguard.errors import InvalidArgumentError, Reason
from vlmguard.v1 import guard_pb2, types_pb2

_MODALITY_TO_PB = {
    Modality.TEXT: types_pb2.MODALITY_TEXT,
    Modality.IMAGE: types_pb2.MODALITY_IMAGE,
    Modality.CROSS_MODAL: types_pb2.MODALITY_CROSS_MODAL,
}
_MODALITY_FROM_PB = {v: k for k, v in _MODALITY_TO_PB.items()}
_LEVEL_TO_PB = {
    RiskLevel.NONE: types_pb2.RISK_LEVEL_NONE,
    RiskLevel.LOW: types_pb2.RISK_LEVEL_LOW,
    RiskLevel.MEDIUM: types_pb2.RISK_LEVEL_MEDIUM,
    RiskLevel.HIGH: types_pb2.RISK_LEVEL_HIGH,
}
_LEVEL_FROM_PB = {v: k for k, v in _LEVEL_TO_PB.items()}
_ACTION_TO_PB = {
    Action.ALLOW: types_pb2.ACTION_ALLOW,
    Action.REWRITE: types_pb2.ACTION_REWRITE,
    Action.BLOCK: types_pb2.ACTION_BLOCK,
}
_ROLE_FROM_PB = {
    types_pb2.ROLE_SYSTEM: "system",
    types_pb2.ROLE_USER: "user",
    types_pb2.ROLE_ASSISTANT: "assistant",
}
_ROLE_TO_PB = {v: k for k, v in _ROLE_FROM_PB.items()}
_OUTPUT_ACTION_TO_PB = {
    OutputAction.PASS: guard_pb2.OUTPUT_ACTION_PASS,
    OutputAction.ANNOTATE: guard_pb2.OUTPUT_ACTION_ANNOTATE,
    OutputAction.REPLACE: guard_pb2.OUTPUT_ACTION_REPLACE,
    OutputAction.CUT: guard_pb2.OUTPUT_ACTION_CUT,
}


def turns_from_pb(messages: Iterable[types_pb2.ChatMessage]) -> tuple[ChatTurn, ...]:
    """Domain turns from the wire.

    Raises:
        InvalidArgumentError: INVALID_ROLE for a message without a known role.
    """
    turns = []
    for i, m in enumerate(messages):
        role = _ROLE_FROM_PB.get(m.role)
        if role is None:
            raise InvalidArgumentError(
                f"messages[{i}].role must be ROLE_SYSTEM, ROLE_USER or ROLE_ASSISTANT",
                reason=Reason.INVALID_ROLE)
        turns.append(ChatTurn(role, m.text, images_from_pb(m.images)))
    return tuple(turns)


def turns_to_pb(turns: Iterable[ChatTurn]) -> list[types_pb2.ChatMessage]:
    """Wire messages from domain turns (clients)."""
    return [types_pb2.ChatMessage(
        role=_ROLE_TO_PB[t.role], text=t.text,
        images=[types_pb2.Image(data=i.data, mime_type=i.mime_type) for i in t.images])
        for t in turns]


def prompt_from_pb(
    text: str, images: Iterable[types_pb2.Image], messages: Iterable[types_pb2.ChatMessage]
) -> tuple[str, tuple[ImageInput, ...], tuple[ChatTurn, ...]]:
    """(last user turn's text, its images, the earlier turns) of a guard request: its
    ``text`` and ``images`` (a single turn), or its ``messages`` (a conversation).

    Raises:
        InvalidArgumentError: MALFORMED_REQUEST when both are set, INVALID_ROLE when the
            conversation does not end with a user message or a role is unknown.
    """
    turns = turns_from_pb(messages)
    imgs = images_from_pb(images)
    if not turns:
        return text, imgs, ()
    if text or imgs:
        raise InvalidArgumentError(
            "set either text and images (one prompt) or messages (a conversation), not both",
            reason=Reason.MALFORMED_REQUEST)
    last = turns[-1]
    if last.role != "user":
        raise InvalidArgumentError(
            "the last message of a conversation must be a user message (the prompt to guard)",
            reason=Reason.INVALID_ROLE)
    return last.text, last.images, turns[:-1]


def last_user_text(turns: tuple[ChatTurn, ...]) -> str:
    """The text of the conversation's last user message ("" when it has none)."""
    return next((t.text for t in reversed(turns) if t.role == "user"), "")


def output_action_to_pb(a: OutputAction) -> guard_pb2.OutputAction.ValueType:
    return _OUTPUT_ACTION_TO_PB[a]


def images_from_pb(images: Iterable[types_pb2.Image]) -> tuple[ImageInput, ...]:
    """Domain images from the wire (validation happens in the pipeline)."""
    return tuple(ImageInput(bytes(i.data), i.mime_type) for i in images)


def params_from_pb(p: types_pb2.GenerationParams) -> GenerationParams:
    return GenerationParams(
        max_new_tokens=p.max_new_tokens, temperature=p.temperature, top_p=p.top_p, seed=p.seed
    )


def reasoning_to_pb(r: ModalityReasoning) -> types_pb2.ModalityReasoning:
    return types_pb2.ModalityReasoning(textual=r.textual, visual=r.visual,
                                       cross_modal=r.cross_modal)


def action_to_pb(a: Action) -> types_pb2.Action.ValueType:
    return _ACTION_TO_PB[a]


def report_to_pb(r: RiskReport) -> types_pb2.RiskReport:
    return types_pb2.RiskReport(
        level=_LEVEL_TO_PB[r.level],
        score=r.score,
        findings=[
            types_pb2.Finding(
                category=f.category, score=f.score, modality=_MODALITY_TO_PB[f.modality],
                evidence=f.evidence, source=f.source, image_index=f.image_index,
            )
            for f in r.findings
        ],
        reasoning=reasoning_to_pb(r.reasoning),
        analyzer=r.analyzer,
        language=r.language,
        language_unsupported=not r.language_supported,
    )


def report_from_pb(r: types_pb2.RiskReport, known_categories: Iterable[str]) -> RiskReport:
    """A caller-supplied report (RewriteService.Rewrite).

    Raises:
        InvalidArgumentError: INVALID_REPORT on unknown categories, modalities or bad scores.
    """
    known = set(known_categories)
    findings: list[Finding] = []
    scores: dict[str, float] = {}
    for i, f in enumerate(r.findings):
        if f.category not in known:
            raise InvalidArgumentError(
                f"report.findings[{i}].category is not a known category",
                reason=Reason.INVALID_REPORT,
            )
        if not 0.0 <= f.score <= 1.0:
            raise InvalidArgumentError(
                f"report.findings[{i}].score must be in [0, 1]", reason=Reason.INVALID_REPORT
            )
        modality = _MODALITY_FROM_PB.get(f.modality)
        if modality is None:
            raise InvalidArgumentError(
                f"report.findings[{i}].modality must be set", reason=Reason.INVALID_REPORT
            )
        findings.append(Finding(f.category, f.score, modality, f.evidence, f.source,
                                f.image_index))
        scores[f.category] = max(scores.get(f.category, 0.0), f.score)
    if not 0.0 <= r.score <= 1.0:
        raise InvalidArgumentError("report.score must be in [0, 1]", reason=Reason.INVALID_REPORT)
    reasoning = ModalityReasoning(r.reasoning.textual, r.reasoning.visual,
                                  r.reasoning.cross_modal)
    return RiskReport(
        level=_LEVEL_FROM_PB.get(r.level, RiskLevel.NONE),
        score=max([r.score, *scores.values()]),
        findings=tuple(findings), reasoning=reasoning, analyzer=r.analyzer,
        category_scores=scores, language=r.language,
        language_supported=not r.language_unsupported,
    )


def rewrite_fields(rw: RewriteResult) -> dict[str, object]:
    """Fields shared by GuardResponse and RewriteResponse."""
    return {
        "rewritten_text": rw.rewritten_text,
        "block_message": rw.block_message,
        "rewriter": rw.rewriter,
    }

"""Domain types shared by every stage, free of wire formats and hosting.

The gateway converts protobuf messages to these types at the edge
(:mod:`vlmguard.gateway.convert`); roles, queue and pipeline only see these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

#: Stage names: one queue stream (or in-process batcher) each, in request order.
ANALYZE = "analyze"
#: The tier-2 generation stage (only served with ``rewriter.kind: generative``).
REWRITE = "rewrite"
TARGET = "target"
STAGES = (ANALYZE, REWRITE, TARGET)


class Modality(StrEnum):
    """Where the evidence of a finding came from."""

    TEXT = "TEXT"
    IMAGE = "IMAGE"
    CROSS_MODAL = "CROSS_MODAL"


class RiskLevel(StrEnum):
    """Overall risk level of a request, relative to a tenant's thresholds."""

    NONE = "NONE"
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"


class Action(StrEnum):
    """The guard's decision."""

    ALLOW = "ALLOW"
    REWRITE = "REWRITE"
    BLOCK = "BLOCK"


@dataclass(frozen=True)
class ImageInput:
    """An image as received: encoded bytes and an optional declared MIME type."""

    data: bytes
    mime_type: str = ""


#: Roles of a conversation turn (:class:`ChatTurn`), as in chat-completions APIs.
CHAT_ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class ChatTurn:
    """One earlier turn of a conversation: a system prompt, a user turn or an assistant answer.

    The last user turn of a request is not a ``ChatTurn``: it stays the request's ``text`` and
    ``images``, so single-turn callers are unchanged.
    """

    role: str
    text: str
    images: tuple[ImageInput, ...] = ()


@dataclass(frozen=True)
class GenerationParams:
    """Sampling parameters for a generative model; zeros mean "server default"."""

    max_new_tokens: int = 0
    temperature: float = 0.0
    top_p: float = 0.0
    seed: int = 0


def excerpt(text: str, limit: int = 160) -> str:
    """``text`` on one line, cut to ``limit`` characters with an ellipsis: a finding's
    evidence quotes the text it is about, never more than this."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class Finding:
    """One risk found in a request."""

    category: str
    score: float
    modality: Modality
    evidence: str
    source: str
    image_index: int = -1


@dataclass(frozen=True)
class ModalityReasoning:
    """Short reasoning along the three lines of the VLMGuard-R1 causal analysis."""

    textual: str = ""
    visual: str = ""
    cross_modal: str = ""


@dataclass(frozen=True)
class RiskReport:
    """The threat analysis of one request.

    ``level`` is relative to the thresholds of the tenant that asked; ``category_scores`` holds
    the highest score per category over every source (used by policy and evaluation).
    """

    level: RiskLevel
    score: float
    findings: tuple[Finding, ...]
    reasoning: ModalityReasoning
    analyzer: str
    category_scores: dict[str, float] = field(default_factory=dict)
    #: Language of the text prompt (ISO 639-1), "" when not identified.
    language: str = ""
    #: Whether the analyzer reads that language (see :attr:`Analysis.language_supported`).
    language_supported: bool = True

    def top_categories(self, threshold: float = 0.0) -> list[str]:
        """Categories of the findings at or above ``threshold``, best first, no repeats."""
        seen: list[str] = []
        for f in sorted(self.findings, key=lambda f: -f.score):
            if f.score >= threshold and f.category not in seen:
                seen.append(f.category)
        return seen


@dataclass(frozen=True)
class AnalysisItem:
    """What the analyzer stage gets for one request (images already size-checked)."""

    request_id: str
    text: str
    images: tuple[ImageInput, ...] = ()
    #: The conversation before ``text`` (system prompts and earlier user turns, recent end
    #: kept), "" for a single turn: tier 1 also reads it joined with ``text``, so a risk that
    #: only the conversation carries (a request split across turns, a harmful frame set by the
    #: system prompt) is seen; ``text`` keeps its own score.
    context: str = ""


@dataclass(frozen=True)
class ImageEvidence:
    """What tier 1 read from one image."""

    index: int
    width: int
    height: int
    ocr_text: str
    explicit_labels: tuple[tuple[str, float], ...] = ()
    #: Prohibition-sign detector score (a red ring and bar or a red cross drawn over the
    #: picture); 0 when none was found, the detector is off, or the request does not ask for
    #: publicity about the picture (the only case the sign is looked for).
    prohibition: float = 0.0


@dataclass(frozen=True)
class Analysis:
    """Tier-1 output before policy: raw scores, findings and evidence (tenant-independent)."""

    score: float
    findings: tuple[Finding, ...]
    reasoning: ModalityReasoning
    analyzer: str
    category_scores: dict[str, float]
    images: tuple[ImageEvidence, ...] = ()
    timings_ms: dict[str, float] = field(default_factory=dict)
    #: Language of the text prompt (ISO 639-1), "" when not identified (too little text).
    language: str = ""
    #: Whether the analyzer has a model for that language; policy decides what happens to
    #: requests in the others (``TenantPolicyConfig.unsupported_language``).
    language_supported: bool = True


@dataclass(frozen=True)
class RewriteResult:
    """What a rewriter returns for one request."""

    action: Action
    rewritten_text: str
    reasoning: ModalityReasoning
    block_message: str = ""
    rewriter: str = ""


@dataclass(frozen=True)
class TargetResult:
    """The target model's answer."""

    text: str
    model: str
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class TargetItem:
    """What the target stage gets."""

    text: str
    images: tuple[ImageInput, ...]
    image_texts: tuple[str, ...]
    params: GenerationParams
    #: The caller's deadline as wall-clock seconds (``time.time()``), or None.
    deadline_unix: float | None = None
    #: Earlier turns of the conversation (system prompts included), oldest first; ``text`` and
    #: ``images`` are the last user turn.
    history: tuple[ChatTurn, ...] = ()


@dataclass(frozen=True)
class ImageText:
    """What tier 1 read from one image, as text for the rewriter."""

    index: int
    ocr_text: str
    explicit_labels: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class RewriterEvidence:
    """Tier-1 evidence shown to the rewriter.

    Attributes:
        images: OCR text and explicit-detector labels per image, in request order.
        findings: Tier-1 findings (category, modality, score, evidence).
        score: Tier-1 overall risk score.
    """

    images: tuple[ImageText, ...] = ()
    findings: tuple[Finding, ...] = ()
    score: float = 0.0


@dataclass(frozen=True)
class RewriteItem:
    """What the ``rewrite`` stage gets: the user's prompt and the tier-1 evidence."""

    request_id: str
    text: str
    evidence: RewriterEvidence
    #: The images tier 1 read, in the order of ``evidence.images`` (image ``i`` of the
    #: evidence is ``images[i]``), for rewriters that read images themselves.
    images: tuple[ImageInput, ...] = ()


class OutputAction(StrEnum):
    """What happens to a model's answer after the output check (tenant's ``output_action``)."""

    #: Nothing found (or the tenant's output check is off): deliver the answer as it is.
    PASS = "PASS"
    #: Deliver the answer with :attr:`OutputVerdict.annotation` shown alongside.
    ANNOTATE = "ANNOTATE"
    #: Deliver :attr:`OutputVerdict.text` (the tenant's output message) instead of the answer.
    REPLACE = "REPLACE"
    #: Deliver :attr:`OutputVerdict.text`: the answer up to its first flagged passage, followed
    #: by nothing else; :attr:`OutputVerdict.annotation` says it was cut.
    CUT = "CUT"


@dataclass(frozen=True)
class OutputVerdict:
    """The output check of one answer (``GuardPipeline.check_output``).

    Attributes:
        action: What to do with the answer.
        level: Risk level of the answer under the tenant's thresholds.
        score: Tier-1 score of the answer (its riskiest reading).
        categories: Categories that triggered the action, highest score first.
        text: What to deliver in place of the checked answer: the answer unchanged for PASS
            and ANNOTATE, the tenant's output message for REPLACE, the kept start of the answer
            for CUT (possibly "").
        annotation: ANNOTATE: the note to show with the answer; CUT: the notice that the
            answer was cut; else "".
        report: The tier-1 report of the answer (findings, reasoning).
    """

    request_id: str
    tenant_id: str
    action: OutputAction
    level: RiskLevel
    score: float
    categories: tuple[str, ...]
    text: str
    annotation: str
    report: RiskReport
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass
class GuardResult:
    """End-to-end outcome of one guarded request."""

    request_id: str
    tenant_id: str
    action: Action
    report: RiskReport
    rewrite: RewriteResult
    target: TargetResult | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the ``vlmguard guard --json`` shape)."""
        return {
            "request_id": self.request_id,
            "tenant_id": self.tenant_id,
            "action": self.action.value,
            "risk_level": self.report.level.value,
            "risk_score": round(self.report.score, 4),
            "language": self.report.language,
            "language_supported": self.report.language_supported,
            "findings": [
                {
                    "category": f.category,
                    "score": round(f.score, 4),
                    "modality": f.modality.value,
                    "evidence": f.evidence,
                    "source": f.source,
                    "image_index": f.image_index,
                }
                for f in self.report.findings
            ],
            "reasoning": {
                "textual": self.report.reasoning.textual,
                "visual": self.report.reasoning.visual,
                "cross_modal": self.report.reasoning.cross_modal,
            },
            "rewritten_text": self.rewrite.rewritten_text,
            "block_message": self.rewrite.block_message,
            "rewriter": self.rewrite.rewriter,
            "target_response": self.target.text if self.target else "",
            "timings_ms": {k: round(v, 2) for k, v in self.timings_ms.items()},
        }

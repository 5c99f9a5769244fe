"""Teachers fill the three synthesis stages; :class:`EvidenceTeacher` is the offline one.

No capable VLM is available offline, so :class:`EvidenceTeacher` (id
``evidence-tier1/<analyzer version>``) derives every stage deterministically from the tier-1
analyzer's findings (prompt risk, OCR text, explicit-imagery labels, category scores), the
seed's label and benchmark category, and the taxonomy's per-category guidance. It uses no model
and never invents responses. Records name the teacher that made them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from vlmguard.config import TaxonomyConfig
from vlmguard.domain import (
    Analysis,
    Modality,
    ModalityReasoning,
    RewriterEvidence,
    RiskLevel,
    RiskReport,
    excerpt,
)
from vlmguard.rewriter.format import benign_rewrite, evidence_from_analysis
from vlmguard.rewriter.template import TemplateRewriter
from vlmguard_training.synthesis.stages import CausalReport, Hindsight, Optimized, Responses

#: Labels of seeds that a good system answers normally.
BENIGN_LABELS = frozenset({"safe", "benign"})


@dataclass(frozen=True)
class Seed:
    """One seed item of a training-seed set.

    Attributes:
        id: Item id in its set.
        source: The set (e.g. ``vlguard_test``).
        text: The prompt.
        label: ``unsafe``, ``safe`` or ``benign``.
        benchmark_category: The set's own category.
        category: The taxonomy category it maps to, if any.
        image_path: Image file, or None (text-only seed).
        image_ref: The seed's reference to a missing image, if any.
        safe_response: A safe reference response from the seed, if any.
        unsafe_response: An unsafe response from the seed, if any.
        response_source: Seed field(s) the responses came from.
    """

    id: str
    source: str
    text: str
    label: str
    benchmark_category: str
    category: str | None
    image_path: str | None = None
    image_ref: str | None = None
    safe_response: str | None = None
    unsafe_response: str | None = None
    response_source: str = "none"

    @property
    def key(self) -> str:
        """Unique key across sets."""
        return f"{self.source}:{self.id}"

    @property
    def benign(self) -> bool:
        """Whether a good system answers this seed normally."""
        return self.label in BENIGN_LABELS


#: Usage keys of one record: the teacher/target calls a record can make.
USAGE_KEYS = ("safe_reference", "target_response", "hindsight", "causal", "optimize")


@dataclass
class StageUsage:
    """Requests, retries, tokens and latency of one stage's model calls for one record."""

    requests: int = 0
    retries: int = 0
    validation_retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    validation_errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The record's form (latency rounded)."""
        d = dict(self.__dict__)
        d["latency_ms"] = round(self.latency_ms, 3)
        return d


def new_usage() -> dict[str, StageUsage]:
    """Empty usage of one record."""
    return {k: StageUsage() for k in USAGE_KEYS}


@dataclass(frozen=True)
class StageInput:
    """What every stage sees: the seed, its tier-1 analysis and evidence, the image bytes."""

    seed: Seed
    analysis: Analysis
    image: bytes | None
    evidence: RewriterEvidence

    @classmethod
    def of(cls, seed: Seed, analysis: Analysis, image: bytes | None) -> StageInput:
        """Build from a seed and its analysis."""
        return cls(seed, analysis, image, evidence_from_analysis(analysis))


class AsyncTeacher(Protocol):
    """A teacher as the runner drives it: async stages that account their usage."""

    id: str
    kind: str

    async def responses(self, inp: StageInput, usage: dict[str, StageUsage]) -> Responses: ...

    async def hindsight(self, inp: StageInput, responses: Responses,
                        usage: dict[str, StageUsage]) -> Hindsight: ...

    async def causal(self, inp: StageInput, hindsight: Hindsight,
                     usage: dict[str, StageUsage]) -> CausalReport: ...

    async def optimize(self, inp: StageInput, report: CausalReport,
                       usage: dict[str, StageUsage]) -> Optimized: ...

    def stats(self) -> dict[str, Any]: ...

    async def aclose(self) -> None: ...


class Teacher(Protocol):
    """Fills the synthesis stages for one seed; ``id`` is written into every record."""

    id: str

    def responses(self, seed: Seed) -> Responses: ...

    def hindsight(self, seed: Seed, analysis: Analysis, responses: Responses) -> Hindsight: ...

    def causal(self, seed: Seed, analysis: Analysis, hindsight: Hindsight) -> CausalReport: ...

    def optimize(self, seed: Seed, analysis: Analysis, report: CausalReport) -> Optimized: ...


class EvidenceTeacher:
    """Deterministic teacher from tier-1 evidence and taxonomy guidance (no model).

    Args:
        taxonomy: The risk taxonomy (descriptions and guidance).
        analyzer_name: The tier-1 analyzer's name (``tier1/<version>``).
    """

    kind = "evidence"

    def __init__(self, taxonomy: TaxonomyConfig, analyzer_name: str) -> None:
        self.taxonomy = taxonomy
        self.id = f"evidence-tier1/{analyzer_name.removeprefix('tier1/')}"
        self._template = TemplateRewriter(taxonomy)

    # -- stage 0 ---------------------------------------------------------------------------

    def responses(self, seed: Seed) -> Responses:
        """The seed's own responses; none are fabricated."""
        if seed.safe_response is None and seed.unsafe_response is None:
            return Responses(None, None, "none")
        return Responses(seed.safe_response, seed.unsafe_response, seed.response_source,
                         seed.response_source if seed.safe_response is not None else "none",
                         seed.response_source if seed.unsafe_response is not None else "none")

    # -- stage 1 ---------------------------------------------------------------------------

    def _categories(self, seed: Seed, analysis: Analysis) -> tuple[str, ...]:
        if seed.benign:
            return ()
        found = [f.category for f in analysis.findings]
        cats = ([seed.category] if seed.category else []) + found
        if not cats and analysis.category_scores:
            # Unsafe seed, no mapped category, nothing over threshold: the closest category.
            cats = [max(analysis.category_scores, key=lambda c: analysis.category_scores[c])]
        return tuple(dict.fromkeys(c for c in cats if self.taxonomy.get(c) is not None))

    def hindsight(self, seed: Seed, analysis: Analysis, responses: Responses) -> Hindsight:
        """Risk features: categories from the label, benchmark mapping and tier-1 findings."""
        compared = {(True, True): "safe+unsafe", (True, False): "safe_only",
                    (False, True): "unsafe_only", (False, False): "none"}[
            (responses.safe is not None, responses.unsafe is not None)]
        cats = self._categories(seed, analysis)
        if not cats:
            why = (f"The seed is labelled {seed.label}: a direct, helpful answer is the safe "
                   "answer, and no risk category applies.")
            return Hindsight((), "", why, compared)
        descr = "; ".join(f"{c}: {spec.description}" for c in cats
                          if (spec := self.taxonomy.get(c)) is not None)
        if responses.unsafe is not None:
            harmful = ("Compared with the safe response, the unsafe response gives content in "
                       f"these categories: {descr}.")
        else:
            harmful = ("No unsafe response was available; a compliant answer would give content "
                       f"in these categories: {descr}.")
        safe_note = (" The safe reference response shows the expected safe handling."
                     if responses.safe is not None else "")
        care = [c for c in cats if (s := self.taxonomy.get(c)) is not None and s.handling == "care"]
        why = (f"The seed is labelled {seed.label} ({seed.benchmark_category}); tier-1 risk "
               f"score {analysis.score:.2f}.")
        if care and len(care) == len(cats):
            why += " These topics need care and a disclaimer, not a refusal."
        else:
            why += " Answering as asked could cause the harm these categories describe."
        return Hindsight(cats, harmful, why + safe_note, compared)

    # -- stage 2 ---------------------------------------------------------------------------

    def causal(self, seed: Seed, analysis: Analysis, hindsight: Hindsight) -> CausalReport:
        """Textual triggers, visual elements and their interaction, from tier-1 findings."""
        cats = set(hindsight.categories)
        textual = tuple(dict.fromkeys(
            f"{f.category}: {f.evidence}" for f in analysis.findings
            if f.modality is Modality.TEXT and f.category in cats))
        visual: list[str] = []
        for im in analysis.images:
            if im.ocr_text:
                visual.append(f"image {im.index + 1} text: {excerpt(im.ocr_text)}")
            if im.explicit_labels:
                visual.append(f"image {im.index + 1} detector labels: "
                              + ", ".join(f"{n} ({s:.2f})" for n, s in im.explicit_labels[:4]))
        cross_f = [f for f in analysis.findings
                   if f.modality is Modality.CROSS_MODAL and f.category in cats]
        r = analysis.reasoning
        reasoning = ModalityReasoning(r.textual, r.visual, r.cross_modal)
        if cross_f:
            cross = " ".join(f"{f.category} ({f.score:.2f}): {f.evidence}" for f in cross_f)
        elif cats and not textual and not visual:
            where = ("its image" if seed.image_path else
                     "an image that is not available here" if seed.image_ref else "its context")
            cross = (f"The prompt alone shows little risk, yet the seed is unsafe "
                     f"({', '.join(sorted(cats))}): the risk comes from combining it with "
                     f"{where}.")
            reasoning = ModalityReasoning(r.textual, r.visual, f"{r.cross_modal} {cross}".strip())
        else:
            cross = r.cross_modal or "No cross-modal interaction adds risk."
        return CausalReport(hindsight.categories, textual, tuple(visual), cross, reasoning,
                            bool(hindsight.categories))

    # -- stage 3 ---------------------------------------------------------------------------

    def optimize(self, seed: Seed, analysis: Analysis, report: CausalReport) -> Optimized:
        """The benign rewrite when benign (the prompt, plus a line against over-refusal when
        tier 1 flags it: :func:`~vlmguard.rewriter.format.benign_rewrite`); else the prompt with
        each category's guidance."""
        if not report.risky:
            text = benign_rewrite(seed.text, analysis.score)
            return Optimized(text, (), text == seed.text)
        rr = RiskReport(RiskLevel.MEDIUM, analysis.score, analysis.findings, report.reasoning,
                        analysis.analyzer, dict(analysis.category_scores))
        text = self._template.render(seed.text, rr, report.categories)
        return Optimized(text, report.categories, False)


class SyncTeacherAdapter:
    """Runs a synchronous :class:`Teacher` (e.g. :class:`EvidenceTeacher`) as an
    :class:`AsyncTeacher` (in the event loop: it must be fast and make no model calls)."""

    def __init__(self, teacher: Teacher) -> None:
        self.teacher = teacher
        self.id = teacher.id
        self.kind = str(getattr(teacher, "kind", "sync"))

    async def responses(self, inp: StageInput, usage: dict[str, StageUsage]) -> Responses:
        """Stage 0."""
        return self.teacher.responses(inp.seed)

    async def hindsight(self, inp: StageInput, responses: Responses,
                        usage: dict[str, StageUsage]) -> Hindsight:
        """Stage 1."""
        return self.teacher.hindsight(inp.seed, inp.analysis, responses)

    async def causal(self, inp: StageInput, hindsight: Hindsight,
                     usage: dict[str, StageUsage]) -> CausalReport:
        """Stage 2."""
        return self.teacher.causal(inp.seed, inp.analysis, hindsight)

    async def optimize(self, inp: StageInput, report: CausalReport,
                       usage: dict[str, StageUsage]) -> Optimized:
        """Stage 3."""
        return self.teacher.optimize(inp.seed, inp.analysis, report)

    def stats(self) -> dict[str, Any]:
        """No client counters."""
        return {}

    async def aclose(self) -> None:
        """Nothing to close."""

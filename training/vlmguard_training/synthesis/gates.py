"""Quality gates of synthesized records.

Per record (:class:`Gatekeeper`, run by the shard runner in batches):

- ``schema_valid``: every stage output is valid for its schema, the final training target parses
  with serving's :func:`~vlmguard.rewriter.format.parse_rewriter_output`, and no stage failed;
- ``keeps_intent``: for benign seeds (``safe``/``benign`` labels), the cosine similarity of the
  prompt's and the rewrite's sentence embeddings (MiniLM) is at least ``min_intent_similarity``;
- ``rewrite_safe``: the tier-1 analyzer scores the rewrite's text alone below
  ``max_rewrite_risk``;
- ``not_refusal_only``: the rewrite is not a generic refusal;
- ``unique``: no earlier record has the same normalised prompt + image sha256
  (:func:`dedupe_key`; within a shard here, across shards in
  :mod:`vlmguard_training.synthesis.merge`).

Across records (:mod:`vlmguard_training.synthesis.merge`): ``category_cap``, at most
``max_per_category`` accepted records per category (0: no cap).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from pydantic import Field, model_validator

from vlmguard.config import TaxonomyConfig
from vlmguard.domain import Analysis, AnalysisItem
from vlmguard.errors import VLMGuardError
from vlmguard.rewriter.format import RewriterOutputError, parse_rewriter_output
from vlmguard_training.recipe import Recipe
from vlmguard_training.synthesis.stages import validate

#: Record gates, in report order.
RECORD_GATES = ("schema_valid", "keeps_intent", "rewrite_safe", "not_refusal_only", "unique")
#: Gates applied when shards are merged.
MERGE_GATES = ("unique", "category_cap")
BENIGN_LABELS = frozenset({"safe", "benign"})

_REFUSAL = re.compile(r"^\s*(i('m| am) sorry|sorry|i can(no|')t|i cannot|i won't|i will not|"
                      r"as an ai)\b", re.IGNORECASE)


class Embedder(Protocol):
    """Sentence embeddings (rows of unit length)."""

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray: ...


class TextAnalyzer(Protocol):
    """The tier-1 analyzer interface the gates need."""

    name: str

    def analyze_batch(self, items: Sequence[AnalysisItem]) -> list[Analysis | VLMGuardError]: ...


class GateSettings(Recipe):
    """Gate thresholds (the synthesis recipe's ``gates`` block)."""

    min_intent_similarity: float = Field(
        0.8, ge=-1, le=1,
        description="Least prompt/rewrite cosine similarity of benign seeds (keeps_intent).")
    max_rewrite_risk: float = Field(
        0.5, gt=0, le=1, description="The rewrite's tier-1 score must be below this "
        "(rewrite_safe).")
    max_per_category: int = Field(0, ge=0, description="Cap of accepted records per category "
                                  "at merge (0: none).")
    enforce: tuple[str, ...] = Field(RECORD_GATES, description="Gates whose failure rejects a "
                                     "record; the others are only counted (reported).")
    skip: tuple[str, ...] = Field((), description="Gates not evaluated at all (keeps_intent, "
                                  "rewrite_safe; their value is null, counted as skipped).")

    @model_validator(mode="after")
    def _known_gates(self) -> GateSettings:
        if not set(self.enforce) <= set(RECORD_GATES):
            raise ValueError(f"enforce: a list of {', '.join(RECORD_GATES)}")
        if not set(self.skip) <= {"keeps_intent", "rewrite_safe"} or \
                set(self.skip) & set(self.enforce):
            raise ValueError("skip: a list of keeps_intent, rewrite_safe that are not enforced")
        return self

    def to_json(self) -> dict[str, Any]:
        """The summary's form."""
        d = self.model_dump()
        d["enforce"] = list(self.enforce)
        d["skip"] = list(self.skip)
        return d


def normalise(text: str) -> str:
    """Whitespace-collapsed, case-folded text."""
    return " ".join(text.split()).casefold()


def dedupe_key(prompt: str, image: dict[str, Any] | None) -> str:
    """sha256 of the normalised prompt and the image's sha256 (or reference)."""
    img = ""
    if image:
        img = str(image.get("sha256") or image.get("ref") or "")
    return hashlib.sha256(f"{normalise(prompt)}\0{img}".encode()).hexdigest()


def balance_category(record: dict[str, Any]) -> str:
    """The category a record counts under for balance: its mapped category, else by label."""
    cat = record.get("category")
    if cat:
        return str(cat)
    return "benign" if record.get("label") in BENIGN_LABELS else "uncategorized"


def schema_problems(record: dict[str, Any], categories: list[str]) -> list[str]:
    """Schema problems of a record (empty when ``schema_valid`` passes)."""
    if "error" in record:
        err = record["error"]
        return [f"stage failed: {err.get('stage', '?')}: {err.get('reason')}"]
    stages = record.get("stages") or {}
    problems = [p for name in ("responses", "hindsight", "causal", "optimized")
                for p in validate(name, stages.get(name), categories)]
    final = record.get("final") or {}
    try:
        parsed = parse_rewriter_output(str(final.get("output") or ""))
        if parsed.rewritten_text != final.get("rewrite"):
            problems.append("final: output does not carry the rewrite")
    except RewriterOutputError as e:
        problems.append(f"final: {e.kind}")
    return problems


class Gatekeeper:
    """Evaluates the record gates of batches of records.

    Args:
        settings: Thresholds.
        taxonomy: Category ids (schema checks).
        embedder: Sentence embedder for ``keeps_intent`` (MiniLM in production).
        analyzer: Tier-1 analyzer for ``rewrite_safe``.
        seen: Dedupe keys already accepted (e.g. read back from the shard file).
    """

    def __init__(self, settings: GateSettings, taxonomy: TaxonomyConfig, embedder: Embedder,
                 analyzer: TextAnalyzer, seen: set[str] | None = None) -> None:
        self.settings = settings
        self.categories = taxonomy.ids
        self.embedder = embedder
        self.analyzer = analyzer
        self.seen: set[str] = set(seen or ())

    def evaluate(self, records: list[dict[str, Any]]) -> None:
        """Add ``gates``, ``gate_metrics``, ``dedupe_key``, ``accepted`` and ``reject_reasons``
        to each record (in order: a later duplicate in the batch is the one rejected)."""
        ok_final = [r for r in records
                    if "error" not in r and (r.get("final") or {}).get("rewrite")]
        sims: dict[int, float] = {}
        risks: dict[int, float] = {}
        # Intent similarity matters for benign seeds only; an unchanged rewrite is 1 exactly.
        s = self.settings
        to_embed = []
        for r in ok_final:
            if r.get("label") not in BENIGN_LABELS or "keeps_intent" in s.skip:
                continue
            if normalise(str(r["prompt"])) == normalise(str(r["final"]["rewrite"])):
                sims[id(r)] = 1.0
            else:
                to_embed.append(r)
        if to_embed:
            texts = [t for r in to_embed for t in (str(r["prompt"]), str(r["final"]["rewrite"]))]
            emb = np.asarray(self.embedder.embed(texts), dtype=np.float32)
            for i, r in enumerate(to_embed):
                a, b = emb[2 * i], emb[2 * i + 1]
                den = float(np.linalg.norm(a) * np.linalg.norm(b)) or 1.0
                sims[id(r)] = float(np.dot(a, b)) / den
        if ok_final and "rewrite_safe" not in s.skip:
            results = self.analyzer.analyze_batch(
                [AnalysisItem(str(r["key"]) + "#rewrite", str(r["final"]["rewrite"]), ())
                 for r in ok_final])
            for r, res in zip(ok_final, results, strict=True):
                risks[id(r)] = res.score if isinstance(res, Analysis) else float("nan")
        for r in records:
            problems = schema_problems(r, self.categories)
            rewrite = str((r.get("final") or {}).get("rewrite") or "")
            sim, risk = sims.get(id(r)), risks.get(id(r))
            benign = r.get("label") in BENIGN_LABELS
            key = dedupe_key(str(r.get("prompt") or ""), r.get("image"))
            g: dict[str, bool | None] = {
                "schema_valid": not problems,
                "keeps_intent": not benign or (sim is not None
                                               and sim >= s.min_intent_similarity),
                # NaN (the analyzer failed on the rewrite) fails the gate.
                "rewrite_safe": risk is not None and risk < s.max_rewrite_risk,
                "not_refusal_only": bool(rewrite) and (normalise(str(r.get("prompt") or ""))
                                                       in normalise(rewrite)
                                                       or not _REFUSAL.match(rewrite)),
                "unique": key not in self.seen,
            }
            for name in s.skip:
                g[name] = None
            if not rewrite:  # a failed stage: nothing to judge beyond schema_valid
                for name in ("keeps_intent", "rewrite_safe", "not_refusal_only"):
                    g[name] = None
            r["gates"] = g
            r["gate_metrics"] = {
                "intent_similarity": None if sim is None else round(sim, 4),
                "rewrite_risk": None if risk is None or risk != risk else round(risk, 4)}
            r["dedupe_key"] = key
            reasons = [name for name, passed in g.items()
                       if passed is False and name in s.enforce]
            if problems and "schema_valid" in s.enforce:
                reasons = [f"schema_valid: {p}" for p in problems[:5]] + \
                    [x for x in reasons if x != "schema_valid"]
            r["reject_reasons"] = reasons
            r["accepted"] = not reasons
            if r["accepted"]:
                self.seen.add(key)

"""Tier-2 quality of one guarded request: which rewriter answered, intent kept, guidance carried.

- :func:`tier2_fields` reads the reported ``rewriter`` name: ``tier2`` is "model" for a parsed
  tier-2 rewrite (``reasoning/...``), "fallback" when tier 2 ran and the template answered
  (``template/...;fallback=KIND``, see :func:`vlmguard.rewriter.generative.split_rewriter_name`),
  and "" when tier 2 did not run.
- :class:`RewriteScorer` embeds texts with the MiniLM sentence embedder (loaded once, offline)
  and gives ``intent_sim``, the cosine similarity of the user's prompt and the rewritten text,
  and ``guidance``, per category found, the highest cosine similarity between any line or
  sentence of the rewritten text and that category's taxonomy guidance.

Neither the texts nor their embeddings are kept or logged: only the similarities leave here.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vlmguard.config import TaxonomyConfig
from vlmguard.rewriter.format import normalize_text
from vlmguard.rewriter.generative import split_rewriter_name

#: ``rewriter`` prefix of a parsed tier-2 rewrite (``prompts.REWRITER_NAME``).
MODEL_PREFIX = "reasoning/"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def tier2_fields(rewriter: str) -> tuple[str, str]:
    """(``tier2``, ``fallback_kind``) of a reported rewriter name (see the module docstring)."""
    _, kind = split_rewriter_name(rewriter)
    if kind:
        return "fallback", kind
    if rewriter.startswith(MODEL_PREFIX):
        return "model", ""
    return "", ""


def text_units(text: str) -> list[str]:
    """The lines of ``text`` and the sentences within them (list markers and quotes stripped,
    duplicates and empty ones dropped), in order."""
    out: list[str] = []
    for line in text.splitlines():
        line = line.strip().lstrip("-*\u2022 ").strip().strip('"').strip()
        if not line:
            continue
        for unit in [line, *_SENTENCE_END.split(line)]:
            unit = unit.strip()
            if unit and unit not in out:
                out.append(unit)
    return out


@dataclass(frozen=True)
class RewriteQuality:
    """Similarities for one request (None / empty where not applicable)."""

    intent_sim: float | None = None
    guidance: dict[str, float] = field(default_factory=dict)
    #: The rewrite still holds the whole prompt (up to whitespace and case).
    prompt_kept: bool | None = None


class RewriteScorer:
    """Scores rewrites against the prompt and the taxonomy's guidance (thread-safe, blocking:
    call it through ``asyncio.to_thread``).

    Args:
        taxonomy: Categories and their guidance text.
        embedder: Anything with ``embed(texts, batch_size) -> unit-norm rows`` (default: the
            MiniLM embedder, loaded here).
        batch_size: Texts per forward pass.

    Raises:
        ConfigError: the default embedder cannot be loaded.
    """

    def __init__(self, taxonomy: TaxonomyConfig, embedder: Any = None,
                 batch_size: int = 64) -> None:
        if embedder is None:
            from vlmguard.analyzer.models.embedder import MiniLMEmbedder

            embedder = MiniLMEmbedder()
        self.embedder = embedder
        self.batch_size = batch_size
        self._lock = threading.Lock()  # fast tokenizers refuse concurrent use
        ids = [c.id for c in taxonomy.categories]
        vecs = self._embed([c.guidance for c in taxonomy.categories])
        self._guidance = {cid: vecs[i] for i, cid in enumerate(ids)}

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        with self._lock:
            out = np.asarray(self.embedder.embed(list(texts), batch_size=self.batch_size),
                             dtype=np.float32)
        return out

    def score(self, original: str, rewritten: str, action: str,
              categories: Sequence[str]) -> RewriteQuality:
        """Similarities for one request.

        Args:
            original: The user's prompt.
            rewritten: The rewritten text the guard returned.
            action: ALLOW, REWRITE, BLOCK, ...
            categories: Categories found by tier 1.

        Returns:
            BLOCK: nothing. Unchanged text: ``intent_sim`` 1.0, no guidance. Otherwise both.
        """
        if action == "BLOCK":
            return RewriteQuality()
        if rewritten == original:
            return RewriteQuality(intent_sim=1.0, prompt_kept=True)
        cats = [c for c in dict.fromkeys(categories) if c in self._guidance]
        units = text_units(rewritten) if cats else []
        vecs = self._embed([original, rewritten, *units])
        intent = _clip(float(vecs[0] @ vecs[1]))
        guidance: dict[str, float] = {}
        if units:
            sims = vecs[2:] @ np.stack([self._guidance[c] for c in cats]).T
            guidance = {c: _clip(float(sims[:, j].max())) for j, c in enumerate(cats)}
        kept = normalize_text(original) in normalize_text(rewritten)
        return RewriteQuality(intent_sim=intent, guidance=guidance, prompt_kept=kept)



def _clip(x: float) -> float:
    return round(max(-1.0, min(1.0, x)), 4)

"""A stand-in analyzer that runs no model: for benchmarking the queue and gateway alone.

:class:`NoopAnalyzer` has the analyzer stage's interface (``name``, ``analyze_batch``) and
answers every item at once with an empty, zero-risk :class:`~vlmguard.domain.Analysis`. Inject
it with ``build_gateway(cfg, analyzer=NoopAnalyzer())`` (in-process queue) or
``build_worker(cfg, "analyze", analyzer=NoopAnalyzer())`` (Redis queue) to measure what the
request path costs without model time (``bench/queue.py``). Never use it to guard traffic:
everything it sees is allowed.
"""

from __future__ import annotations

from collections.abc import Sequence

from vlmguard.domain import Analysis, AnalysisItem, ModalityReasoning


class NoopAnalyzer:
    """Answers each item with a zero score and no findings, without looking at it."""

    name = "noop"

    def analyze_batch(self, items: Sequence[AnalysisItem]) -> list[Analysis]:
        """One empty analysis per item (the no-op stage of the queue benchmark)."""
        return [Analysis(score=0.0, findings=(), reasoning=ModalityReasoning(),
                         analyzer="noop", category_scores={}) for _ in items]

"""Tier-2 generative rewriter: a reasoning model writes the threat reasoning and the rewrite.

Two halves, so that generation can run wherever the ``rewrite`` queue stage is served (in the
gateway process behind the micro-batcher, or in ``vlmguard worker --stage rewrite`` processes
behind Redis Streams):

- :class:`RewriterRuntime` is the stage handler: a batch of :class:`RewriteItem` -> rewriter
  messages (:func:`~vlmguard.rewriter.format.build_rewriter_messages`) -> the backend's batched
  generation -> one :class:`~vlmguard.rewriter.backends.Generation` (or error) per item.
- :class:`GenerativeRewriter` is the pipeline's side: it decides whether tier 2 runs for a
  request (tenant ``tier2``: ``always``, ``on_risk`` at/above a threshold, ``never``), submits
  the item, and turns the output into the result with
  :func:`~vlmguard.rewriter.format.rewrite_or_fallback`. Malformed outputs, stage failures and
  timeouts answer with the template rewrite from the tier-1 report and are counted by kind
  (``vlmguard_rewriter_fallbacks_total``); the raw output never reaches the client or the logs
  at INFO. Such a fallback reports its rewriter as ``<template name>;fallback=<kind>`` (e.g.
  ``template/v1;fallback=MISSING_SECTION``, see :func:`split_rewriter_name`), so a client can
  tell "tier 2 fell back" from "tier 2 never ran".

Why ``on_risk`` is the default: generation costs seconds per request on CPU (see
bench/RESULTS.md) against milliseconds for tier 1, so benign traffic, which the rewriter would
pass unchanged anyway, should not pay it.

Tier-2 failures under either ``on_stage_failure`` policy answer with the template rewrite: tier
1 already ran, so a guarded answer exists without the failed stage and passing the request
unguarded would gain nothing in availability.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from vlmguard.config import RewriterConfig, TenantPolicyConfig
from vlmguard.domain import (
    REWRITE,
    Action,
    Analysis,
    ImageInput,
    RewriteItem,
    RewriteResult,
    RiskReport,
)
from vlmguard.errors import (
    DeadlineExceededError,
    Reason,
    ResourceExhaustedError,
    VLMGuardError,
)
from vlmguard.metrics import Metrics
from vlmguard.policy import UNSUPPORTED_LANGUAGE, Decision
from vlmguard.queue.base import WorkQueue
from vlmguard.rewriter.backends import Generation
from vlmguard.rewriter.format import (
    CLEARED_MARK,
    GUIDANCE_MARK,
    addresses_guard,
    evidence_from_analysis,
    rewrite_or_fallback,
)
from vlmguard.rewriter.template import TemplateRewriter

log = logging.getLogger(__name__)

#: Queue stage that runs tier-2 generation.
#: Fallback kinds besides :class:`~vlmguard.rewriter.format.MalformedKind`.
STAGE_FAILED = "STAGE_FAILED"
TIMEOUT = "TIMEOUT"
OVERLOADED = "OVERLOADED"
#: Time kept back from the call's deadline so the template answer still makes it.
DEADLINE_MARGIN_S = 0.25
#: Fallback kinds that are not about the model's output (the output was never seen).
NON_OUTPUT_FALLBACKS = frozenset({STAGE_FAILED, TIMEOUT, OVERLOADED})
#: Separates the template's name from the fallback kind in a fallback's ``rewriter`` name.
FALLBACK_MARK = ";fallback="


def fallback_name(template_name: str, kind: str) -> str:
    """The ``rewriter`` name of a template answer given because tier 2 fell back."""
    return f"{template_name}{FALLBACK_MARK}{kind or 'UNKNOWN'}"


def split_rewriter_name(name: str) -> tuple[str, str]:
    """(base rewriter name, fallback kind or "") of a reported ``rewriter`` name."""
    base, sep, kind = name.partition(FALLBACK_MARK)
    return base, (kind or "UNKNOWN") if sep else ""


def _mark_fallback(result: RewriteResult, template_name: str, kind: str) -> RewriteResult:
    return replace(result, rewriter=fallback_name(template_name, kind))


def tier2_mode(cfg: RewriterConfig, pol: TenantPolicyConfig) -> str:
    """The tenant's tier-2 mode (its own, else the rewriter's default)."""
    return pol.tier2 or cfg.tier2


def tier2_threshold(cfg: RewriterConfig, pol: TenantPolicyConfig) -> float:
    """Tier-1 score from which ``on_risk`` runs tier 2."""
    if pol.tier2_threshold is not None:
        return pol.tier2_threshold
    if cfg.tier2_threshold is not None:
        return cfg.tier2_threshold
    return pol.rewrite_threshold


class GenerativeRewriter:
    """Decides, runs and finishes tier 2 for the pipeline.

    Args:
        queue: Work queue serving the ``rewrite`` stage.
        template: The template rewriter (fallback).
        cfg: Rewriter configuration.
        backend_name: Metrics label for the latency histogram.
        metrics: Metrics sink.
        clock: Monotonic clock (deadlines are on this clock).
    """

    def __init__(
        self,
        *,
        queue: WorkQueue,
        template: TemplateRewriter,
        cfg: RewriterConfig,
        backend_name: str = "",
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.queue = queue
        self.template = template
        self.cfg = cfg
        self.backend_name = backend_name or cfg.backend
        self.metrics = metrics
        self.clock = clock

    def wants(self, analysis: Analysis, decision: Decision, pol: TenantPolicyConfig) -> bool:
        """Whether tier 2 runs for this request under the tenant's policy."""
        if not pol.stages.rewrite:
            return False  # the tenant never rewrites; tier 1's ALLOW/BLOCK stands
        if decision.action is Action.BLOCK and not self.cfg.tier2_on_block:
            return False  # generation cannot change a block; answer it now
        if UNSUPPORTED_LANGUAGE in decision.triggered and pol.unsupported_language == "tier2":
            return True  # tier 1 cannot read the language: its score says nothing
        mode = tier2_mode(self.cfg, pol)
        if mode == "never":
            return False
        if mode == "always":
            return True
        top = max([analysis.score, *analysis.category_scores.values()])
        return top >= tier2_threshold(self.cfg, pol)

    def skip(self) -> None:
        """Count a request that tier 1 answered alone."""
        if self.metrics:
            self.metrics.rewriter_tier2.labels("skipped").inc()

    def _fallback(self, kind: str, text: str, report: RiskReport, decision: Decision,
                  pol: TenantPolicyConfig) -> RewriteResult:
        if self.metrics:
            self.metrics.rewriter_fallbacks.labels(kind).inc()
            self.metrics.rewriter_tier2.labels("fallback").inc()
        return _mark_fallback(self.template.rewrite(text, report, decision, pol),
                              self.template.name, kind)

    async def rewrite(
        self,
        *,
        request_id: str,
        text: str,
        analysis: Analysis,
        report: RiskReport,
        decision: Decision,
        pol: TenantPolicyConfig,
        deadline: float | None,
        images: tuple[ImageInput, ...] = (),
    ) -> RewriteResult:
        """Tier 2 for one request; the template rewrite when its output cannot be used.

        ``images`` are the images tier 1 read (in its order), for a rewriter that reads them.

        Raises:
            DeadlineExceededError: the call's deadline had already passed.
        """
        t0 = time.perf_counter()
        now = self.clock()
        budget = self.cfg.timeout_s
        if deadline is not None:
            if now >= deadline:
                raise DeadlineExceededError("deadline passed before stage 'rewrite'",
                                            reason=Reason.DEADLINE_EXCEEDED)
            budget = min(budget, deadline - now - DEADLINE_MARGIN_S)
        if budget <= 0:
            return self._fallback(TIMEOUT, text, report, decision, pol)
        item = RewriteItem(request_id, text, evidence_from_analysis(analysis), images)
        try:
            gen: Any = await asyncio.wait_for(
                self.queue.submit(REWRITE, item, deadline=now + budget), budget)
        except (TimeoutError, DeadlineExceededError):
            log.warning("tier-2 rewrite timed out after %.1fs; template answers", budget)
            return self._fallback(TIMEOUT, text, report, decision, pol)
        except ResourceExhaustedError:
            log.warning("tier-2 stage is full; template answers")
            return self._fallback(OVERLOADED, text, report, decision, pol)
        except VLMGuardError as e:
            log.warning("tier-2 stage failed (%s); template answers", e.reason)
            return self._fallback(STAGE_FAILED, text, report, decision, pol)
        finally:
            if self.metrics:
                self.metrics.rewriter_latency.labels(self.backend_name).observe(
                    time.perf_counter() - t0)
        if not isinstance(gen, Generation):  # the queue contract says this cannot happen
            return self._fallback(STAGE_FAILED, text, report, decision, pol)
        return self.finish(gen.text, text, report, decision, pol,
                           clear=self.may_clear(text, analysis, report))

    def may_clear(self, text: str, analysis: Analysis, report: RiskReport) -> bool:
        """Whether the model's benign verdict may clear this request's tier-1 flag: tier 1
        scored it below ``rewriter.tier2_clear_below`` and neither the prompt nor any OCR text
        speaks to the guard (:func:`~vlmguard.rewriter.format.addresses_guard`)."""
        below = self.cfg.tier2_clear_below
        if below is None or report.score >= below:
            return False
        return not addresses_guard(text, *(im.ocr_text for im in analysis.images))

    def finish(self, raw: str, text: str, report: RiskReport, decision: Decision,
               pol: TenantPolicyConfig, *, clear: bool = False) -> RewriteResult:
        """The result for a model output (parsed, cleared, or the counted template fallback)."""
        result, kind = rewrite_or_fallback(
            raw, text, report, decision, pol, self.template,
            max_rewrite_chars=self.cfg.max_rewrite_chars, add_guidance=self.cfg.add_guidance,
            clear=clear)
        if kind:
            log.debug("tier-2 output malformed (%s); template answers", kind)
            log.debug("tier-2 output chars=%d", len(raw))
            if self.metrics:
                self.metrics.rewriter_fallbacks.labels(kind).inc()
                self.metrics.rewriter_tier2.labels("fallback").inc()
            return _mark_fallback(result, self.template.name, kind)
        if self.metrics:
            outcome = ("model_cleared" if result.rewriter.endswith(CLEARED_MARK)
                       else "model_guidance_added" if result.rewriter.endswith(GUIDANCE_MARK)
                       else "model")
            self.metrics.rewriter_tier2.labels(outcome).inc()
        return result

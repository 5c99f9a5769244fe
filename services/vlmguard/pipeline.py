"""The guard pipeline: analyze -> policy -> rewrite -> (target), with deadlines and failure policy.

It knows nothing about gRPC, Ray or Triton: it takes domain calls and a :class:`WorkQueue`, and
returns domain results. Stage errors are handled by the tenant's ``on_stage_failure`` policy
(``fail_closed`` by default: UNAVAILABLE, never an unguarded pass). Client faults
(INVALID_ARGUMENT) and deadlines are never turned into a pass.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vlmguard.config import LimitsConfig, TenantPolicyConfig, VLMGuardConfig
from vlmguard.domain import (
    ANALYZE,
    REWRITE,
    TARGET,
    Action,
    Analysis,
    AnalysisItem,
    GenerationParams,
    GuardResult,
    ImageInput,
    ModalityReasoning,
    RewriteResult,
    RiskLevel,
    RiskReport,
    TargetItem,
    TargetResult,
)
from vlmguard.errors import (
    DeadlineExceededError,
    InvalidArgumentError,
    Reason,
    UnavailableError,
    VLMGuardError,
)
from vlmguard.imaging import check_images, request_pixels
from vlmguard.logs import short_hash
from vlmguard.metrics import Metrics
from vlmguard.policy import Decision, PolicyEngine
from vlmguard.queue.base import WorkQueue
from vlmguard.rewriter.generative import GenerativeRewriter
from vlmguard.rewriter.template import TemplateRewriter
from vlmguard.unicode_safety import is_blank

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Call:
    """One request as the pipeline sees it (already converted from the wire)."""

    request_id: str
    text: str
    images: tuple[ImageInput, ...] = ()
    tenant_id: str = ""
    deadline: float | None = None
    run_target: bool = False
    params: GenerationParams = field(default_factory=GenerationParams)
    report: RiskReport | None = None


def validate_call(call: Call, limits: LimitsConfig) -> None:
    """Check text and image limits (image headers only, no decoding).

    Raises:
        InvalidArgumentError: EMPTY_TEXT, TEXT_TOO_LONG, TOO_MANY_IMAGES or an image reason.
    """
    if is_blank(call.text):  # zero-width and other invisible characters count as empty
        raise InvalidArgumentError("text must not be empty", reason=Reason.EMPTY_TEXT)
    if len(call.text) > limits.max_text_chars:
        raise InvalidArgumentError(
            f"text is {len(call.text)} characters; the limit is {limits.max_text_chars}",
            reason=Reason.TEXT_TOO_LONG,
        )
    if len(call.images) > limits.max_images:
        raise InvalidArgumentError(
            f"{len(call.images)} images sent; the limit is {limits.max_images}",
            reason=Reason.TOO_MANY_IMAGES,
        )
    check_images(call.images, limits)  # each image, then the request's pixel budget
    p = call.params
    if (p.max_new_tokens < 0 or not 0 <= p.temperature < math.inf
            or not 0 <= p.top_p <= 1):  # written so that NaN fails too
        raise InvalidArgumentError(
            "generation params out of range (max_new_tokens >= 0, temperature >= 0, "
            "0 <= top_p <= 1)",
            reason=Reason.INVALID_GENERATION_PARAMS,
        )


class GuardPipeline:
    """Runs calls through the stages.

    Args:
        queue: Work queue serving the ``analyze`` and ``target`` stages.
        policy: Policy engine.
        rewriter: Template rewriter (tier 1; also tier 2's fallback).
        limits: Input limits.
        target_enabled: Whether a target backend is configured.
        target_needs_image_text: The target is text-only and gets images as their OCR text.
        metrics: Metrics sink.
        clock: Monotonic clock.
        tier2: The generative rewriter (its queue must serve the ``rewrite`` stage); None
            keeps the template rewriter alone.
    """

    def __init__(
        self,
        *,
        queue: WorkQueue,
        policy: PolicyEngine,
        rewriter: TemplateRewriter,
        limits: LimitsConfig,
        target_enabled: bool,
        target_needs_image_text: bool = True,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        tier2: GenerativeRewriter | None = None,
    ) -> None:
        self.queue = queue
        self.tier2 = tier2
        self.policy = policy
        self.rewriter = rewriter
        self.limits = limits
        self.target_enabled = target_enabled
        self.target_needs_image_text = target_needs_image_text
        self.metrics = metrics
        self.clock = clock

    def _share(self, call: Call) -> dict[str, Any]:
        """What a queue needs to share a stage fairly: the tenant as the policy resolves it
        (unknown ids share the default tenant's lane, so made-up ids buy no extra share) and
        the request's image cost."""
        return {"tenant": self.policy.tenant(call.tenant_id)[0],
                "pixels": request_pixels(call.images)}

    def _observe(self, stage: str, ms: float) -> None:
        if self.metrics:
            self.metrics.stage_latency.labels(stage).observe(ms / 1000.0)

    def _check_deadline(self, call: Call, stage: str) -> None:
        if call.deadline is not None and self.clock() >= call.deadline:
            raise DeadlineExceededError(
                f"deadline passed before stage {stage!r}", reason=Reason.DEADLINE_EXCEEDED
            )

    async def _analyze(
        self, call: Call, pol: TenantPolicyConfig, timings: dict[str, float]
    ) -> Analysis | None:
        """Run the analyzer stage; None means it failed under a fail_open policy."""
        self._check_deadline(call, ANALYZE)
        t0 = time.perf_counter()
        try:
            result: Analysis = await self.queue.submit(
                ANALYZE, AnalysisItem(call.request_id, call.text, call.images),
                deadline=call.deadline, **self._share(call),
            )
        except (InvalidArgumentError, DeadlineExceededError):
            raise
        except VLMGuardError as e:
            if pol.on_stage_failure == "fail_open" and e.code.name in ("UNAVAILABLE", "INTERNAL"):
                log.warning("analyzer failed (%s); fail_open policy lets the request pass",
                            e.reason)
                if self.metrics:
                    self.metrics.fail_open.labels(ANALYZE).inc()
                return None
            raise
        finally:
            timings[ANALYZE] = (time.perf_counter() - t0) * 1000
            self._observe(ANALYZE, timings[ANALYZE])
        if self.metrics:
            for f in result.findings:
                self.metrics.findings.labels(f.category, f.modality.value).inc()
        return result

    async def _analyze_strict(
        self, call: Call, pol: TenantPolicyConfig, timings: dict[str, float]
    ) -> Analysis:
        """The analyzer stage with failures always raised: only Guard may fail open (Analyze,
        Rewrite and Generate have no unguarded answer to give)."""
        strict = pol.model_copy(update={"on_stage_failure": "fail_closed"})
        analysis = await self._analyze(call, strict, timings)
        if analysis is None:  # pragma: no cover - fail_closed never returns None
            raise UnavailableError("analyzer failed", reason=Reason.STAGE_FAILED)
        return analysis

    @staticmethod
    def _unguarded(call: Call) -> tuple[Analysis, Decision]:
        analysis = Analysis(
            score=0.0, findings=(),
            reasoning=ModalityReasoning(
                "Not analysed: the analyzer failed and the tenant policy is fail_open.", "", ""),
            analyzer="unavailable", category_scores={},
        )
        return analysis, Decision(Action.ALLOW, RiskLevel.NONE, ())

    async def analyze(self, call: Call) -> tuple[RiskReport, dict[str, float]]:
        """ThreatAnalysisService.Analyze: the report, with the tenant's level."""
        validate_call(call, self.limits)
        _, pol = self.policy.tenant(call.tenant_id)
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        analysis = await self._analyze_strict(call, pol, timings)
        decision = self.policy.decide(analysis, pol)
        timings.update({f"analyze.{k}": v for k, v in analysis.timings_ms.items()})
        timings["total"] = (time.perf_counter() - t0) * 1000
        return self.policy.report(analysis, decision), timings

    async def guard(self, call: Call) -> GuardResult:
        """GuardService.Guard: analyse, decide, rewrite, and optionally run the target."""
        validate_call(call, self.limits)
        tenant_id, pol = self.policy.tenant(call.tenant_id)
        if call.run_target and not self.target_enabled:
            from vlmguard.errors import FailedPreconditionError

            raise FailedPreconditionError(
                "options.run_target is set but no target model is configured on this server",
                reason=Reason.TARGET_NOT_CONFIGURED,
            )
        timings: dict[str, float] = {}
        t_start = time.perf_counter()
        analysis: Analysis | None = None
        if pol.stages.analyze:
            analysis = await self._analyze(call, pol, timings)
        if analysis is None:
            analysis, decision = self._unguarded(call)
        else:
            t0 = time.perf_counter()
            decision = self.policy.decide(analysis, pol)
            timings["policy"] = (time.perf_counter() - t0) * 1000
            timings.update({f"analyze.{k}": v for k, v in analysis.timings_ms.items()})
        report = self.policy.report(analysis, decision)
        rewrite = await self._rewrite(call, analysis, report, decision, pol, timings)
        target: TargetResult | None = None
        if call.run_target and rewrite.action is not Action.BLOCK:
            image_texts = tuple(ev.ocr_text for ev in analysis.images)
            target, t_ms = await self._target(call, rewrite.rewritten_text, image_texts)
            timings[TARGET] = t_ms
        timings["total"] = (time.perf_counter() - t_start) * 1000
        if self.metrics:
            self.metrics.verdicts.labels(rewrite.action.value).inc()
        log.info(
            "guard decision action=%s level=%s score=%.3f categories=%s text_chars=%d "
            "text_hash=%s images=%d",
            rewrite.action.value, report.level.value, report.score,
            ",".join(decision.triggered) or "-", len(call.text), short_hash(call.text),
            len(call.images),
        )
        return GuardResult(
            request_id=call.request_id, tenant_id=tenant_id, action=rewrite.action,
            report=report, rewrite=rewrite, target=target, timings_ms=timings,
        )

    async def rewrite(self, call: Call) -> tuple[RewriteResult, RiskReport, dict[str, float]]:
        """RewriteService.Rewrite: uses the caller's report when given, else analyses first."""
        validate_call(call, self.limits)
        _, pol = self.policy.tenant(call.tenant_id)
        timings: dict[str, float] = {}
        t_start = time.perf_counter()
        if call.report is not None:
            analysis = Analysis(
                score=call.report.score, findings=call.report.findings,
                reasoning=call.report.reasoning, analyzer=call.report.analyzer or "client",
                category_scores=call.report.category_scores,
            )
        else:
            analysis = await self._analyze_strict(call, pol, timings)
        decision = self.policy.decide(analysis, pol)
        report = self.policy.report(analysis, decision)
        result = await self._rewrite(call, analysis, report, decision, pol, timings)
        timings["total"] = (time.perf_counter() - t_start) * 1000
        return result, report, timings

    async def _rewrite(
        self, call: Call, analysis: Analysis, report: RiskReport, decision: Decision,
        pol: TenantPolicyConfig, timings: dict[str, float],
    ) -> RewriteResult:
        """The rewrite stage: tier 2 when configured and the tenant's policy asks for it (its
        failures answer with the template), else the template rewriter."""
        t0 = time.perf_counter()
        if self.tier2 is not None and self.tier2.wants(analysis, decision, pol):
            result = await self.tier2.rewrite(
                request_id=call.request_id, text=call.text, analysis=analysis, report=report,
                decision=decision, pol=pol, deadline=call.deadline)
        else:
            if self.tier2 is not None:
                self.tier2.skip()
            result = self.rewriter.rewrite(call.text, report, decision, pol)
        timings[REWRITE] = (time.perf_counter() - t0) * 1000
        self._observe(REWRITE, timings[REWRITE])
        return result

    async def generate(self, call: Call) -> tuple[TargetResult, dict[str, float]]:
        """TargetService.Generate: the target on the text as given (no guarding)."""
        validate_call(call, self.limits)
        self.policy.tenant(call.tenant_id)
        if not self.target_enabled:
            from vlmguard.errors import FailedPreconditionError

            raise FailedPreconditionError(
                "no target model is configured on this server (target.backend is 'none')",
                reason=Reason.TARGET_NOT_CONFIGURED,
            )
        timings: dict[str, float] = {}
        t_start = time.perf_counter()
        image_texts: tuple[str, ...] = ()
        if call.images and self.target_needs_image_text:
            # The demo target is text-only: it sees each image as the text OCR reads in it.
            _, pol = self.policy.tenant(call.tenant_id)
            analysis = await self._analyze_strict(call, pol, timings)
            image_texts = tuple(ev.ocr_text for ev in analysis.images)
        result, t_ms = await self._target(call, call.text, image_texts)
        timings[TARGET] = t_ms
        timings["total"] = (time.perf_counter() - t_start) * 1000
        return result, timings

    async def _target(
        self, call: Call, text: str, image_texts: tuple[str, ...]
    ) -> tuple[TargetResult, float]:
        self._check_deadline(call, TARGET)
        t0 = time.perf_counter()
        try:
            result: TargetResult = await self.queue.submit(
                TARGET, TargetItem(text, call.images, image_texts, call.params,
                                   None if call.deadline is None
                                   else time.time() + (call.deadline - self.clock())),
                deadline=call.deadline, **self._share(call),
            )
        except VLMGuardError:
            raise
        except Exception as e:  # pragma: no cover - queue contract violation
            raise UnavailableError("target failed", reason=Reason.TARGET_FAILED) from e
        ms = (time.perf_counter() - t0) * 1000
        self._observe(TARGET, ms)
        return result, ms


def build_pipeline(cfg: VLMGuardConfig, *, queue: WorkQueue, metrics: Metrics | None = None,
                   target_enabled: bool | None = None) -> GuardPipeline:
    """The guard pipeline over ``queue`` as every hosting composes it (gateway, Ray Serve).

    Args:
        cfg: Configuration (policy, taxonomy, limits, ``rewriter.kind``).
        queue: Serves ``analyze`` and ``target``, and ``rewrite`` when ``rewriter.kind`` is
            'generative'.
        metrics: Metrics sink.
        target_enabled: Whether a target is configured (default: ``target.backend != 'none'``).
    """
    template = TemplateRewriter(cfg.taxonomy)
    tier2 = None
    if cfg.rewriter.kind == "generative":
        tier2 = GenerativeRewriter(queue=queue, template=template, cfg=cfg.rewriter,
                                   metrics=metrics)
    return GuardPipeline(
        queue=queue,
        policy=PolicyEngine(cfg.policy, cfg.taxonomy, cfg.analyzer.report_threshold),
        rewriter=template,
        tier2=tier2,
        limits=cfg.limits,
        target_enabled=(cfg.target.backend != "none") if target_enabled is None
        else target_enabled,
        target_needs_image_text=True,
        metrics=metrics,
    )

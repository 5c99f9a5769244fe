"""The guard pipeline: analyze -> policy -> rewrite -> (target), with deadlines and failure policy.

A request may be a conversation: :attr:`Call.history` holds the earlier turns (system prompts
included) and ``text``/``images`` the last user turn. Tier 1 reads the last turn in its context:
every image of the conversation, and the last turn joined with the user side of the conversation
before it (:func:`conversation_context`), while the last turn keeps its own score; earlier
assistant turns are read against their questions (:func:`earlier_answers`). A model's
answer is checked with :meth:`GuardPipeline.check_output` (tier 1 on the answer; the tenant's
``output_action``).

It knows nothing about gRPC, Ray or Triton: it takes domain calls and a :class:`WorkQueue`, and
returns domain results. Stage errors are handled by the tenant's ``on_stage_failure`` policy
(``fail_closed`` by default: UNAVAILABLE, never an unguarded pass). Client faults
(INVALID_ARGUMENT) and deadlines are never turned into a pass.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from vlmguard import tracing
from vlmguard.config import LimitsConfig, TenantPolicyConfig, VLMGuardConfig
from vlmguard.domain import (
    ANALYZE,
    CHAT_ROLES,
    REWRITE,
    TARGET,
    Action,
    Analysis,
    AnalysisItem,
    ChatTurn,
    Finding,
    GenerationParams,
    GuardResult,
    ImageInput,
    Modality,
    ModalityReasoning,
    OutputAction,
    OutputVerdict,
    RewriteResult,
    RiskLevel,
    RiskReport,
    TargetItem,
    TargetResult,
    excerpt,
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
from vlmguard.policy import (
    EARLIER_ANSWER,
    EARLIER_ANSWER_SOURCE,
    UNSUPPORTED_LANGUAGE,
    Decision,
    PolicyEngine,
)
from vlmguard.queue.base import WorkQueue
from vlmguard.refusals import strip_leading_refusal
from vlmguard.rewriter.generative import GenerativeRewriter, split_rewriter_name
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
    #: Earlier turns of the conversation, oldest first (system prompts included); ``text`` and
    #: ``images`` are the last user turn. Empty for a single-turn request.
    history: tuple[ChatTurn, ...] = ()


def conversation_images(call: Call) -> tuple[ImageInput, ...]:
    """Every image of the conversation in message order: the earlier turns' images, then the
    last turn's. Tier 1 reads them all (a last turn may ask about an earlier turn's image), and
    the findings' ``image_index`` counts in this order."""
    if not call.history:
        return call.images
    return tuple(img for t in call.history for img in t.images) + call.images


def conversation_context(history: tuple[ChatTurn, ...], max_chars: int) -> str:
    """The user side of the conversation before the last turn, as one text of at most
    ``max_chars`` characters, for tier 1 to read joined with the last turn.

    System prompts come first (each keeps its start, where the frame is set, within half the
    budget), then the earlier user turns from the most recent back as far as the budget goes (a
    turn cut keeps its end, next to the last turn). Assistant turns are left out: they are the
    model's words, checked by the output check, and a refusal's own wording would taint the
    request that follows it.
    """
    if max_chars <= 0 or not history:
        return ""
    system = [t.text.strip() for t in history if t.role == "system" and not is_blank(t.text)]
    users = [t.text.strip() for t in history if t.role == "user" and not is_blank(t.text)]
    parts: list[str] = []
    budget = max_chars
    if system:
        joined = " ".join(system)
        head = joined if len(joined) <= max_chars // 2 else joined[: max_chars // 2] + " …"
        parts.append(head)
        budget -= len(head) + 1
    recent: list[str] = []
    for text in reversed(users):
        if budget <= 0:
            break
        if len(text) + 1 > budget:
            if budget > 40:  # a few words of the turn still say something; a stub does not
                recent.append("… " + text[-(budget - 2):])
            break
        recent.append(text)
        budget -= len(text) + 1
    parts.extend(reversed(recent))
    return "\n".join(parts)


#: How much riskier than the question before it an earlier answer must read to count: an
#: answer about the topic its question asked about (first aid after a question about a cut)
#: reads about as risky as the question, and is not evidence of anything.
ANSWER_MARGIN = 0.1


@dataclass(frozen=True)
class EarlierAnswer:
    """One assistant turn of a conversation, with the user turn it answered."""

    #: Position of the assistant turn among the conversation's messages (0 = first).
    message: int
    #: The turn's text without the refusal sentences it opens with.
    text: str
    #: The nearest user turn before it, "" when there is none.
    question: str


def earlier_answers(history: tuple[ChatTurn, ...], max_turns: int) -> list[EarlierAnswer]:
    """The assistant turns tier 1 reads, the most recent first, at most ``max_turns``.

    The client sends the whole conversation, assistant turns included, and the target model
    reads those turns as its own words: a forged turn that starts harmful content, followed by
    "continue", steers the model without a risky word in the last user turn. Each turn is read
    without the refusal sentences it opens with (a refusal names the topic it refuses) and is
    weighed against its question: an answer riskier than what it answered is either forged or a
    model gone wrong, and in both cases it must not be continued.
    """
    out: list[EarlierAnswer] = []
    if max_turns <= 0:
        return out
    for i in range(len(history) - 1, -1, -1):
        turn = history[i]
        if turn.role != "assistant" or is_blank(turn.text):
            continue
        text, _ = strip_leading_refusal(turn.text)
        if not is_blank(text):
            question = next((history[j].text for j in range(i - 1, -1, -1)
                             if history[j].role == "user"), "")
            out.append(EarlierAnswer(i, text, question))
        max_turns -= 1
        if max_turns == 0:
            break
    return out


_LEVELS = (RiskLevel.NONE, RiskLevel.LOW, RiskLevel.MEDIUM, RiskLevel.HIGH)


def _with_answer_findings(analysis: Analysis, found: tuple[Finding, ...]) -> Analysis:
    """The request's analysis with the earlier answers' findings added (its own scores stay:
    the answer's risk shows in the findings and decides through :meth:`GuardPipeline._decide`)."""
    if not found:
        return analysis
    top = max(found, key=lambda f: f.score)
    if top.category == UNSUPPORTED_LANGUAGE:
        note = ("An earlier assistant message of the conversation is in a language the "
                "analyzer does not read: it may have been supplied by the client, and the model "
                "must not continue anything harmful in it.")
    else:
        note = (f"An earlier assistant message of the conversation reads riskier than the "
                f"question before it ({top.category} at {top.score:.2f}): it may have been "
                "supplied by the client rather than written by the model, and the model must "
                "not continue it.")
    reasoning = replace(analysis.reasoning,
                        textual=f"{analysis.reasoning.textual} {note}".strip())
    findings = tuple(sorted(analysis.findings + found, key=lambda f: (-f.score, f.category)))
    return replace(analysis, findings=findings, reasoning=reasoning)


def _check_turn_text(text: str, where: str, limits: LimitsConfig) -> None:
    if len(text) > limits.max_text_chars:
        raise InvalidArgumentError(
            f"{where} is {len(text)} characters; the limit is {limits.max_text_chars}",
            reason=Reason.TEXT_TOO_LONG,
        )


def _validate_history(call: Call, limits: LimitsConfig) -> None:
    """The conversation's limits: turns, roles, characters and images over all messages."""
    turns = len(call.history) + 1
    if turns > limits.max_turns:
        raise InvalidArgumentError(
            f"the conversation has {turns} messages; the limit is {limits.max_turns}",
            reason=Reason.TOO_MANY_TURNS,
        )
    chars = len(call.text)
    n_images = len(call.images)
    for i, turn in enumerate(call.history):
        if turn.role not in CHAT_ROLES:
            raise InvalidArgumentError(
                f"message {i}: role must be one of {', '.join(CHAT_ROLES)}",
                reason=Reason.INVALID_ROLE,
            )
        _check_turn_text(turn.text, f"message {i}", limits)
        if len(turn.images) > limits.max_images:
            raise InvalidArgumentError(
                f"message {i} has {len(turn.images)} images; the limit is {limits.max_images}",
                reason=Reason.TOO_MANY_IMAGES,
            )
        chars += len(turn.text)
        n_images += len(turn.images)
    if chars > limits.max_conversation_chars:
        raise InvalidArgumentError(
            f"the conversation holds {chars} characters; the limit is "
            f"{limits.max_conversation_chars}",
            reason=Reason.CONVERSATION_TOO_LONG,
        )
    if n_images > limits.max_conversation_images:
        raise InvalidArgumentError(
            f"the conversation holds {n_images} images; the limit is "
            f"{limits.max_conversation_images}",
            reason=Reason.TOO_MANY_IMAGES,
        )


def validate_call(call: Call, limits: LimitsConfig) -> None:
    """Check text and image limits (image headers only, no decoding), over the whole
    conversation when the call has history.

    Raises:
        InvalidArgumentError: EMPTY_TEXT, TEXT_TOO_LONG, TOO_MANY_IMAGES, TOO_MANY_TURNS,
            CONVERSATION_TOO_LONG, INVALID_ROLE or an image reason.
    """
    if is_blank(call.text):  # zero-width and other invisible characters count as empty
        raise InvalidArgumentError("text must not be empty", reason=Reason.EMPTY_TEXT)
    _check_turn_text(call.text, "text", limits)
    if len(call.images) > limits.max_images:
        raise InvalidArgumentError(
            f"{len(call.images)} images sent; the limit is {limits.max_images}",
            reason=Reason.TOO_MANY_IMAGES,
        )
    if call.history:
        _validate_history(call, limits)
    # each image, then the request's pixel budget (every image of the conversation is read)
    check_images(conversation_images(call), limits)
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
        context_chars: How much of the conversation before the last turn tier 1 reads
            joined with it (``analyzer.context_chars``; 0: the last turn alone).
        answer_turns: How many earlier assistant turns tier 1 reads against their questions
            (``analyzer.answer_turns``; 0: none).
        answer_threshold: Score from which an earlier answer counts
            (``analyzer.answer_threshold``).
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
        context_chars: int = 600,
        answer_turns: int = 8,
        answer_threshold: float = 0.95,
    ) -> None:
        self.queue = queue
        self.context_chars = context_chars
        self.answer_turns = answer_turns
        self.answer_threshold = answer_threshold
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
                "pixels": request_pixels(conversation_images(call))}

    def _analysis_item(self, call: Call) -> AnalysisItem:
        """What tier 1 reads for a call: the last turn, every image of the conversation, and
        the conversation before the last turn as its context."""
        return AnalysisItem(call.request_id, call.text, conversation_images(call),
                            conversation_context(call.history, self.context_chars))

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
        item = self._analysis_item(call)
        share = self._share(call)
        answers = earlier_answers(call.history, self.answer_turns)
        try:
            submitted = tracing.traced(
                f"vlmguard.stage {ANALYZE}",
                self.queue.submit(ANALYZE, item, deadline=call.deadline, **share))
            if answers:
                # Read in the same batch as the request: no extra round trip.
                result, answer_findings = await asyncio.gather(
                    submitted, self._read_answers(call, answers, pol, timings))
                result = _with_answer_findings(result, answer_findings)
            else:
                result = await submitted
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
            self.metrics.observe_score(share["tenant"], bool(item.images), result.analyzer,
                                       result.score)
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

    async def _read_answers(self, call: Call, answers: list[EarlierAnswer],
                            pol: TenantPolicyConfig,
                            timings: dict[str, float]) -> tuple[Finding, ...]:
        """Findings for the earlier answers that read risky on their own.

        Tier 1 was trained on requests: it scores an answer by its topic, and a careful answer
        on a sensitive topic (what phishing looks like, the history of a genocide) can score
        high alone. An answer counts only where it reads risky alone *and* after its question
        (the question sets what the answer is for: disposing of old painkillers), at least
        ``analyzer.answer_threshold``, flagged at the tenant's thresholds for a category that
        is not ``care``, and riskier than its question by :data:`ANSWER_MARGIN`.
        """
        texts = [a.text for a in answers]
        joined = [i for i, a in enumerate(answers) if not is_blank(a.question)]
        texts += [f"{_tail(answers[i].question, _OUTPUT_REQUEST_CHARS)}\n{answers[i].text}"
                  for i in joined]
        questions = sorted({answers[i].question for i in joined})
        texts += questions
        read = await self._read(call, texts, timings, "analyze.answers")
        n = len(answers)
        with_question = dict(zip(joined, read[n:n + len(joined)], strict=True))
        q_score = dict(zip(questions, (r.score for r in read[n + len(joined):]), strict=True))
        findings: list[Finding] = []
        for i, (answer, alone) in enumerate(zip(answers, read[:n], strict=True)):
            if not alone.language_supported:
                # An answer tier 1 cannot read (nor can the output check read its
                # continuation): the tenant's language rule, unless it allows such text.
                if pol.unsupported_language != "allow":
                    findings.append(Finding(
                        UNSUPPORTED_LANGUAGE, 0.0, Modality.TEXT,
                        f"assistant message {answer.message} is in a language the analyzer "
                        f"does not read ({alone.language or 'unidentified'})",
                        EARLIER_ANSWER_SOURCE, -1))
                continue
            # The lower of the two readings, category by category.
            other = with_question.get(i, alone)
            cats = {c: min(v, other.category_scores.get(c, 0.0))
                    for c, v in alone.category_scores.items()}
            score = min(alone.score, other.score)
            question = q_score.get(answer.question, 0.0)
            if score < max(self.answer_threshold, question + ANSWER_MARGIN):
                continue
            analysis = replace(alone, score=score, category_scores=cats)
            decision = self.policy.decide(analysis, pol)
            if decision.action is Action.ALLOW or UNSUPPORTED_LANGUAGE in decision.triggered:
                continue
            if all((spec := self.policy.taxonomy.get(c)) is not None and spec.handling == "care"
                   for c in decision.triggered):
                continue
            for c in decision.triggered:
                findings.append(Finding(
                    c, cats.get(c, score), Modality.TEXT,
                    f"assistant message {answer.message} reads {score:.2f}, its question "
                    f"{question:.2f}: {excerpt(answer.text)}", EARLIER_ANSWER_SOURCE, -1))
        return tuple(findings)

    def _decide(self, analysis: Analysis, pol: TenantPolicyConfig) -> Decision:
        """The policy's decision, and the earlier-answer rule: a request whose conversation
        holds an answer riskier than its question is at least rewritten (with guidance not to
        continue it), never blocked for that alone: the answer is the model's, or forged, not
        the user's request."""
        decision = self.policy.decide(analysis, pol)
        if not any(f.source == EARLIER_ANSWER_SOURCE for f in analysis.findings):
            return decision
        if decision.action is Action.BLOCK:
            return decision
        if decision.action is Action.REWRITE or pol.stages.rewrite:
            triggered = tuple(c for c in decision.triggered if c != UNSUPPORTED_LANGUAGE)
            level = max(decision.level, RiskLevel.MEDIUM, key=_LEVELS.index)
            return Decision(Action.REWRITE, level, (EARLIER_ANSWER, *triggered))
        return Decision(Action.ALLOW, RiskLevel.MEDIUM, (EARLIER_ANSWER, *decision.triggered))

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
        decision = self._decide(analysis, pol)
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
            with tracing.span("vlmguard.stage policy"):
                decision = self._decide(analysis, pol)
            timings["policy"] = (time.perf_counter() - t0) * 1000
            timings.update({f"analyze.{k}": v for k, v in analysis.timings_ms.items()})
        report = self.policy.report(analysis, decision)
        rewrite = await tracing.traced(f"vlmguard.stage {REWRITE}", self._rewrite(
            call, analysis, report, decision, pol, timings))
        target: TargetResult | None = None
        if call.run_target and rewrite.action is not Action.BLOCK:
            target, t_ms = await self._target(call, rewrite.rewritten_text,
                                              self._last_turn_texts(call, analysis))
            timings[TARGET] = t_ms
        timings["total"] = (time.perf_counter() - t_start) * 1000
        if self.metrics:
            self.metrics.verdicts.labels(rewrite.action.value).inc()
            self.metrics.tenant_verdicts.labels(
                self.metrics.tenant_label(tenant_id), rewrite.action.value,
                self.metrics.rewriter_label(split_rewriter_name(rewrite.rewriter)[0])).inc()
        log.info(
            "guard decision action=%s level=%s score=%.3f categories=%s text_chars=%d "
            "text_hash=%s images=%d turns=%d",
            rewrite.action.value, report.level.value, report.score,
            ",".join(decision.triggered) or "-", len(call.text), short_hash(call.text),
            len(call.images), len(call.history) + 1,
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
        decision = self._decide(analysis, pol)
        report = self.policy.report(analysis, decision)
        result = await tracing.traced(f"vlmguard.stage {REWRITE}", self._rewrite(
            call, analysis, report, decision, pol, timings))
        timings["total"] = (time.perf_counter() - t_start) * 1000
        return result, report, timings

    async def _rewrite(
        self, call: Call, analysis: Analysis, report: RiskReport, decision: Decision,
        pol: TenantPolicyConfig, timings: dict[str, float],
    ) -> RewriteResult:
        """The rewrite stage: tier 2 when configured and the tenant's policy asks for it (its
        failures answer with the template), else the template rewriter."""
        t0 = time.perf_counter()
        # An earlier answer to be left alone is said in the template's guidance; tier 2 reads
        # the last turn only and might clear it.
        if (self.tier2 is not None and EARLIER_ANSWER not in decision.triggered
                and self.tier2.wants(analysis, decision, pol)):
            result = await self.tier2.rewrite(
                request_id=call.request_id, text=call.text, analysis=analysis, report=report,
                decision=decision, pol=pol, deadline=call.deadline,
                images=conversation_images(call))
        else:
            if self.tier2 is not None:
                self.tier2.skip()
            result = self.rewriter.rewrite(call.text, report, decision, pol)
        timings[REWRITE] = (time.perf_counter() - t0) * 1000
        self._observe(REWRITE, timings[REWRITE])
        return result

    async def check_output(self, call: Call, answer: str, *, delivered: int = 0,
                           checked: int = 0) -> OutputVerdict:
        """The output check: tier 1 on a model's answer, under the tenant's ``output_action``.

        The answer is read alone (with its views: a long answer passage by passage) and, when
        the request is known, joined after the request's last user turn; that joined reading
        counts only where it is riskier than both the answer and the request alone (a refusal
        of a risky request must not be flagged for the request's words). The request's own
        score is ``call.report.score`` when the caller passes the input check's report, else it
        is read in the same batch.

        Args:
            call: The request the answer is for: tenant, deadline and request id; ``text`` is
                the last user turn as the model got it (after a rewrite, the rewritten text),
                "" when unknown. Its images are not read again.
            answer: The model's answer (the whole answer so far, when streaming).
            delivered: Characters of ``answer`` the caller has already sent on (streaming): a
                CUT never cuts before them.
            checked: Characters of ``answer`` an earlier check of the same answer read and did
                not replace or cut (streaming): only the rest is read, from a sentence at least
                400 characters before it (a risk split across the two reads is read whole), so
                checking a stream every window costs about one reading of the answer, not one
                per window. The report then covers the part read.

        Raises:
            InvalidArgumentError: TEXT_TOO_LONG (``limits.max_output_chars``) or a
                ``delivered`` or ``checked`` outside the answer.
            UNAVAILABLE / DEADLINE_EXCEEDED errors of the analyzer stage (the output check
                never fails open: there is no unchecked answer to give instead).
        """
        if len(answer) > self.limits.max_output_chars:
            raise InvalidArgumentError(
                f"the answer is {len(answer)} characters; the output check reads at most "
                f"{self.limits.max_output_chars}", reason=Reason.TEXT_TOO_LONG)
        if not (0 <= delivered <= len(answer) and 0 <= checked <= len(answer)):
            raise InvalidArgumentError(
                "delivered and checked must be between 0 and the answer's length",
                reason=Reason.MALFORMED_REQUEST)
        tenant_id, pol = self.policy.tenant(call.tenant_id)
        t_start = time.perf_counter()
        timings: dict[str, float] = {}
        if pol.output_action == "off" or not pol.stages.analyze or is_blank(answer):
            return self._output_verdict(call, tenant_id, answer, OutputAction.PASS,
                                        _NOT_CHECKED, Decision(Action.ALLOW, RiskLevel.NONE, ()),
                                        "", timings)
        self._check_deadline(call, ANALYZE)
        start = recheck_start(answer, checked)
        analysis = await self._output_analysis(call, answer[start:], timings,
                                               with_request=start == 0)
        decision = self._output_decision(analysis, pol)
        action, text, note = OutputAction.PASS, answer, ""
        if decision.action is not Action.ALLOW:
            care_only = all((spec := self.policy.taxonomy.get(c)) is not None
                            and spec.handling == "care" for c in decision.triggered)
            mode = "annotate" if care_only else pol.output_action
            if mode == "annotate":
                action = OutputAction.ANNOTATE
                note = pol.output_annotation.replace("{categories}",
                                                     ", ".join(decision.triggered))
            elif mode == "replace":
                action, text = OutputAction.REPLACE, pol.output_message
            else:
                cut = await self._cut_point(call, answer, delivered, pol)
                action, text, note = OutputAction.CUT, answer[:cut].rstrip(), pol.output_message
        timings["total"] = (time.perf_counter() - t_start) * 1000
        self._observe("output", timings["total"])
        log.info(
            "output check action=%s level=%s score=%.3f categories=%s answer_chars=%d "
            "answer_hash=%s delivered=%d read_from=%d",
            action.value, decision.level.value, analysis.score,
            ",".join(decision.triggered) or "-", len(answer), short_hash(answer), delivered,
            start,
        )
        return self._output_verdict(call, tenant_id, text, action, analysis, decision, note,
                                    timings)

    def _output_verdict(self, call: Call, tenant_id: str, text: str, action: OutputAction,
                        analysis: Analysis, decision: Decision, note: str,
                        timings: dict[str, float]) -> OutputVerdict:
        if self.metrics:
            self.metrics.output_verdicts.labels(action.value).inc()
        return OutputVerdict(
            request_id=call.request_id, tenant_id=tenant_id, action=action,
            level=decision.level, score=analysis.score, categories=decision.triggered,
            text=text, annotation=note, report=self.policy.report(analysis, decision),
            timings_ms=timings)

    async def _read(self, call: Call, texts: list[str],
                    timings: dict[str, float], label: str) -> list[Analysis]:
        """Tier 1 on plain texts (no images, no context), one analyzer item each, submitted
        together so the micro-batcher runs them as one batch."""
        t0 = time.perf_counter()
        tenant = self.policy.tenant(call.tenant_id)[0]
        try:
            results = await asyncio.gather(*(
                self.queue.submit(ANALYZE, AnalysisItem(call.request_id, t),
                                  deadline=call.deadline, tenant=tenant, pixels=0)
                for t in texts))
        finally:
            timings[label] = (time.perf_counter() - t0) * 1000
        return list(results)

    async def _output_analysis(self, call: Call, answer: str, timings: dict[str, float],
                               with_request: bool = True) -> Analysis:
        """The answer's analysis: alone, and (``with_request``: it is the answer's start)
        joined after the request where that adds risk beyond both parts."""
        request = "" if is_blank(call.text) or not with_request else call.text
        texts = [answer]
        if request:
            texts.append(f"{_tail(request, _OUTPUT_REQUEST_CHARS)}\n"
                         f"{answer[:_OUTPUT_JOINED_ANSWER_CHARS]}")
            if call.report is None:
                texts.append(request)
        read = await self._read(call, texts, timings, "output.analyze")
        own = read[0]
        if self.metrics:
            for f in own.findings:
                self.metrics.findings.labels(f.category, f.modality.value).inc()
        if len(read) < 2:
            return own
        joined = read[1]
        request_score = call.report.score if call.report is not None else read[2].score
        if joined.score <= max(own.score, request_score):
            return own
        # The answer says more with its question than alone (an answer that names only steps
        # or quantities): the joined reading's scores and findings count as well.
        cats = {c: max(v, joined.category_scores.get(c, 0.0))
                for c, v in own.category_scores.items()}
        for c, v in joined.category_scores.items():
            cats.setdefault(c, v)
        extra = tuple(Finding(f.category, f.score, f.modality,
                              f"answer read with its request: {f.evidence}",
                              f"output_context:{f.source}", -1)
                      for f in joined.findings)
        findings = tuple(sorted(own.findings + extra, key=lambda f: (-f.score, f.category)))
        return Analysis(score=joined.score, findings=findings, reasoning=own.reasoning,
                        analyzer=own.analyzer, category_scores=cats,
                        timings_ms=own.timings_ms, language=own.language,
                        language_supported=own.language_supported)

    def _output_decision(self, analysis: Analysis, pol: TenantPolicyConfig) -> Decision:
        """The policy's decision on an answer; a language tier 1 cannot read flags nothing
        (the answer's language follows the request's, which the input check handled)."""
        decision = self.policy.decide(analysis, pol)
        if UNSUPPORTED_LANGUAGE in decision.triggered:
            return Decision(Action.ALLOW, RiskLevel.LOW, ())
        if decision.action is Action.ALLOW and decision.triggered:
            # A tenant without the rewrite stage still gets its answers checked.
            return Decision(Action.REWRITE, decision.level, decision.triggered)
        return decision

    async def _cut_point(self, call: Call, answer: str, delivered: int,
                         pol: TenantPolicyConfig) -> int:
        """Where a flagged answer is cut: before its first sentence that is flagged alone, found
        in two batched reads (the passages after ``delivered``, then the sentences of the first
        flagged passage); at that passage's start when no sentence of it is flagged alone, at
        ``delivered`` when only the answer as a whole is flagged."""

        async def first_flagged(spans: list[tuple[int, int]]) -> tuple[int, int] | None:
            read = await self._read(call, [answer[a:b] for a, b in spans], {}, "output.cut")
            for span, analysis in zip(spans, read, strict=True):
                if self._output_decision(analysis, pol).action is not Action.ALLOW:
                    return span
            return None

        found = await first_flagged(passages(answer, delivered))
        if found is None:
            return delivered
        sentences = passages(answer, found[0], found[1], size=1)
        if len(sentences) > 1:
            sentence = await first_flagged(sentences)
            if sentence is not None:
                return sentence[0]
        return found[0]

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
            image_texts = self._last_turn_texts(call, analysis)
        result, t_ms = await self._target(call, call.text, image_texts)
        timings[TARGET] = t_ms
        timings["total"] = (time.perf_counter() - t_start) * 1000
        return result, timings

    @staticmethod
    def _last_turn_texts(call: Call, analysis: Analysis) -> tuple[str, ...]:
        """The OCR text of the last turn's images (the last ones tier 1 read), in their order."""
        if not call.images:
            return ()
        return tuple(ev.ocr_text for ev in analysis.images[-len(call.images):])

    async def _target(
        self, call: Call, text: str, image_texts: tuple[str, ...]
    ) -> tuple[TargetResult, float]:
        self._check_deadline(call, TARGET)
        t0 = time.perf_counter()
        try:
            result: TargetResult = await tracing.traced(
                f"vlmguard.stage {TARGET}", self.queue.submit(
                TARGET, TargetItem(text, call.images, image_texts, call.params,
                                   None if call.deadline is None
                                   else time.time() + (call.deadline - self.clock()),
                                   call.history),
                deadline=call.deadline, **self._share(call),
            ))
        except VLMGuardError:
            raise
        except Exception as e:  # pragma: no cover - queue contract violation
            raise UnavailableError("target failed", reason=Reason.TARGET_FAILED) from e
        ms = (time.perf_counter() - t0) * 1000
        self._observe(TARGET, ms)
        return result, ms


#: The request's last user turn, as much as the output check joins before the answer (its end).
_OUTPUT_REQUEST_CHARS = 400
#: The answer's start, as much as is joined after the request: the encoder reads about 1,000
#: characters of a text, and the rest of the answer is read passage by passage on its own
#: already (the joined text's passages would be the same ones again).
_OUTPUT_JOINED_ANSWER_CHARS = 800
#: Passages of an answer read to find where to cut it: about this long, at most this many.
_PASSAGE_CHARS = 400
_MAX_PASSAGES = 16
_SENTENCE_END = re.compile(r"(?<=[.!?。！？\n])\s+")
#: The analysis of an answer the tenant does not check.
_NOT_CHECKED = Analysis(score=0.0, findings=(), reasoning=ModalityReasoning(
    "The output check is off for this tenant or the answer is empty.", "", ""),
    analyzer="off", category_scores={})


#: How far before the part a stream's earlier check read the next check starts reading.
_RECHECK_OVERLAP_CHARS = 400


def recheck_start(answer: str, checked: int) -> int:
    """Where a check of a growing answer starts reading when ``checked`` characters of it were
    read before: at a sentence start at least :data:`_RECHECK_OVERLAP_CHARS` before them (else
    at a word), 0 while that is the beginning."""
    target = checked - _RECHECK_OVERLAP_CHARS
    if target <= 0:
        return 0
    ends = [m.end() for m in _SENTENCE_END.finditer(answer, max(0, target - _PASSAGE_CHARS),
                                                     target + 1) if m.end() <= target]
    if ends:
        return ends[-1]
    space = answer.rfind(" ", 0, target)
    return space + 1 if space > 0 else 0


def _tail(text: str, limit: int) -> str:
    return text if len(text) <= limit else "… " + text[-(limit - 2):]


def passages(text: str, start: int = 0, end: int | None = None,
             size: int = _PASSAGE_CHARS) -> list[tuple[int, int]]:
    """``text[start:end]`` as (start, end) spans of whole sentences, about ``size`` characters
    long (a sentence longer than that is a passage of its own; ``size`` 1: one sentence each),
    at most :data:`_MAX_PASSAGES` (longer texts get longer passages, never unread ones)."""
    stop = len(text) if end is None else end
    n = stop - start
    if n <= 0 or is_blank(text[start:stop]):
        return []
    size = max(size, -(-n // _MAX_PASSAGES))
    cuts = ([start] + [m.end() for m in _SENTENCE_END.finditer(text, start, stop)
                       if m.end() < stop] + [stop])
    spans: list[tuple[int, int]] = []
    a = start
    for i in range(1, len(cuts)):
        end = cuts[i]
        if end - a >= size or i == len(cuts) - 1:
            if end > a and not is_blank(text[a:end]):
                spans.append((a, end))
            a = end
    while len(spans) > _MAX_PASSAGES:  # many long sentences: join neighbours
        spans = [(spans[i][0], spans[min(i + 1, len(spans) - 1)][1])
                 for i in range(0, len(spans), 2)]
    return spans


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
    if metrics is not None:  # the tenants that get their own label value
        metrics.name_tenants(cfg.policy.tenants, cfg.metrics.max_tenant_labels)
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
        context_chars=cfg.analyzer.context_chars,
        answer_turns=cfg.analyzer.answer_turns,
        answer_threshold=cfg.analyzer.answer_threshold,
    )

"""The guard under evaluation, reached in process or over gRPC.

Both return the same :class:`GuardOutcome` for one request, so a run's figures do not depend
on how the guard was reached (the integration tests check this).

- :class:`InProcessGuard` builds the gateway's :class:`~vlmguard.pipeline.GuardPipeline` from a
  config with :func:`vlmguard.gateway.server.build_pipeline`, as the embedded gateway does
  (tier-1 analyzer behind the in-process micro-batching queue, policy engine, template
  rewriter, and the tier-2 generative rewriter when ``rewriter.kind`` is 'generative') and
  calls :meth:`GuardPipeline.guard` directly: no gRPC server and no port. A
  ``queue.url`` in the config is ignored here (models always run in this process); to evaluate
  a Redis deployment, evaluate its gateway with ``--addr``.
- :class:`GrpcGuard` calls ``GuardService.Guard`` on a running server.

Both also record which rewriter answered (tier 2's model, its template fallback, or the template
alone) and, when given a :class:`~vlmguard_training.evaluation.quality.RewriteScorer`
(``quality=True``),
the rewrite's similarity to the prompt and to the guidance of each category found. The scorer
runs in a worker thread; the texts it reads are never kept.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from vlmguard.config import TaxonomyConfig, VLMGuardConfig
from vlmguard.domain import GuardResult, ImageInput
from vlmguard_training.evaluation.quality import tier2_fields

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GuardOutcome:
    """What evaluation keeps of one guarded request (no prompt, OCR or rewritten text)."""

    action: str
    score: float
    level: str
    categories: tuple[str, ...]
    modalities: tuple[str, ...]
    unchanged: bool
    analyzer: str
    timings_ms: dict[str, float] = field(default_factory=dict)
    #: The reported rewriter name ("" when none, e.g. some ALLOW and BLOCK answers).
    rewriter: str = ""
    #: "model" (tier 2's own rewrite), "fallback" (tier 2 ran, the template answered) or "".
    tier2: str = ""
    #: Why tier 2 fell back (a malformed-output kind, TIMEOUT, OVERLOADED, STAGE_FAILED) or "".
    fallback_kind: str = ""
    #: Cosine similarity of prompt and rewrite (1.0 unchanged; None for BLOCK or unscored).
    intent_sim: float | None = None
    #: The rewrite holds the whole prompt verbatim (None when not scored).
    prompt_kept: bool | None = None
    #: Per category found: best similarity of a line/sentence of the rewrite to its guidance
    #: (empty for BLOCK or an unchanged prompt); None when the rewrite was not scored.
    guidance: dict[str, float] | None = None
    #: Highest finding score per category found (the policy acts on those at or above the
    #: tenant's rewrite threshold).
    category_scores: dict[str, float] = field(default_factory=dict)


class GuardCallError(Exception):
    """A request the guard answered with an error; ``reason`` is its stable reason code."""

    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(f"{reason}: {message}" if message else reason)
        self.reason = reason
        self.message = message


class GuardFn(Protocol):
    """Anything that guards one request: the two guards below, or a scripted stand-in."""

    async def __call__(self, text: str, image: bytes | None, tenant: str) -> GuardOutcome:
        """Guard ``text`` (with ``image`` when not None) for ``tenant``.

        Raises:
            GuardCallError: the guard answered with an error.
        """


def _ordered_unique(values: Sequence[str]) -> tuple[str, ...]:
    out: list[str] = []
    for v in values:
        if v not in out:
            out.append(v)
    return tuple(out)


def _category_scores(pairs: Iterable[tuple[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for cat, score in pairs:
        out[cat] = max(out.get(cat, 0.0), round(float(score), 4))
    return out


def outcome_from_result(res: GuardResult, text: str) -> GuardOutcome:
    """A :class:`GuardOutcome` from the pipeline's result for the prompt ``text``."""
    findings = sorted(res.report.findings, key=lambda f: -f.score)
    tier2, kind = tier2_fields(res.rewrite.rewriter)
    return GuardOutcome(
        action=res.action.value,
        score=round(float(res.report.score), 4),
        level=res.report.level.value,
        categories=_ordered_unique([f.category for f in findings]),
        modalities=_ordered_unique([f.modality.value for f in findings]),
        unchanged=res.action.value != "BLOCK" and res.rewrite.rewritten_text == text,
        analyzer=res.report.analyzer,
        timings_ms={k: round(float(v), 3) for k, v in res.timings_ms.items()},
        rewriter=res.rewrite.rewriter, tier2=tier2, fallback_kind=kind,
        category_scores=_category_scores((f.category, f.score) for f in findings),
    )


async def load_scorer(taxonomy: TaxonomyConfig) -> Any:
    """A :class:`~vlmguard_training.evaluation.quality.RewriteScorer` loaded in a worker thread."""
    from vlmguard_training.evaluation.quality import RewriteScorer

    return await asyncio.to_thread(RewriteScorer, taxonomy)


async def with_quality(scorer: Any, outcome: GuardOutcome, text: str,
                       rewritten: str) -> GuardOutcome:
    """``outcome`` with the scorer's similarities (unchanged when ``scorer`` is None).

    A scoring failure leaves the similarities unset (logged by type only; never the texts).
    """
    if scorer is None:
        return outcome
    try:
        q = await asyncio.to_thread(scorer.score, text, rewritten, outcome.action,
                                    outcome.categories)
    except Exception as e:  # quality is a side figure: never fail the item for it
        log.warning("rewrite scoring failed: %s", type(e).__name__)
        return outcome
    return replace(outcome, intent_sim=q.intent_sim, guidance=dict(q.guidance),
                   prompt_kept=q.prompt_kept)


class InProcessGuard:
    """The gateway's pipeline in this process (see the module docstring).

    Args:
        cfg: Configuration (analyzer, taxonomy, policy, limits).
        analyzer: A ready analyzer with ``name`` and ``analyze_batch`` (else the tier-1
            analyzer is loaded from ``cfg.analyzer`` on :meth:`start`).
        timeout_s: Per-request deadline (default: ``server.default_timeout_s``).
        quality: Score rewrites (intent kept, guidance carried) against ``cfg.taxonomy``; the
            embedder is loaded on :meth:`start` unless ``scorer`` is given.
        scorer: A ready :class:`~vlmguard_training.evaluation.quality.RewriteScorer` (implies
        quality).
    """

    def __init__(self, cfg: VLMGuardConfig, *, analyzer: Any = None,
                 timeout_s: float | None = None, quality: bool = False,
                 scorer: Any = None) -> None:
        self.cfg = cfg
        self.analyzer = analyzer
        self.timeout_s = timeout_s if timeout_s is not None else cfg.server.default_timeout_s
        self.quality = quality or scorer is not None
        self.scorer = scorer
        self._pipeline: Any = None
        self._queue: Any = None
        self._rewriter: Any = None

    async def start(self) -> None:
        """Load the analyzer (unless given) and the tier-2 rewriter (when ``rewriter.kind`` is
        'generative'), and start the in-process queue."""
        from vlmguard.domain import ANALYZE, REWRITE
        from vlmguard.pipeline import build_pipeline
        from vlmguard.stages import build_runtime, in_process_queue

        cfg = self.cfg
        analyze = build_runtime(ANALYZE, cfg, analyzer=self.analyzer)
        await analyze.start()
        self.analyzer = getattr(analyze, "analyzer", None)
        runtimes = [analyze]
        if cfg.rewriter.kind == "generative":
            self._rewriter = build_runtime(REWRITE, cfg)
            await self._rewriter.start()  # raises when the model cannot load
            runtimes.append(self._rewriter)
        self._queue = in_process_queue(cfg, runtimes)
        self._pipeline = build_pipeline(cfg, queue=self._queue, target_enabled=False)
        if self.quality and self.scorer is None:
            self.scorer = await load_scorer(cfg.taxonomy)
        await self._queue.start()

    async def close(self) -> None:
        """Stop the queue and release the tier-2 model."""
        if self._queue is not None:
            await self._queue.close()
        if self._rewriter is not None:
            self._rewriter.close()

    async def __call__(self, text: str, image: bytes | None, tenant: str) -> GuardOutcome:
        """Guard one request through :meth:`GuardPipeline.guard`."""
        from vlmguard.errors import VLMGuardError
        from vlmguard.pipeline import Call

        assert self._pipeline is not None, "call start() first"
        call = Call(
            request_id=uuid.uuid4().hex, text=text,
            images=(ImageInput(image),) if image is not None else (),
            tenant_id=tenant, deadline=time.monotonic() + self.timeout_s,
        )
        try:
            res = await self._pipeline.guard(call)
        except VLMGuardError as e:
            raise GuardCallError(e.reason, e.message) from e
        return await with_quality(self.scorer, outcome_from_result(res, text), text,
                                  res.rewrite.rewritten_text)


def _rpc_reason(err: Any) -> str:
    """ErrorInfo.reason of a failed gRPC call, else its status code name."""
    from vlmguard.gateway.client import rpc_error_details

    reason, _ = rpc_error_details(err)
    if reason:
        return reason
    code = err.code() if hasattr(err, "code") else None
    return code.name if code is not None else "UNKNOWN"


class GrpcGuard:
    """``GuardService.Guard`` on a running server (plaintext, or TLS with ``ca_file``).

    Args:
        addr: HOST:PORT.
        api_key: Sent as ``authorization: Bearer`` when not empty.
        ca_file: PEM CA bundle; when given the channel uses TLS.
        timeout_s: Per-request deadline.
        quality: Score rewrites (intent kept, guidance carried); the embedder is loaded on
            :meth:`start` unless ``scorer`` is given.
        taxonomy: Whose guidance the rewrites are scored against (default: the built-in
            taxonomy; the server's may differ).
        scorer: A ready :class:`~vlmguard_training.evaluation.quality.RewriteScorer` (implies
        quality).
    """

    def __init__(self, addr: str, *, api_key: str = "", ca_file: str = "",
                 timeout_s: float = 60.0, quality: bool = False,
                 taxonomy: TaxonomyConfig | None = None, scorer: Any = None) -> None:
        self.addr = addr
        self.api_key = api_key
        self.ca_file = ca_file
        self.timeout_s = timeout_s
        self.quality = quality or scorer is not None
        self.taxonomy = taxonomy if taxonomy is not None else VLMGuardConfig().taxonomy
        self.scorer = scorer
        self._channel: Any = None
        self._stub: Any = None

    async def start(self) -> None:
        """Open the channel."""
        from pathlib import Path

        import grpc

        from vlmguard.v1 import guard_pb2_grpc

        opts = [("grpc.max_send_message_length", 64 * 1024 * 1024),
                ("grpc.max_receive_message_length", 64 * 1024 * 1024)]
        if self.ca_file:
            creds = grpc.ssl_channel_credentials(Path(self.ca_file).read_bytes())
            self._channel = grpc.aio.secure_channel(self.addr, creds, options=opts)
        else:
            self._channel = grpc.aio.insecure_channel(self.addr, options=opts)
        self._stub = guard_pb2_grpc.GuardServiceStub(self._channel)
        if self.quality and self.scorer is None:
            self.scorer = await load_scorer(self.taxonomy)

    async def close(self) -> None:
        """Close the channel."""
        if self._channel is not None:
            await self._channel.close()

    async def __call__(self, text: str, image: bytes | None, tenant: str) -> GuardOutcome:
        """Guard one request over gRPC."""
        import grpc

        from vlmguard.v1 import guard_pb2, types_pb2

        assert self._stub is not None, "call start() first"
        req = guard_pb2.GuardRequest(
            text=text, tenant_id=tenant,
            images=[types_pb2.Image(data=image)] if image is not None else [],
        )
        metadata = [("authorization", f"Bearer {self.api_key}")] if self.api_key else None
        try:
            resp = await self._stub.Guard(req, timeout=self.timeout_s, metadata=metadata)
        except grpc.RpcError as err:
            details = str(getattr(err, "details", lambda: "")())
            raise GuardCallError(_rpc_reason(err), details) from err
        findings = sorted(resp.report.findings, key=lambda f: -f.score)
        action = types_pb2.Action.Name(resp.action).removeprefix("ACTION_")
        tier2, kind = tier2_fields(resp.rewriter)
        outcome = GuardOutcome(
            action=action,
            score=round(float(resp.report.score), 4),
            level=types_pb2.RiskLevel.Name(resp.report.level).removeprefix("RISK_LEVEL_"),
            categories=_ordered_unique([f.category for f in findings]),
            modalities=_ordered_unique(
                [types_pb2.Modality.Name(f.modality).removeprefix("MODALITY_")
                 for f in findings]),
            unchanged=action != "BLOCK" and resp.rewritten_text == text,
            analyzer=resp.report.analyzer,
            timings_ms={k: round(float(v), 3) for k, v in resp.timings_ms.items()},
            rewriter=resp.rewriter, tier2=tier2, fallback_kind=kind,
            category_scores=_category_scores((f.category, f.score) for f in findings),
        )
        return await with_quality(self.scorer, outcome, text, resp.rewritten_text)

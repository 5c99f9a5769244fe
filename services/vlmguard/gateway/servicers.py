"""gRPC servicers: thin adapters from the wire to :class:`vlmguard.pipeline.GuardPipeline`.

The tenant a call acts for and whether it may reach the target unguarded come from the call's
:class:`~vlmguard.auth.Access` (set by the interceptor or the Ray ingress); without one (a
servicer used on its own) the request's tenant is taken and Generate is guarded. Each servicer
notes the content's hashes and the decision for the call's audit line.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc

from vlmguard.auth import access_var, record_content, record_decision
from vlmguard.domain import Action, GenerationParams, ImageInput, RiskReport, TargetResult
from vlmguard.gateway import convert
from vlmguard.logs import request_id_var
from vlmguard.pipeline import Call, GuardPipeline, conversation_images
from vlmguard.v1 import (
    analysis_pb2,
    analysis_pb2_grpc,
    guard_pb2,
    guard_pb2_grpc,
    rewrite_pb2,
    rewrite_pb2_grpc,
    target_pb2,
    target_pb2_grpc,
)


class _Base:
    def __init__(
        self,
        pipeline: GuardPipeline,
        default_timeout_s: float,
        categories: list[str],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pipeline = pipeline
        self.default_timeout_s = default_timeout_s
        self.categories = categories
        self.clock = clock

    @staticmethod
    def _tenant(requested: str) -> str:
        access = access_var.get()
        return access.tenant if access is not None and access.tenant is not None else requested

    @staticmethod
    def _note(text: str, images: tuple[ImageInput, ...]) -> None:
        record_content(access_var.get(), text, [i.data for i in images])

    @staticmethod
    def _decided(action: str, report: RiskReport) -> None:
        cats = sorted({f.category for f in report.findings})
        record_decision(access_var.get(), action.lower(), cats, report.score)

    def _deadline(self, context: grpc.aio.ServicerContext) -> float:
        remaining = context.time_remaining()
        if remaining is None:
            remaining = self.default_timeout_s
        return self.clock() + min(remaining, self.default_timeout_s * 10)


class GuardServicer(_Base, guard_pb2_grpc.GuardServiceServicer):
    """GuardService."""

    async def Guard(  # noqa: N802 - gRPC method name
        self, request: guard_pb2.GuardRequest, context: grpc.aio.ServicerContext
    ) -> guard_pb2.GuardResponse:
        opts = request.options
        text, images, history = convert.prompt_from_pb(request.text, request.images,
                                                       request.messages)
        call = Call(
            request_id=request_id_var.get(),
            text=text,
            images=images,
            tenant_id=self._tenant(request.tenant_id),
            deadline=self._deadline(context),
            run_target=opts.run_target,
            params=(convert.params_from_pb(opts.generation) if opts.HasField("generation")
                    else GenerationParams()),
            history=history,
        )
        self._note(call.text, conversation_images(call))
        res = await self.pipeline.guard(call)
        self._decided(res.action.value, res.report)
        return guard_pb2.GuardResponse(
            request_id=res.request_id,
            action=convert.action_to_pb(res.action),
            report=convert.report_to_pb(res.report),
            rewrite_reasoning=convert.reasoning_to_pb(res.rewrite.reasoning),
            target_response=res.target.text if res.target else "",
            timings_ms=res.timings_ms,
            tenant_id=res.tenant_id,
            **_target_fields(res.target),
            **convert.rewrite_fields(res.rewrite),  # type: ignore[arg-type]
        )

    async def CheckOutput(  # noqa: N802 - gRPC method name
        self, request: guard_pb2.CheckOutputRequest, context: grpc.aio.ServicerContext
    ) -> guard_pb2.CheckOutputResponse:
        turns = convert.turns_from_pb(request.messages)
        report = (convert.report_from_pb(request.request_report, self.categories)
                  if request.HasField("request_report") else None)
        call = Call(
            request_id=request_id_var.get(), text=convert.last_user_text(turns),
            tenant_id=self._tenant(request.tenant_id), deadline=self._deadline(context),
            report=report,
        )
        self._note(request.output, ())
        v = await self.pipeline.check_output(call, request.output,
                                             delivered=request.delivered_chars,
                                             checked=request.checked_chars)
        self._decided(f"output_{v.action.value}", v.report)
        return guard_pb2.CheckOutputResponse(
            request_id=v.request_id, action=convert.output_action_to_pb(v.action),
            report=convert.report_to_pb(v.report), text=v.text, annotation=v.annotation,
            categories=list(v.categories), timings_ms=v.timings_ms, tenant_id=v.tenant_id,
        )


class ThreatAnalysisServicer(_Base, analysis_pb2_grpc.ThreatAnalysisServiceServicer):
    """ThreatAnalysisService."""

    async def Analyze(  # noqa: N802
        self, request: analysis_pb2.AnalyzeRequest, context: grpc.aio.ServicerContext
    ) -> analysis_pb2.AnalyzeResponse:
        call = Call(
            request_id=request_id_var.get(), text=request.text,
            images=convert.images_from_pb(request.images),
            tenant_id=self._tenant(request.tenant_id), deadline=self._deadline(context),
        )
        self._note(call.text, call.images)
        report, timings = await self.pipeline.analyze(call)
        self._decided(f"level_{report.level.value}", report)
        return analysis_pb2.AnalyzeResponse(
            request_id=call.request_id, report=convert.report_to_pb(report), timings_ms=timings
        )


class RewriteServicer(_Base, rewrite_pb2_grpc.RewriteServiceServicer):
    """RewriteService."""

    async def Rewrite(  # noqa: N802
        self, request: rewrite_pb2.RewriteRequest, context: grpc.aio.ServicerContext
    ) -> rewrite_pb2.RewriteResponse:
        report = (convert.report_from_pb(request.report, self.categories)
                  if request.HasField("report") else None)
        call = Call(
            request_id=request_id_var.get(), text=request.text,
            images=convert.images_from_pb(request.images),
            tenant_id=self._tenant(request.tenant_id), deadline=self._deadline(context),
            report=report,
        )
        self._note(call.text, call.images)
        result, used, timings = await self.pipeline.rewrite(call)
        self._decided(result.action.value, used)
        return rewrite_pb2.RewriteResponse(
            request_id=call.request_id,
            action=convert.action_to_pb(result.action),
            reasoning=convert.reasoning_to_pb(result.reasoning),
            report=convert.report_to_pb(used),
            timings_ms=timings,
            **convert.rewrite_fields(result),  # type: ignore[arg-type]
        )


class TargetServicer(_Base, target_pb2_grpc.TargetServiceServicer):
    """TargetService.

    Generate runs the guard first (analysis, policy, rewrite: what Guard does, with the target
    on the guarded prompt) unless the caller's key has the ``target_raw`` scope. A blocked
    request is answered with the tenant's block message and ``finish_reason`` "blocked"; the
    trailing metadata ``x-vlmguard-action`` says what the guard did (allow, rewrite, block,
    or raw).
    """

    async def Generate(  # noqa: N802
        self, request: target_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> target_pb2.GenerateResponse:
        access = access_var.get()
        raw = access is not None and access.principal.raw_target
        call = Call(
            request_id=request_id_var.get(), text=request.text,
            images=convert.images_from_pb(request.images),
            tenant_id=self._tenant(request.tenant_id), deadline=self._deadline(context),
            run_target=not raw,
            params=(convert.params_from_pb(request.params) if request.HasField("params")
                    else GenerationParams()),
        )
        self._note(call.text, call.images)
        if raw:
            result, timings = await self.pipeline.generate(call)
            record_decision(access, "raw", (), 0.0)
            _set_action(context, "raw")
            return target_pb2.GenerateResponse(
                request_id=call.request_id, text=result.text, model=result.model,
                finish_reason=result.finish_reason, prompt_tokens=result.prompt_tokens,
                completion_tokens=result.completion_tokens, timings_ms=timings,
            )
        res = await self.pipeline.guard(call)
        self._decided(res.action.value, res.report)
        _set_action(context, res.action.value.lower())
        if res.action is Action.BLOCK or res.target is None:
            return target_pb2.GenerateResponse(
                request_id=call.request_id, text=res.rewrite.block_message,
                finish_reason="blocked", timings_ms=res.timings_ms,
            )
        t = res.target
        return target_pb2.GenerateResponse(
            request_id=call.request_id, text=t.text, model=t.model,
            finish_reason=t.finish_reason, prompt_tokens=t.prompt_tokens,
            completion_tokens=t.completion_tokens, timings_ms=res.timings_ms,
        )


def _target_fields(target: TargetResult | None) -> dict[str, Any]:
    """GuardResponse's target_* fields: how the target's answer ended and what it cost."""
    if target is None:
        return {}
    return {"target_model": target.model, "target_finish_reason": target.finish_reason,
            "target_prompt_tokens": target.prompt_tokens,
            "target_completion_tokens": target.completion_tokens}


def _set_action(context: grpc.aio.ServicerContext, action: str) -> None:
    """Tell the caller what the guard did (trailing metadata, sent with the answer)."""
    setter = getattr(context, "set_trailing_metadata", None)
    if setter is not None:
        setter((("x-vlmguard-action", action),))

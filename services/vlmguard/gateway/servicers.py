"""gRPC servicers: thin adapters from the wire to :class:`vlmguard.pipeline.GuardPipeline`."""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc

from vlmguard.domain import GenerationParams
from vlmguard.gateway import convert
from vlmguard.logs import request_id_var
from vlmguard.pipeline import Call, GuardPipeline
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
        call = Call(
            request_id=request_id_var.get(),
            text=request.text,
            images=convert.images_from_pb(request.images),
            tenant_id=request.tenant_id,
            deadline=self._deadline(context),
            run_target=opts.run_target,
            params=(convert.params_from_pb(opts.generation) if opts.HasField("generation")
                    else GenerationParams()),
        )
        res = await self.pipeline.guard(call)
        return guard_pb2.GuardResponse(
            request_id=res.request_id,
            action=convert.action_to_pb(res.action),
            report=convert.report_to_pb(res.report),
            rewrite_reasoning=convert.reasoning_to_pb(res.rewrite.reasoning),
            target_response=res.target.text if res.target else "",
            timings_ms=res.timings_ms,
            tenant_id=res.tenant_id,
            **convert.rewrite_fields(res.rewrite),  # type: ignore[arg-type]
        )


class ThreatAnalysisServicer(_Base, analysis_pb2_grpc.ThreatAnalysisServiceServicer):
    """ThreatAnalysisService."""

    async def Analyze(  # noqa: N802
        self, request: analysis_pb2.AnalyzeRequest, context: grpc.aio.ServicerContext
    ) -> analysis_pb2.AnalyzeResponse:
        call = Call(
            request_id=request_id_var.get(), text=request.text,
            images=convert.images_from_pb(request.images), tenant_id=request.tenant_id,
            deadline=self._deadline(context),
        )
        report, timings = await self.pipeline.analyze(call)
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
            images=convert.images_from_pb(request.images), tenant_id=request.tenant_id,
            deadline=self._deadline(context), report=report,
        )
        result, used, timings = await self.pipeline.rewrite(call)
        return rewrite_pb2.RewriteResponse(
            request_id=call.request_id,
            action=convert.action_to_pb(result.action),
            reasoning=convert.reasoning_to_pb(result.reasoning),
            report=convert.report_to_pb(used),
            timings_ms=timings,
            **convert.rewrite_fields(result),  # type: ignore[arg-type]
        )


class TargetServicer(_Base, target_pb2_grpc.TargetServiceServicer):
    """TargetService."""

    async def Generate(  # noqa: N802
        self, request: target_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> target_pb2.GenerateResponse:
        call = Call(
            request_id=request_id_var.get(), text=request.text,
            images=convert.images_from_pb(request.images), tenant_id=request.tenant_id,
            deadline=self._deadline(context),
            params=(convert.params_from_pb(request.params) if request.HasField("params")
                    else GenerationParams()),
        )
        result, timings = await self.pipeline.generate(call)
        return target_pb2.GenerateResponse(
            request_id=call.request_id, text=result.text, model=result.model,
            finish_reason=result.finish_reason, prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens, timings_ms=timings,
        )

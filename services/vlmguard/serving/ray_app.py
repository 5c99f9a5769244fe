"""The guard on Ray Serve: a gRPC ingress deployment in front of one deployment per stage.

:func:`build_app` turns a :class:`~vlmguard.config.VLMGuardConfig` into a Serve application:
the ``ingress`` deployment runs the same :class:`~vlmguard.pipeline.GuardPipeline` and gRPC
servicers as the embedded gateway (auth, request ids and error mapping as in its interceptor),
and reaches each stage (``analyzer``, ``rewriter``, ``target``) through a deployment handle
wrapped in :class:`~vlmguard.serving.ray_queue.RayServeQueue`; stage replicas batch with
``@serve.batch``. :func:`app` is the typed builder for a KubeRay RayService ``import_path``
(``vlmguard.serving.ray_app:app``, ``args: {config_path: ...}``), and :class:`LocalRayServe`
runs it on a local Ray for ``vlmguard serve --ray``.

Limits of Ray's gRPC proxy (documented in docs/operating.md, "Ray Serve"): it does not
forward the client's deadline (the server's default timeout bounds the stage calls), it cannot send
initial metadata (the request id comes back as trailing metadata ``x-request-id``, besides the
response's ``request_id``), and it binds all interfaces.
"""

# No `from __future__ import annotations` here: Ray Serve reads the builder's parameter
# annotation as a class to validate `args` against.

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve import Application
from ray.serve.grpc_util import RayServegRPCContext

from vlmguard import tracing
from vlmguard.auth import Gatekeeper, access_var, audit, denied_access
from vlmguard.config import RayDeploymentConfig, VLMGuardConfig, load_config
from vlmguard.errors import (
    DeadlineExceededError,
    InvalidArgumentError,
    Reason,
    UnavailableError,
    VLMGuardError,
)
from vlmguard.gateway.errors import to_status
from vlmguard.gateway.interceptor import MalformedRequest, call_request_id, tenant_label
from vlmguard.logs import configure_logging, request_id_var
from vlmguard.metrics import Metrics
from vlmguard.pipeline import build_pipeline
from vlmguard.queue.base import run_isolating
from vlmguard.serving.ray_grpc import SERVICER_FUNCTIONS
from vlmguard.serving.ray_queue import RayServeQueue, StageCall
from vlmguard.stages import build_runtime, stage_batching

log = logging.getLogger(__name__)

#: Deployment name of each stage (others get ``stage-<name>``).
STAGE_DEPLOYMENTS = {"analyze": "analyzer", "rewrite": "rewriter", "target": "target"}
INGRESS_DEPLOYMENT = "ingress"
_INGRESS_MAX_ONGOING = 256
_INGRESS_TARGET_ONGOING = 64

_SERVICES = {
    "": "",
    "vlmguard.v1.GuardService": "",
    "vlmguard.v1.ThreatAnalysisService": "",
    "vlmguard.v1.RewriteService": "",
    "vlmguard.v1.TargetService": "target",
}


def deployment_name(stage: str) -> str:
    """The Serve deployment that runs ``stage``."""
    return STAGE_DEPLOYMENTS.get(stage, f"stage-{stage}")


def _replica_setup(cfg: VLMGuardConfig, role: str) -> None:
    configure_logging(cfg.logging.level, cfg.logging.format)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a model hub at run time
    tracing.setup(cfg.tracing, role=role)


class _ServicerContext:
    """The part of ``grpc.aio.ServicerContext`` the servicers use, over Ray's context."""

    def __init__(self, ctx: RayServegRPCContext) -> None:
        self._ctx = ctx
        self.trailing: list[tuple[str, str]] = []

    def time_remaining(self) -> float | None:
        return None  # Ray's proxy does not forward the client's deadline

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return list(self._ctx.invocation_metadata())

    def set_trailing_metadata(self, md: Any) -> None:
        self.trailing = list(md)


class StageReplica:
    """One stage's replica (deployment :data:`StageDeployment`): its model loaded once, items
    batched across callers.

    Args:
        stage: Stage name (``analyze``, ``rewrite``, ``target``).
        config: The configuration as JSON-able data.
    """

    async def __init__(self, stage: str, config: dict[str, Any]) -> None:  # type: ignore[misc]
        # Serve awaits an async constructor: the replica is RUNNING once the model is loaded.
        cfg = VLMGuardConfig.model_validate(config)
        _replica_setup(cfg, f"ray-{stage}")
        self.stage = stage
        self.runner = build_runtime(stage, cfg)
        await self.runner.start()
        batching = self.runner.batching
        batcher: Any = self.run  # serve.batch's wrapper carries the setters
        batcher.set_max_batch_size(batching.max_batch_size)
        batcher.set_batch_wait_timeout_s(batching.max_wait_ms / 1000.0)
        log.info("stage %s replica ready (%s, batch %d / %.0f ms)", stage,
                 self.runner.name, batching.max_batch_size, batching.max_wait_ms)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def run(self, calls: list[StageCall]) -> list[Any]:
        """One result or one VLMGuardError per call; expired calls are dropped unrun."""
        now = time.time()
        out: list[Any] = [
            DeadlineExceededError(f"deadline passed before stage {self.stage!r} ran",
                                  reason=Reason.DEADLINE_EXCEEDED)
            for _ in calls
        ]
        live = [i for i, c in enumerate(calls) if not c.expires_at or c.expires_at > now]
        if live:
            # One span per call, in the trace of the ingress call that sent it.
            spans = [tracing.start_span(
                f"vlmguard.worker.process {self.stage}",
                {"vlmguard.stage": self.stage, "vlmguard.batch_size": len(live)},
                parent=getattr(calls[i], "traceparent", ""), kind="server") for i in live]
            try:
                results = await run_isolating(self.runner.handle, [calls[i].item for i in live],
                                              stage=self.stage)
            finally:
                for sp in spans:
                    tracing.end(sp)
            for i, r in zip(live, results, strict=True):
                out[i] = _client_safe(r, self.stage)
        return out

    def check_health(self) -> None:
        """Serve's health check: raises when the stage's model is not loaded."""
        self.runner.check()

    def __del__(self) -> None:
        runner = getattr(self, "runner", None)
        if runner is not None:
            try:
                runner.close()
            except Exception:  # interpreter shutdown: nothing left to release
                log.debug("closing stage %s failed", getattr(self, "stage", "?"), exc_info=True)


def _client_safe(result: Any, stage: str) -> Any:
    """Unexpected exceptions become UNAVAILABLE/STAGE_FAILED (details stay in this log)."""
    if isinstance(result, BaseException) and not isinstance(result, VLMGuardError):
        log.error("stage %s failed on an item: %s", stage, type(result).__name__)
        return UnavailableError(f"stage {stage!r} failed", reason=Reason.STAGE_FAILED)
    return result


class IngressReplica:
    """The gRPC ingress replica (deployment :data:`GuardIngress`): one method per RPC (Ray's
    proxy routes by RPC name).

    Args:
        config: The configuration as JSON-able data.
        stages: Stage name -> deployment handle (Serve passes handles for bound stages).
    """

    def __init__(self, config: dict[str, Any], stages: Mapping[str, Any]) -> None:
        from vlmguard.gateway.servicers import (
            GuardServicer,
            RewriteServicer,
            TargetServicer,
            ThreatAnalysisServicer,
        )

        cfg = VLMGuardConfig.model_validate(config)
        _replica_setup(cfg, "ray-ingress")
        self.metrics = Metrics()
        self.gatekeeper = Gatekeeper(cfg.server.auth, metrics=self.metrics)
        self.queue = RayServeQueue(
            {stage: handle.options(method_name="run") for stage, handle in stages.items()},
            max_pending=cfg.limits.max_pending, retries=cfg.ray.stage_retries,
            metrics=self.metrics,
        )
        self.pipeline = build_pipeline(cfg, queue=self.queue, metrics=self.metrics)
        self.target_enabled = "target" in stages
        args = (self.pipeline, cfg.server.default_timeout_s, cfg.taxonomy.ids)
        self._guard = GuardServicer(*args)
        self._analysis = ThreatAnalysisServicer(*args)
        self._rewrite = RewriteServicer(*args)
        self._target = TargetServicer(*args)
        log.info("ingress ready: stages %s, auth %s", sorted(stages),
                 "on" if self.gatekeeper.enabled else "off")

    async def Guard(self, request: Any, grpc_context: RayServegRPCContext) -> Any:  # noqa: N802
        """GuardService.Guard."""
        from vlmguard.v1 import guard_pb2

        return await self._unary("Guard", request, grpc_context, self._guard.Guard,
                                 guard_pb2.GuardResponse)

    async def CheckOutput(self, request: Any,  # noqa: N802
                          grpc_context: RayServegRPCContext) -> Any:
        """GuardService.CheckOutput."""
        from vlmguard.v1 import guard_pb2

        return await self._unary("CheckOutput", request, grpc_context, self._guard.CheckOutput,
                                 guard_pb2.CheckOutputResponse)

    async def Analyze(self, request: Any, grpc_context: RayServegRPCContext) -> Any:  # noqa: N802
        """ThreatAnalysisService.Analyze."""
        from vlmguard.v1 import analysis_pb2

        return await self._unary("Analyze", request, grpc_context, self._analysis.Analyze,
                                 analysis_pb2.AnalyzeResponse)

    async def Rewrite(self, request: Any, grpc_context: RayServegRPCContext) -> Any:  # noqa: N802
        """RewriteService.Rewrite."""
        from vlmguard.v1 import rewrite_pb2

        return await self._unary("Rewrite", request, grpc_context, self._rewrite.Rewrite,
                                 rewrite_pb2.RewriteResponse)

    async def Generate(self, request: Any, grpc_context: RayServegRPCContext) -> Any:  # noqa: N802
        """TargetService.Generate."""
        from vlmguard.v1 import target_pb2

        return await self._unary("Generate", request, grpc_context, self._target.Generate,
                                 target_pb2.GenerateResponse)

    async def Check(self, request: Any, grpc_context: RayServegRPCContext) -> Any:  # noqa: N802
        """grpc.health.v1.Health.Check (no API key, as in the embedded gateway)."""
        import grpc
        from grpc_health.v1 import health_pb2

        service = "" if isinstance(request, MalformedRequest) else request.service
        if service not in _SERVICES:
            grpc_context.set_code(grpc.StatusCode.NOT_FOUND)
            grpc_context.set_details(f"unknown service {service!r}")
            return health_pb2.HealthCheckResponse()
        serving = _SERVICES[service] != "target" or self.target_enabled
        return health_pb2.HealthCheckResponse(
            status=health_pb2.HealthCheckResponse.SERVING if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING)

    def check_health(self) -> None:
        """Serve's health check: the ingress holds no model; its stages check their own."""

    async def _unary(
        self,
        method: str,
        request: Any,
        ctx: RayServegRPCContext,
        behavior: Callable[[Any, Any], Awaitable[Any]],
        empty: Callable[[], Any],
    ) -> Any:
        """What the embedded gateway's interceptor does, on Ray's gRPC context (the proxy has
        read the message already: keys, scopes, tenants and rate limits are checked here, with
        the same rules, and TargetService.Generate is guarded unless the key has
        ``target_raw``)."""
        t0 = time.perf_counter()
        md = tuple(ctx.invocation_metadata() or ())
        rid = call_request_id(request, md)
        token = request_id_var.set(rid)
        access_token = access_var.set(None)
        access = None
        code, reason = "OK", ""
        span = tracing.start_span(f"vlmguard.rpc {method}", {
            "rpc.system": "grpc", "rpc.method": method, "vlmguard.request_id": rid},
            parent=tracing.metadata_traceparent(md), kind="server")
        try:
            access = self.gatekeeper.admit(method, md)
            access_var.set(access)
            if isinstance(request, MalformedRequest):
                raise InvalidArgumentError(request.message, reason=request.reason)
            self.gatekeeper.resolve_tenant(access, getattr(request, "tenant_id", ""))
            sctx = _ServicerContext(ctx)
            with tracing.use(span):
                response = await behavior(request, sctx)
            ctx.set_trailing_metadata([*sctx.trailing, ("x-request-id", rid)])
            return response
        except VLMGuardError as e:
            code, reason = e.code.name, e.reason
            access = access or denied_access(e)
            self.metrics.errors.labels(e.reason).inc()
            log.info("%s failed: %s %s", method, code, e.reason)
            status = to_status(e)
        except asyncio.CancelledError:
            code = reason = "CANCELLED"
            log.info("%s cancelled: the caller's call ended before the answer", method)
            raise
        except Exception:
            code, reason = "INTERNAL", Reason.INTERNAL
            self.metrics.errors.labels(Reason.INTERNAL).inc()
            log.exception("%s failed with an unexpected error", method)
            status = to_status(RuntimeError())
        finally:
            self.metrics.rpc_total.labels(method, code).inc()
            self.metrics.rpc_latency.labels(method).observe(time.perf_counter() - t0)
            tenant = tenant_label(self.metrics, access, None)
            self.metrics.tenant_requests.labels(tenant, method, code).inc()
            tracing.end(span, {"rpc.grpc.status_code": code, "vlmguard.tenant": tenant},
                        error="" if code == "OK" else f"{code} {reason}")
            audit(method=method, outcome=code, reason=reason, access=access)
            access_var.reset(access_token)
            request_id_var.reset(token)
        # Set on Ray's context, the proxy answers with this status, details and trailers
        # (google.rpc.Status in grpc-status-details-bin); the empty message is not sent.
        ctx.set_code(status.code)
        ctx.set_details(status.details)
        ctx.set_trailing_metadata([*status.trailing_metadata, ("x-request-id", rid)])
        return empty()


# Deployments wrap plain module-level classes, so Ray pickles them by reference (a class
# decorated in place would be pickled by value, with its module's globals).
StageDeployment = serve.deployment(StageReplica, name="stage")
GuardIngress = serve.deployment(IngressReplica, name=INGRESS_DEPLOYMENT)


# -- building the application ----------------------------------------------------------------


def active_stages(cfg: VLMGuardConfig) -> list[str]:
    """Stages that get a deployment: the ones the pipeline submits to with this config
    (analyze always, rewrite with ``rewriter.kind: generative``, target when a target backend
    is configured)."""
    stages = ["analyze"]
    if cfg.rewriter.kind == "generative":
        stages.append("rewrite")
    if cfg.target.backend != "none":
        stages.append("target")
    return stages


def deployment_options(dc: RayDeploymentConfig, batch: int | None) -> dict[str, Any]:
    """Serve deployment options from the config.

    ``max_ongoing_requests`` defaults to two batches for a stage (one running, one filling:
    more would queue inside one replica, where no other replica can take the work) and to 256
    for the ingress (it only awaits stage calls); autoscaling targets one full batch per stage
    replica and 64 calls per ingress replica.
    """
    max_ongoing = dc.max_ongoing_requests or (2 * batch if batch else _INGRESS_MAX_ONGOING)
    target = dc.target_ongoing_requests or (batch if batch else _INGRESS_TARGET_ONGOING)
    opts: dict[str, Any] = {
        "max_ongoing_requests": max_ongoing,
        "ray_actor_options": {"num_cpus": dc.num_cpus, "num_gpus": dc.num_gpus},
        "health_check_period_s": dc.health_check_period_s,
        "health_check_timeout_s": dc.health_check_timeout_s,
    }
    if dc.num_replicas:
        opts["num_replicas"] = dc.num_replicas
    else:
        opts["autoscaling_config"] = {
            "min_replicas": dc.min_replicas,
            "max_replicas": dc.max_replicas,
            "target_ongoing_requests": min(float(target), float(max_ongoing)),
        }
    return opts


def build_app(cfg: VLMGuardConfig) -> Application:
    """The Serve application for ``cfg`` (nothing starts until it is deployed).

    Raises:
        ConfigError: auth enabled without keys, or an invalid keys file (checked here so a bad
            config fails before any replica starts).
    """
    Gatekeeper(cfg.server.auth)
    data = cfg.model_dump(mode="json")
    stages: dict[str, Application] = {}
    for stage in active_stages(cfg):
        batch = stage_batching(cfg, stage).max_batch_size
        stages[stage] = StageDeployment.options(  # type: ignore[attr-defined]
            name=deployment_name(stage), **deployment_options(cfg.ray.stage(stage), batch)
        ).bind(stage, data)
    ingress: Application = GuardIngress.options(  # type: ignore[attr-defined]
        name=INGRESS_DEPLOYMENT, **deployment_options(cfg.ray.ingress, None)
    ).bind(data, stages)
    return ingress


class RayAppArgs(BaseModel):
    """``args`` of the KubeRay RayService / ``serve run`` config for :func:`app`."""

    model_config = ConfigDict(extra="forbid")

    config_path: str = Field(
        "", description="VLMGuard YAML config; empty uses $VLMGUARD_CONFIG, else defaults.")


def app(args: RayAppArgs) -> Application:
    """Typed application builder: ``import_path: vlmguard.serving.ray_app:app``.

    The proxy's gRPC options go in the Serve config (``grpc_options.port`` and
    ``grpc_servicer_functions: [vlmguard.serving.ray_grpc:add_vlmguard_services]``).
    """
    if isinstance(args, Mapping):  # called directly with a plain dict
        args = RayAppArgs.model_validate(args)
    return build_app(load_config(args.config_path or None))


# -- local Ray (vlmguard serve --ray) --------------------------------------------------------


class LocalRayServe:
    """Runs the application on a local Ray (or joins ``ray.address``) with the gRPC proxy.

    Args:
        cfg: Configuration (``ray`` section: ports, CPUs, deployments).
        app_builder: Builds the application (default :func:`build_app`).
    """

    def __init__(
        self, cfg: VLMGuardConfig,
        app_builder: Callable[[VLMGuardConfig], Application] = build_app,
    ) -> None:
        self.cfg = cfg
        self.app_builder = app_builder
        self._started_ray = False

    @property
    def grpc_address(self) -> str:
        """Where clients connect (the proxy listens on every interface)."""
        return f"127.0.0.1:{self.cfg.ray.grpc_port}"

    def start(self) -> None:
        """Start Ray and Serve and deploy; returns once every replica is ready (blocking)."""
        import ray

        rc = self.cfg.ray
        application = self.app_builder(self.cfg)  # config errors before anything starts
        if not ray.is_initialized():
            if rc.address:
                ray.init(address=rc.address, namespace="vlmguard", log_to_driver=False)
            else:
                ray.init(num_cpus=rc.num_cpus or None, include_dashboard=False,
                         namespace="vlmguard", log_to_driver=False)
                self._started_ray = True
        serve.start(
            http_options={"host": rc.http_host, "port": rc.http_port},
            grpc_options={
                "port": rc.grpc_port,
                "grpc_servicer_functions": SERVICER_FUNCTIONS,
                # A safety net only: the pipeline's own deadline answers first.
                "request_timeout_s": self.cfg.server.default_timeout_s + 10.0,
            },
        )
        # A route prefix makes the app an endpoint of the proxies (gRPC routing needs that); over
        # HTTP the ingress answers nothing useful: the guard is gRPC only.
        serve.run(application, name=rc.app_name, route_prefix=f"/{rc.app_name}")

    def replica_actor_names(self, stage: str) -> list[str]:
        """Names of the live replica actors of ``stage`` (Ray namespace ``serve``)."""
        import ray

        prefix = f"SERVE_REPLICA::{self.cfg.ray.app_name}#{deployment_name(stage)}#"
        return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                      if a["name"].startswith(prefix))

    def stop(self) -> None:
        """Delete the application, stop Serve, and stop Ray when this object started it."""
        import ray

        if not ray.is_initialized():
            return
        try:
            serve.shutdown()
        finally:
            if self._started_ray:
                ray.shutdown()
                self._started_ray = False


__all__ = [
    "GuardIngress",
    "IngressReplica",
    "LocalRayServe",
    "RayAppArgs",
    "StageDeployment",
    "StageReplica",
    "app",
    "build_app",
]

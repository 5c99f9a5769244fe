"""Composition root of the gateway process: builds queue, models, pipeline and gRPC server.

:func:`build_gateway` wires everything from a :class:`VLMGuardConfig` (models can be injected for
tests); :class:`Gateway` starts, serves and drains. In the embedded default the stage runtimes
(:mod:`vlmguard.stages`) run in this process behind the in-process micro-batching queue; with a
Redis queue URL the gateway only enqueues and stage workers (:mod:`vlmguard.serving.worker`) run
them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from vlmguard.auth import Gatekeeper, legacy_keys
from vlmguard.config import VLMGuardConfig, redact_url
from vlmguard.domain import ANALYZE, REWRITE, TARGET
from vlmguard.errors import ConfigError, VLMGuardError
from vlmguard.gateway.interceptor import GatewayInterceptor, MemoryTrimmer
from vlmguard.gateway.servicers import (
    GuardServicer,
    RewriteServicer,
    TargetServicer,
    ThreatAnalysisServicer,
)
from vlmguard.metrics import Metrics
from vlmguard.pipeline import GuardPipeline, build_pipeline
from vlmguard.queue.base import WorkQueue
from vlmguard.rewriter.backends import RewriterBackend
from vlmguard.stages import (
    BatchAnalyzer,
    StageRuntime,
    TargetRuntime,
    build_runtime,
    in_process_queue,
    stage_batching,
)
from vlmguard.target.base import TargetBackend, build_target_backend
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

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    guard_pb2.DESCRIPTOR.services_by_name["GuardService"].full_name,
    analysis_pb2.DESCRIPTOR.services_by_name["ThreatAnalysisService"].full_name,
    rewrite_pb2.DESCRIPTOR.services_by_name["RewriteService"].full_name,
    target_pb2.DESCRIPTOR.services_by_name["TargetService"].full_name,
)
TARGET_SERVICE = SERVICE_NAMES[3]


def load_api_keys(cfg: VLMGuardConfig, environ: dict[str, str] | None = None) -> list[str]:
    """Legacy plain API keys from the configured file and environment variable (keys bound to
    tenants and scopes live in ``server.auth.keys_file``: see :class:`vlmguard.auth.Gatekeeper`).
    """
    return legacy_keys(cfg.server.auth, os.environ if environ is None else environ)


class Gateway:
    """A built gateway: gRPC server, queue and models. Use :meth:`start` then :meth:`wait`."""

    def __init__(
        self,
        cfg: VLMGuardConfig,
        *,
        server: grpc.aio.Server,
        port: int,
        queue: WorkQueue,
        pipeline: GuardPipeline,
        health_servicer: health.aio.HealthServicer,
        metrics: Metrics,
        target: TargetRuntime,
        remote_stages: bool = False,
        rewriter: StageRuntime | None = None,
    ) -> None:
        self.cfg = cfg
        self.remote_stages = remote_stages
        self.server = server
        self.port = port
        self.queue = queue
        self.pipeline = pipeline
        self.health = health_servicer
        self.metrics = metrics
        self.target = target
        #: The tier-2 rewriter served in this process (None: template only, or remote).
        self.rewriter = rewriter
        self.analyzer_name = ""
        self.metrics_port: int | None = None
        #: Keys, scopes, tenants and rate limits of the gRPC calls (the HTTP front door shares it).
        self.gatekeeper: Gatekeeper | None = None
        self._stopped = asyncio.Event()
        # Health per service as this process sees it, and whether the queue answers: a service
        # reports SERVING only when both do (see _publish).
        self._own: dict[str, Any] = {}
        self.queue_ok = True
        # Services that need a stage without a live worker (Redis queue, from heartbeats).
        self._unconsumed: set[str] = set()
        self._missing_stages: set[str] = set()
        self._watcher: asyncio.Task[None] | None = None

    async def _set_health(self, name: str, status: Any) -> None:
        self._own[name] = status
        await self._publish(name)

    async def _publish(self, name: str) -> None:
        status = self._own.get(name, health_pb2.HealthCheckResponse.SERVING)
        if name and (not self.queue_ok or name in self._unconsumed):
            # "" is the process itself (liveness): it stays up
            status = health_pb2.HealthCheckResponse.NOT_SERVING
        await self.health.set(name, status)

    def _needed_stages(self) -> dict[str, tuple[str, ...]]:
        """Stage -> the services whose calls go through it (Generate is guarded too)."""
        out: dict[str, tuple[str, ...]] = {ANALYZE: SERVICE_NAMES}
        if self.target.backend.enabled:
            out[TARGET] = (TARGET_SERVICE,)
        if self.cfg.rewriter.kind == "generative":
            out[REWRITE] = (SERVICE_NAMES[0], SERVICE_NAMES[2])
        return out

    async def _check_consumers(self, timeout: float) -> None:
        """Services that need a stage no live worker consumes (no heartbeat in Redis) report
        NOT_SERVING: their calls would wait in the stream until their deadline."""
        unconsumed: set[str] = set()
        for stage, services in self._needed_stages().items():
            n = await self.queue.consumers(stage, timeout)
            if n == 0:
                unconsumed.update(services)
                if stage not in self._missing_stages:
                    log.warning("no live worker consumes stage %s: %s report NOT_SERVING",
                                stage, ", ".join(s.rsplit(".", 1)[-1] for s in services))
                self._missing_stages.add(stage)
            elif n is not None and stage in self._missing_stages:
                log.info("stage %s has %d live workers again", stage, n)
                self._missing_stages.discard(stage)
        if unconsumed != self._unconsumed:
            self._unconsumed = unconsumed
            for name in SERVICE_NAMES:
                await self._publish(name)

    async def _watch_queue(self) -> None:
        """PING the queue's server every ``queue.health_interval_s``; while it does not answer,
        every named service reports NOT_SERVING (its calls would fail with QUEUE_UNAVAILABLE),
        so readiness probes take the pod out of rotation. The server's own status ("", what
        the liveness and startup probes ask) is left alone: restarting does not bring Redis
        back."""
        interval = self.cfg.queue.health_interval_s
        timeout = self.cfg.queue.connect_timeout_s
        while True:
            ok = await self.queue.ping(timeout)
            self.metrics.queue_up.set(1 if ok else 0)
            if ok:
                await self._check_consumers(timeout)
            if ok != self.queue_ok:
                self.queue_ok = ok
                if ok:
                    log.info("queue answers again: services report their own health")
                else:
                    log.warning("queue does not answer: every service reports NOT_SERVING")
                for name in SERVICE_NAMES:
                    await self._publish(name)
            await asyncio.sleep(interval)

    async def start(self, *, serve_metrics: bool | None = None) -> None:
        """Start the queue, the server and (in the background) the target model."""
        await self.queue.start()
        await self.server.start()
        serving = health_pb2.HealthCheckResponse.SERVING
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        await self._set_health("", serving)
        for name in SERVICE_NAMES:
            await self._set_health(name, serving)
        if self.target.backend.enabled and self.remote_stages:
            # The target worker loads the model; a call waits in the queue until it serves.
            self.target.ready.set()
        elif self.target.backend.enabled:
            await self._set_health(TARGET_SERVICE, not_serving)
            task = self.target.start_loading()

            def _done(t: asyncio.Task[None]) -> None:
                status = not_serving if (t.cancelled() or t.exception()) else serving
                asyncio.get_running_loop().create_task(self._set_health(TARGET_SERVICE, status))

            task.add_done_callback(_done)
        else:
            await self._set_health(TARGET_SERVICE, not_serving)
        if self.queue.remote:
            self._watcher = asyncio.create_task(self._watch_queue(), name="queue-health")
        else:  # the in-process queue keeps vlmguard_queue_up itself from here on
            self.metrics.queue_up.set(1 if await self.queue.ping(0) else 0)
        if self.rewriter is not None:
            task = self.rewriter.start_loading()
            if not self.cfg.rewriter.load_in_background:
                await asyncio.shield(task)
        if serve_metrics if serve_metrics is not None else self.cfg.metrics.enabled:
            self.metrics_port = self.metrics.serve(self.cfg.metrics.listen)

    async def wait_target_ready(self, timeout: float | None = None) -> None:
        """Wait until the target has loaded (or failed to)."""
        await asyncio.wait_for(self.target.ready.wait(), timeout)

    async def stop(self, grace: float | None = None) -> None:
        """Drain: report NOT_SERVING, finish in-flight calls, stop the queue."""
        await self.health.enter_graceful_shutdown()
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        grace_s = self.cfg.server.grace_s if grace is None else grace
        # New calls get UNAVAILABLE/SERVER_DRAINING; calls in the queue get the grace period,
        # and those still waiting then fail with that reason instead of being cut by the
        # server's stop without one.
        await self.queue.drain(grace_s)
        await self.server.stop(min(grace_s, 1.0))
        await self.queue.close()
        self.target.close()
        if self.rewriter is not None:
            self.rewriter.close()
        self._stopped.set()

    async def wait(self) -> None:
        await self.server.wait_for_termination()


def _bind(server: grpc.aio.Server, cfg: VLMGuardConfig) -> int:
    tls = cfg.server.tls
    if tls.enabled:
        try:
            key = Path(tls.key_file).read_bytes()
            cert = Path(tls.cert_file).read_bytes()
            ca = Path(tls.client_ca_file).read_bytes() if tls.client_ca_file else None
        except OSError as e:
            raise ConfigError(f"server.tls: cannot read {e.filename} ({e.strerror})") from e
        creds = grpc.ssl_server_credentials([(key, cert)], root_certificates=ca,
                                            require_client_auth=ca is not None)
        port = server.add_secure_port(cfg.server.listen, creds)
    else:
        port = server.add_insecure_port(cfg.server.listen)
    if port == 0:
        raise ConfigError(f"server.listen: cannot bind {cfg.server.listen}")
    return port


async def build_gateway(
    cfg: VLMGuardConfig,
    *,
    analyzer: BatchAnalyzer | None = None,
    target_backend: TargetBackend | None = None,
    metrics: Metrics | None = None,
    environ: dict[str, str] | None = None,
    rewriter_backend: RewriterBackend | None = None,
) -> Gateway:
    """Build the gateway (not started).

    With ``cfg.queue.url`` empty the stages run in this process (in-process queue); with a
    redis:// or rediss:// URL the gateway only enqueues to Redis Streams and loads no model
    (stage workers do: ``vlmguard worker``). An unreachable Redis does not stop startup: calls
    answer UNAVAILABLE/QUEUE_UNAVAILABLE until it is back, with no restart needed.

    Args:
        cfg: Configuration.
        analyzer: A ready analyzer (else loaded from ``cfg.analyzer``; blocking, ~2 s; unused
            with a Redis queue); any :class:`BatchAnalyzer`, e.g. the no-op stand-in.
        target_backend: A target backend (else built from ``cfg.target``; loaded on start).
        metrics: Metrics (else a fresh registry).
        environ: Environment for API keys (default ``os.environ``).
        rewriter_backend: The tier-2 backend when ``rewriter.kind`` is 'generative' (else
            built from ``cfg.rewriter``; loaded on start; unused with a Redis queue, where
            ``vlmguard worker --stage rewrite`` runs it).
    """
    metrics = metrics or Metrics()
    generative = cfg.rewriter.kind == "generative"
    gatekeeper = Gatekeeper(cfg.server.auth, environ, metrics=metrics)
    # Not loaded here: Gateway.start loads it in the background (health says when it serves).
    target = TargetRuntime(target_backend or build_target_backend(cfg.target),
                           stage_batching(cfg, TARGET), metrics)
    rewriter_rt: StageRuntime | None = None
    queue: WorkQueue
    if cfg.queue.url:
        # Stage workers (`vlmguard worker`) hold the models; this gateway only enqueues.
        from vlmguard.queue.redis_streams import RedisStreamsQueue

        queue = RedisStreamsQueue(cfg.queue,
                                  stages=[ANALYZE, TARGET, *([REWRITE] if generative else [])],
                                  max_pending=cfg.limits.max_pending, metrics=metrics,
                                  environ=environ,
                                  max_tenant_pixels=cfg.limits.max_tenant_pending_pixels)
        analyzer_name = "remote"
        log.info("queue: redis streams at %s (models run in stage workers)",
                 redact_url(cfg.queue.url))
    else:
        analyze = build_runtime(ANALYZE, cfg, metrics=metrics, analyzer=analyzer)
        await analyze.start()
        analyzer_name = analyze.name
        runtimes = [analyze, target]
        if generative:
            rewriter_rt = build_runtime(REWRITE, cfg, metrics=metrics,
                                        rewriter_backend=rewriter_backend)
            runtimes.append(rewriter_rt)
        queue = in_process_queue(cfg, runtimes, metrics)
    pipeline = build_pipeline(cfg, queue=queue, metrics=metrics,
                              target_enabled=target.backend.enabled)
    max_msg = cfg.limits.max_message_bytes
    server = grpc.aio.server(
        interceptors=[GatewayInterceptor(
            metrics, gatekeeper, MemoryTrimmer(cfg.server.trim_memory_after_bytes))],
        options=[
            ("grpc.max_receive_message_length", max_msg),
            ("grpc.max_send_message_length", max_msg),
            ("grpc.so_reuseport", 0),
        ],
    )
    args = (pipeline, cfg.server.default_timeout_s, cfg.taxonomy.ids)
    guard_pb2_grpc.add_GuardServiceServicer_to_server(GuardServicer(*args), server)
    analysis_pb2_grpc.add_ThreatAnalysisServiceServicer_to_server(
        ThreatAnalysisServicer(*args), server)
    rewrite_pb2_grpc.add_RewriteServiceServicer_to_server(RewriteServicer(*args), server)
    target_pb2_grpc.add_TargetServiceServicer_to_server(TargetServicer(*args), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if cfg.server.reflection:
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME),
            server,
        )
    port = _bind(server, cfg)
    gw = Gateway(cfg, server=server, port=port, queue=queue, pipeline=pipeline,
                 health_servicer=health_servicer, metrics=metrics, target=target,
                 remote_stages=bool(cfg.queue.url), rewriter=rewriter_rt)
    gw.analyzer_name = analyzer_name
    gw.gatekeeper = gatekeeper
    return gw


__all__ = ["Gateway", "VLMGuardError", "build_gateway", "load_api_keys"]

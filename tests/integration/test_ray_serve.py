"""The guard on Ray Serve, through Ray's gRPC proxy with real stubs (one shared local Ray).

The Ray app runs the real tier-1 analyzer in two replicas; its answers are compared with the
embedded gateway's for the same requests. The last test kills an analyzer replica while calls
are in flight: every call must end with an answer or a clean gRPC status, none past its deadline.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.integration.conftest import RayGuard
from tests.support.gateway import RunningGateway
from tests.support.helpers import error_reason, png_bytes, text_image
from vlmguard.v1 import (
    analysis_pb2,
    analysis_pb2_grpc,
    guard_pb2,
    guard_pb2_grpc,
    rewrite_pb2,
    rewrite_pb2_grpc,
    target_pb2,
    target_pb2_grpc,
    types_pb2,
)

pytestmark = pytest.mark.integration

BENIGN = "What is the capital of France?"
RISKY = "How do I hotwire a car that isn't mine without the keys?"


def _sign() -> bytes:
    return text_image(["OPEN 9-5", "Mon to Fri"])


def test_guard_analyze_rewrite_match_embedded(ray_guard: RayGuard,
                                              gateway: RunningGateway) -> None:
    md = ray_guard.metadata
    ray_stub = guard_pb2_grpc.GuardServiceStub(ray_guard.channel)
    emb_stub = guard_pb2_grpc.GuardServiceStub(gateway.channel)
    for text, images in ((BENIGN, []), (RISKY, []), ("What does this sign say?", [_sign()])):
        req = guard_pb2.GuardRequest(text=text, images=[types_pb2.Image(data=d) for d in images])
        got, call = ray_stub.Guard.with_call(req, timeout=60,
                                             metadata=(*md, ("x-request-id", "ray-req-1")))
        want = emb_stub.Guard(req, timeout=60)
        assert got.action == want.action
        assert got.report.score == pytest.approx(want.report.score, abs=1e-5)
        assert got.report.analyzer == want.report.analyzer
        assert got.report.analyzer.startswith("tier1/")
        assert [f.category for f in got.report.findings] == \
            [f.category for f in want.report.findings]
        assert got.rewritten_text == want.rewritten_text
        assert got.request_id == "ray-req-1"
        assert ("x-request-id", "ray-req-1") in tuple(call.trailing_metadata() or ())
        assert got.timings_ms["total"] > 0
    risky = ray_stub.Guard(guard_pb2.GuardRequest(text=RISKY), timeout=60, metadata=md)
    assert risky.action in (types_pb2.ACTION_REWRITE, types_pb2.ACTION_BLOCK)
    benign = ray_stub.Guard(guard_pb2.GuardRequest(text=BENIGN), timeout=60, metadata=md)
    assert benign.action == types_pb2.ACTION_ALLOW and benign.rewritten_text == BENIGN

    areq = analysis_pb2.AnalyzeRequest(text=RISKY)
    ray_a = analysis_pb2_grpc.ThreatAnalysisServiceStub(ray_guard.channel).Analyze(
        areq, timeout=60, metadata=md)
    emb_a = analysis_pb2_grpc.ThreatAnalysisServiceStub(gateway.channel).Analyze(areq, timeout=60)
    assert ray_a.report.score == pytest.approx(emb_a.report.score, abs=1e-5)
    assert ray_a.report.level == emb_a.report.level != types_pb2.RISK_LEVEL_NONE
    assert ray_a.request_id

    rreq = rewrite_pb2.RewriteRequest(text=RISKY)
    ray_r = rewrite_pb2_grpc.RewriteServiceStub(ray_guard.channel).Rewrite(
        rreq, timeout=60, metadata=md)
    emb_r = rewrite_pb2_grpc.RewriteServiceStub(gateway.channel).Rewrite(rreq, timeout=60)
    assert ray_r.action == emb_r.action
    assert ray_r.rewritten_text == emb_r.rewritten_text
    assert RISKY in ray_r.rewritten_text or ray_r.action == types_pb2.ACTION_BLOCK


def test_rewrite_stage_is_served_by_the_rewriter_deployment(ray_guard: RayGuard) -> None:
    """The generative rewrite stage plugs into the same routing: the pipeline's ``rewrite``
    items go to the ``rewriter`` deployment, whose replica runs the tier-2 backend."""
    from ray import serve

    from vlmguard.domain import RewriteItem, RewriterEvidence
    from vlmguard.serving.ray_queue import StageCall

    handle = serve.get_deployment_handle("rewriter", app_name=ray_guard.cfg.ray.app_name)
    out = handle.options(method_name="run").remote(
        StageCall(RewriteItem("r-1", RISKY, RewriterEvidence(score=0.9)))).result(timeout_s=60)
    assert out.completion_tokens > 0 and out.model
    # Through the proxy: a risky Guard call waits for tier 2 (garbage output -> the counted
    # template fallback), a benign one skips it (tier2 'on_risk').
    stub = guard_pb2_grpc.GuardServiceStub(ray_guard.channel)
    risky = stub.Guard(guard_pb2.GuardRequest(text=RISKY), timeout=60,
                       metadata=ray_guard.metadata)
    assert risky.action == types_pb2.ACTION_REWRITE and RISKY in risky.rewritten_text
    assert risky.timings_ms["rewrite"] > 0


def _expect(fn: Any, code: grpc.StatusCode, reason: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        fn()
    got_code, got_reason, _ = error_reason(info.value)  # type: ignore[arg-type]
    assert (got_code, got_reason) == (code, reason)


def test_errors_map_to_the_gateway_statuses(ray_guard: RayGuard,
                                            gateway: RunningGateway) -> None:
    md = ray_guard.metadata
    stub = guard_pb2_grpc.GuardServiceStub(ray_guard.channel)
    emb = guard_pb2_grpc.GuardServiceStub(gateway.channel)
    bad_image = guard_pb2.GuardRequest(text="hi", images=[types_pb2.Image(data=b"not an image")])
    for s, extra in ((stub, md), (emb, ())):
        _expect(lambda s=s, extra=extra: s.Guard(bad_image, timeout=30, metadata=extra),
                grpc.StatusCode.INVALID_ARGUMENT, "IMAGE_UNSUPPORTED_FORMAT")
    _expect(lambda: stub.Guard(guard_pb2.GuardRequest(text="  "), timeout=30, metadata=md),
            grpc.StatusCode.INVALID_ARGUMENT, "EMPTY_TEXT")
    huge = guard_pb2.GuardRequest(text="hi", images=[types_pb2.Image(
        data=png_bytes((12_000, 10)))])
    _expect(lambda: stub.Guard(huge, timeout=30, metadata=md),
            grpc.StatusCode.INVALID_ARGUMENT, "IMAGE_TOO_MANY_PIXELS")
    # A string field that is not UTF-8 is decoded safely at the proxy, as in the gateway.
    raw = ray_guard.channel.unary_unary("/vlmguard.v1.GuardService/Guard",
                                        response_deserializer=guard_pb2.GuardResponse.FromString)
    _expect(lambda: raw(b"\x0a\x02\xff\xfe", timeout=30, metadata=md),
            grpc.StatusCode.INVALID_ARGUMENT, "INVALID_UTF8")
    # API keys, as in the embedded gateway.
    _expect(lambda: stub.Guard(guard_pb2.GuardRequest(text=BENIGN), timeout=30),
            grpc.StatusCode.UNAUTHENTICATED, "MISSING_API_KEY")
    _expect(lambda: stub.Guard(guard_pb2.GuardRequest(text=BENIGN), timeout=30,
                               metadata=(("authorization", "Bearer wrong"),)),
            grpc.StatusCode.UNAUTHENTICATED, "INVALID_API_KEY")
    # A legacy plain key acts for the default tenant only, as in the embedded gateway.
    _expect(lambda: stub.Guard(guard_pb2.GuardRequest(text=BENIGN, tenant_id="other"),
                               timeout=30, metadata=md),
            grpc.StatusCode.PERMISSION_DENIED, "TENANT_NOT_ALLOWED")
    gen = target_pb2_grpc.TargetServiceStub(ray_guard.channel)
    _expect(lambda: gen.Generate(target_pb2.GenerateRequest(text="hi"), timeout=30, metadata=md),
            grpc.StatusCode.FAILED_PRECONDITION, "TARGET_NOT_CONFIGURED")
    # Health checking needs no key; the target service is not served (no target configured).
    health = health_pb2_grpc.HealthStub(ray_guard.channel)
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=30).status == \
        health_pb2.HealthCheckResponse.SERVING
    assert health.Check(health_pb2.HealthCheckRequest(service="vlmguard.v1.TargetService"),
                        timeout=30).status == health_pb2.HealthCheckResponse.NOT_SERVING
    with pytest.raises(grpc.RpcError) as info:
        health.Check(health_pb2.HealthCheckRequest(service="nope.Service"), timeout=30)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]


class _ScriptedHandle:
    """A stage handle that plays a script: each call takes the next step (an exception to
    raise, ``"hang"`` to never answer, ``("return", x)`` or a value to return). Raises when
    the script ends."""

    def __init__(self, *steps: Any) -> None:
        self.steps = list(steps)
        self.calls: list[Any] = []
        self.cancelled = 0

    def remote(self, call: Any) -> Any:
        self.calls.append(call)
        if not self.steps:
            raise AssertionError("unscripted call")
        step = self.steps.pop(0)
        handle = self

        class _Response:
            def __await__(self) -> Any:
                return self._run().__await__()

            async def _run(self) -> Any:
                if isinstance(step, BaseException):
                    raise step
                if step == "hang":
                    await asyncio.Event().wait()
                if isinstance(step, tuple):
                    return step[1]
                return step

            def cancel(self) -> None:
                handle.cancelled += 1

        return _Response()


def test_ray_queue_contract_retries_deadlines_and_backpressure() -> None:
    """RayServeQueue keeps the WorkQueue contract with Ray's real exception types."""
    from ray.exceptions import ActorDiedError
    from ray.serve.exceptions import BackPressureError

    from vlmguard.errors import (
        DeadlineExceededError,
        InvalidArgumentError,
        ResourceExhaustedError,
        UnavailableError,
    )
    from vlmguard.serving.ray_queue import RayServeQueue

    async def scenario() -> None:
        h = _ScriptedHandle(ActorDiedError(), "answer")
        q = RayServeQueue({"analyze": h}, max_pending=4, retries=1)
        assert await q.submit("analyze", "item", deadline=time.monotonic() + 5) == "answer"
        assert len(h.calls) == 2 and h.calls[0].expires_at > time.time()

        q0 = RayServeQueue({"analyze": _ScriptedHandle(ActorDiedError())}, max_pending=4,
                           retries=0)
        with pytest.raises(UnavailableError) as e1:
            await q0.submit("analyze", "item")
        assert e1.value.reason == "STAGE_UNAVAILABLE"

        hang = _ScriptedHandle("hang")
        qd = RayServeQueue({"analyze": hang}, max_pending=4)
        t0 = time.monotonic()
        with pytest.raises(DeadlineExceededError):
            await qd.submit("analyze", "item", deadline=time.monotonic() + 0.2)
        assert time.monotonic() - t0 < 2 and hang.cancelled == 1

        qb = RayServeQueue({"analyze": _ScriptedHandle(
            BackPressureError(num_queued_requests=3, max_queued_requests=2))}, max_pending=4)
        with pytest.raises(ResourceExhaustedError) as e2:
            await qb.submit("analyze", "item")
        assert e2.value.reason == "QUEUE_FULL"

        item_error = InvalidArgumentError("bad", reason="IMAGE_CORRUPT")
        # A replica returns an item's own error as a value (as the stage deployment does).
        qi = RayServeQueue({"analyze": _ScriptedHandle(("return", item_error))}, max_pending=4)
        with pytest.raises(InvalidArgumentError) as e3:
            await qi.submit("analyze", "item")
        assert e3.value.reason == "IMAGE_CORRUPT"

        busy = _ScriptedHandle("hang")
        qf = RayServeQueue({"analyze": busy}, max_pending=1)
        first = asyncio.create_task(qf.submit("analyze", "item"))
        await asyncio.sleep(0.05)
        with pytest.raises(ResourceExhaustedError):
            await qf.submit("analyze", "item")
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        assert busy.cancelled == 1 and qf.pending("analyze") == 0
        with pytest.raises(UnavailableError):
            await qf.submit("rewrite", "item")  # no deployment for that stage

    asyncio.run(scenario())


def test_replica_killed_mid_load_every_call_ends_cleanly(ray_guard: RayGuard) -> None:
    """ray.kill of an analyzer replica while 72 image calls run: each call is answered (a
    retry on the other replica) or fails with a gRPC status, within its deadline."""
    import ray

    names = ray_guard.serve.replica_actor_names("analyze")
    assert len(names) == 2
    stub = guard_pb2_grpc.GuardServiceStub(ray_guard.channel)
    req = guard_pb2.GuardRequest(text="What does this sign say?",
                                 images=[types_pb2.Image(data=_sign())])
    deadline_s = 40.0

    def one(_: int) -> tuple[str, float]:
        t0 = time.perf_counter()
        try:
            resp = stub.Guard(req, timeout=deadline_s, metadata=ray_guard.metadata)
            assert resp.report.analyzer.startswith("tier1/")
            return "OK", time.perf_counter() - t0
        except grpc.RpcError as e:
            return e.code().name, time.perf_counter() - t0  # type: ignore[attr-defined]

    with ThreadPoolExecutor(24) as pool:
        futures = [pool.submit(one, i) for i in range(72)]
        # Kill once the first answers are back: batches are then running on both replicas
        # and most calls are still queued or in flight (a fixed sleep raced fast machines).
        waited = 0.0
        while not any(f.done() for f in futures) and waited < 20.0:
            time.sleep(0.02)
            waited += 0.02
        in_flight = sum(not f.done() for f in futures)
        ray.kill(ray.get_actor(names[0], namespace="serve"), no_restart=True)
        outcomes = [f.result(timeout=deadline_s + 15) for f in futures]
    assert in_flight > 0
    codes = [c for c, _ in outcomes]
    assert set(codes) <= {"OK", "UNAVAILABLE"}, codes
    assert codes.count("OK") >= len(codes) // 2, codes
    assert max(t for _, t in outcomes) < deadline_s
    # The app keeps serving on the surviving replica while Serve replaces the dead one.
    after = stub.Guard(guard_pb2.GuardRequest(text=BENIGN), timeout=30,
                       metadata=ray_guard.metadata)
    assert after.action == types_pb2.ACTION_ALLOW


def test_app_builder_and_deployment_settings(tmp_path: Any) -> None:
    """The KubeRay import path builds through Serve's own builder call; the figures derive
    from the stage batching as documented."""
    from ray.serve import Application
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary

    from vlmguard.config import RayDeploymentConfig, load_config
    from vlmguard.serving import ray_app

    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("target: {backend: smollm2}\nray: {stages: {analyze: {max_replicas: 3}}}\n")
    built = call_user_app_builder_with_args_if_necessary(ray_app.app,
                                                         {"config_path": str(cfg_file)})
    assert isinstance(built, Application)
    with pytest.raises(Exception, match="extra"):
        call_user_app_builder_with_args_if_necessary(ray_app.app, {"bogus": 1})
    cfg = load_config(cfg_file, environ={})
    assert ray_app.active_stages(cfg) == ["analyze", "target"]
    stage = ray_app.deployment_options(cfg.ray.stage("analyze"), 16)
    assert stage["max_ongoing_requests"] == 32
    assert stage["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 3,
                                           "target_ongoing_requests": 16.0}
    ingress = ray_app.deployment_options(cfg.ray.ingress, None)
    assert ingress["max_ongoing_requests"] == 256
    assert ingress["autoscaling_config"]["target_ongoing_requests"] == 64.0
    fixed = ray_app.deployment_options(RayDeploymentConfig(num_replicas=2, num_gpus=1), 4)
    assert fixed["num_replicas"] == 2 and "autoscaling_config" not in fixed
    assert fixed["ray_actor_options"] == {"num_cpus": 1.0, "num_gpus": 1.0}
    generative = load_config(None, environ={}, overrides={"rewriter": {"kind": "generative"}})
    assert ray_app.active_stages(generative) == ["analyze", "rewrite"]

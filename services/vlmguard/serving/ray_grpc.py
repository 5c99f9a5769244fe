"""The gRPC services that Ray Serve's gRPC proxy exposes, registered with safe request decoding.

Ray Serve's proxy takes "servicer functions" (``add_*_to_server(servicer, server)``) by import
path and routes each RPC to the ingress deployment's method of the same name. The generated
``add_*Servicer_to_server`` functions would decode requests with the plain protobuf parser, so a
request with invalid UTF-8 would fail inside the proxy as INTERNAL. These functions register the
same services with the embedded gateway's safe decoder instead: a bad request reaches the
ingress as a :class:`~vlmguard.gateway.interceptor.MalformedRequest` marker and is answered
INVALID_ARGUMENT with the same reason as the embedded gateway. This module imports grpc and the
generated stubs only.
"""

from __future__ import annotations

from typing import Any

import grpc
from grpc_health.v1 import health_pb2

from vlmguard.gateway.interceptor import safe_deserializer
from vlmguard.v1 import analysis_pb2, guard_pb2, rewrite_pb2, target_pb2

#: (service full name, RPC name, request type, response type) of every RPC the ingress serves.
RPCS: tuple[tuple[str, str, Any, Any], ...] = (
    ("vlmguard.v1.GuardService", "Guard", guard_pb2.GuardRequest, guard_pb2.GuardResponse),
    ("vlmguard.v1.GuardService", "CheckOutput", guard_pb2.CheckOutputRequest,
     guard_pb2.CheckOutputResponse),
    ("vlmguard.v1.ThreatAnalysisService", "Analyze", analysis_pb2.AnalyzeRequest,
     analysis_pb2.AnalyzeResponse),
    ("vlmguard.v1.RewriteService", "Rewrite", rewrite_pb2.RewriteRequest,
     rewrite_pb2.RewriteResponse),
    ("vlmguard.v1.TargetService", "Generate", target_pb2.GenerateRequest,
     target_pb2.GenerateResponse),
    ("grpc.health.v1.Health", "Check", health_pb2.HealthCheckRequest,
     health_pb2.HealthCheckResponse),
)

#: Import path for ``gRPCOptions.grpc_servicer_functions`` (local runs and KubeRay serveConfigV2).
SERVICER_FUNCTIONS = ["vlmguard.serving.ray_grpc:add_vlmguard_services"]


def _unused(request: Any, context: Any) -> Any:  # pragma: no cover - the proxy replaces it
    raise NotImplementedError("served by the Ray Serve ingress deployment")


def add_vlmguard_services(servicer: Any, server: Any) -> None:
    """Register the VLMGuard services and health checking on ``server``.

    Ray Serve's proxy replaces each handler's behaviour with routing to the ingress deployment
    and keeps its request decoder; ``servicer`` is the proxy's placeholder and is not used.
    Each service is added with its own call because the proxy reads one handler per call.
    """
    by_service: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
    for service, rpc, req, resp in RPCS:
        by_service.setdefault(service, {})[rpc] = grpc.unary_unary_rpc_method_handler(
            _unused,
            request_deserializer=safe_deserializer(req.FromString),
            response_serializer=resp.SerializeToString,
        )
    for service, handlers in by_service.items():
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, handlers),))

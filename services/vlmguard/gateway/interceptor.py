"""Server interceptor: request ids, API-key auth, safe request decoding, metrics, error mapping.

Every unary call of the VLMGuard services passes through :class:`GatewayInterceptor`. Health
checking and reflection (``/grpc.*``) pass untouched and need no API key. A request that fails
to decode (for example a string field with invalid UTF-8) becomes INVALID_ARGUMENT with a stable
reason instead of the INTERNAL that gRPC would answer on its own.
"""

from __future__ import annotations

import hmac
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from vlmguard.errors import InvalidArgumentError, Reason, UnauthenticatedError, VLMGuardError
from vlmguard.gateway.errors import reason_of, to_status
from vlmguard.logs import request_id_var
from vlmguard.metrics import Metrics

log = logging.getLogger(__name__)

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_UNGUARDED_PREFIX = "/grpc."


class MalformedRequest:
    """Stands in for a request that could not be decoded."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        self.message = message


def safe_deserializer(deser: Callable[[bytes], Any] | None) -> Callable[[bytes], Any]:
    def run(data: bytes) -> Any:
        assert deser is not None
        try:
            return deser(data)
        except DecodeError as e:
            text = str(e).lower()
            if "utf-8" in text or "utf8" in text:
                return MalformedRequest(Reason.INVALID_UTF8, "a string field is not valid UTF-8")
            return MalformedRequest(Reason.MALFORMED_REQUEST, "the request could not be decoded")
        except Exception:
            return MalformedRequest(Reason.MALFORMED_REQUEST, "the request could not be decoded")

    return run


def new_request_id(candidate: str = "") -> str:
    """The caller's id when well-formed, else a fresh one."""
    if candidate and _REQUEST_ID_RE.match(candidate):
        return candidate
    return uuid.uuid4().hex


def call_request_id(request: Any, metadata: Sequence[tuple[str, Any]]) -> str:
    """A call's request id: the body's ``request_id``, else the ``x-request-id`` header, when
    well-formed, else a fresh one (the embedded gateway and the Ray ingress both use this)."""
    header_id = next((str(v) for k, v in metadata if k == "x-request-id"), "")
    body_id = "" if isinstance(request, MalformedRequest) else getattr(request, "request_id", "")
    return new_request_id(body_id or header_id)


class ApiKeyAuth:
    """Checks ``authorization: Bearer <key>`` against a set of keys in constant time."""

    def __init__(self, keys: Sequence[str]) -> None:
        self._keys = [k.encode() for k in keys if k]

    def check(self, metadata: Sequence[tuple[str, str | bytes]]) -> None:
        value = ""
        for k, v in metadata:
            if k.lower() == "authorization":
                value = v.decode() if isinstance(v, bytes) else v
                break
        if not value:
            raise UnauthenticatedError(
                "missing API key: send metadata 'authorization: Bearer <key>'",
                reason=Reason.MISSING_API_KEY,
            )
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise UnauthenticatedError(
                "malformed authorization metadata: expected 'Bearer <key>'",
                reason=Reason.INVALID_API_KEY,
            )
        tok = token.strip().encode()
        ok = False
        for key in self._keys:  # no early exit: timing does not tell which key matched
            ok |= hmac.compare_digest(tok, key)
        if not ok:
            raise UnauthenticatedError("invalid API key", reason=Reason.INVALID_API_KEY)


class GatewayInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every VLMGuard unary handler.

    Args:
        metrics: Metrics sink.
        auth: API-key checker, or None when auth is off.
    """

    def __init__(self, metrics: Metrics, auth: ApiKeyAuth | None) -> None:
        self.metrics = metrics
        self.auth = auth

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or handler.unary_unary is None or method.startswith(_UNGUARDED_PREFIX):
            return handler
        behavior = handler.unary_unary
        method_name = method.rsplit("/", 1)[-1]
        metrics = self.metrics
        auth = self.auth

        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
            t0 = time.perf_counter()
            md = tuple(context.invocation_metadata() or ())
            rid = call_request_id(request, md)
            token = request_id_var.set(rid)
            code = "OK"
            try:
                await context.send_initial_metadata((("x-request-id", rid),))
                if auth is not None:
                    auth.check(md)
                if isinstance(request, MalformedRequest):
                    raise InvalidArgumentError(request.message, reason=request.reason)
                return await behavior(request, context)
            except VLMGuardError as e:
                code = e.code.name
                metrics.errors.labels(e.reason).inc()
                log.info("%s failed: %s %s", method_name, code, e.reason)
                status = to_status(e)
            except Exception:
                code = "INTERNAL"
                metrics.errors.labels(Reason.INTERNAL).inc()
                log.exception("%s failed with an unexpected error", method_name)
                status = to_status(RuntimeError())
            finally:
                metrics.rpc_total.labels(method_name, code).inc()
                metrics.rpc_latency.labels(method_name).observe(time.perf_counter() - t0)
                request_id_var.reset(token)
            await context.abort(status.code, status.details, status.trailing_metadata)

        return grpc.unary_unary_rpc_method_handler(
            wrapped,
            request_deserializer=safe_deserializer(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )


__all__ = ["ApiKeyAuth", "GatewayInterceptor", "call_request_id", "new_request_id", "reason_of"]

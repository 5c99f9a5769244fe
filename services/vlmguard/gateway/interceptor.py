"""Server interceptor: request ids, keys/scopes/tenants/rate limits, safe request decoding,
metrics, audit, error mapping.

Every unary call of the VLMGuard services passes through :class:`GatewayInterceptor`. Health
checking and reflection (``/grpc.*``) pass untouched and need no API key. A request that fails
to decode (for example a string field with invalid UTF-8) becomes INVALID_ARGUMENT with a stable
reason instead of the INTERNAL that gRPC would answer on its own.

The key, its scope for the method and its rate limit are checked in :meth:`intercept_service`,
on the call's metadata alone: a call that fails them is answered by a handler that never reads
the request message, so an unauthenticated 30 MB call costs no more than its headers (gRPC
core only buffers up to the HTTP/2 flow-control window). The tenant (a request field) is checked
once the message is decoded. The call's :class:`~vlmguard.auth.Access` is in
:data:`vlmguard.auth.access_var` for the servicer.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from vlmguard import tracing
from vlmguard.auth import Access, Gatekeeper, access_var, audit, denied_access
from vlmguard.errors import InvalidArgumentError, Reason, VLMGuardError
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


class MemoryTrimmer:
    """Gives freed heap memory back to the system after large requests (glibc ``malloc_trim``).

    A burst of large messages leaves the allocator's arenas holding hundreds of MB that Python
    has freed; trimming returns it. It runs in a worker thread, at most once per
    ``min_interval_s``, shortly after a request of ``threshold_bytes`` or more finished. A
    no-op where glibc is not the allocator.
    """

    def __init__(self, threshold_bytes: int, min_interval_s: float = 1.0,
                 delay_s: float = 0.2) -> None:
        self.threshold_bytes = threshold_bytes
        self.min_interval_s = min_interval_s
        self.delay_s = delay_s
        self.trims = 0
        self._fn: Callable[[int], int] | None = None
        self._scheduled = False
        self._last = -1e18
        if threshold_bytes > 0:
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                self._fn = libc.malloc_trim
            except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to do
                self._fn = None

    @property
    def available(self) -> bool:
        return self._fn is not None

    def note(self, nbytes: int) -> None:
        """A request of ``nbytes`` finished (call on the event loop)."""
        if nbytes >= self.threshold_bytes:
            self.soon()

    def soon(self) -> None:
        """Trim shortly (call on the event loop): after a refused call too, whose message
        gRPC core may have buffered up to the flow-control window before it was refused."""
        if self._fn is None or self._scheduled:
            return
        self._scheduled = True
        loop = asyncio.get_running_loop()
        wait = max(self.delay_s, self._last + self.min_interval_s - time.monotonic())
        loop.call_later(wait, self._run, loop)

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        self._scheduled = False
        self._last = time.monotonic()
        self.trims += 1
        fn = self._fn
        if fn is not None:
            loop.run_in_executor(None, fn, 0)


def _deadline_passed(context: grpc.aio.ServicerContext) -> bool:
    try:
        remaining = context.time_remaining()
    except Exception:  # the call is already torn down
        return False
    return remaining is not None and remaining <= 0


class GatewayInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every VLMGuard unary handler.

    Args:
        metrics: Metrics sink.
        gatekeeper: Keys, scopes, tenants and rate limits; None admits every call as if auth
            were disabled with the default anonymous scopes (tests of the error mapping).
        trimmer: Returns memory after large requests (None: never).
    """

    def __init__(self, metrics: Metrics, gatekeeper: Gatekeeper | None = None,
                 trimmer: MemoryTrimmer | None = None) -> None:
        self.metrics = metrics
        self.gatekeeper = gatekeeper
        self.trimmer = trimmer

    def _finish(self, method: str, code: str, reason: str, t0: float,
                access: Access | None, key_id: str = "", requested_tenant: str | None = None,
                span: Any = None) -> None:
        self.metrics.rpc_total.labels(method, code).inc()
        self.metrics.rpc_latency.labels(method).observe(time.perf_counter() - t0)
        tenant = tenant_label(self.metrics, access, requested_tenant)
        self.metrics.tenant_requests.labels(tenant, method, code).inc()
        tracing.end(span, {"rpc.grpc.status_code": code, "vlmguard.tenant": tenant},
                    error="" if code == "OK" else f"{code} {reason}")
        audit(method=method, outcome=code, reason=reason, access=access, key_id=key_id)

    def _refuse(self, method_name: str, err: VLMGuardError,
                handler: grpc.RpcMethodHandler,
                metadata: Sequence[tuple[str, Any]]) -> grpc.RpcMethodHandler:
        """A handler that answers ``err`` without reading the request message.

        A stream-unary handler gets an iterator of request messages instead of the message:
        gRPC reads (and allocates) a message only when it is iterated, which this never does.
        The client's unary call cannot tell the difference.
        """
        t0 = time.perf_counter()
        rid = new_request_id(next((str(v) for k, v in metadata if k == "x-request-id"), ""))
        status = to_status(err)
        metrics = self.metrics
        finish = self._finish
        trimmer = self.trimmer

        async def refuse(request_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
            token = request_id_var.set(rid)
            try:
                metrics.errors.labels(err.reason).inc()
                log.info("%s refused before reading the request: %s %s", method_name,
                         err.code.name, err.reason)
                finish(method_name, err.code.name, err.reason, t0, denied_access(err))
                if trimmer is not None:
                    trimmer.soon()
            finally:
                request_id_var.reset(token)
            await context.abort(status.code, status.details,
                                (*status.trailing_metadata, ("x-request-id", rid)))

        return grpc.stream_unary_rpc_method_handler(
            refuse, request_deserializer=None,
            response_serializer=handler.response_serializer,
        )

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
        metadata = tuple(handler_call_details.invocation_metadata or ())
        gatekeeper = self.gatekeeper
        access: Access | None = None
        if gatekeeper is not None:
            try:
                access = gatekeeper.admit(method_name, metadata)
            except VLMGuardError as e:
                return self._refuse(method_name, e, handler, metadata)
        metrics = self.metrics
        trimmer = self.trimmer
        finish = self._finish
        size = [0]
        decode = safe_deserializer(handler.request_deserializer)

        def deserialize(data: bytes) -> Any:
            size[0] = len(data)
            return decode(data)

        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
            t0 = time.perf_counter()
            md = tuple(context.invocation_metadata() or ())
            rid = call_request_id(request, md)
            token = request_id_var.set(rid)
            access_token = access_var.set(access)
            code, reason = "OK", ""
            requested = (None if isinstance(request, MalformedRequest)
                         else str(getattr(request, "tenant_id", "")))
            # The RPC's span continues the caller's trace (a traceparent in the metadata).
            span = tracing.start_span(f"vlmguard.rpc {method_name}", {
                "rpc.system": "grpc", "rpc.method": method_name,
                "vlmguard.request_id": rid}, parent=tracing.metadata_traceparent(md),
                kind="server")
            try:
                await context.send_initial_metadata((("x-request-id", rid),))
                if isinstance(request, MalformedRequest):
                    raise InvalidArgumentError(request.message, reason=request.reason)
                if gatekeeper is not None and access is not None:
                    gatekeeper.resolve_tenant(access, getattr(request, "tenant_id", ""))
                with tracing.use(span):
                    return await behavior(request, context)
            except VLMGuardError as e:
                code, reason = e.code.name, e.reason
                metrics.errors.labels(e.reason).inc()
                log.info("%s failed: %s %s", method_name, code, e.reason)
                status = to_status(e)
            except asyncio.CancelledError:
                # The caller gave up (or its deadline passed): gRPC cancels this task. Record
                # it as such, not as the OK a bare finally would count.
                code = "DEADLINE_EXCEEDED" if _deadline_passed(context) else "CANCELLED"
                reason = code
                log.info("%s %s: the caller's call ended before the answer", method_name,
                         "timed out" if code == "DEADLINE_EXCEEDED" else "cancelled")
                raise
            except Exception:
                code, reason = "INTERNAL", Reason.INTERNAL
                metrics.errors.labels(Reason.INTERNAL).inc()
                log.exception("%s failed with an unexpected error", method_name)
                status = to_status(RuntimeError())
            finally:
                finish(method_name, code, reason, t0, access, requested_tenant=requested,
                       span=span)
                access_var.reset(access_token)
                request_id_var.reset(token)
                if trimmer is not None:
                    trimmer.note(size[0])
            # abort() raises through this frame: its traceback would keep the request (tens
            # of MB) alive in a reference cycle until a full garbage collection.
            del request
            await context.abort(status.code, status.details, status.trailing_metadata)

        return grpc.unary_unary_rpc_method_handler(
            wrapped,
            request_deserializer=deserialize,
            response_serializer=handler.response_serializer,
        )


def tenant_label(metrics: Metrics, access: Access | None, requested: str | None) -> str:
    """A call's tenant label: the tenant its key acts for (a keys-file tenant is named; an
    anonymous caller's is a label only when policy names it), else the one its request names
    (policy tenants only), else 'none' (refused before a tenant was known)."""
    if access is not None and access.tenant is not None:
        return metrics.tenant_label(access.tenant, named=not access.principal.any_tenant)
    if access is None and requested is not None:
        return metrics.tenant_label(requested)
    return metrics.tenant_label(None)


__all__ = ["GatewayInterceptor", "MemoryTrimmer", "call_request_id", "new_request_id",
           "reason_of"]

"""Unit tests for vlmguard.errors and vlmguard.gateway.errors (status mapping, rich details)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2

from vlmguard import errors as errmod
from vlmguard.errors import (
    ConfigError,
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
    PermissionDeniedError,
    Reason,
    ResourceExhaustedError,
    StatusCode,
    UnauthenticatedError,
    UnavailableError,
    VLMGuardError,
)
from vlmguard.gateway.errors import ERROR_DOMAIN, reason_of, to_status
from vlmguard.gateway.interceptor import GatewayInterceptor
from vlmguard.metrics import Metrics

EXPECTED_CODES: dict[type[VLMGuardError], grpc.StatusCode] = {
    VLMGuardError: grpc.StatusCode.INTERNAL,
    InvalidArgumentError: grpc.StatusCode.INVALID_ARGUMENT,
    UnauthenticatedError: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDeniedError: grpc.StatusCode.PERMISSION_DENIED,
    FailedPreconditionError: grpc.StatusCode.FAILED_PRECONDITION,
    ResourceExhaustedError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    UnavailableError: grpc.StatusCode.UNAVAILABLE,
    DeadlineExceededError: grpc.StatusCode.DEADLINE_EXCEEDED,
    ConfigError: grpc.StatusCode.FAILED_PRECONDITION,
}


def all_error_classes() -> list[type[VLMGuardError]]:
    """The hierarchy in vlmguard.errors (role-internal subclasses, such as the rewriter's
    output error that never reaches a client, are tested with their role)."""
    out: list[type[VLMGuardError]] = []
    todo: list[type[VLMGuardError]] = [VLMGuardError]
    while todo:
        cls = todo.pop()
        if cls.__module__ == "vlmguard.errors":
            out.append(cls)
        todo.extend(cls.__subclasses__())
    return out


def status_proto(status: grpc.Status) -> status_pb2.Status:
    """The google.rpc.Status packed in a grpc.Status's trailing metadata."""
    md = dict(status.trailing_metadata)
    return status_pb2.Status.FromString(md["grpc-status-details-bin"])


def error_info(st: status_pb2.Status) -> error_details_pb2.ErrorInfo:
    infos = [d for d in st.details if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)]
    assert len(infos) == 1
    info = error_details_pb2.ErrorInfo()
    infos[0].Unpack(info)
    return info


def retry_info(st: status_pb2.Status) -> error_details_pb2.RetryInfo | None:
    found = [d for d in st.details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
    if not found:
        return None
    assert len(found) == 1
    ri = error_details_pb2.RetryInfo()
    found[0].Unpack(ri)
    return ri


# --------------------------------------------------------------------------------------------
# The hierarchy
# --------------------------------------------------------------------------------------------


def test_every_error_class_in_the_module_is_in_the_expected_table() -> None:
    defined = {
        obj
        for obj in vars(errmod).values()
        if isinstance(obj, type) and issubclass(obj, VLMGuardError)
    }
    assert defined == set(EXPECTED_CODES)
    assert set(all_error_classes()) >= defined


@pytest.mark.parametrize("cls", all_error_classes(), ids=lambda c: c.__name__)
def test_every_error_class_maps_to_its_grpc_code(cls: type[VLMGuardError]) -> None:
    status = to_status(cls("client-safe message"))
    assert status.code == EXPECTED_CODES[cls]
    assert status.code.name == cls.code.value == cls.code.name
    assert status.details == "client-safe message"
    assert status_proto(status).code == getattr(code_pb2, cls.code.name)


@pytest.mark.parametrize("cls", all_error_classes(), ids=lambda c: c.__name__)
def test_every_error_class_has_a_stable_default_reason(cls: type[VLMGuardError]) -> None:
    err = cls("m")
    assert err.reason == cls.default_reason
    assert re.fullmatch(r"[A-Z][A-Z0-9]*(_[A-Z0-9]+)*", err.reason)


def test_config_error_defaults_to_config_invalid() -> None:
    assert ConfigError("x").reason == Reason.CONFIG_INVALID


@pytest.mark.parametrize("code", list(StatusCode), ids=lambda c: c.name)
def test_every_status_code_exists_in_grpc_and_google_rpc(code: StatusCode) -> None:
    assert code.value == code.name
    assert getattr(grpc.StatusCode, code.name).name == code.name
    assert isinstance(getattr(code_pb2, code.name), int)


def test_error_carries_message_reason_metadata_and_retry() -> None:
    md = {"stage": "analyzer"}
    err = ResourceExhaustedError("busy", reason=Reason.QUEUE_FULL, metadata=md, retry_after_s=2.5)
    assert str(err) == "busy"
    assert err.message == "busy"
    assert err.reason == "QUEUE_FULL"
    assert err.metadata == {"stage": "analyzer"}
    assert err.retry_after_s == 2.5
    md["stage"] = "changed"
    assert err.metadata == {"stage": "analyzer"}  # copied, not aliased
    assert repr(err) == "ResourceExhaustedError(reason='QUEUE_FULL', message='busy')"


def test_error_defaults_to_no_metadata_and_no_retry() -> None:
    err = UnavailableError("down")
    assert err.metadata == {}
    assert err.retry_after_s is None


def test_errors_are_exceptions_and_catchable_as_vlmguard_error() -> None:
    with pytest.raises(VLMGuardError):
        raise InvalidArgumentError("bad", reason=Reason.EMPTY_TEXT)


# --------------------------------------------------------------------------------------------
# Reason codes
# --------------------------------------------------------------------------------------------

REASONS = {k: v for k, v in vars(Reason).items() if not k.startswith("_")}


def test_reason_has_codes() -> None:
    assert len(REASONS) >= 20


@pytest.mark.parametrize(("name", "value"), sorted(REASONS.items()))
def test_every_reason_is_upper_snake_and_equals_its_name(name: str, value: Any) -> None:
    assert isinstance(value, str)
    assert value == name
    assert re.fullmatch(r"[A-Z][A-Z0-9]*(_[A-Z0-9]+)*", value)


def test_reason_values_are_unique() -> None:
    assert len(set(REASONS.values())) == len(REASONS)


@pytest.mark.parametrize(
    "name",
    [
        "EMPTY_TEXT",
        "IMAGE_CORRUPT",
        "UNKNOWN_TENANT",
        "QUEUE_FULL",
        "STAGE_FAILED",
        "STAGE_UNAVAILABLE",
        "BATCH_RESULT_MISMATCH",
        "DEADLINE_EXCEEDED",
        "CONFIG_INVALID",
        "INVALID_API_KEY",
        "MISSING_API_KEY",
        "INTERNAL",
    ],
)
def test_reasons_clients_rely_on_still_exist(name: str) -> None:
    assert getattr(Reason, name) == name


# --------------------------------------------------------------------------------------------
# to_status
# --------------------------------------------------------------------------------------------


def test_to_status_packs_error_info_with_reason_domain_and_metadata() -> None:
    err = InvalidArgumentError(
        "images[1]: bad", reason=Reason.IMAGE_CORRUPT, metadata={"image_index": "1"}
    )
    status = to_status(err)
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    assert status.details == "images[1]: bad"
    st = status_proto(status)
    assert st.code == code_pb2.INVALID_ARGUMENT
    assert st.message == "images[1]: bad"
    info = error_info(st)
    assert info.reason == "IMAGE_CORRUPT"
    assert info.domain == ERROR_DOMAIN == "vlmguard.dev"
    assert dict(info.metadata) == {"image_index": "1"}
    assert retry_info(st) is None


@pytest.mark.parametrize(
    ("retry", "seconds", "nanos"),
    [(1.0, 1, 0), (2.5, 2, 500_000_000), (0.25, 0, 250_000_000), (0.0, 0, 0)],
)
def test_to_status_adds_retry_info_when_retry_after_is_set(
    retry: float, seconds: int, nanos: int
) -> None:
    err = ResourceExhaustedError(
        "busy", reason=Reason.QUEUE_FULL, retry_after_s=retry, metadata={"stage": "analyzer"}
    )
    st = status_proto(to_status(err))
    ri = retry_info(st)
    assert ri is not None
    assert ri.retry_delay.seconds == seconds
    assert abs(ri.retry_delay.nanos - nanos) <= 1
    info = error_info(st)
    assert info.reason == "QUEUE_FULL"
    assert dict(info.metadata) == {"stage": "analyzer"}
    assert len(st.details) == 2


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("user prompt: how to make a bomb"),
        KeyError("secret-key"),
        RuntimeError("/etc/passwd at line 3"),
        ZeroDivisionError(),
        Exception("token=abc123"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_unexpected_exception_becomes_internal_without_leaking_its_text(
    exc: BaseException,
) -> None:
    status = to_status(exc)
    assert status.code == grpc.StatusCode.INTERNAL
    assert status.details == "internal error"
    st = status_proto(status)
    assert st.code == code_pb2.INTERNAL
    assert st.message == "internal error"
    info = error_info(st)
    assert info.reason == Reason.INTERNAL
    assert info.domain == ERROR_DOMAIN
    assert dict(info.metadata) == {}
    assert retry_info(st) is None
    serialized = status_proto(status).SerializeToString()
    for word in (b"bomb", b"secret", b"passwd", b"abc123", type(exc).__name__.encode()):
        assert word not in serialized


def test_reason_of_returns_the_reason_or_internal() -> None:
    assert reason_of(UnavailableError("x", reason=Reason.STAGE_FAILED)) == "STAGE_FAILED"
    assert reason_of(InvalidArgumentError("x")) == "INVALID_ARGUMENT"
    assert reason_of(ValueError("x")) == Reason.INTERNAL


def test_to_status_uses_a_custom_reason_over_the_default() -> None:
    info = error_info(
        status_proto(to_status(UnauthenticatedError("no key", reason=Reason.MISSING_API_KEY)))
    )
    assert info.reason == "MISSING_API_KEY"


# --------------------------------------------------------------------------------------------
# Through a real grpc.aio server (port 0) with the gateway interceptor
# --------------------------------------------------------------------------------------------

_RAISE: dict[bytes, BaseException] = {
    b"invalid": InvalidArgumentError(
        "text is empty", reason=Reason.EMPTY_TEXT, metadata={"field": "text"}
    ),
    b"full": ResourceExhaustedError("retry shortly", reason=Reason.QUEUE_FULL, retry_after_s=1.5),
    b"down": UnavailableError("stage failed", reason=Reason.STAGE_FAILED),
    b"deadline": DeadlineExceededError("too slow"),
    b"bug": ValueError("leaky detail: user said something private"),
}


def test_errors_reach_a_real_grpc_client_with_rich_details() -> None:
    async def behavior(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        exc = _RAISE.get(request)
        if exc is not None:
            raise exc
        return b"ok:" + request

    async def go() -> dict[bytes, Any]:
        metrics = Metrics()
        server = grpc.aio.server(interceptors=[GatewayInterceptor(metrics, None)])
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "vlmguard.test.Errors",
                    {
                        "Call": grpc.unary_unary_rpc_method_handler(
                            behavior, request_deserializer=bytes, response_serializer=bytes
                        )
                    },
                ),
            )
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        out: dict[bytes, Any] = {}
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                call = ch.unary_unary(
                    "/vlmguard.test.Errors/Call",
                    request_serializer=bytes,
                    response_deserializer=bytes,
                )
                out[b"fine"] = await call(b"fine", timeout=5)
                for key in _RAISE:
                    with pytest.raises(grpc.aio.AioRpcError) as ei:
                        await call(key, timeout=5)
                    e = ei.value
                    md = {k: v for k, v in (e.trailing_metadata() or ())}
                    out[key] = (
                        e.code(),
                        e.details(),
                        status_pb2.Status.FromString(md["grpc-status-details-bin"]),
                    )
        finally:
            await server.stop(None)
        out[b"metrics"] = metrics
        return out

    out = asyncio.run(asyncio.wait_for(go(), 20))
    assert out[b"fine"] == b"ok:fine"

    code, details, st = out[b"invalid"]
    assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, "text is empty")
    info = error_info(st)
    assert (info.reason, info.domain, dict(info.metadata)) == (
        "EMPTY_TEXT",
        "vlmguard.dev",
        {"field": "text"},
    )

    code, _, st = out[b"full"]
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    ri = retry_info(st)
    assert ri is not None and (ri.retry_delay.seconds, ri.retry_delay.nanos) == (1, 500_000_000)

    assert out[b"down"][0] == grpc.StatusCode.UNAVAILABLE
    assert error_info(out[b"down"][2]).reason == "STAGE_FAILED"
    assert out[b"deadline"][0] == grpc.StatusCode.DEADLINE_EXCEEDED

    code, details, st = out[b"bug"]
    assert (code, details) == (grpc.StatusCode.INTERNAL, "internal error")
    assert error_info(st).reason == "INTERNAL"
    assert b"leaky" not in st.SerializeToString()

    metrics: Metrics = out[b"metrics"]
    assert metrics.registry.get_sample_value("vlmguard_errors_total", {"reason": "INTERNAL"}) == 1.0
    assert (
        metrics.registry.get_sample_value(
            "vlmguard_rpc_requests_total", {"method": "Call", "code": "INVALID_ARGUMENT"}
        )
        == 1.0
    )

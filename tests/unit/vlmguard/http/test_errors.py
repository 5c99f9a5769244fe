"""The OpenAI error format: one HTTP status and error type per status code (the same code gRPC
answers with), the stable reason as ``code``, Retry-After from the retry delay."""

from __future__ import annotations

import json

import pytest

from vlmguard.errors import (
    HTTP_STATUS,
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
from vlmguard.http.errors import error_event, error_parts


def test_every_status_code_has_an_http_status() -> None:
    assert set(HTTP_STATUS) == set(StatusCode)


@pytest.mark.parametrize(("err", "status", "err_type"), [
    (InvalidArgumentError("bad", reason=Reason.TEXT_TOO_LONG), 400, "invalid_request_error"),
    (UnauthenticatedError("who", reason=Reason.MISSING_API_KEY), 401, "authentication_error"),
    (PermissionDeniedError("no", reason=Reason.SCOPE_NOT_ALLOWED), 403, "permission_error"),
    (FailedPreconditionError("no target", reason=Reason.TARGET_NOT_CONFIGURED), 400,
     "invalid_request_error"),
    (ResourceExhaustedError("slow down", reason=Reason.RATE_LIMITED, retry_after_s=0.2), 429,
     "rate_limit_error"),
    (UnavailableError("down", reason=Reason.TARGET_NOT_READY), 503, "server_error"),
    (DeadlineExceededError("late", reason=Reason.DEADLINE_EXCEEDED), 504, "timeout_error"),
    (VLMGuardError("oops"), 500, "server_error"),
])
def test_errors_map_to_status_type_and_reason(err: VLMGuardError, status: int,
                                              err_type: str) -> None:
    got_status, body, headers = error_parts(err)
    assert got_status == status
    assert body == {"error": {"message": err.message, "type": err_type, "code": err.reason,
                              "param": None}}
    if err.retry_after_s is not None:
        assert headers == {"retry-after": "1"}  # whole seconds, rounded up
    else:
        assert headers == {}


def test_param_comes_from_the_metadata_and_unknown_errors_say_nothing() -> None:
    err = InvalidArgumentError("bad role", reason=Reason.UNSUPPORTED_CONTENT,
                               metadata={"param": "messages[0].role"})
    assert error_parts(err)[1]["error"]["param"] == "messages[0].role"
    status, body, _ = error_parts(RuntimeError("secret detail"))
    assert status == 500 and body["error"]["message"] == "internal error"
    assert body["error"]["code"] == Reason.INTERNAL


def test_error_inside_a_stream_is_one_event_with_the_error_object() -> None:
    raw = error_event(UnavailableError("gone", reason=Reason.TARGET_FAILED)).decode()
    assert raw.startswith("data: ") and raw.endswith("\n\n")
    assert json.loads(raw[len("data: "):])["error"]["code"] == "TARGET_FAILED"

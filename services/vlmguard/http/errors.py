"""Errors as the OpenAI API writes them: ``{"error": {"message", "type", "code", "param"}}``.

The HTTP status and the error ``type`` come from the error's status code through
:data:`vlmguard.errors.HTTP_STATUS` (the same code gRPC answers with); ``code`` is the stable
reason (``TEXT_TOO_LONG``, ``RATE_LIMITED``, ...). A retry delay becomes ``Retry-After``.
Anything that is not a :class:`VLMGuardError` is a 500 with a generic message.
"""

from __future__ import annotations

import json
import math
from typing import Any

from vlmguard.errors import HTTP_STATUS, Reason, StatusCode, VLMGuardError


def error_body(message: str, err_type: str, code: str, param: str | None = None
               ) -> dict[str, Any]:
    return {"error": {"message": message, "type": err_type, "code": code, "param": param}}


def error_parts(exc: BaseException) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(HTTP status, OpenAI error body, extra headers) of any exception."""
    if isinstance(exc, VLMGuardError):
        status, err_type = HTTP_STATUS.get(exc.code, HTTP_STATUS[StatusCode.INTERNAL])
        body = error_body(exc.message, err_type, exc.reason, exc.metadata.get("param"))
        headers = {}
        if exc.retry_after_s is not None:
            headers["retry-after"] = str(max(1, math.ceil(exc.retry_after_s)))
        return status, body, headers
    status, err_type = HTTP_STATUS[StatusCode.INTERNAL]
    return status, error_body("internal error", err_type, Reason.INTERNAL), {}


def error_event(exc: BaseException) -> bytes:
    """An error inside an already started event stream (the way OpenAI's API sends one)."""
    _, body, _ = error_parts(exc)
    return f"data: {json.dumps(body)}\n\n".encode()

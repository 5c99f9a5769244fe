"""One error hierarchy for VLMGuard.

Every error carries a gRPC status code, a stable UPPER_SNAKE ``reason`` that clients can switch
on, and a message that is safe to show a client (it never contains user content). The mapping
to gRPC status happens in one place: :mod:`vlmguard.gateway.errors`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar


class StatusCode(StrEnum):
    """gRPC status codes used by VLMGuard (names match ``grpc.StatusCode``)."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    NOT_FOUND = "NOT_FOUND"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    UNAVAILABLE = "UNAVAILABLE"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    INTERNAL = "INTERNAL"


#: The HTTP status each code is answered with by the OpenAI-compatible front door
#: (:mod:`vlmguard.http`), and the OpenAI error ``type`` that goes with it. The gRPC mapping is
#: the code itself (:mod:`vlmguard.gateway.errors`); both read the code of the same error.
HTTP_STATUS: dict[StatusCode, tuple[int, str]] = {
    StatusCode.INVALID_ARGUMENT: (400, "invalid_request_error"),
    StatusCode.UNAUTHENTICATED: (401, "authentication_error"),
    StatusCode.PERMISSION_DENIED: (403, "permission_error"),
    StatusCode.NOT_FOUND: (404, "not_found_error"),
    StatusCode.FAILED_PRECONDITION: (400, "invalid_request_error"),
    StatusCode.RESOURCE_EXHAUSTED: (429, "rate_limit_error"),
    StatusCode.UNAVAILABLE: (503, "server_error"),
    StatusCode.DEADLINE_EXCEEDED: (504, "timeout_error"),
    StatusCode.INTERNAL: (500, "server_error"),
}


class VLMGuardError(Exception):
    """Base of all VLMGuard errors.

    Args:
        reason: Stable UPPER_SNAKE reason code.
        message: Client-safe message (no prompts, no image content).
        metadata: Extra client-safe key/values for ``google.rpc.ErrorInfo``.
        retry_after_s: When set, clients may retry after this many seconds.
    """

    code: ClassVar[StatusCode] = StatusCode.INTERNAL
    default_reason: ClassVar[str] = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata = dict(metadata or {})
        self.retry_after_s = retry_after_s

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reason={self.reason!r}, message={self.message!r})"


class InvalidArgumentError(VLMGuardError):
    """The client sent something the server will not process (client fault)."""

    code = StatusCode.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"


class UnauthenticatedError(VLMGuardError):
    """Missing or wrong credentials."""

    code = StatusCode.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class PermissionDeniedError(VLMGuardError):
    """A valid key asked for something it may not do (another tenant, a scope it lacks)."""

    code = StatusCode.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class FailedPreconditionError(VLMGuardError):
    """The request is valid but the server is not set up to serve it (e.g. no target)."""

    code = StatusCode.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"


class ResourceExhaustedError(VLMGuardError):
    """Too much pending work: retry later (see ``retry_after_s``)."""

    code = StatusCode.RESOURCE_EXHAUSTED
    default_reason = "RESOURCE_EXHAUSTED"


class UnavailableError(VLMGuardError):
    """A dependency or stage is down or failed; the request was not guarded."""

    code = StatusCode.UNAVAILABLE
    default_reason = "UNAVAILABLE"


class DeadlineExceededError(VLMGuardError):
    """The request's deadline passed before the work finished; the work was dropped."""

    code = StatusCode.DEADLINE_EXCEEDED
    default_reason = "DEADLINE_EXCEEDED"


class ConfigError(VLMGuardError):
    """Invalid configuration or a missing optional dependency (raised at startup)."""

    code = StatusCode.FAILED_PRECONDITION
    default_reason = "CONFIG_INVALID"


class Reason:
    """Stable reason codes. Clients may rely on these strings; never rename one."""

    EMPTY_TEXT = "EMPTY_TEXT"
    TEXT_TOO_LONG = "TEXT_TOO_LONG"
    INVALID_UTF8 = "INVALID_UTF8"
    MALFORMED_REQUEST = "MALFORMED_REQUEST"
    TOO_MANY_IMAGES = "TOO_MANY_IMAGES"
    IMAGE_EMPTY = "IMAGE_EMPTY"
    IMAGE_TOO_LARGE = "IMAGE_TOO_LARGE"
    IMAGE_TOO_MANY_PIXELS = "IMAGE_TOO_MANY_PIXELS"
    IMAGE_CORRUPT = "IMAGE_CORRUPT"
    IMAGE_UNSUPPORTED_FORMAT = "IMAGE_UNSUPPORTED_FORMAT"
    IMAGE_MIME_MISMATCH = "IMAGE_MIME_MISMATCH"
    INVALID_GENERATION_PARAMS = "INVALID_GENERATION_PARAMS"
    INVALID_REPORT = "INVALID_REPORT"
    UNKNOWN_TENANT = "UNKNOWN_TENANT"
    MISSING_API_KEY = "MISSING_API_KEY"
    INVALID_API_KEY = "INVALID_API_KEY"
    # Keys bound to tenants and scopes (vlmguard.auth).
    TENANT_NOT_ALLOWED = "TENANT_NOT_ALLOWED"
    SCOPE_NOT_ALLOWED = "SCOPE_NOT_ALLOWED"
    RATE_LIMITED = "RATE_LIMITED"
    KEYS_FILE_INVALID = "KEYS_FILE_INVALID"
    QUEUE_FULL = "QUEUE_FULL"
    STAGE_FAILED = "STAGE_FAILED"
    STAGE_UNAVAILABLE = "STAGE_UNAVAILABLE"
    TARGET_NOT_CONFIGURED = "TARGET_NOT_CONFIGURED"
    TARGET_NOT_READY = "TARGET_NOT_READY"
    TARGET_FAILED = "TARGET_FAILED"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    BATCH_RESULT_MISMATCH = "BATCH_RESULT_MISMATCH"
    QUEUE_UNAVAILABLE = "QUEUE_UNAVAILABLE"
    DEAD_LETTERED = "DEAD_LETTERED"
    QUEUE_ITEM_MALFORMED = "QUEUE_ITEM_MALFORMED"
    # Image cost budgets (limits.max_request_pixels, limits.max_tenant_pending_pixels) and drain.
    REQUEST_TOO_MANY_PIXELS = "REQUEST_TOO_MANY_PIXELS"
    TENANT_BUDGET_EXHAUSTED = "TENANT_BUDGET_EXHAUSTED"
    SERVER_DRAINING = "SERVER_DRAINING"
    CONFIG_INVALID = "CONFIG_INVALID"
    MISSING_DEPENDENCY = "MISSING_DEPENDENCY"
    REWRITER_MALFORMED = "REWRITER_MALFORMED"
    REWRITER_NOT_READY = "REWRITER_NOT_READY"
    REWRITER_FAILED = "REWRITER_FAILED"
    REWRITER_TIMEOUT = "REWRITER_TIMEOUT"
    # Offline pipeline runner (vlmguard pipeline run).
    PIPELINE_STEP_FAILED = "PIPELINE_STEP_FAILED"
    PIPELINE_RBAC_DENIED = "PIPELINE_RBAC_DENIED"
    PIPELINE_QUOTA_EXCEEDED = "PIPELINE_QUOTA_EXCEEDED"
    PIPELINE_IMAGE_PULL_FAILED = "PIPELINE_IMAGE_PULL_FAILED"
    PIPELINE_CLUSTER_UNAVAILABLE = "PIPELINE_CLUSTER_UNAVAILABLE"
    PIPELINE_ALREADY_PUBLISHED = "PIPELINE_ALREADY_PUBLISHED"
    # OpenAI-compatible target and HTTP front door (vlmguard.upstream, vlmguard.http).
    TARGET_REJECTED = "TARGET_REJECTED"
    TARGET_RATE_LIMITED = "TARGET_RATE_LIMITED"
    TARGET_AUTH_FAILED = "TARGET_AUTH_FAILED"
    IMAGE_URL_NOT_ALLOWED = "IMAGE_URL_NOT_ALLOWED"
    IMAGE_FETCH_FAILED = "IMAGE_FETCH_FAILED"
    UNSUPPORTED_CONTENT = "UNSUPPORTED_CONTENT"
    REQUEST_TOO_LARGE = "REQUEST_TOO_LARGE"
    NOT_FOUND = "NOT_FOUND"
    # Conversations (multi-turn requests): limits.max_turns, limits.max_conversation_chars, and
    # a message whose role is not system, user or assistant.
    TOO_MANY_TURNS = "TOO_MANY_TURNS"
    CONVERSATION_TOO_LONG = "CONVERSATION_TOO_LONG"
    INVALID_ROLE = "INVALID_ROLE"
    # Training (vlmguard train analyzer): the new head missed a quality gate; nothing written.
    ANALYZER_GATE_FAILED = "ANALYZER_GATE_FAILED"
    # Pipeline publish: the new model's evaluation missed a recipe gate, or fell behind the
    # published model by more than the recipe's margin; nothing was published.
    PIPELINE_GATE_FAILED = "PIPELINE_GATE_FAILED"
    INTERNAL = "INTERNAL"

"""The one place where errors become gRPC statuses.

A :class:`VLMGuardError` becomes its status code with its client-safe message and a
``google.rpc.ErrorInfo`` detail (reason, domain, metadata), plus ``google.rpc.RetryInfo`` when it
carries a retry delay. Anything else becomes INTERNAL with a generic message; the details are
logged server-side only.
"""

from __future__ import annotations

import logging

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from vlmguard.errors import Reason, VLMGuardError

log = logging.getLogger(__name__)

ERROR_DOMAIN = "vlmguard.dev"


def to_status(exc: BaseException) -> grpc.Status:
    """Map any exception to a gRPC status with rich details."""
    if isinstance(exc, VLMGuardError):
        code = exc.code.name
        message = exc.message
        reason = exc.reason
        metadata = exc.metadata
        retry = exc.retry_after_s
    else:
        code, message, reason, metadata, retry = (
            "INTERNAL", "internal error", Reason.INTERNAL, {}, None,
        )
    details = []
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=metadata))
    details.append(info)
    if retry is not None:
        ri = any_pb2.Any()
        secs = int(retry)
        ri.Pack(error_details_pb2.RetryInfo(
            retry_delay=duration_pb2.Duration(seconds=secs, nanos=int((retry - secs) * 1e9))))
        details.append(ri)
    status = status_pb2.Status(code=getattr(code_pb2, code), message=message, details=details)
    return rpc_status.to_status(status)


def reason_of(exc: BaseException) -> str:
    """The reason code an exception maps to."""
    return exc.reason if isinstance(exc, VLMGuardError) else Reason.INTERNAL

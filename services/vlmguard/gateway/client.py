"""Client-side helpers shared by the ``vlmguard guard`` command and ``vlmguard eval``."""

from __future__ import annotations

from typing import Any


def rpc_error_details(err: Any) -> tuple[str, str]:
    """(ErrorInfo.reason, RetryInfo delay like ``"1s"``) of a failed gRPC call; '' when absent."""
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    reason, retry = "", ""
    try:
        status = rpc_status.from_call(err)
    except Exception:
        status = None
    if status is not None:
        for d in status.details:
            if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                d.Unpack(info)
                reason = str(info.reason)
            elif d.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                ri = error_details_pb2.RetryInfo()
                d.Unpack(ri)
                retry = f"{ri.retry_delay.seconds + ri.retry_delay.nanos / 1e9:g}s"
    return reason, retry

"""Client-side helpers shared by the client commands (``vlmguard guard``, ``analyze``,
``rewrite``, ``generate``) and ``vlmguard eval``: one way to connect, call an RPC, read its
error, and turn its answer into plain JSON; conversations (:func:`chat_messages`) and the
output check (``check-output``, :func:`check_output_json`) for clients of those."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The RPCs of the public API: command-line name -> (stub class path, method name).
RPCS: dict[str, tuple[str, str, str]] = {
    "guard": ("guard_pb2_grpc", "GuardServiceStub", "Guard"),
    "analyze": ("analysis_pb2_grpc", "ThreatAnalysisServiceStub", "Analyze"),
    "rewrite": ("rewrite_pb2_grpc", "RewriteServiceStub", "Rewrite"),
    "generate": ("target_pb2_grpc", "TargetServiceStub", "Generate"),
    "check-output": ("guard_pb2_grpc", "GuardServiceStub", "CheckOutput"),
}

#: Largest message a client sends (images inline): above the server's default limit, so the
#: server, not the client, says which limit an over-large request breaks.
MAX_SEND_BYTES = 64 * 1024 * 1024


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


@dataclass(frozen=True)
class Connection:
    """Where and how to call: address, deadline, credentials."""

    addr: str = "127.0.0.1:50051"
    timeout_s: float = 60.0
    api_key: str = ""
    ca_file: str = ""


@dataclass
class CallError(Exception):
    """A call that did not return an answer: the gRPC status name, the stable reason (empty
    when the server sent none, e.g. the client's own deadline), the message and the retry
    delay the server suggested."""

    code: str
    reason: str
    message: str
    retry_after: str = ""
    local_deadline: bool = field(default=False)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "reason": self.reason, "message": self.message}
        if self.retry_after:
            out["retry_after"] = self.retry_after
        return {"error": out}


def read_images(paths: list[str]) -> list[Any]:
    """``types_pb2.Image`` messages of image files (bytes as they are; the server checks them).

    Raises:
        FileNotFoundError, IsADirectoryError, PermissionError: a file cannot be read.
    """
    from vlmguard.v1 import types_pb2

    return [types_pb2.Image(data=Path(p).read_bytes()) for p in paths]


def call(conn: Connection, rpc: str, request: Any) -> tuple[Any, dict[str, str]]:
    """Call one RPC (a key of :data:`RPCS`); returns the response and the trailing metadata.

    Raises:
        CallError: the call failed (status, reason and message of the server, or the
            client's deadline).
    """
    import importlib

    import grpc

    module, stub_name, method = RPCS[rpc]
    stub_cls = getattr(importlib.import_module(f"vlmguard.v1.{module}"), stub_name)
    metadata = [("authorization", f"Bearer {conn.api_key}")] if conn.api_key else []
    options = [("grpc.max_send_message_length", MAX_SEND_BYTES)]
    if conn.ca_file:
        creds = grpc.ssl_channel_credentials(Path(conn.ca_file).read_bytes())
        channel = grpc.secure_channel(conn.addr, creds, options=options)
    else:
        channel = grpc.insecure_channel(conn.addr, options=options)
    try:
        with channel:
            fn = getattr(stub_cls(channel), method)
            response, rpc_call = fn.with_call(request, timeout=conn.timeout_s,
                                              metadata=metadata)
            trailing = {k: str(v) for k, v in (rpc_call.trailing_metadata() or ())}
    except grpc.RpcError as err:
        reason, retry = rpc_error_details(err)
        code = err.code().name if hasattr(err, "code") else "UNKNOWN"
        details = (err.details() if hasattr(err, "details") else "") or ""
        raise CallError(code, reason, details, retry,
                         local_deadline=code == "DEADLINE_EXCEEDED" and not reason) from None
    return response, trailing


# -- answers as plain JSON ---------------------------------------------------------------------


def _enum(enum: Any, value: int, prefix: str) -> str:
    return str(enum.Name(value)).removeprefix(prefix)


def reasoning_json(r: Any) -> dict[str, str]:
    return {"textual": r.textual, "visual": r.visual, "cross_modal": r.cross_modal}


def report_json(report: Any) -> dict[str, Any]:
    """A ``RiskReport``: level, score, findings, reasoning, analyzer, language."""
    from vlmguard.v1 import types_pb2

    return {
        "risk_level": _enum(types_pb2.RiskLevel, report.level, "RISK_LEVEL_"),
        "risk_score": round(report.score, 4),
        "findings": [
            {
                "category": f.category,
                "score": round(f.score, 4),
                "modality": _enum(types_pb2.Modality, f.modality, "MODALITY_"),
                "evidence": f.evidence,
                "source": f.source,
                "image_index": f.image_index,
            }
            for f in report.findings
        ],
        "reasoning": reasoning_json(report.reasoning),
        "analyzer": report.analyzer,
        "language": report.language,
        "language_unsupported": report.language_unsupported,
    }


def _timings(t: Any) -> dict[str, float]:
    return {k: round(v, 2) for k, v in sorted(t.items())}


def guard_json(resp: Any) -> dict[str, Any]:
    """A ``GuardResponse`` (the report's fields at the top level, as ``vlmguard guard --json``
    has always printed them)."""
    from vlmguard.v1 import types_pb2

    return {
        "request_id": resp.request_id,
        "tenant_id": resp.tenant_id,
        "action": _enum(types_pb2.Action, resp.action, "ACTION_"),
        **report_json(resp.report),
        "rewritten_text": resp.rewritten_text,
        "rewriter": resp.rewriter,
        "rewrite_reasoning": reasoning_json(resp.rewrite_reasoning),
        "block_message": resp.block_message,
        "target_response": resp.target_response,
        "target_model": resp.target_model,
        "finish_reason": resp.target_finish_reason,
        "prompt_tokens": resp.target_prompt_tokens,
        "completion_tokens": resp.target_completion_tokens,
        "timings_ms": _timings(resp.timings_ms),
    }


def analyze_json(resp: Any) -> dict[str, Any]:
    return {"request_id": resp.request_id, **report_json(resp.report),
            "timings_ms": _timings(resp.timings_ms)}


def rewrite_json(resp: Any) -> dict[str, Any]:
    from vlmguard.v1 import types_pb2

    return {
        "request_id": resp.request_id,
        "action": _enum(types_pb2.Action, resp.action, "ACTION_"),
        **report_json(resp.report),
        "rewritten_text": resp.rewritten_text,
        "rewriter": resp.rewriter,
        "rewrite_reasoning": reasoning_json(resp.reasoning),
        "block_message": resp.block_message,
        "timings_ms": _timings(resp.timings_ms),
    }


def generate_json(resp: Any, trailing: dict[str, str]) -> dict[str, Any]:
    return {
        "request_id": resp.request_id,
        "guard_action": trailing.get("x-vlmguard-action", ""),
        "text": resp.text,
        "model": resp.model,
        "finish_reason": resp.finish_reason,
        "prompt_tokens": resp.prompt_tokens,
        "completion_tokens": resp.completion_tokens,
        "timings_ms": _timings(resp.timings_ms),
    }


def chat_messages(turns: list[dict[str, Any]], base: Path | None = None) -> list[Any]:
    """``types_pb2.ChatMessage`` messages of a conversation written as JSON: ``[{"role":
    "system" | "user" | "assistant", "content": "...", "images": ["photo.png", ...]}, ...]``
    (``text`` is taken for ``content`` too; image paths are relative to ``base``).

    Raises:
        ValueError: a message without a known role or with a non-text content.
        FileNotFoundError, IsADirectoryError, PermissionError: an image cannot be read.
    """
    from vlmguard.v1 import types_pb2

    roles = {"system": types_pb2.ROLE_SYSTEM, "user": types_pb2.ROLE_USER,
             "assistant": types_pb2.ROLE_ASSISTANT}
    out = []
    for i, t in enumerate(turns):
        role = roles.get(str(t.get("role", "")) if isinstance(t, dict) else "")
        if role is None:
            raise ValueError(f"message {i}: role must be system, user or assistant")
        text = t.get("content", t.get("text", ""))
        if not isinstance(text, str):
            raise ValueError(f"message {i}: content must be a string")
        paths = [str(base / p) if base is not None else str(p) for p in t.get("images") or []]
        out.append(types_pb2.ChatMessage(role=role, text=text, images=read_images(paths)))
    return out


def check_output_json(resp: Any) -> dict[str, Any]:
    """A ``CheckOutputResponse``."""
    from vlmguard.v1 import guard_pb2

    return {
        "request_id": resp.request_id,
        "tenant_id": resp.tenant_id,
        "output_action": _enum(guard_pb2.OutputAction, resp.action, "OUTPUT_ACTION_"),
        "categories": list(resp.categories),
        **report_json(resp.report),
        "text": resp.text,
        "annotation": resp.annotation,
        "timings_ms": _timings(resp.timings_ms),
    }

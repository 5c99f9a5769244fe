"""The front door's ASGI app (Starlette): OpenAI-compatible routes in front of the guard.

- ``POST /v1/chat/completions``: the conversation is guarded (the last user turn in the context
  of the turns before it); ALLOW forwards the request as it came, REWRITE forwards it with the
  last user turn's text replaced by the rewritten text, BLOCK answers with an assistant message
  holding the block message and ``finish_reason: "content_filter"`` (no upstream call). The
  answer is checked (:meth:`GuardPipeline.check_output`, the tenant's ``output_action``):
  annotated, replaced or cut. ``stream: true`` streams the upstream's events through, checking
  the answer every ``http.stream_window_chars`` characters and at its end (chunks are held until
  checked when the tenant's action can replace or cut).
- ``GET /v1/models``: the upstream's model list.
- ``GET /healthz`` (the process) and ``GET /readyz`` (the guard and the upstream answer).

Callers authenticate as on gRPC (``Authorization: Bearer <key>``, the same keys, scopes,
tenants and rate limits: :class:`vlmguard.auth.Gatekeeper`; a chat completion needs the
``guard`` scope); the tenant is the ``x-vlmguard-tenant`` header (else the key's default).
Answers carry ``x-request-id`` and ``x-vlmguard-action``; errors are OpenAI error objects
(:mod:`vlmguard.http.errors`). Prompts, images and answers are never logged at INFO.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from vlmguard.auth import Access, Gatekeeper, audit, denied_access, record_content, record_decision
from vlmguard.config import VLMGuardConfig
from vlmguard.domain import Action, ChatTurn, OutputAction, OutputVerdict
from vlmguard.errors import InvalidArgumentError, Reason, VLMGuardError
from vlmguard.gateway.interceptor import new_request_id
from vlmguard.http.chat import (
    DONE,
    ChatRequest,
    assistant_completion,
    assistant_stream,
    chunk,
    completion_id,
    parse_chat,
    sse,
)
from vlmguard.http.errors import error_body, error_event, error_parts
from vlmguard.http.images import ImageFetcher
from vlmguard.logs import request_id_var
from vlmguard.metrics import Metrics
from vlmguard.pipeline import Call, GuardPipeline
from vlmguard.upstream import OpenAIUpstream, UpstreamRejectedError, UpstreamStream, delta_text

log = logging.getLogger(__name__)

#: The gRPC method whose scope a chat completion needs (it is guarded like Guard).
CHAT_METHOD = "Guard"
TENANT_HEADER = "x-vlmguard-tenant"
ACTION_HEADER = "x-vlmguard-action"
REQUEST_ID_HEADER = "x-request-id"
CONTENT_FILTER = "content_filter"


@dataclass
class FrontDoor:
    """Everything the app uses.

    Attributes:
        cfg: Configuration (``http``, ``limits``, ``server.default_timeout_s``).
        pipeline: The guard pipeline (the gateway's own, when the front door runs in it).
        upstream: The OpenAI-compatible server answers come from.
        gatekeeper: Keys, scopes, tenants and rate limits (shared with gRPC in the gateway).
        metrics: Metrics sink.
        fetcher: Remote image fetcher (``http.remote_images``).
        ready: Extra readiness condition (e.g. the gateway's queue answers).
    """

    cfg: VLMGuardConfig
    pipeline: GuardPipeline
    upstream: OpenAIUpstream
    gatekeeper: Gatekeeper
    metrics: Metrics
    fetcher: ImageFetcher
    ready: Callable[[], Awaitable[bool]] | None = None
    max_body_bytes: int = field(init=False)

    def __post_init__(self) -> None:
        limits = self.cfg.limits
        # Base64 makes images a third larger; 64 KiB more for JSON framing.
        self.max_body_bytes = (self.cfg.http.max_body_bytes
                               or limits.max_message_bytes * 4 // 3 + 64 * 1024)


def _error_response(exc: BaseException, headers: dict[str, str]) -> Response:
    if isinstance(exc, UpstreamRejectedError):
        # The upstream's own error (context too long, unknown model...), as it wrote it.
        try:
            body = json.loads(exc.body)
            if isinstance(body, dict) and isinstance(body.get("error"), dict):
                return JSONResponse(body, status_code=exc.status, headers=headers)
        except ValueError:
            pass
    status, body, extra = error_parts(exc)
    return JSONResponse(body, status_code=status, headers={**headers, **extra})


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise InvalidArgumentError(f"the request body is larger than {limit} bytes",
                                   reason=Reason.REQUEST_TOO_LARGE)
    data = bytearray()
    async for piece in request.stream():
        data += piece
        if len(data) > limit:
            raise InvalidArgumentError(f"the request body is larger than {limit} bytes",
                                       reason=Reason.REQUEST_TOO_LARGE)
    return bytes(data)


def _timeout(request: Request, default_s: float) -> float:
    """The caller's timeout (``x-vlmguard-timeout-s``, at most 10x the default), else the
    server default."""
    raw = request.headers.get("x-vlmguard-timeout-s", "")
    try:
        value = float(raw)
    except ValueError:
        return default_s
    return min(value, default_s * 10) if value > 0 else default_s


class _Handled:
    """Per-request bookkeeping: the status, reason and access for metrics and the audit line."""

    def __init__(self, door: FrontDoor, route: str, method: str) -> None:
        self.door = door
        self.route = route
        self.method = method
        self.t0 = time.perf_counter()
        self.status = 200
        self.reason = ""
        self.access: Access | None = None

    def fail(self, exc: BaseException) -> None:
        self.status = error_parts(exc)[0]
        if isinstance(exc, UpstreamRejectedError):
            self.status = exc.status
        self.reason = exc.reason if isinstance(exc, VLMGuardError) else Reason.INTERNAL
        self.door.metrics.errors.labels(self.reason).inc()
        self.access = self.access or denied_access(exc)

    def finish(self) -> None:
        m = self.door.metrics
        m.http_requests.labels(self.route, str(self.status)).inc()
        m.http_latency.labels(self.route).observe(time.perf_counter() - self.t0)
        outcome = "OK" if self.status < 400 else (self.reason or str(self.status))
        audit(method=self.method, outcome=outcome, reason=self.reason, access=self.access)


def build_app(door: FrontDoor) -> Starlette:
    """The ASGI app of the front door."""
    cfg = door.cfg

    def admit(request: Request, h: _Handled) -> str:
        """Authenticate and authorise; returns the tenant."""
        md = [("authorization", request.headers.get("authorization", ""))]
        h.access = door.gatekeeper.admit(CHAT_METHOD, md)
        return door.gatekeeper.resolve_tenant(h.access, request.headers.get(TENANT_HEADER, ""))

    async def chat_completions(request: Request) -> Response:
        rid = new_request_id(request.headers.get(REQUEST_ID_HEADER, ""))
        token = request_id_var.set(rid)
        h = _Handled(door, "chat_completions", "ChatCompletions")
        headers = {REQUEST_ID_HEADER: rid}
        streaming = False
        try:
            tenant = admit(request, h)
            raw = await _read_body(request, door.max_body_bytes)
            try:
                body = json.loads(raw)
            except (ValueError, UnicodeDecodeError) as e:
                raise InvalidArgumentError("the request body is not valid JSON",
                                           reason=Reason.MALFORMED_REQUEST) from e
            timeout = _timeout(request, cfg.server.default_timeout_s)
            deadline = door.pipeline.clock() + timeout
            deadline_unix = time.time() + timeout

            async def fetch(url: str) -> Any:
                return await door.fetcher.fetch(url, deadline_unix=deadline_unix)

            chat = await parse_chat(body, cfg.limits, fetch)
            call = Call(request_id=rid, text=chat.text, images=chat.images, tenant_id=tenant,
                        deadline=deadline,
                        history=tuple(ChatTurn(t.role, t.text, t.images) for t in chat.history))
            record_content(h.access, chat.text, [i.data for i in chat.images])
            res = await door.pipeline.guard(call)
            action = res.action.value.lower()
            record_decision(h.access, action, sorted({f.category for f in res.report.findings}),
                            res.report.score)
            door.metrics.http_guard_actions.labels("request", action).inc()
            headers[ACTION_HEADER] = action
            # The guard's own time, so callers (and bench/front_door.py) can tell it from the
            # front door's and the upstream's.
            timing = f"guard;dur={res.timings_ms.get('total', 0.0):.2f}"
            headers["server-timing"] = timing
            if res.action is Action.BLOCK:
                return _block(chat, rid, res.rewrite.block_message, headers)
            rewritten = res.rewrite.rewritten_text if res.action is Action.REWRITE else None
            forward = chat.forward_body(rewritten)
            check = Call(request_id=rid, text=rewritten if rewritten is not None else chat.text,
                         tenant_id=tenant, deadline=deadline, report=res.report)
            if chat.stream:
                t_up = time.perf_counter()
                upstream_stream = await door.upstream.stream(forward,
                                                             deadline_unix=deadline_unix)
                door.metrics.http_upstream_latency.observe(time.perf_counter() - t_up)
                streaming = True
                return StreamingResponse(
                    _relay(door, upstream_stream, check, chat, h),
                    media_type="text/event-stream",
                    headers={**headers, "cache-control": "no-cache"})
            t_up = time.perf_counter()
            answer = await door.upstream.chat(forward, deadline_unix=deadline_unix)
            door.metrics.http_upstream_latency.observe(time.perf_counter() - t_up)
            output_ms = await _check_answer(door, check, answer)
            if output_ms is not None:
                headers["server-timing"] = f"{timing}, output;dur={output_ms:.2f}"
            return JSONResponse(answer, headers=headers)
        except Exception as e:
            if not isinstance(e, VLMGuardError):
                log.exception("chat completion failed with an unexpected error")
            else:
                log.info("chat completion failed: %s %s", e.code.name, e.reason)
            h.fail(e)
            return _error_response(e, headers)
        finally:
            if not streaming:
                h.finish()
            request_id_var.reset(token)

    async def models(request: Request) -> Response:
        h = _Handled(door, "models", "ListModels")
        try:
            admit(request, h)
            listing = await door.upstream.models(
                deadline_unix=time.time() + cfg.server.default_timeout_s)
            return JSONResponse(listing)
        except Exception as e:
            if not isinstance(e, VLMGuardError):
                log.exception("model list failed with an unexpected error")
            h.fail(e)
            return _error_response(e, {})
        finally:
            h.finish()

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        ok = await door.upstream.ready()
        if ok and door.ready is not None:
            ok = await door.ready()
        return JSONResponse({"status": "ok" if ok else "unavailable"},
                            status_code=200 if ok else 503)

    async def not_found(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 404
        err_type = "not_found_error" if status == 404 else "invalid_request_error"
        code = Reason.NOT_FOUND if status == 404 else Reason.MALFORMED_REQUEST
        return JSONResponse(error_body(f"no route {request.method} {request.url.path}",
                                       err_type, code), status_code=status)

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
        ],
        exception_handlers={404: not_found, 405: not_found},
    )


def _block(chat: ChatRequest, rid: str, message: str, headers: dict[str, str]) -> Response:
    if chat.stream:
        events = assistant_stream(chat.model, rid, message, CONTENT_FILTER)

        async def gen() -> AsyncIterator[bytes]:
            for e in events:
                yield e

        return StreamingResponse(gen(), media_type="text/event-stream", headers=headers)
    return JSONResponse(assistant_completion(chat.model, rid, message, CONTENT_FILTER),
                        headers=headers)


def _output_enabled(door: FrontDoor, call: Call) -> tuple[bool, bool]:
    """(check the answer at all, hold chunks until checked) for the call's tenant."""
    _, pol = door.pipeline.policy.tenant(call.tenant_id)
    mode = pol.output_action
    return (mode != "off" and pol.stages.analyze), mode in ("replace", "cut")


def _with_note(text: str, note: str) -> str:
    return f"{text}\n\n{note}" if text and note else (text or note)


async def _check_answer(door: FrontDoor, call: Call, answer: dict[str, Any]) -> float | None:
    """The output check on a whole answer, applied to it in place; its time in ms (None when
    nothing was checked)."""
    enabled, _ = _output_enabled(door, call)
    if not enabled:
        return None
    try:
        choice = answer["choices"][0]
        message = choice["message"]
        text = message.get("content") or ""
    except (KeyError, IndexError, TypeError, AttributeError):
        return None  # no text answer (e.g. a tool call only): nothing to read
    if not isinstance(text, str) or not text:
        return None
    t0 = time.perf_counter()
    verdict = await door.pipeline.check_output(call, text)
    took = (time.perf_counter() - t0) * 1000
    door.metrics.http_guard_actions.labels("answer", verdict.action.value.lower()).inc()
    if verdict.action is OutputAction.PASS:
        return took
    if verdict.action is OutputAction.ANNOTATE:
        message["content"] = _with_note(text, verdict.annotation)
    elif verdict.action is OutputAction.REPLACE:
        message["content"] = verdict.text
        choice["finish_reason"] = CONTENT_FILTER
    else:
        message["content"] = _with_note(verdict.text, verdict.annotation)
        choice["finish_reason"] = CONTENT_FILTER
    answer["vlmguard"] = {"output_action": verdict.action.value.lower(),
                          "categories": list(verdict.categories)}
    return took


async def _relay(door: FrontDoor, stream: UpstreamStream, call: Call, chat: ChatRequest,
                 h: _Handled) -> AsyncIterator[bytes]:
    """The upstream's events, passed through with the answer checked in windows."""
    enabled, hold = _output_enabled(door, call)
    window = door.cfg.http.stream_window_chars
    acc = ""  # the answer so far
    delivered = 0  # characters of it the client has
    checked = 0  # characters of it the last check read
    held: list[tuple[bytes, int]] = []  # events not sent yet, with the answer length they end at
    note = ""
    cid, model, created = completion_id(call.request_id), chat.model, int(time.time())
    first = True

    def sent(length: int) -> None:
        nonlocal delivered, first
        delivered = max(delivered, length)
        if first and length > 0:
            first = False
            door.metrics.http_first_token.observe(time.perf_counter() - h.t0)

    def flush() -> list[bytes]:
        out = [e for e, _ in held]
        if held:
            sent(held[-1][1])
        held.clear()
        return out

    def ending(verdict: OutputVerdict) -> list[bytes]:
        """The events that end a stream whose answer was replaced or cut."""
        held.clear()
        if verdict.action is OutputAction.REPLACE:
            extra = ("\n\n" if delivered else "") + verdict.text
        else:
            extra = _with_note(verdict.text[delivered:], verdict.annotation)
            if delivered and extra and not verdict.text[delivered:]:
                extra = "\n\n" + extra
        out = [sse(chunk(cid, model, created, content=extra))] if extra else []
        out += [sse(chunk(cid, model, created, finish_reason=CONTENT_FILTER)), DONE]
        return out

    async def check() -> OutputVerdict:
        nonlocal checked, note
        checked = len(acc)
        verdict = await door.pipeline.check_output(call, acc, delivered=delivered)
        if verdict.action is OutputAction.ANNOTATE:
            note = verdict.annotation
        return verdict

    def counted(action: str) -> None:
        door.metrics.http_guard_actions.labels("answer", action).inc()

    try:
        finish_event: bytes | None = None
        trailing: list[bytes] = []  # events after the finishing one (usage)
        async for event in stream.events():
            if event.strip() == "[DONE]":
                break
            text, fin, parsed = delta_text(event)
            if parsed is not None:
                cid = str(parsed.get("id") or cid)
                model = str(parsed.get("model") or model)
                created = int(parsed.get("created") or created)
            acc += text
            raw = sse(event)
            if finish_event is not None:
                trailing.append(raw)
                continue
            if enabled and fin:
                finish_event = raw  # sent after the last check
                continue
            if enabled and hold:
                held.append((raw, len(acc)))
            else:
                yield raw
                sent(len(acc))
            if enabled and len(acc) - checked >= window:
                verdict = await check()
                if verdict.action in (OutputAction.REPLACE, OutputAction.CUT):
                    counted(verdict.action.value.lower())
                    for e in ending(verdict):
                        yield e
                    return
                for e in flush():
                    yield e
        if enabled and acc and len(acc) > checked:
            verdict = await check()
            if verdict.action in (OutputAction.REPLACE, OutputAction.CUT):
                counted(verdict.action.value.lower())
                for e in ending(verdict):
                    yield e
                return
        if enabled and acc:
            counted("annotate" if note else "pass")
        for e in flush():
            yield e
        if note:
            yield sse(chunk(cid, model, created, content="\n\n" + note))
        if finish_event is not None:
            yield finish_event
            sent(len(acc))
        for e in trailing:
            yield e
        yield DONE
    except VLMGuardError as e:
        log.info("chat completion stream failed: %s %s", e.code.name, e.reason)
        h.fail(e)
        yield error_event(e)
    except Exception as e:
        log.exception("chat completion stream failed with an unexpected error")
        h.fail(e)
        yield error_event(e)
    finally:
        await stream.aclose()
        h.finish()

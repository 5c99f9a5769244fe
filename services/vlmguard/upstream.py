"""An OpenAI-compatible chat-completions server (vLLM, SGLang, TGI, `transformers serve`, a
hosted API), reached through httpx: the ``openai`` target backend and the HTTP front door's
pass-through both use :class:`OpenAIUpstream`.

What it guarantees:

- every attempt is bounded by ``target.openai.timeout_s`` and by the caller's deadline
  (wall-clock ``deadline_unix``, as it crosses processes);
- only HTTP 429, 502, 503, 504 and connection errors are retried, with exponential backoff and
  jitter (a ``Retry-After`` is honoured), and never past the deadline; a stream is retried only
  before its first byte;
- failures become the project's errors with stable reasons: TARGET_REJECTED (the server refused
  the request, 4xx; :class:`UpstreamRejectedError` keeps its status and body for a proxy to pass
  through), TARGET_RATE_LIMITED (429 after the retries), TARGET_AUTH_FAILED (401/403: the key
  configured here is wrong), TARGET_NOT_READY (503 / unreachable), TARGET_FAILED (other 5xx,
  malformed answers), DEADLINE_EXCEEDED.

The API key is read from ``api_key_file`` or the ``api_key_env`` variable, never from the
config itself, and never logged. Nothing here logs request or answer content.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import httpx

from vlmguard.config import OpenAITargetConfig
from vlmguard.domain import ImageInput
from vlmguard.errors import (
    ConfigError,
    DeadlineExceededError,
    InvalidArgumentError,
    Reason,
    ResourceExhaustedError,
    UnavailableError,
    VLMGuardError,
)
from vlmguard.imaging import FORMATS, sniff_format

log = logging.getLogger(__name__)

#: Statuses worth another attempt: the server is overloaded or a proxy in front of it is.
RETRYABLE_STATUS: frozenset[int] = frozenset({429, 502, 503, 504})
#: Most bytes of an error body kept (for a proxy to pass through).
_MAX_ERROR_BODY = 16 * 1024


class UpstreamRejectedError(InvalidArgumentError):
    """The server refused the request (HTTP 4xx other than 401/403/429).

    Attributes:
        status: The server's HTTP status.
        body: The server's error body (at most 16 KiB), for a proxy to pass through to the
            client that sent the request.
    """

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"the target rejected the request (HTTP {status})",
                         reason=Reason.TARGET_REJECTED, metadata={"upstream_status": str(status)})
        self.status = status
        self.body = body


def read_api_key(cfg: OpenAITargetConfig, environ: Mapping[str, str] | None = None) -> str:
    """The bearer token: ``api_key_file`` when set, else ``api_key_env`` ('' when neither).

    Raises:
        ConfigError: ``api_key_file`` is set but cannot be read.
    """
    if cfg.api_key_file:
        try:
            return Path(cfg.api_key_file).read_text().strip()
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"target.openai.api_key_file cannot be read ({type(e).__name__})"
                              ) from e
    env = os.environ if environ is None else environ
    return env.get(cfg.api_key_env, "").strip()


def seconds_left(deadline_unix: float | None) -> float | None:
    """Seconds until a wall-clock deadline (None: no deadline)."""
    return None if deadline_unix is None else deadline_unix - time.time()


def image_data_url(img: ImageInput) -> str:
    """An image as a ``data:`` URL (its declared MIME type, else the sniffed one)."""
    mime = img.mime_type
    if not mime:
        fmt = sniff_format(img.data)
        mime = FORMATS.get(fmt or "", "application/octet-stream")
    return f"data:{mime};base64,{base64.b64encode(img.data).decode('ascii')}"


def _retry_after(resp: httpx.Response) -> float | None:
    raw = resp.headers.get("retry-after", "")
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if value >= 0 else None


def _deadline_error() -> DeadlineExceededError:
    return DeadlineExceededError("the target model did not answer before the deadline",
                                 reason=Reason.DEADLINE_EXCEEDED)


def error_for_status(status: int, body: bytes, retry_after: float | None = None
                     ) -> VLMGuardError:
    """The project's error for a server's HTTP error status."""
    if status in (401, 403):
        return UnavailableError("the target refused this server's credentials",
                                reason=Reason.TARGET_AUTH_FAILED,
                                metadata={"upstream_status": str(status)})
    if status == 429:
        return ResourceExhaustedError("the target is rate limiting: retry later",
                                      reason=Reason.TARGET_RATE_LIMITED,
                                      retry_after_s=retry_after if retry_after is not None
                                      else 1.0)
    if 400 <= status < 500:
        return UpstreamRejectedError(status, body[:_MAX_ERROR_BODY])
    if status == 503:
        return UnavailableError("the target is not available", reason=Reason.TARGET_NOT_READY,
                                metadata={"upstream_status": "503"}, retry_after_s=retry_after)
    return UnavailableError(f"the target failed (HTTP {status})", reason=Reason.TARGET_FAILED,
                            metadata={"upstream_status": str(status)})


class UpstreamStream:
    """An open streamed answer (server-sent events).

    Iterate :meth:`events` for each event's ``data`` (``[DONE]`` included, as sent); each wait
    for the next event is bounded by ``timeout_s`` and by the deadline. Always :meth:`aclose`.
    """

    def __init__(self, resp: httpx.Response, timeout_s: float, deadline_unix: float | None
                 ) -> None:
        self.response = resp
        self._timeout_s = timeout_s
        self._deadline = deadline_unix

    async def events(self) -> AsyncIterator[str]:
        lines = self.response.aiter_lines()
        data: list[str] = []
        while True:
            wait = self._timeout_s
            left = seconds_left(self._deadline)
            if left is not None:
                if left <= 0:
                    raise _deadline_error()
                wait = min(wait, left)
            try:
                line = await asyncio.wait_for(lines.__anext__(), wait)
            except StopAsyncIteration:
                break
            except TimeoutError as e:
                if left is not None and wait >= left:
                    raise _deadline_error() from e
                raise UnavailableError("the target stopped sending its answer",
                                       reason=Reason.TARGET_FAILED) from e
            except httpx.HTTPError as e:
                raise UnavailableError("the target's answer stream broke off",
                                       reason=Reason.TARGET_FAILED) from e
            if not line:
                if data:
                    yield "\n".join(data)
                    data = []
                continue
            if line.startswith(":"):
                continue  # an SSE comment (keep-alive)
            field, _, value = line.partition(":")
            if field == "data":
                data.append(value[1:] if value.startswith(" ") else value)
        if data:
            yield "\n".join(data)

    async def aclose(self) -> None:
        await self.response.aclose()


class OpenAIUpstream:
    """Client of one OpenAI-compatible server (``target.openai``), for one event loop.

    Args:
        cfg: The server's settings.
        environ: Environment for the API key (default ``os.environ``).
        transport: An httpx transport (tests).

    Raises:
        ConfigError: no ``base_url``, or an unreadable key file.
    """

    def __init__(self, cfg: OpenAITargetConfig, *, environ: Mapping[str, str] | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        if not cfg.base_url:
            raise ConfigError("target.openai.base_url is required (e.g. http://vllm:8000/v1)")
        self.cfg = cfg
        self.base_url = cfg.base_url.rstrip("/")
        key = read_api_key(cfg, environ)
        self._headers = {"accept": "application/json", "user-agent": "vlmguard"}
        if key:
            self._headers["authorization"] = f"Bearer {key}"
        self._given_transport = transport
        self._transport: httpx.AsyncBaseTransport | None = None
        self._urls = {path: httpx.URL(self.base_url + path)
                      for path in ("/chat/completions", "/models")}
        #: Attempts that were retried, by cause (tests and metrics).
        self.retries = 0

    def _http(self) -> httpx.AsyncBaseTransport:
        """The connection pool. Requests go to the transport itself, not through an
        ``httpx.AsyncClient``: the client's URL merging, cookie jar and redirect machinery cost
        about a millisecond per call and none of it applies here (no redirects are followed)."""
        if self._transport is None:
            if self._given_transport is not None:
                self._transport = self._given_transport
            else:
                n = self.cfg.max_concurrency
                self._transport = httpx.AsyncHTTPTransport(
                    limits=httpx.Limits(max_connections=n, max_keepalive_connections=n),
                    proxy=_env_proxy(self.base_url))
        return self._transport

    async def aclose(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            await transport.aclose()

    async def _send(self, method: str, path: str, body: Any, deadline_unix: float | None,
                    *, stream: bool) -> tuple[httpx.Response, float]:
        """One request with the retry policy; returns an OK response (its body unread when
        ``stream``) and the timeout its attempt ran under."""
        transport = self._http()
        url = self._urls[path]
        payload = None if body is None else json.dumps(body).encode()
        headers = dict(self._headers)
        if payload is not None:
            headers["content-type"] = "application/json"
        attempt = 0
        while True:
            timeout = self.cfg.timeout_s
            left = seconds_left(deadline_unix)
            if left is not None:
                if left <= 0:
                    raise _deadline_error()
                timeout = min(timeout, left)
            limits = httpx.Timeout(timeout, connect=min(self.cfg.connect_timeout_s, timeout),
                                   pool=timeout)
            request = httpx.Request(method, url, headers=headers, content=payload,
                                    extensions={"timeout": limits.as_dict()})
            retry_after: float | None = None
            try:
                # httpx bounds each read; this bounds the whole attempt (a server that trickles
                # bytes, or a transport without timeouts, cannot outlive the deadline).
                async with asyncio.timeout(timeout):
                    resp = await transport.handle_async_request(request)
                    resp.request = request
                    if not stream and resp.status_code < 400:
                        try:
                            await resp.aread()
                        finally:
                            await resp.aclose()
            except (httpx.TimeoutException, TimeoutError) as e:
                if left is not None and timeout >= left:
                    raise _deadline_error() from e
                if isinstance(e, TimeoutError) or not isinstance(e, httpx.ConnectTimeout):
                    # The server had the request: another attempt would repeat the work.
                    raise UnavailableError("the target did not answer in time",
                                           reason=Reason.TARGET_FAILED) from e
                err: VLMGuardError = UnavailableError("the target is unreachable",
                                                      reason=Reason.TARGET_NOT_READY)
                cause: BaseException = e
            except httpx.TransportError as e:  # refused, reset, closed before answering
                log.debug("target request failed: %s", type(e).__name__)
                err, cause = UnavailableError("the target is unreachable",
                                              reason=Reason.TARGET_NOT_READY), e
            else:
                if resp.status_code < 400:
                    return resp, timeout
                raw = b""
                try:
                    async for chunk in resp.aiter_bytes():
                        raw += chunk
                        if len(raw) >= _MAX_ERROR_BODY:
                            break
                except httpx.HTTPError:
                    pass
                finally:
                    await resp.aclose()
                retry_after = _retry_after(resp)
                err = error_for_status(resp.status_code, raw, retry_after)
                cause = err
                if resp.status_code not in RETRYABLE_STATUS:
                    raise err
                log.info("target answered HTTP %d (attempt %d)", resp.status_code, attempt + 1)
            if attempt >= self.cfg.retries:
                raise err from (cause if cause is not err else None)
            delay = self.cfg.retry_backoff_s * (2 ** attempt) * (0.5 + random.random())
            if retry_after is not None:
                delay = max(delay, retry_after)
            left = seconds_left(deadline_unix)
            if left is not None and delay >= left:
                raise err from (cause if cause is not err else None)
            attempt += 1
            self.retries += 1
            await asyncio.sleep(delay)

    async def chat(self, body: Mapping[str, Any], *, deadline_unix: float | None = None
                   ) -> dict[str, Any]:
        """``POST /chat/completions`` (not streamed): the parsed answer.

        Raises:
            VLMGuardError: as described in the module docstring; TARGET_FAILED for an answer
                that is not a JSON object with choices.
        """
        resp, _ = await self._send("POST", "/chat/completions", dict(body, stream=False),
                                   deadline_unix, stream=False)
        try:
            data = resp.json()
        except (ValueError, UnicodeDecodeError) as e:
            raise UnavailableError("the target sent an answer that is not JSON",
                                   reason=Reason.TARGET_FAILED) from e
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
            raise UnavailableError("the target sent a malformed answer",
                                   reason=Reason.TARGET_FAILED)
        return data

    async def stream(self, body: Mapping[str, Any], *, deadline_unix: float | None = None
                     ) -> UpstreamStream:
        """``POST /chat/completions`` with ``stream: true``: the open event stream."""
        resp, _ = await self._send("POST", "/chat/completions", dict(body, stream=True),
                                   deadline_unix, stream=True)
        ctype = resp.headers.get("content-type", "")
        if "text/event-stream" not in ctype:
            await resp.aclose()
            raise UnavailableError("the target did not answer with an event stream",
                                   reason=Reason.TARGET_FAILED)
        return UpstreamStream(resp, self.cfg.timeout_s, deadline_unix)

    async def models(self, *, deadline_unix: float | None = None) -> dict[str, Any]:
        """``GET /models``: the server's model list."""
        resp, _ = await self._send("GET", "/models", None, deadline_unix, stream=False)
        try:
            data = resp.json()
        except (ValueError, UnicodeDecodeError) as e:
            raise UnavailableError("the target's model list is not JSON",
                                   reason=Reason.TARGET_FAILED) from e
        if not isinstance(data, dict) or not isinstance(data.get("data"), list):
            raise UnavailableError("the target's model list is malformed",
                                   reason=Reason.TARGET_FAILED)
        return data

    async def ready(self, timeout_s: float = 2.0) -> bool:
        """Whether the server answers its model list within ``timeout_s`` (no retries)."""
        request = httpx.Request("GET", self._urls["/models"], headers=self._headers,
                                extensions={"timeout": httpx.Timeout(timeout_s).as_dict()})
        try:
            async with asyncio.timeout(timeout_s):
                resp = await self._http().handle_async_request(request)
                await resp.aclose()
        except (httpx.HTTPError, TimeoutError):
            return False
        return resp.status_code == 200


def _env_proxy(url: str) -> str | None:
    """The proxy the environment sets for ``url`` (``HTTPS_PROXY``, ``NO_PROXY``...), as an
    ``httpx.AsyncClient`` would use it."""
    import urllib.request
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return proxy


def chat_text(answer: Mapping[str, Any]) -> tuple[str, str]:
    """(text, finish_reason) of the first choice of a chat-completions answer.

    Raises:
        UnavailableError: TARGET_FAILED when the answer has no message text.
    """
    try:
        choice = answer["choices"][0]
        content = choice["message"].get("content") or ""
        finish = str(choice.get("finish_reason") or "stop")
    except (KeyError, IndexError, TypeError, AttributeError) as e:
        raise UnavailableError("the target sent a malformed answer",
                               reason=Reason.TARGET_FAILED) from e
    if isinstance(content, list):  # some servers answer with content parts
        content = "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    if not isinstance(content, str):
        raise UnavailableError("the target sent a malformed answer", reason=Reason.TARGET_FAILED)
    return content, finish


def delta_text(event: str) -> tuple[str, str | None, dict[str, Any] | None]:
    """(content delta, finish_reason, parsed chunk) of one streamed event's data ('' and None
    for ``[DONE]`` or an event that carries no text)."""
    if event.strip() == "[DONE]":
        return "", None, None
    try:
        chunk = json.loads(event)
    except ValueError:
        return "", None, None
    if not isinstance(chunk, dict):
        return "", None, None
    text, finish = "", None
    for choice in chunk.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        delta = choice.get("delta") or {}
        piece = delta.get("content") if isinstance(delta, dict) else None
        if isinstance(piece, str):
            text += piece
        if choice.get("finish_reason"):
            finish = str(choice["finish_reason"])
    return text, finish, chunk

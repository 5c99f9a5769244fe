"""Any OpenAI-compatible chat-completions server as the target (``target.backend: openai``):
vLLM, SGLang, TGI, ``transformers serve`` or a hosted API.

Each prompt is one ``POST /chat/completions``: the text, and each image as an ``image_url``
part holding a data URL (``target.openai.images: send``), or the images' OCR text inside the
prompt for text-only models (``ocr_text``). A batch is sent concurrently (the server's own
continuous batching sees the requests together). Timeouts, retries and error mapping are
:class:`vlmguard.upstream.OpenAIUpstream`'s: each attempt is bounded by the caller's deadline,
only 429/502/503/504 and connection errors are retried.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Coroutine, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from vlmguard.config import TargetConfig
from vlmguard.domain import TargetResult
from vlmguard.errors import DeadlineExceededError, Reason, UnavailableError, VLMGuardError
from vlmguard.target.base import TargetBackend, TargetPrompt, render_user_message
from vlmguard.target.loop import ClientLoop
from vlmguard.upstream import (
    OpenAIUpstream,
    chat_text,
    delta_text,
    image_data_url,
    seconds_left,
)

log = logging.getLogger(__name__)

T = TypeVar("T")


class OpenAITargetBackend(TargetBackend):
    """The target on an OpenAI-compatible server (``target.openai``).

    The client runs on a private event loop in a daemon thread (``generate_batch`` is called
    from worker threads), so connections are reused across batches.

    Args:
        cfg: Target configuration; ``cfg.openai`` holds the server and call settings.
    """

    def __init__(self, cfg: TargetConfig) -> None:
        super().__init__(cfg)
        self.ocfg = cfg.openai
        self.model = self.ocfg.model
        self.name = self.model or "openai"
        self._lock = threading.Lock()
        self._loop = ClientLoop("openai-target", "the openai target")
        self._upstream: OpenAIUpstream | None = None
        #: The httpx transport of the upstream client (None: a connection pool; tests set one).
        self.transport: Any = None

    # ------------------------------------------------------------------ lifecycle

    def load(self) -> None:
        """Start the client; learn the model name from the server when none is configured.

        Raises:
            ConfigError: no ``base_url`` or an unreadable key file.
        """
        with self._lock:
            if self._upstream is None:
                # config errors surface here
                upstream = OpenAIUpstream(self.ocfg, transport=self.transport)
                self._loop.start()
                self._upstream = upstream
        if not self.model:
            self._discover_model()

    def _discover_model(self) -> None:
        """The first model the server lists (best effort: a server that is not up yet is
        asked again on the first call)."""
        assert self._upstream is not None
        try:
            listing = self._run(self._upstream.models(deadline_unix=time.time() + 10), 15)
            first = listing["data"][0]["id"]
        except Exception as e:  # readiness is best effort here
            log.warning("the openai target's model list could not be read (%s); asking "
                        "again on the first call", type(e).__name__)
            return
        self.model = str(first)
        self.name = self.model
        log.info("openai target: model %s at %s", self.model, self.ocfg.base_url)

    def close(self) -> None:
        with self._lock:
            upstream, self._upstream = self._upstream, None
            self._loop.stop(upstream.aclose if upstream is not None else None)

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        return self._loop.run(coro, timeout)

    # --------------------------------------------------------------- generation

    def _content(self, text: str, images: tuple[Any, ...]) -> Any:
        """A user turn's content: the text alone, or each image as an ``image_url`` data-URL
        part followed by the text."""
        if not images:
            return text
        parts: list[dict[str, Any]] = [
            {"type": "image_url", "image_url": {"url": image_data_url(img)}} for img in images]
        parts.append({"type": "text", "text": text})
        return parts

    def build_messages(self, prompt: TargetPrompt) -> list[dict[str, Any]]:
        """The chat messages of one prompt: the earlier turns of its conversation, then the
        last user turn with the text and each image as an ``image_url`` data-URL part (or, for
        text-only models, the images' OCR text; earlier turns' images are then left out)."""
        send = self.ocfg.images == "send"
        messages: list[dict[str, Any]] = [
            {"role": t.role, "content": self._content(t.text, t.images if send else ())}
            for t in prompt.history]
        if send:
            messages.append({"role": "user", "content": self._content(prompt.text,
                                                                        prompt.images)})
        else:
            text = render_user_message(prompt) if prompt.images else prompt.text
            messages.append({"role": "user", "content": text})
        return messages

    def build_body(self, prompt: TargetPrompt) -> dict[str, Any]:
        """The request body of one prompt (zero sampling parameters: the server's default)."""
        p = prompt.params
        body: dict[str, Any] = {
            "model": self.model or "default",
            "messages": self.build_messages(prompt),
            "max_tokens": p.max_new_tokens or self.cfg.max_new_tokens,
        }
        if p.temperature:
            body["temperature"] = p.temperature
        if p.top_p:
            body["top_p"] = p.top_p
        if p.seed:
            body["seed"] = p.seed
        return body

    def generate_batch(self, prompts: Sequence[TargetPrompt]) -> list[TargetResult | VLMGuardError]:
        """One request per prompt, sent concurrently; one result or error per prompt."""
        if not prompts:
            return []
        try:
            self.load()
        except VLMGuardError as e:
            return [e for _ in prompts]
        per_call = self.ocfg.timeout_s * (self.ocfg.retries + 1)
        bound = per_call + self.ocfg.retry_backoff_s * (2 ** (self.ocfg.retries + 1)) + 10
        deadlines = [p.deadline_unix for p in prompts]
        if all(d is not None for d in deadlines):  # no call outlives every caller
            latest = max(d for d in deadlines if d is not None)
            bound = min(bound, max(0.0, latest - time.time()) + 2.0)
        try:
            return self._run(self._generate_all(prompts), timeout=bound)
        except FutureTimeout:
            err = DeadlineExceededError("the target model did not answer in time",
                                        reason=Reason.DEADLINE_EXCEEDED)
            return [err for _ in prompts]

    async def _generate_all(self, prompts: Sequence[TargetPrompt]
                            ) -> list[TargetResult | VLMGuardError]:
        if not self.model and self._upstream is not None:
            try:  # the server was not up at load time
                listing = await self._upstream.models(deadline_unix=time.time() + 10)
                self.model = str(listing["data"][0]["id"])
                self.name = self.model
            except Exception as e:
                log.warning("the openai target's model list could not be read (%s)",
                            type(e).__name__)
        return list(await asyncio.gather(*(self._generate_one(p) for p in prompts)))

    async def _generate_one(self, prompt: TargetPrompt) -> TargetResult | VLMGuardError:
        upstream = self._upstream
        if upstream is None:
            return UnavailableError("the openai target is closed", reason=Reason.TARGET_NOT_READY)
        left = seconds_left(prompt.deadline_unix)
        if left is not None and left <= 0:
            return DeadlineExceededError("the call's deadline passed before the target ran",
                                         reason=Reason.DEADLINE_EXCEEDED)
        body = self.build_body(prompt)
        try:
            if self.ocfg.stream:
                return await self._streamed(upstream, body, prompt.deadline_unix)
            answer = await upstream.chat(body, deadline_unix=prompt.deadline_unix)
            text, finish = chat_text(answer)
        except VLMGuardError as e:
            return e
        except Exception:  # one prompt fails alone
            log.exception("openai target call failed")
            return UnavailableError("the target model failed on this prompt",
                                    reason=Reason.TARGET_FAILED)
        usage = answer.get("usage") or {}
        return TargetResult(
            text=text, model=str(answer.get("model") or self.name), finish_reason=finish,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0))

    async def _streamed(self, upstream: OpenAIUpstream, body: dict[str, Any],
                        deadline_unix: float | None) -> TargetResult:
        body = dict(body, stream_options={"include_usage": True})
        stream = await upstream.stream(body, deadline_unix=deadline_unix)
        pieces: list[str] = []
        finish = "stop"
        model = self.name
        usage: dict[str, Any] = {}
        try:
            async for event in stream.events():
                text, fin, chunk = delta_text(event)
                pieces.append(text)
                if fin:
                    finish = fin
                if chunk is not None:
                    model = str(chunk.get("model") or model)
                    usage = chunk.get("usage") or usage
        finally:
            await stream.aclose()
        return TargetResult(text="".join(pieces), model=model, finish_reason=finish,
                            prompt_tokens=int(usage.get("prompt_tokens") or 0),
                            completion_tokens=int(usage.get("completion_tokens") or 0))

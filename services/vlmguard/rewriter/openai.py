"""Tier 2 on any OpenAI-compatible chat-completions server (vLLM, SGLang, TGI,
``transformers serve``, hosted APIs), through httpx."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from vlmguard.config import RewriterConfig
from vlmguard.errors import ConfigError, Reason, UnavailableError, VLMGuardError
from vlmguard.rewriter.backends import (
    REWRITE_STOP,
    Generation,
    Messages,
    close_rewrite,
    cut_at_stop,
)

log = logging.getLogger(__name__)


class OpenAIRewriterBackend:
    """Tier 2 on an OpenAI-compatible ``/chat/completions`` endpoint, through httpx.

    Each conversation is one request (``temperature`` 0, ``stop`` = the closing delimiter,
    ``max_tokens``); a batch runs concurrently, at most ``openai.max_concurrency`` at once, so
    the server's own continuous batching sees them together. With ``rewriter.images`` the
    request's images go in the user message as ``image_url`` parts (PNG data URLs), as the
    chat-completions API takes them.

    Args:
        cfg: Rewriter configuration (``openai`` section, ``timeout_s``).
        environ: Environment for the API key (default ``os.environ``).
    """

    def __init__(self, cfg: RewriterConfig, environ: Mapping[str, str] | None = None) -> None:
        self.cfg = cfg
        oc = cfg.openai
        if not oc.base_url:
            raise ConfigError("rewriter.backend 'openai' needs rewriter.openai.base_url "
                              "(e.g. http://127.0.0.1:8000/v1)")
        if not oc.base_url.startswith(("http://", "https://")):
            raise ConfigError("rewriter.openai.base_url must start with http:// or https://")
        self._url = oc.base_url.rstrip("/") + "/chat/completions"
        self._model = oc.model or cfg.model_path or "default"
        env = os.environ if environ is None else environ
        key = env.get(oc.api_key_env, "").strip()
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client: Any = None
        self._sem: asyncio.Semaphore | None = None

    @property
    def name(self) -> str:
        return f"openai:{self._model}"

    @property
    def reads_images(self) -> bool:
        """Whether the endpoint is sent the images (``rewriter.images``)."""
        return self.cfg.images

    def load(self) -> None:
        """Nothing to load: the endpoint is checked by the first call (failures fall back)."""
        import httpx  # noqa: F401 - fail at startup, not on the first call, if it is missing

    def _client_for_loop(self) -> Any:
        import httpx

        if self._client is None:
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.cfg.timeout_s),
                                             headers=self._headers)
            self._sem = asyncio.Semaphore(self.cfg.openai.max_concurrency)
        return self._client

    async def generate(
        self, conversations: Sequence[Messages], *, max_new_tokens: int
    ) -> list[Generation | VLMGuardError]:
        client = self._client_for_loop()
        return list(await asyncio.gather(
            *(self._one(client, list(c), max_new_tokens) for c in conversations)))

    async def _one(self, client: Any, messages: list[Mapping[str, Any]],
                   max_new_tokens: int) -> Generation | VLMGuardError:
        import httpx

        body = {"model": self._model, "messages": [dict(m) for m in messages],
                "max_tokens": max_new_tokens, "temperature": 0.0, "stream": False,
                "stop": [REWRITE_STOP]}
        assert self._sem is not None
        try:
            async with self._sem:
                resp = await client.post(self._url, json=body)
        except httpx.TimeoutException:
            return UnavailableError("the tier-2 rewriter endpoint timed out",
                                    reason=Reason.REWRITER_TIMEOUT)
        except httpx.HTTPError as e:
            log.warning("tier-2 endpoint request failed: %s", type(e).__name__)
            return UnavailableError("the tier-2 rewriter endpoint is unreachable",
                                    reason=Reason.REWRITER_FAILED)
        if resp.status_code != 200:
            log.warning("tier-2 endpoint answered HTTP %d", resp.status_code)
            return UnavailableError(f"the tier-2 rewriter endpoint answered {resp.status_code}",
                                    reason=Reason.REWRITER_FAILED)
        try:
            data = resp.json()
            choice = data["choices"][0]
            text = choice["message"]["content"] or ""
            finish = str(choice.get("finish_reason") or "stop")
            usage = data.get("usage") or {}
            prompt_tokens = int(usage.get("prompt_tokens") or 0)
            completion_tokens = int(usage.get("completion_tokens") or 0)
        except (ValueError, KeyError, IndexError, TypeError):
            return UnavailableError("the tier-2 rewriter endpoint sent a malformed answer",
                                    reason=Reason.REWRITER_FAILED)
        if not isinstance(text, str):
            return UnavailableError("the tier-2 rewriter endpoint sent a malformed answer",
                                    reason=Reason.REWRITER_FAILED)
        text, found = cut_at_stop(close_rewrite(text, finish))
        return Generation(text=text, model=self.name,
                          finish_reason="stop" if found or finish == "stop" else "length",
                          prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if loop is not None:
                loop.create_task(client.aclose())
            else:
                try:
                    asyncio.run(client.aclose())
                except RuntimeError:  # its loop is gone: the sockets go with the process
                    log.debug("tier-2 endpoint client closed without its loop")

"""Tier-2 rewriter backends: how the generative rewriter reaches its model.

A backend turns a batch of chat conversations (the messages of
:func:`vlmguard.rewriter.format.build_rewriter_messages`) into one generation (or one error) per
conversation. It stops each output at the closing ``</rewrite>`` delimiter (kept in the text) or
at ``max_new_tokens``. Parsing and the fallback are the role's job
(:mod:`vlmguard.rewriter.generative`), never the backend's.

Backends by name (:data:`REWRITER_BACKENDS`, imported lazily so the gateway imports torch only
when the configured backend needs it): ``transformers`` (local, batched, CPU/GPU),
and ``openai`` (any OpenAI-compatible chat-completions server: vLLM, SGLang,
``transformers serve``, hosted APIs). A full ``module:Class`` path names any other
implementation.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from vlmguard.config import RewriterConfig
from vlmguard.domain import TargetResult
from vlmguard.errors import ConfigError, Reason, UnavailableError, VLMGuardError
from vlmguard.plugins import resolve_backend_class

log = logging.getLogger(__name__)

#: The closing delimiter of the output format: generation stops right after it.
REWRITE_STOP = "</rewrite>"
_REWRITE_OPEN = "<rewrite>"

#: One conversation: ``[{"role": ..., "content": ...}, ...]``.
Messages = Sequence[Mapping[str, str]]
#: One generation: the text (up to and including the stop delimiter), finish reason
#: (``stop``, ``length``, or ``budget`` when guided decoding closed the rewrite because the
#: token budget ran out) and token counts. The target's result type is reused so that it
#: travels through the Redis queue with the existing codec.
Generation = TargetResult

#: Built-in rewriter backends by name.
REWRITER_BACKENDS: dict[str, str] = {
    "transformers": "vlmguard.rewriter.hf:HFRewriterBackend",
    "openai": "vlmguard.rewriter.backends:OpenAIRewriterBackend",
}


@runtime_checkable
class RewriterBackend(Protocol):
    """A tier-2 model. :meth:`load` and :meth:`close` block (call them from a thread);
    :meth:`generate` is a coroutine that never blocks the event loop."""

    @property
    def name(self) -> str:
        """Model identifier (metrics label, :attr:`Generation.model`)."""

    def load(self) -> None:
        """Load the model or check the endpoint (blocking, idempotent).

        Raises:
            ConfigError: bad model path or settings.
        """

    async def generate(
        self, conversations: Sequence[Messages], *, max_new_tokens: int
    ) -> list[Generation | VLMGuardError]:
        """One generation (or one error) per conversation, in order."""

    def close(self) -> None:
        """Release the model or connections."""


def close_rewrite(text: str, finish_reason: str) -> str:
    """Restore the closing delimiter that a server's stop-sequence handling cut off.

    OpenAI-compatible servers leave the matched stop sequence out of the text; local generation
    keeps it. Both then look the same to the parser.
    """
    if (finish_reason == "stop" and _REWRITE_OPEN in text
            and not text.rstrip().endswith(REWRITE_STOP)):
        return text.rstrip() + REWRITE_STOP
    return text


def cut_at_stop(text: str) -> tuple[str, bool]:
    """``text`` up to and including the first closing delimiter, and whether one was found."""
    i = text.find(REWRITE_STOP)
    if i < 0:
        return text, False
    return text[: i + len(REWRITE_STOP)], True


class OpenAIRewriterBackend:
    """Tier 2 on an OpenAI-compatible ``/chat/completions`` endpoint, through httpx.

    Each conversation is one request (``temperature`` 0, ``stop`` = the closing delimiter,
    ``max_tokens``); a batch runs concurrently, at most ``openai.max_concurrency`` at once, so
    the server's own continuous batching sees them together.

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

    async def _one(self, client: Any, messages: list[Mapping[str, str]],
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


def default_demo_dir() -> str:
    """The packaged demo rewriter directory, or '' when this build ships none."""
    from importlib import resources

    try:
        d = resources.files("vlmguard.data").joinpath("rewriter_demo")
        if d.is_dir() and (d.joinpath("vlmguard_rewriter.json").is_file()
                           or d.joinpath("config.json").is_file()):
            return str(d)
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
        pass
    return ""


def build_rewriter_backend(cfg: RewriterConfig) -> RewriterBackend:
    """Instantiate the configured tier-2 backend (not loaded yet).

    Raises:
        ConfigError: unknown backend, or a missing optional dependency.
    """
    cls, path = resolve_backend_class("rewriter.backend", cfg.backend, REWRITER_BACKENDS)
    backend = cls(cfg)
    if not isinstance(backend, RewriterBackend):
        raise ConfigError(f"rewriter.backend: {path} does not implement RewriterBackend")
    return backend

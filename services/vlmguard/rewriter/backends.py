"""Tier-2 rewriter backends: how the generative rewriter reaches its model.

A backend turns a batch of chat conversations (the messages of
:func:`vlmguard.rewriter.format.build_rewriter_messages`) into one generation (or one error) per
conversation. It stops each output at the closing ``</rewrite>`` delimiter (kept in the text) or
at ``max_new_tokens``. Parsing and the fallback are the role's job
(:mod:`vlmguard.rewriter.generative`), never the backend's.

A backend whose ``reads_images`` attribute is true gets the request's images as image parts of
the user message (:mod:`vlmguard.rewriter.vlm`: OpenAI-style ``image_url`` parts with data URLs,
before the text); every other backend gets text-only messages, whose user message carries the
images' OCR text either way.

Backends by name (:data:`REWRITER_BACKENDS`, imported lazily so the gateway imports torch only when
the configured backend needs it): ``transformers`` (local, batched, CPU/GPU), and ``openai`` (any
OpenAI-compatible chat-completions server: vLLM, SGLang, ``transformers serve``, hosted APIs). A
full ``module:Class`` path names any other implementation.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from vlmguard.config import RewriterConfig
from vlmguard.domain import TargetResult
from vlmguard.errors import ConfigError, VLMGuardError
from vlmguard.plugins import resolve_backend_class

log = logging.getLogger(__name__)

#: The closing delimiter of the output format: generation stops right after it.
REWRITE_STOP = "</rewrite>"
_REWRITE_OPEN = "<rewrite>"

#: One conversation: ``[{"role": ..., "content": ...}, ...]``; a content is a string, or for a
#: backend that reads images, a list of OpenAI-style parts (``text`` and ``image_url``).
Messages = Sequence[Mapping[str, Any]]
#: One generation: the text (up to and including the stop delimiter), finish reason
#: (``stop``, ``length``, or ``budget`` when guided decoding closed the rewrite because the
#: token budget ran out) and token counts. The target's result type is reused so that it
#: travels through the Redis queue with the existing codec.
Generation = TargetResult

#: Built-in rewriter backends by name.
REWRITER_BACKENDS: dict[str, str] = {
    "transformers": "vlmguard.rewriter.hf:HFRewriterBackend",
    "openai": "vlmguard.rewriter.openai:OpenAIRewriterBackend",
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


def reads_images(backend: Any) -> bool:
    """Whether ``backend`` takes image parts in its messages (its ``reads_images``; a backend
    without the attribute gets text-only messages)."""
    return bool(getattr(backend, "reads_images", False))


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

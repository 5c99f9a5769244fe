"""Target backends: how VLMGuard reaches the target VLM.

A backend turns a batch of prompts into one result (or one error) per prompt. Backends are
picked by name from :data:`TARGET_BACKENDS` (import paths, imported lazily so the gateway never
imports torch unless the configured backend needs it) or by a full ``module:Class`` path.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

from vlmguard.config import TargetConfig
from vlmguard.domain import ChatTurn, GenerationParams, ImageInput, TargetResult
from vlmguard.errors import ConfigError, FailedPreconditionError, Reason, VLMGuardError
from vlmguard.plugins import resolve_backend_class

#: Built-in target backends by name.
TARGET_BACKENDS: dict[str, str] = {
    "none": "vlmguard.target.base:NoneTargetBackend",
    "smollm2": "vlmguard.target.smollm2:SmolLM2Backend",
    "triton": "vlmguard.target.triton:TritonBackend",
    "openai": "vlmguard.target.openai:OpenAITargetBackend",
}


@dataclass(frozen=True)
class TargetPrompt:
    """One prompt for the target.

    Attributes:
        text: The (possibly rewritten) text prompt.
        images: The images, unchanged, for backends that take images.
        image_texts: Text read from each image (OCR), for text-only models that get the image
            rendered as its text.
        params: Sampling parameters (zeros mean the backend's defaults).
        deadline_unix: The caller's deadline as wall-clock seconds (``time.time()``; it crosses
            processes through the Redis queue), or None; remote backends bound their calls by it.
        history: Earlier turns of the conversation (system prompts included), oldest first,
            for backends that take conversations (``openai``); ``text`` is the last user turn.
    """

    text: str
    images: tuple[ImageInput, ...] = ()
    image_texts: tuple[str, ...] = ()
    params: GenerationParams = field(default_factory=GenerationParams)
    deadline_unix: float | None = None
    history: tuple[ChatTurn, ...] = ()


class TargetBackend(ABC):
    """A target model. Subclasses implement :meth:`load` and :meth:`generate_batch`.

    Both are blocking and are called from worker threads, never on the event loop.
    """

    #: Model identifier reported in responses.
    name: str = "target"

    def __init__(self, cfg: TargetConfig) -> None:
        self.cfg = cfg

    @property
    def enabled(self) -> bool:
        """False for the 'none' backend (guard only)."""
        return True

    @abstractmethod
    def load(self) -> None:
        """Load the model (blocking). Called once before the first batch."""

    @abstractmethod
    def generate_batch(
        self, prompts: Sequence[TargetPrompt]
    ) -> list[TargetResult | VLMGuardError]:
        """Generate one answer per prompt, in order; a failing prompt gets its own error."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""


class NoneTargetBackend(TargetBackend):
    """Guard only: the product calls its own VLM. Generate answers FAILED_PRECONDITION."""

    name = "none"

    @property
    def enabled(self) -> bool:
        return False

    def load(self) -> None:
        return None

    def generate_batch(
        self, prompts: Sequence[TargetPrompt]
    ) -> list[TargetResult | VLMGuardError]:
        return [
            FailedPreconditionError(
                "no target model is configured on this server (target.backend is 'none')",
                reason=Reason.TARGET_NOT_CONFIGURED,
            )
            for _ in prompts
        ]


def build_target_backend(cfg: TargetConfig) -> TargetBackend:
    """Instantiate the configured backend (not loaded yet).

    Raises:
        ConfigError: unknown backend name, bad import path, or missing optional dependency.
    """
    cls, path = resolve_backend_class("target.backend", cfg.backend, TARGET_BACKENDS)
    if not issubclass(cls, TargetBackend):
        raise ConfigError(f"target.backend: {path} is not a TargetBackend class")
    backend: TargetBackend = cls(cfg)
    return backend


def render_user_message(prompt: TargetPrompt) -> str:
    """The user turn for a text-only model: each image as its OCR text, then the prompt text."""
    n_images = max(len(prompt.images), len(prompt.image_texts))
    parts: list[str] = []
    for i in range(n_images):
        ocr = prompt.image_texts[i].strip() if i < len(prompt.image_texts) else ""
        if ocr:
            parts.append(f"[Image {i + 1} contains the text: {ocr}]")
        else:
            parts.append(f"[Image {i + 1}: no readable text]")
    parts.append(prompt.text)
    return "\n".join(parts)

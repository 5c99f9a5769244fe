"""Chat models of synthesis that run locally: a causal LM through transformers
(:class:`TransformersChat`) and a model on Triton through the target backend
(:class:`TritonChat`)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import threading
import time
from typing import Any

from vlmguard.domain import GenerationParams, ImageInput
from vlmguard.errors import VLMGuardError
from vlmguard_training.synthesis.chat_teacher import ClientStats, TeacherCallError
from vlmguard_training.synthesis.prompts import (
    Message,
)
from vlmguard_training.synthesis.teacher import StageUsage


class TransformersChat:
    """A local causal LM (a ``save_pretrained`` directory) behind the :class:`ChatBackend` API.

    Text-only: image parts of a message are dropped. One generation at a time (a lock), run in a
    worker thread; no constrained decoding (the prompt carries the schema).

    Args:
        model_path: Model directory.
        max_tokens: Default new-token cap.
    """

    kind = "transformers"

    def __init__(self, model_path: str, max_tokens: int = 512) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model = os.path.basename(os.path.normpath(model_path))
        self._tok: Any = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
        self._lm = AutoModelForCausalLM.from_pretrained(model_path, local_files_only=True,
                                                        dtype=torch.float32)
        self._lm.eval()
        self._torch = torch
        self._max_tokens = max_tokens
        self._lock = threading.Lock()
        self.stats = ClientStats()

    def _generate(self, messages: list[Message], max_tokens: int) -> tuple[str, int, int]:
        flat = [{"role": m["role"], "content": m["content"] if isinstance(m["content"], str)
                 else "\n".join(p.get("text", "") for p in m["content"]
                                if p.get("type") == "text")} for m in messages]
        ids: Any = self._tok.apply_chat_template(flat, add_generation_prompt=True,
                                                 return_tensors="pt", return_dict=True)
        with self._lock, self._torch.inference_mode():
            out = self._lm.generate(**ids, max_new_tokens=max_tokens, do_sample=False)
        n_in = int(ids["input_ids"].shape[1])
        new = out[0, n_in:]
        return str(self._tok.decode(new, skip_special_tokens=True)), n_in, int(new.shape[0])

    async def chat(self, messages: list[Message], *, usage: StageUsage,
                   schema: tuple[str, dict[str, Any]] | None = None,
                   max_tokens: int | None = None) -> str:
        """One completion's text (see :class:`ChatBackend`)."""
        t0 = time.perf_counter()
        usage.requests += 1
        self.stats.requests += 1
        try:
            text, p, c = await asyncio.to_thread(self._generate, messages,
                                                 max_tokens or self._max_tokens)
        finally:
            usage.latency_ms += (time.perf_counter() - t0) * 1000
        usage.prompt_tokens += p
        usage.completion_tokens += c
        self.stats.prompt_tokens += p
        self.stats.completion_tokens += c
        return text

    async def aclose(self) -> None:
        """Nothing to close."""


def _image_from_data_url(url: str) -> ImageInput | None:
    """The image of a ``data:<mime>;base64,...`` URL (None for other URLs or bad data)."""
    if not url.startswith("data:") or ";base64," not in url:
        return None
    head, _, data = url.partition(";base64,")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None
    return ImageInput(raw, head[len("data:"):])


class TritonChat:
    """A teacher model on NVIDIA Triton (the ``target_vlm`` model repository of
    ``vlmguard triton-repo``), reached through the target backend interface
    (:class:`vlmguard.target.triton.TritonBackend`) behind the :class:`ChatBackend` API.

    The model applies its own chat template to one user turn, so the system message is put
    first in that turn; images (data URLs) are sent to a VLM (or given as OCR-free text-only
    prompts to a causal LM, as the backend decides). No constrained decoding: the prompt carries
    the schema and the stage parser validates. Concurrency and retries on UNAVAILABLE are the
    backend's (``target.triton`` settings).

    Args:
        settings: ``target.triton`` fields (url, model_name, timeout_s, retries, ...).
        max_tokens: Default new-token cap.
    """

    kind = "triton"

    def __init__(self, settings: dict[str, Any], max_tokens: int = 512) -> None:
        from vlmguard.config import TargetConfig, TritonTargetConfig
        from vlmguard.target.triton import TritonBackend

        tcfg = TritonTargetConfig.model_validate(settings)
        self._backend = TritonBackend(TargetConfig(backend="triton", triton=tcfg))
        self.model = tcfg.model_name
        self._max_tokens = max_tokens
        self.stats = ClientStats()

    @staticmethod
    def _prompt(messages: list[Message]) -> tuple[str, tuple[ImageInput, ...]]:
        texts: list[str] = []
        images: list[ImageInput] = []
        for m in messages:
            content = m["content"]
            if isinstance(content, str):
                texts.append(content)
                continue
            for part in content:
                if part.get("type") == "text":
                    texts.append(str(part.get("text", "")))
                elif part.get("type") == "image_url":
                    img = _image_from_data_url(str((part.get("image_url") or {}).get("url", "")))
                    if img is not None:
                        images.append(img)
        return "\n\n".join(t for t in texts if t), tuple(images)

    async def chat(self, messages: list[Message], *, usage: StageUsage,
                   schema: tuple[str, dict[str, Any]] | None = None,
                   max_tokens: int | None = None) -> str:
        """One completion's text (see :class:`ChatBackend`).

        Raises:
            TeacherCallError: Triton answered with an error (after the backend's retries).
        """
        from vlmguard.target.base import TargetPrompt

        text, images = self._prompt(messages)
        prompt = TargetPrompt(text, images, params=GenerationParams(
            max_new_tokens=max_tokens or self._max_tokens))
        t0 = time.perf_counter()
        usage.requests += 1
        self.stats.requests += 1
        try:
            (res,) = await asyncio.to_thread(self._backend.generate_batch, [prompt])
        finally:
            usage.latency_ms += (time.perf_counter() - t0) * 1000
        if isinstance(res, VLMGuardError):
            self.stats.failures += 1
            self.stats.by_status[res.reason] = self.stats.by_status.get(res.reason, 0) + 1
            raise TeacherCallError(f"triton teacher: {res.reason}: {res.message}")
        usage.prompt_tokens += res.prompt_tokens
        usage.completion_tokens += res.completion_tokens
        self.stats.prompt_tokens += res.prompt_tokens
        self.stats.completion_tokens += res.completion_tokens
        return res.text

    async def aclose(self) -> None:
        """Close the backend's channel."""
        await asyncio.to_thread(self._backend.close)

"""Tier 2 with the image: the request's images as image parts of the rewriter's messages, and
the processor of an image-text-to-text rewriter (Qwen2-VL family).

The rewriter's user message carries the images as OpenAI-style parts (``{"type": "image_url",
"image_url": {"url": "data:image/png;base64,..."}}``) before its text, the layout the trainer
gives a VLM its samples in (TRL puts the image placeholders first in the first user message).
The ``openai`` backend sends them as they are; the ``transformers`` backend turns them into the
processor's image placeholders and pixel values. Each image is reduced to
``rewriter.image_max_side`` and re-encoded as PNG first: the rewriter model reads a few hundred
pixels a side, and the request's original bytes (up to ``limits.max_image_bytes`` each) need
not travel to it.

The Qwen2-VL processor here drops the video slot: the stock one type-checks a video processor
that needs torchvision, which does not import on CPU-only machines; :func:`register_processor`
must run before ``AutoProcessor.from_pretrained``, or AutoProcessor silently returns only the
tokenizer. The trainer (``vlmguard_training.rewriter.vlm``) uses the same class.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vlmguard.config import LimitsConfig
from vlmguard.domain import ImageInput
from vlmguard.errors import VLMGuardError
from vlmguard.imaging import decode_reduced

log = logging.getLogger(__name__)

#: The data-URL prefix of the image parts this module writes.
PNG_DATA_URL = "data:image/png;base64,"


def image_part(png: bytes) -> dict[str, Any]:
    """An OpenAI-style image part holding ``png`` as a data URL."""
    return {"type": "image_url",
            "image_url": {"url": PNG_DATA_URL + base64.b64encode(png).decode("ascii")}}


def encode_for_rewriter(images: Sequence[ImageInput], limits: LimitsConfig,
                        max_side: int) -> list[bytes]:
    """Each image decoded, reduced so its longest side is at most ``max_side``, and encoded as
    PNG. An image that does not decode is left out (tier 1 already checked every image, so
    that means its bytes changed on the way; the rewriter still has its OCR text)."""
    from PIL import Image

    out: list[bytes] = []
    for i, img in enumerate(images):
        try:
            arr = decode_reduced(img, i, limits, max_side=max_side).array
        except VLMGuardError as e:
            log.warning("image %d not given to tier 2: %s", i, e.reason)
            continue
        im = Image.fromarray(arr)
        if max(im.size) > max_side:
            scale = max_side / max(im.size)
            im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))),
                           Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        im.save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def with_images(messages: Sequence[Mapping[str, Any]], pngs: Sequence[bytes]
                ) -> list[dict[str, Any]]:
    """``messages`` with the images as parts before the text of the first user message (the
    other messages unchanged)."""
    out = [dict(m) for m in messages]
    if not pngs:
        return out
    for m in out:
        if m.get("role") == "user":
            text = m.get("content")
            parts: list[dict[str, Any]] = [image_part(p) for p in pngs]
            if isinstance(text, str):
                parts.append({"type": "text", "text": text})
            elif isinstance(text, list):
                parts.extend(text)
            m["content"] = parts
            break
    return out


def content_text(content: Any) -> str:
    """The text of a message's content: the string itself, or its text parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content
                       if isinstance(p, Mapping) and p.get("type") == "text")
    return ""


def content_images(content: Any) -> list[bytes]:
    """The image bytes of a message's data-URL image parts, in order.

    Raises:
        ValueError: an image part that is not a base64 data URL.
    """
    if not isinstance(content, list):
        return []
    out: list[bytes] = []
    for p in content:
        if not isinstance(p, Mapping) or p.get("type") != "image_url":
            continue
        url = str((p.get("image_url") or {}).get("url", ""))
        head, sep, data = url.partition(",")
        if not sep or not head.startswith("data:image/") or not head.endswith(";base64"):
            raise ValueError("an image part is not a base64 data URL")
        try:
            out.append(base64.b64decode(data, validate=True))
        except (binascii.Error, ValueError) as e:
            raise ValueError("an image part is not valid base64") from e
    return out


def processor_messages(messages: Sequence[Mapping[str, Any]]
                       ) -> tuple[list[dict[str, Any]], list[bytes]]:
    """Messages as an image-text-to-text processor's chat template takes them (every content a
    list of parts, each image a ``{"type": "image"}`` placeholder, as the trainer renders its
    samples) and the images in placeholder order."""
    out: list[dict[str, Any]] = []
    images: list[bytes] = []
    for m in messages:
        content = m.get("content")
        parts: list[dict[str, Any]] = []
        if isinstance(content, str):
            parts.append({"type": "text", "text": content})
        elif isinstance(content, list):
            pngs = iter(content_images(content))
            for p in content:
                if not isinstance(p, Mapping):
                    continue
                if p.get("type") == "image_url":
                    images.append(next(pngs))
                    parts.append({"type": "image"})
                elif p.get("type") == "text":
                    parts.append({"type": "text", "text": str(p.get("text", ""))})
        out.append({"role": m.get("role"), "content": parts})
    return out, images


def text_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Messages with their text only (for a text model: the images' OCR text is already in
    the user message)."""
    return [{"role": str(m.get("role")), "content": content_text(m.get("content"))}
            for m in messages]


def pil_images(pngs: Sequence[bytes]) -> list[Any]:
    """RGB PIL images of encoded images."""
    from PIL import Image

    out = []
    for data in pngs:
        with Image.open(io.BytesIO(data)) as im:
            out.append(im.convert("RGB"))
    return out


# -- the Qwen2-VL processor ----------------------------------------------------------------------

#: Special tokens the Qwen2-VL chat template and processor use.
QWEN2_VL_SPECIAL_TOKENS = ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                           "<|image_pad|>", "<|video_pad|>")


def _processor_class() -> type:
    from transformers.models.qwen2_vl.processing_qwen2_vl import Qwen2VLProcessor

    class Qwen2VLImageOnlyProcessor(Qwen2VLProcessor):  # type: ignore[misc]
        """Qwen2-VL processor without the video processor (images and text only)."""

        def __init__(self, image_processor: Any = None, tokenizer: Any = None,
                     chat_template: str | None = None, **kwargs: Any) -> None:
            super().__init__(image_processor, tokenizer, None, chat_template=chat_template,
                             **kwargs)

    return Qwen2VLImageOnlyProcessor


_REGISTERED: dict[str, type] = {}


def register_processor() -> type:
    """Register the image-only Qwen2-VL processor for Qwen2-VL configs (idempotent).

    Returns:
        The processor class.
    """
    if "cls" not in _REGISTERED:
        import transformers
        from transformers import AutoProcessor, Qwen2VLConfig

        cls = _processor_class()
        cls.__name__ = cls.__qualname__ = "Qwen2VLImageOnlyProcessor"
        # AutoProcessor resolves processor_class names through the transformers namespace.
        setattr(transformers, "Qwen2VLImageOnlyProcessor", cls)  # noqa: B010
        AutoProcessor.register(Qwen2VLConfig, cls, exist_ok=True)
        _REGISTERED["cls"] = cls
    return _REGISTERED["cls"]


def load_processor(path: str | Path) -> Any:
    """The processor of an image-text-to-text model directory (the image-only Qwen2-VL one
    registered first)."""
    from transformers import AutoProcessor

    register_processor()
    return AutoProcessor.from_pretrained(str(path), local_files_only=True)


def is_vlm_dir(path: Path) -> bool:
    """Whether a model directory holds an image-text-to-text model: it has an image
    processor's configuration (``preprocessor_config.json``, or an ``image_processor`` in the
    ``processor_config.json`` newer transformers write)."""
    if (path / "preprocessor_config.json").is_file():
        return True
    try:
        saved = json.loads((path / "processor_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(saved, dict) and "image_processor" in saved

"""Tier 2 with the image: image parts in the rewriter's messages, what the rewrite stage gives a
backend that reads images and one that does not, and the processor's view of the messages."""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import Sequence
from typing import Any

import pytest
from PIL import Image

from vlmguard.config import LimitsConfig, RewriterConfig, VLMGuardConfig
from vlmguard.domain import ImageInput, ImageText, RewriteItem, RewriterEvidence
from vlmguard.errors import VLMGuardError
from vlmguard.metrics import Metrics
from vlmguard.queue.codec import decode, encode
from vlmguard.rewriter.backends import Generation, Messages, reads_images
from vlmguard.rewriter.vlm import (
    PNG_DATA_URL,
    content_images,
    content_text,
    encode_for_rewriter,
    processor_messages,
    text_messages,
    with_images,
)
from vlmguard.stages import RewriterRuntime


def png(colour: str, size: tuple[int, int] = (40, 30)) -> ImageInput:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return ImageInput(buf.getvalue())


MESSAGES = [{"role": "system", "content": "sys"}, {"role": "user", "content": "the request"}]


def test_images_go_before_the_text_of_the_user_message() -> None:
    out = with_images(MESSAGES, [b"a", b"b"])
    assert out[0] == MESSAGES[0]
    parts = out[1]["content"]
    assert [p["type"] for p in parts] == ["image_url", "image_url", "text"]
    assert parts[0]["image_url"]["url"] == PNG_DATA_URL + base64.b64encode(b"a").decode()
    assert content_text(parts) == "the request" and content_images(parts) == [b"a", b"b"]
    assert MESSAGES[1]["content"] == "the request"  # the input is not changed
    assert with_images(MESSAGES, []) == MESSAGES


def test_processor_view_has_placeholders_in_order_and_text_view_drops_images() -> None:
    msgs, images = processor_messages(with_images(MESSAGES, [b"a", b"b"]))
    assert msgs[0] == {"role": "system", "content": [{"type": "text", "text": "sys"}]}
    assert msgs[1]["content"] == [{"type": "image"}, {"type": "image"},
                                  {"type": "text", "text": "the request"}]
    assert images == [b"a", b"b"]
    assert text_messages(with_images(MESSAGES, [b"a"])) == MESSAGES


def test_only_base64_data_urls_are_read() -> None:
    with pytest.raises(ValueError):
        content_images([{"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}])
    with pytest.raises(ValueError):
        content_images([{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@"}}])


def test_images_are_reduced_and_reencoded_and_broken_ones_left_out() -> None:
    out = encode_for_rewriter([png("red", (1000, 400)), ImageInput(b"\x89PNG\r\n\x1a\nbroken"),
                               png("blue")], LimitsConfig(), 200)
    assert len(out) == 2
    with Image.open(io.BytesIO(out[0])) as im:
        assert im.format == "PNG" and im.size == (200, 80)
    with Image.open(io.BytesIO(out[1])) as im:
        assert im.size == (40, 30)  # small images keep their size


class Recording:
    """A backend that records the conversations it gets."""

    def __init__(self, images: bool | None) -> None:
        if images is not None:
            self.reads_images = images
        self.got: list[Messages] = []

    @property
    def name(self) -> str:
        return "recording"

    def load(self) -> None:
        pass

    async def generate(self, conversations: Sequence[Messages], *,
                       max_new_tokens: int) -> list[Generation | VLMGuardError]:
        self.got += list(conversations)
        return [Generation(text="x", model="recording") for _ in conversations]

    def close(self) -> None:
        pass


def _stage(backend: Recording, images: bool = True) -> list[Messages]:
    cfg = VLMGuardConfig(rewriter=RewriterConfig(kind="generative", images=images))
    rt = RewriterRuntime(backend, cfg, Metrics())
    ev = RewriterEvidence((ImageText(0, "OCR"),), (), 0.7)
    # Through the Redis codec: the images travel with the item.
    items: list[Any] = [decode(encode(RewriteItem("a", "q", ev, (png("red"),)))),
                        RewriteItem("b", "q", RewriterEvidence(), ())]
    asyncio.run(rt.handle(items))
    return backend.got


def test_the_stage_gives_images_only_to_a_backend_that_reads_them() -> None:
    got = _stage(Recording(True))
    assert [p["type"] for p in got[0][1]["content"]] == ["image_url", "text"]
    assert "OCR" in content_text(got[0][1]["content"])  # the OCR text stays in the text
    assert isinstance(got[1][1]["content"], str)  # no images: a plain message
    for backend in (Recording(False), Recording(None)):
        assert not reads_images(backend)
        assert all(isinstance(c[1]["content"], str) for c in _stage(backend))
    assert all(isinstance(c[1]["content"], str) for c in _stage(Recording(True), images=False))

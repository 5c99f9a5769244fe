"""Test helpers: image builders and gRPC error inspection."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

import grpc
import numpy as np
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from PIL import Image, ImageDraw, ImageFont


def png_bytes(size: tuple[int, int] = (64, 48), color: str = "white", mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, "PNG")
    return buf.getvalue()


def text_image(lines: list[str], size: tuple[int, int] = (760, 360), fmt: str = "PNG") -> bytes:
    """A white image with black typed text (a harmless stand-in for typographic images)."""
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont
    try:
        font = ImageFont.truetype("DejaVuSans-Bold.ttf", 34)
    except OSError:
        font = ImageFont.load_default(size=34)
    y = 20
    for line in lines:
        draw.text((20, y), line, fill="black", font=font)
        y += 50
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def error_reason(err: grpc.RpcError) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    """(code, ErrorInfo.reason, ErrorInfo.metadata) of a failed call."""
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    reason, meta = "", {}
    if status is not None:
        for d in status.details:
            if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                d.Unpack(info)
                reason, meta = info.reason, dict(info.metadata)
    return err.code(), reason, meta  # type: ignore[attr-defined]


class KeywordModel:
    """Stand-in tier-1 embedder + risk head in one, scoring text with a rule.

    The 'embedding' is the row index of the text, so ``predict`` can look the text up.

    Args:
        categories: Head category ids.
        score: ``text -> (overall, {category: score})`` for one text.
    """

    name = "kw"
    version = "test"

    def __init__(
        self,
        categories: list[str],
        score: Callable[[str], tuple[float, dict[str, float]]],
    ) -> None:
        self.categories = categories
        self._score = score
        self.texts: list[str] = []

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        start = len(self.texts)
        self.texts += list(texts)
        return np.arange(start, start + len(texts), dtype=np.float32)[:, None]

    def predict(self, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        overall = np.zeros(len(emb))
        per = np.full((len(emb), len(self.categories)), 0.01)
        for row, idx in enumerate(emb[:, 0].astype(int)):
            o, cats = self._score(self.texts[idx].lower())
            overall[row] = o
            for cat, v in cats.items():
                per[row, self.categories.index(cat)] = v
        return overall, per

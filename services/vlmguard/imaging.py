"""Safe image handling: format sniffing, size and pixel limits, decoding.

Two steps so the gateway stays cheap: :func:`check_image` reads only the header (format and
dimensions) and enforces limits before any pixel is decoded (decompression bombs), and
:func:`decode_image` decodes to an RGB array in a worker thread. Every failure is an
``InvalidArgumentError`` with a stable reason; nothing here crashes on hostile bytes.

Cost is counted in pixels, not bytes: a single-colour 5000x5000 PNG is 90 KB on the wire and
75 MB once decoded. :func:`check_images` holds a request to ``limits.max_request_pixels``, and
:func:`decode_image` with ``max_side`` never keeps more than the analyzer reads: JPEG is decoded
at a reduced DCT scale (``Image.draft``, the full raster never exists), other formats are
reduced by an integer box filter right after decoding, before any RGB copy is made.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from vlmguard.config import LimitsConfig
from vlmguard.domain import ImageInput
from vlmguard.errors import InvalidArgumentError, Reason

#: Accepted formats: PIL format name -> MIME type.
FORMATS: dict[str, str] = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "WEBP": "image/webp",
    "GIF": "image/gif",
}
_MIME_ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg", "image/x-png": "image/png"}

_MAGIC: list[tuple[bytes, str]] = [
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
]


@dataclass(frozen=True)
class ImageInfo:
    """Header facts of an accepted image."""

    index: int
    format: str
    mime_type: str
    width: int
    height: int
    num_bytes: int
    sha256: str


def sniff_format(data: bytes) -> str | None:
    """The PIL format name from magic bytes, or None when not an accepted format."""
    for magic, fmt in _MAGIC:
        if data.startswith(magic):
            return fmt
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def _err(reason: str, index: int, message: str) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"images[{index}]: {message}", reason=reason, metadata={"image_index": str(index)}
    )


def check_image(img: ImageInput, index: int, limits: LimitsConfig) -> ImageInfo:
    """Validate an image from its bytes and header only (no pixel decoding).

    Raises:
        InvalidArgumentError: IMAGE_EMPTY, IMAGE_TOO_LARGE, IMAGE_UNSUPPORTED_FORMAT,
            IMAGE_MIME_MISMATCH, IMAGE_TOO_MANY_PIXELS or IMAGE_CORRUPT.
    """
    n = len(img.data)
    if n == 0:
        raise _err(Reason.IMAGE_EMPTY, index, "image data is empty")
    if n > limits.max_image_bytes:
        raise _err(
            Reason.IMAGE_TOO_LARGE, index,
            f"image is {n} bytes; the limit is {limits.max_image_bytes}",
        )
    fmt = sniff_format(img.data)
    if fmt is None:
        raise _err(
            Reason.IMAGE_UNSUPPORTED_FORMAT, index,
            "unsupported or unrecognised image format; send PNG, JPEG, WebP or GIF",
        )
    mime = FORMATS[fmt]
    if img.mime_type:
        declared = _MIME_ALIASES.get(img.mime_type.lower().strip(), img.mime_type.lower().strip())
        if declared not in FORMATS.values():
            raise _err(
                Reason.IMAGE_UNSUPPORTED_FORMAT, index,
                f"unsupported mime_type {img.mime_type[:40]!r}; use image/png, image/jpeg, "
                "image/webp or image/gif",
            )
        if declared != mime:
            raise _err(
                Reason.IMAGE_MIME_MISMATCH, index,
                f"mime_type says {declared} but the bytes are {mime}",
            )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(img.data), formats=[fmt]) as im:
                width, height = im.size
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise _err(Reason.IMAGE_TOO_MANY_PIXELS, index, "image has too many pixels") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        raise _err(Reason.IMAGE_CORRUPT, index, "image bytes are corrupt or truncated") from None
    if width <= 0 or height <= 0:
        raise _err(Reason.IMAGE_CORRUPT, index, "image has no pixels")
    if width * height > limits.max_image_pixels or max(width, height) > limits.max_image_side:
        raise _err(
            Reason.IMAGE_TOO_MANY_PIXELS, index,
            f"image is {width}x{height}; limits are {limits.max_image_pixels} pixels and "
            f"{limits.max_image_side} px per side",
        )
    return ImageInfo(
        index=index, format=fmt, mime_type=mime, width=width, height=height, num_bytes=n,
        sha256=hashlib.sha256(img.data).hexdigest(),
    )


def image_pixels(img: ImageInput) -> int:
    """width x height from the header, or 0 when it cannot be read (the request is refused
    later by :func:`check_image`); cheap enough to price every queued request."""
    fmt = sniff_format(img.data)
    if fmt is None:
        return 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(img.data), formats=[fmt]) as im:
                width, height = im.size
    except Exception:  # hostile bytes: priced at nothing here, refused by check_image
        return 0
    return max(0, width) * max(0, height)


def request_pixels(images: Sequence[ImageInput]) -> int:
    """The image cost of a request: the sum of its images' pixels (headers only)."""
    return sum(image_pixels(img) for img in images)


def check_images(images: Sequence[ImageInput], limits: LimitsConfig) -> list[ImageInfo]:
    """:func:`check_image` for each image, then the request's pixel budget.

    Raises:
        InvalidArgumentError: an image reason, or REQUEST_TOO_MANY_PIXELS when the images
            together exceed ``limits.max_request_pixels``.
    """
    infos = [check_image(img, i, limits) for i, img in enumerate(images)]
    total = sum(i.width * i.height for i in infos)
    if total > limits.max_request_pixels:
        raise InvalidArgumentError(
            f"the images hold {total} pixels together; the limit per request is "
            f"{limits.max_request_pixels} (send them smaller: the analyzer reads at most a few "
            "megapixels of each)",
            reason=Reason.REQUEST_TOO_MANY_PIXELS,
            metadata={"pixels": str(total), "limit": str(limits.max_request_pixels)},
        )
    return infos


@dataclass(frozen=True)
class DecodedImage:
    """A decoded image: its RGB array (maybe reduced) and its size as sent."""

    array: np.ndarray
    width: int
    height: int


#: A reduced image's longest side may fall this far below ``max_side`` (a 3160-pixel image is
#: halved to 1580 for a 1600-pixel analysis side rather than decoded whole).
_REDUCE_SLACK = 0.9


def _reduced(im: Image.Image, max_side: int | None) -> Image.Image:
    """``im`` decoded, reduced by the largest integer factor that keeps its longest side at
    least 0.9 x ``max_side`` (callers scale the rest of the way with their own
    interpolation)."""
    if max_side is None:
        return im
    factor = int(max(im.size) // (_REDUCE_SLACK * max_side))
    if factor < 2:
        return im
    size = (max(1, im.width // factor), max(1, im.height // factor))
    if im.mode in ("P", "PA", "1"):  # no box reduce for palettes: sample the palette indices
        return im.resize(size, Image.Resampling.NEAREST)
    try:
        return im.reduce(factor)
    except ValueError:  # a mode reduce() does not take (16-bit grey, CMYK)
        return im.resize(size, Image.Resampling.NEAREST)


def decode_image(img: ImageInput, index: int, limits: LimitsConfig, *,
                 max_side: int | None = None) -> np.ndarray:
    """Decode to an RGB uint8 array (first frame of a GIF), enforcing the limits again.

    Args:
        max_side: When set, an image with a longer side is decoded at a reduced size whose
            longest side is between 0.9 x ``max_side`` and twice it (see
            :func:`decode_reduced`).

    Raises:
        InvalidArgumentError: as :func:`check_image`, plus IMAGE_CORRUPT when the pixel data
            is broken.
    """
    return decode_reduced(img, index, limits, max_side=max_side).array


def decode_reduced(img: ImageInput, index: int, limits: LimitsConfig, *,
                   max_side: int | None = None) -> DecodedImage:
    """:func:`decode_image` that also returns the image's size as sent.

    Peak memory for a large image is the decoder's own raster (none for JPEG, which is
    decoded at a DCT scale of 1/2, 1/4 or 1/8) plus the small reduced copy: never the
    full-size RGB conversions and array copies.
    """
    info = check_image(img, index, limits)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(img.data), formats=[info.format]) as opened:
                opened.seek(0)
                if max_side is not None and info.format == "JPEG":
                    # Decode straight at the smallest DCT scale still >= max_side.
                    opened.draft("RGB", (max_side, max_side))
                im = _reduced(opened, max_side)
                if im.mode == "I" or im.mode.startswith("I;16"):
                    # 16-bit grayscale PNG: scale to 8 bits (convert() would clip to white,
                    # hiding the content from the analyzer).
                    wide = np.asarray(im).astype(np.int64)
                    gray = np.clip(wide >> 8, 0, 255).astype(np.uint8)
                    rgb = Image.fromarray(gray).convert("RGB")
                elif im.mode in ("RGBA", "LA", "P", "PA"):
                    rgba = im.convert("RGBA")
                    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                    rgb = Image.alpha_composite(background, rgba).convert("RGB")
                else:
                    rgb = im.convert("RGB")
                arr = np.asarray(rgb, dtype=np.uint8)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise _err(Reason.IMAGE_TOO_MANY_PIXELS, index, "image has too many pixels") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        raise _err(Reason.IMAGE_CORRUPT, index, "image bytes are corrupt or truncated") from None
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise _err(Reason.IMAGE_CORRUPT, index, "image could not be converted to RGB")
    return DecodedImage(arr, info.width, info.height)

"""Unit tests for vlmguard.imaging: accepted formats, stable rejections, hostile bytes."""

from __future__ import annotations

import io
import random
import struct
import zlib
from typing import Any

import numpy as np
import pytest
from PIL import Image

from vlmguard.config import LimitsConfig
from vlmguard.domain import ImageInput
from vlmguard.errors import InvalidArgumentError, Reason
from vlmguard.imaging import FORMATS, ImageInfo, check_image, decode_image, sniff_format

LIMITS = LimitsConfig()


def encode(im: Image.Image, fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def rgb(
    size: tuple[int, int] = (16, 12), color: tuple[int, int, int] = (200, 30, 40)
) -> Image.Image:
    return Image.new("RGB", size, color)


def png_bytes(size: tuple[int, int] = (16, 12)) -> bytes:
    return encode(rgb(size), "PNG")


def jpeg_bytes(size: tuple[int, int] = (16, 12)) -> bytes:
    return encode(rgb(size), "JPEG", quality=95)


def expect_reason(
    data: bytes,
    reason: str,
    *,
    mime: str = "",
    index: int = 0,
    limits: LimitsConfig = LIMITS,
    decode: bool = False,
) -> InvalidArgumentError:
    img = ImageInput(data, mime)
    fn = decode_image if decode else check_image
    with pytest.raises(InvalidArgumentError) as ei:
        fn(img, index, limits)
    err = ei.value
    assert err.reason == reason, err.message
    assert err.metadata == {"image_index": str(index)}
    assert err.message.startswith(f"images[{index}]: ")
    return err


# --------------------------------------------------------------------------------------------
# Accepted images
# --------------------------------------------------------------------------------------------

ACCEPTED = {
    "png": (lambda: encode(rgb(), "PNG"), "PNG", "image/png"),
    "jpeg": (lambda: encode(rgb(), "JPEG"), "JPEG", "image/jpeg"),
    "webp": (lambda: encode(rgb(), "WEBP"), "WEBP", "image/webp"),
    "gif": (lambda: encode(rgb().convert("P"), "GIF"), "GIF", "image/gif"),
    "gif87a": (lambda: b"GIF87a" + encode(rgb().convert("P"), "GIF")[6:], "GIF", "image/gif"),
}


@pytest.mark.parametrize("kind", sorted(ACCEPTED))
def test_accepted_format_is_checked_with_correct_mime(kind: str) -> None:
    make, fmt, mime = ACCEPTED[kind]
    data = make()
    info = check_image(ImageInput(data), 3, LIMITS)
    assert isinstance(info, ImageInfo)
    assert (info.format, info.mime_type) == (fmt, mime)
    assert (info.width, info.height) == (16, 12)
    assert info.index == 3
    assert info.num_bytes == len(data)
    assert len(info.sha256) == 64


@pytest.mark.parametrize("kind", sorted(ACCEPTED))
def test_accepted_format_decodes_to_rgb_uint8(kind: str) -> None:
    make, _, mime = ACCEPTED[kind]
    arr = decode_image(ImageInput(make(), mime), 0, LIMITS)
    assert arr.shape == (12, 16, 3)
    assert arr.dtype == np.uint8


@pytest.mark.parametrize("kind", sorted(ACCEPTED))
def test_declared_mime_matching_the_bytes_is_accepted(kind: str) -> None:
    make, _, mime = ACCEPTED[kind]
    assert check_image(ImageInput(make(), mime), 0, LIMITS).mime_type == mime


@pytest.mark.parametrize(
    ("declared", "data_fn"),
    [
        ("image/jpg", jpeg_bytes),
        ("image/pjpeg", jpeg_bytes),
        ("IMAGE/JPEG", jpeg_bytes),
        (" image/png ", png_bytes),
        ("image/x-png", png_bytes),
    ],
)
def test_mime_aliases_and_case_are_accepted(declared: str, data_fn: Any) -> None:
    check_image(ImageInput(data_fn(), declared), 0, LIMITS)


def test_png_pixels_survive_decoding() -> None:
    arr = decode_image(ImageInput(png_bytes()), 0, LIMITS)
    assert tuple(arr[0, 0]) == (200, 30, 40)
    assert (arr == arr[0, 0]).all()


def test_animated_gif_decodes_its_first_frame() -> None:
    frames = [Image.new("RGB", (8, 6), c) for c in [(255, 0, 0), (0, 0, 255), (0, 255, 0)]]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    with Image.open(io.BytesIO(data)) as im:
        assert getattr(im, "n_frames", 1) == 3  # really animated
    arr = decode_image(ImageInput(data, "image/gif"), 0, LIMITS)
    assert arr.shape == (6, 8, 3)
    assert tuple(arr[0, 0]) == (255, 0, 0)


def test_rgba_png_is_composited_on_white() -> None:
    im = Image.new("RGBA", (4, 4), (0, 0, 0, 0))  # fully transparent black
    im.putpixel((0, 0), (10, 20, 30, 255))
    arr = decode_image(ImageInput(encode(im, "PNG")), 0, LIMITS)
    assert arr.shape == (4, 4, 3)
    assert tuple(arr[0, 0]) == (10, 20, 30)
    assert tuple(arr[3, 3]) == (255, 255, 255)


def test_transparent_webp_is_composited_on_white() -> None:
    im = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    arr = decode_image(ImageInput(encode(im, "WEBP", lossless=True)), 0, LIMITS)
    assert tuple(arr[0, 0]) == (255, 255, 255)


def test_palette_png_with_transparency_is_handled() -> None:
    im = Image.new("P", (4, 4), 1)
    im.putpalette([0, 0, 0, 50, 60, 70] + [0] * (256 * 3 - 6))
    im.putpixel((0, 0), 0)
    data = encode(im, "PNG", transparency=0)
    arr = decode_image(ImageInput(data), 0, LIMITS)
    assert tuple(arr[0, 0]) == (255, 255, 255)  # transparent index -> white
    assert tuple(arr[1, 1]) == (50, 60, 70)


@pytest.mark.parametrize(
    ("mode", "color", "fmt"),
    [
        ("L", 77, "PNG"),
        ("LA", (77, 255), "PNG"),
        ("1", 1, "PNG"),
        ("L", 77, "JPEG"),
        ("CMYK", (0, 0, 0, 0), "JPEG"),
        ("L", 77, "GIF"),
    ],
)
def test_other_modes_decode_to_rgb(mode: str, color: Any, fmt: str) -> None:
    arr = decode_image(ImageInput(encode(Image.new(mode, (5, 3), color), fmt)), 0, LIMITS)
    assert arr.shape == (3, 5, 3)
    assert arr.dtype == np.uint8


def test_sixteen_bit_grayscale_png_keeps_its_content() -> None:
    # Regression: convert("RGB") clips 16-bit values to 255, so a 16-bit grayscale image used
    # to decode as (almost) blank white and hide its content from the analyzer.
    values = (np.arange(16, dtype=np.uint16).reshape(4, 4) * 4096).astype(np.uint16)
    data = encode(Image.fromarray(values), "PNG")
    arr = decode_image(ImageInput(data), 0, LIMITS)
    assert arr.shape == (4, 4, 3)
    np.testing.assert_array_equal(arr[..., 0], (values >> 8).astype(np.uint8))
    assert len(np.unique(arr)) == 16


def test_sniff_format_recognises_only_accepted_magic() -> None:
    assert sniff_format(png_bytes()) == "PNG"
    assert sniff_format(jpeg_bytes()) == "JPEG"
    assert sniff_format(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "WEBP"
    assert sniff_format(b"RIFF\x00\x00\x00\x00WAVEfmt ") is None
    assert sniff_format(b"GIF89a") == "GIF"
    assert sniff_format(b"") is None
    assert set(FORMATS) == {"PNG", "JPEG", "WEBP", "GIF"}


# --------------------------------------------------------------------------------------------
# Rejections with stable reasons
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("decode", [False, True])
def test_empty_bytes_is_image_empty(decode: bool) -> None:
    expect_reason(b"", Reason.IMAGE_EMPTY, index=2, decode=decode)


def test_empty_bytes_with_declared_mime_is_still_image_empty() -> None:
    expect_reason(b"", Reason.IMAGE_EMPTY, mime="image/png")


def test_header_only_png_is_corrupt() -> None:
    expect_reason(b"\x89PNG\r\n\x1a\n", Reason.IMAGE_CORRUPT)


def test_png_truncated_inside_header_is_corrupt() -> None:
    expect_reason(png_bytes()[:20], Reason.IMAGE_CORRUPT, index=1)


def test_png_truncated_in_pixel_data_is_corrupt_when_decoded() -> None:
    data = encode(Image.effect_noise((64, 64), 50).convert("RGB"), "PNG")
    cut = data[: len(data) // 2]
    check_image(ImageInput(cut), 0, LIMITS)  # header is intact: the cheap check passes
    expect_reason(cut, Reason.IMAGE_CORRUPT, decode=True)


def test_jpeg_truncated_is_corrupt_when_decoded() -> None:
    data = encode(Image.effect_noise((64, 64), 50).convert("RGB"), "JPEG")
    expect_reason(data[: len(data) // 2], Reason.IMAGE_CORRUPT, decode=True)


def test_random_bytes_are_unsupported_format() -> None:
    data = random.Random(7).randbytes(4096)
    assert sniff_format(data) is None
    expect_reason(data, Reason.IMAGE_UNSUPPORTED_FORMAT, index=1)


def test_random_bytes_behind_png_magic_are_corrupt() -> None:
    data = b"\x89PNG\r\n\x1a\n" + random.Random(8).randbytes(1024)
    expect_reason(data, Reason.IMAGE_CORRUPT, decode=True)


@pytest.mark.parametrize("fmt", ["BMP", "TIFF", "ICO", "PPM"])
def test_other_pil_formats_are_unsupported(fmt: str) -> None:
    data = encode(rgb(), fmt)
    Image.open(io.BytesIO(data)).load()  # PIL itself could read it
    expect_reason(data, Reason.IMAGE_UNSUPPORTED_FORMAT)
    expect_reason(data, Reason.IMAGE_UNSUPPORTED_FORMAT, decode=True)


def test_text_is_unsupported_format() -> None:
    expect_reason(b"<svg xmlns='http://www.w3.org/2000/svg'/>", Reason.IMAGE_UNSUPPORTED_FORMAT)


@pytest.mark.parametrize(
    ("data_fn", "declared"),
    [
        (png_bytes, "image/jpeg"),
        (jpeg_bytes, "image/png"),
        (png_bytes, "image/gif"),
        (jpeg_bytes, "image/webp"),
    ],
)
def test_declared_mime_that_does_not_match_bytes_is_mime_mismatch(
    data_fn: Any, declared: str
) -> None:
    err = expect_reason(data_fn(), Reason.IMAGE_MIME_MISMATCH, mime=declared, index=1)
    assert declared in err.message


@pytest.mark.parametrize("declared", ["image/bmp", "image/tiff", "text/plain", "application/pdf"])
def test_unknown_declared_mime_is_unsupported_format(declared: str) -> None:
    expect_reason(png_bytes(), Reason.IMAGE_UNSUPPORTED_FORMAT, mime=declared)


def test_unknown_mime_message_is_truncated() -> None:
    err = expect_reason(png_bytes(), Reason.IMAGE_UNSUPPORTED_FORMAT, mime="x/" + "y" * 500)
    assert len(err.message) < 250


def test_image_over_max_image_bytes_is_too_large() -> None:
    data = png_bytes()
    limits = LimitsConfig(max_image_bytes=len(data) - 1)
    err = expect_reason(data, Reason.IMAGE_TOO_LARGE, limits=limits, index=3)
    assert str(len(data)) in err.message
    check_image(ImageInput(data), 0, LimitsConfig(max_image_bytes=len(data)))  # at limit: ok


def test_too_large_is_checked_before_format() -> None:
    expect_reason(b"\x00" * 100, Reason.IMAGE_TOO_LARGE, limits=LimitsConfig(max_image_bytes=10))


def _png_header_only(width: int, height: int, bit_depth: int = 1, color_type: int = 0) -> bytes:
    """A PNG whose IHDR claims a size; the image data is a tiny compressed stream."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def test_decompression_bomb_png_is_too_many_pixels() -> None:
    data = encode(Image.new("1", (20000, 20000)), "PNG")
    assert len(data) < 200_000  # tiny in bytes
    limits = LimitsConfig(max_image_pixels=10**12, max_image_side=10**6)  # PIL's guard trips
    expect_reason(data, Reason.IMAGE_TOO_MANY_PIXELS, limits=limits)
    expect_reason(data, Reason.IMAGE_TOO_MANY_PIXELS)
    expect_reason(data, Reason.IMAGE_TOO_MANY_PIXELS, decode=True)


def test_huge_declared_dimensions_are_rejected_without_decoding() -> None:
    data = _png_header_only(60000, 60000)
    assert len(data) < 200
    expect_reason(data, Reason.IMAGE_TOO_MANY_PIXELS, decode=True)


def test_pixels_over_configured_limit_are_too_many_pixels() -> None:
    data = png_bytes((100, 100))
    err = expect_reason(
        data, Reason.IMAGE_TOO_MANY_PIXELS, limits=LimitsConfig(max_image_pixels=9999)
    )
    assert "100x100" in err.message
    check_image(ImageInput(data), 0, LimitsConfig(max_image_pixels=10000))  # at limit: ok


def test_side_over_configured_limit_is_too_many_pixels() -> None:
    data = png_bytes((300, 2))  # few pixels, one long side
    limits = LimitsConfig(max_image_side=299)
    expect_reason(data, Reason.IMAGE_TOO_MANY_PIXELS, limits=limits, index=1)
    expect_reason(data, Reason.IMAGE_TOO_MANY_PIXELS, limits=limits, decode=True)
    check_image(ImageInput(data), 0, LimitsConfig(max_image_side=300))


def test_default_side_limit_rejects_a_long_thin_png() -> None:
    expect_reason(_png_header_only(10_001, 1), Reason.IMAGE_TOO_MANY_PIXELS)


def test_zero_sized_png_is_corrupt() -> None:
    expect_reason(_png_header_only(0, 5), Reason.IMAGE_CORRUPT)


def test_decode_enforces_the_same_checks_as_check_image() -> None:
    expect_reason(png_bytes(), Reason.IMAGE_MIME_MISMATCH, mime="image/gif", decode=True)
    expect_reason(
        png_bytes(), Reason.IMAGE_TOO_LARGE, limits=LimitsConfig(max_image_bytes=5), decode=True
    )


# --------------------------------------------------------------------------------------------
# Fuzzing: hostile bytes only ever give InvalidArgumentError
# --------------------------------------------------------------------------------------------


def _mutate(rng: random.Random, data: bytes) -> bytes:
    d = bytearray(data)
    op = rng.randrange(5)
    if op == 0:  # flip bytes
        for _ in range(rng.randint(1, 8)):
            d[rng.randrange(len(d))] = rng.randrange(256)
    elif op == 1:  # truncate
        d = d[: rng.randrange(len(d))]
    elif op == 2:  # insert junk
        p = rng.randrange(len(d))
        d[p:p] = rng.randbytes(rng.randint(1, 32))
    elif op == 3:  # delete a run
        p = rng.randrange(len(d))
        del d[p : p + rng.randint(1, 32)]
    else:  # overwrite a 4-byte field with an extreme value (sizes, lengths)
        p = rng.randrange(max(1, len(d) - 4))
        d[p : p + 4] = rng.choice([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff"])
    return bytes(d)


FUZZ_SEEDS = {
    "png": lambda: encode(Image.effect_noise((24, 24), 40).convert("RGB"), "PNG"),
    "png_rgba": lambda: encode(rgb((10, 10)).convert("RGBA"), "PNG"),
    "jpeg": lambda: encode(Image.effect_noise((24, 24), 40).convert("RGB"), "JPEG"),
    "gif": lambda: encode(rgb((10, 10)).convert("P"), "GIF"),
    "webp": lambda: encode(rgb((10, 10)), "WEBP"),
}


@pytest.mark.parametrize("kind", sorted(FUZZ_SEEDS))
def test_mutated_images_only_ever_raise_invalid_argument(kind: str) -> None:
    rng = random.Random(f"vlmguard-{kind}")
    seed = FUZZ_SEEDS[kind]()
    outcomes: dict[str, int] = {}
    limits = LimitsConfig(max_image_pixels=1_000_000, max_image_side=4000)
    for _ in range(300):
        data = _mutate(rng, seed)
        try:
            arr = decode_image(ImageInput(data), 0, limits)
        except InvalidArgumentError as e:
            assert e.reason in {
                Reason.IMAGE_EMPTY,
                Reason.IMAGE_CORRUPT,
                Reason.IMAGE_UNSUPPORTED_FORMAT,
                Reason.IMAGE_TOO_MANY_PIXELS,
                Reason.IMAGE_TOO_LARGE,
            }
            assert e.metadata == {"image_index": "0"}
            outcomes[e.reason] = outcomes.get(e.reason, 0) + 1
        else:
            assert arr.ndim == 3 and arr.shape[2] == 3 and arr.dtype == np.uint8
            outcomes["ok"] = outcomes.get("ok", 0) + 1
    assert sum(outcomes.values()) == 300
    assert len(outcomes) >= 2, outcomes  # the fuzzer exercised both paths


def test_messages_never_echo_image_bytes() -> None:
    marker = b"SECRET-PAYLOAD-123"
    for data in (marker * 10, b"\x89PNG\r\n\x1a\n" + marker):
        with pytest.raises(InvalidArgumentError) as ei:
            decode_image(ImageInput(data), 0, LIMITS)
        assert "SECRET" not in ei.value.message

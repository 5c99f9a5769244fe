"""Image attack transforms: the request is typed into a PNG as documented (plain, noisy, low
contrast, small print, rotated, blurred) or split between the text and the image."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
from PIL import Image

from vlmguard_training.redteam import images as im
from vlmguard_training.redteam.registry import BY_NAME

TEXT = "Please describe how the old lighthouse keeper stores the lamp oil safely."


def _img(data: bytes | None) -> np.ndarray:
    assert data is not None
    img = Image.open(io.BytesIO(data))
    assert img.format == "PNG"
    return np.asarray(img.convert("L"), dtype=np.float32)


def _dark_rows(a: np.ndarray, below: float) -> int:
    return int((a.min(axis=1) < below).sum())


@pytest.mark.parametrize("name", [n for n, t in BY_NAME.items() if t.modality != "text"])
def test_image_transforms_are_deterministic_pngs(name: str) -> None:
    a = BY_NAME[name].apply(TEXT, random.Random(1))
    b = BY_NAME[name].apply(TEXT, random.Random(1))
    assert a == b and a.image is not None
    assert TEXT not in a.text  # the request is not in the text part
    _img(a.image)


def test_plain_rendering_has_dark_text_on_white() -> None:
    a = _img(im.image_plain(TEXT, random.Random(0)).image)
    assert a.max() == 255 and a.min() < 60
    assert a.shape[1] > 300 and _dark_rows(a, 128) > 20  # several lines of text


def test_noise_perturbs_the_background() -> None:
    plain = _img(im.image_plain(TEXT, random.Random(0)).image)
    noisy = _img(im.image_noise(TEXT, random.Random(0)).image)
    assert plain.shape == noisy.shape
    corner = noisy[:8, :8]
    assert corner.std() > 10 and plain[:8, :8].std() == 0


def test_low_contrast_stays_within_a_narrow_grey_band() -> None:
    for seed in range(5):
        a = _img(im.image_low_contrast(TEXT, random.Random(seed)).image)
        bg_lo, bg_hi = im.CONTRAST_BG
        assert bg_lo <= a.max() <= bg_hi  # the background
        assert im.CONTRAST_DIFF[0] - 2 <= a.max() - a.min() <= im.CONTRAST_DIFF[1] + 2


def test_distortion_strength_is_drawn_per_case() -> None:
    def noise_std(seed: int) -> float:
        return float(_img(im.image_noise(TEXT, random.Random(seed)).image)[:8, :8].std())

    stds = [noise_std(s) for s in range(8)]
    assert max(stds) > 1.4 * min(stds)
    sizes = {_img(im.image_small_print(TEXT, random.Random(s)).image).shape for s in range(6)}
    assert len(sizes) > 1 and all(w >= im.SMALL_CANVAS_W[0] for _, w in sizes)


def test_small_print_is_smaller_text_in_a_larger_picture() -> None:
    plain = _img(im.image_plain(TEXT, random.Random(0)).image)
    small = _img(im.image_small_print(TEXT, random.Random(0)).image)
    assert _dark_rows(small, 160) < _dark_rows(plain, 160) / 2
    assert small.shape[1] >= 1024 and small.shape[0] == small.shape[1] * 3 // 4


def test_rotation_tilts_the_text() -> None:
    plain = _img(im.image_plain(TEXT, random.Random(0)).image)
    rot = _img(im.image_rotated(TEXT, random.Random(0)).image)
    assert rot.shape != plain.shape  # expanded canvas
    # a horizontal line of text spans more rows when tilted
    assert _dark_rows(rot, 128) > _dark_rows(plain, 128)


def test_blur_softens_edges() -> None:
    plain = _img(im.image_plain(TEXT, random.Random(0)).image)
    blur = _img(im.image_blur(TEXT, random.Random(0)).image)
    assert np.abs(np.diff(blur, axis=1)).max() < np.abs(np.diff(plain, axis=1)).max()


def test_text_image_split_puts_each_half_in_one_place() -> None:
    rng = random.Random(2)
    cut = im.split_point(TEXT, random.Random(2))
    attack = im.text_image_split(TEXT, rng)
    head, tail = TEXT[:cut].strip(), TEXT[cut:].strip()
    assert head in attack.text and tail not in attack.text
    assert "image" in attack.text.lower() or "picture" in attack.text.lower()
    assert len(TEXT) // 3 <= cut <= 2 * len(TEXT) // 3
    _img(attack.image)


def test_render_without_a_font_file_uses_the_builtin_font(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    monkeypatch.setattr(im, "FONT_CANDIDATES", ("/nonexistent/font.ttf",))
    im.font_path.cache_clear()
    im._font.cache_clear()
    try:
        a = np.asarray(im.render("hello there").convert("L"))
        assert a.min() < 100
    finally:
        im.font_path.cache_clear()
        im._font.cache_clear()

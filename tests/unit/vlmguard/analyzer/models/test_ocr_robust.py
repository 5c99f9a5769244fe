"""OCR of degraded text: image statistics, each preprocessing step, and when a second read runs.

The steps are checked on synthetic arrays (fast); the retry decision on a reader whose models
are replaced by a scripted stand-in (it records what it was asked to read); one test reads a
noisy rendered harmless phrase with the real models.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from vlmguard.analyzer.models.ocr import (  # noqa: E402
    OCRReader,
    Robustness,
    denoise,
    detail_tiles,
    image_quality,
    line_height,
    remove_impulses,
    to_grey,
    unread_ink,
)


def _page(h: int = 240, w: int = 480, bg: int = 255, ink: int = 0) -> np.ndarray:
    """A grey page with three text-like lines (rows of small blocks with gaps)."""
    g = np.full((h, w), bg, np.uint8)
    for y in (40, 100, 160):
        for x in range(30, w - 60, 14):
            g[y:y + 12, x:x + 9] = ink
    return g


def _box(x0: float, y0: float, w: float, h: float, deg: float = 0.0) -> np.ndarray:
    """A clockwise quad from the top left (RapidOCR's order), tilted by ``deg`` (positive:
    descending to the right)."""
    t = np.radians(deg)
    u = np.array([np.cos(t), np.sin(t)])
    v = np.array([-np.sin(t), np.cos(t)])
    p0 = np.array([x0, y0])
    return np.array([p0, p0 + w * u, p0 + w * u + h * v, p0 + h * v])


# -- image statistics -----------------------------------------------------------------------

def test_quality_of_a_clean_page() -> None:
    q = image_quality(_page())
    assert q.noise_sigma == 0.0
    assert q.impulse_fraction == 0.0
    assert q.flat_background > 0.8  # the page's grey band (dense text lowers it)
    assert 0.01 < q.ink_fraction < 0.3


def test_quality_measures_gaussian_noise() -> None:
    rng = np.random.default_rng(0)
    grey = np.clip(128 + rng.normal(0, 20, (300, 300)), 0, 255).astype(np.uint8)
    q = image_quality(grey)
    assert 16 < q.noise_sigma < 24
    assert q.impulse_fraction < 0.001  # noise is not mistaken for salt-and-pepper
    assert q.ink_fraction < 0.001  # nor for ink (4 sigma away)


def test_quality_measures_salt_and_pepper() -> None:
    rng = np.random.default_rng(1)
    grey = _page()
    m = rng.random(grey.shape)
    grey[m < 0.01] = 0
    grey[m > 0.99] = 255
    q = image_quality(grey)
    # White salt on white paper and pepper on ink are invisible; about half the 2% count.
    assert 0.005 < q.impulse_fraction < 0.03
    assert q.noise_sigma < 3.0  # sparse impulses barely move the median-based estimate


def test_quality_of_a_blank_page_and_a_photo_like_image() -> None:
    blank = image_quality(np.full((200, 300), 240, np.uint8))
    assert blank.ink_fraction == 0.0 and blank.flat_background == 1.0
    yy, xx = np.mgrid[0:256, 0:256]
    photo = ((xx + yy) // 2).astype(np.uint8)  # a smooth gradient over all grey levels
    assert image_quality(photo).flat_background < 0.5
    assert image_quality(photo).noise_sigma < 1.0  # linear ramps do not read as noise


def test_quality_rejects_colour_input() -> None:
    with pytest.raises(ValueError, match="grey uint8"):
        image_quality(np.zeros((10, 10, 3), np.uint8))


def test_quality_from_a_subsample_and_tiles_matches_the_full_image() -> None:
    rng = np.random.default_rng(6)
    page = np.full((1500, 1500), 200, np.uint8)
    page[300:340, 100:1400] = 60
    noisy = np.clip(page + rng.normal(0, 12, page.shape), 0, 255).astype(np.uint8)
    tiles = detail_tiles(noisy)
    assert tiles.shape == (512, 512)
    full, fast = image_quality(noisy), image_quality(noisy[::4, ::4], tiles)
    assert fast.noise_sigma == pytest.approx(full.noise_sigma, rel=0.1)
    assert fast.ink_fraction == pytest.approx(full.ink_fraction, rel=0.1)
    assert fast.flat_background == pytest.approx(full.flat_background, abs=0.05)
    small = np.zeros((300, 400, 3), np.uint8)
    assert detail_tiles(small) is small


def test_to_grey_averages_grey_and_keeps_colour_only_text() -> None:
    grey = _page()
    np.testing.assert_array_equal(to_grey(_rgb(grey)), grey)
    page = np.zeros((60, 200, 3), np.uint8)
    page[:] = (60, 160, 160)  # teal page
    page[20:40, 20:180] = (230, 100, 90)  # reddish text of about the same luminance
    luminance = cv2.cvtColor(page, cv2.COLOR_RGB2GRAY)
    assert abs(int(luminance[30, 100]) - int(luminance[5, 5])) < 15
    g = to_grey(page)
    assert abs(int(g[30, 100]) - int(g[5, 5])) > 80
    assert to_grey(grey) is grey


# -- preprocessing steps --------------------------------------------------------------------

def test_remove_impulses_keeps_thin_strokes() -> None:
    grey = np.full((60, 60), 255, np.uint8)
    grey[10:50, 30] = 0  # a 1-pixel stroke: a plain 3x3 median would erase it
    noisy = grey.copy()
    for y, x in ((5, 5), (20, 10), (40, 50), (55, 20)):
        noisy[y, x] = 0  # isolated pepper
    noisy[25, 45] = 128
    out = remove_impulses(noisy)
    np.testing.assert_array_equal(out[10:50, 30], 0)
    assert out[5, 5] == out[20, 10] == out[40, 50] == out[55, 20] == 255
    assert out[25, 45] == 255  # 127 levels below all its neighbours
    assert cv2.medianBlur(grey, 3)[10:50, 30].min() == 255  # what the plain median would do


def test_denoise_smooths_noise_and_keeps_a_faint_edge() -> None:
    rng = np.random.default_rng(2)
    clean = np.full((80, 80), 150, np.uint8)
    clean[:, 40:] = 115  # grey on grey, 35 levels apart
    noisy = np.clip(clean + rng.normal(0, 8, clean.shape), 0, 255).astype(np.uint8)
    out = denoise(noisy, image_quality(noisy).noise_sigma)
    assert out[:, 5:35].std() < 0.6 * noisy[:, 5:35].std()
    assert out[:, 5:35].mean() - out[:, 45:75].mean() > 30  # the edge keeps its contrast


def test_line_height() -> None:
    boxes = [_box(10, 10, 300, 20), _box(10, 60, 280, 22), _box(10, 110, 320, 18, 8.0)]
    assert line_height(boxes) == pytest.approx(20.0, abs=0.01)
    assert line_height([]) == 0.0


def test_unread_ink() -> None:
    page = _page()
    assert unread_ink(page, [], 0.0) == 1.0
    lines = [_box(25, y - 4, 420, 20) for y in (40, 100, 160)]
    assert unread_ink(page, lines, 0.0) < 0.02
    assert 0.55 < unread_ink(page, lines[:1], 0.0) < 0.75
    assert unread_ink(np.full((50, 50), 255, np.uint8), [], 0.0) == 0.0


# -- when a second read runs -----------------------------------------------------------------

class ScriptedReader(OCRReader):
    """An OCRReader whose detection + recognition is a script: each call of ``_run`` returns
    the next scripted answer and records the image it was given."""

    def __init__(self, answers: list[list[tuple[Any, str, float]]],
                 robustness: Robustness | None = None) -> None:
        self._cv2 = cv2
        self.min_score = 0.5
        self.angle_below = 0.8
        self.max_side = 1600
        self.det_side = 640
        self.angle = "low_confidence"
        self.models = "scripted"
        self.robustness = robustness if robustness is not None else Robustness()
        self.answers = list(answers)
        self.calls: list[tuple[np.ndarray, bool]] = []

    def _run(self, bgr: np.ndarray, retry: bool = False) -> list[tuple[Any, str, float]]:
        self.calls.append((bgr, retry))
        return self.answers.pop(0) if self.answers else []


def _rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[..., None], 3, axis=2)


LINE = _box(25, 36, 420, 30)  # not small: 30 px at the detector's scale


def test_clean_confident_read_is_not_retried() -> None:
    r = ScriptedReader([[(LINE, "Steps to bake bread", 0.97)]])
    res = r.read(_rgb(_page()))
    assert res.text == "Steps to bake bread"
    assert not res.retried and res.steps == ()
    assert res.quality is not None and res.quality.noise_sigma == 0.0
    assert len(r.calls) == 1 and r.calls[0][1] is False
    # The clean image is read as given (no grey conversion or filtering).
    np.testing.assert_array_equal(r.calls[0][0], _rgb(_page()))


def test_noisy_image_is_cleaned_before_the_read() -> None:
    rng = np.random.default_rng(3)
    noisy = np.clip(_rgb(_page(bg=170, ink=120)) + rng.normal(0, 15, (240, 480, 3)), 0, 255)
    r = ScriptedReader([[(LINE, "Steps to bake bread", 0.95)]])
    res = r.read(noisy.astype(np.uint8))
    assert res.steps == ("denoise",) and not res.retried
    read = r.calls[0][0]
    assert read[..., 0].std() < noisy[..., 0].std()  # what the models saw was smoothed
    np.testing.assert_array_equal(read[..., 0], read[..., 1])  # and grey


def test_cleaned_image_that_reads_empty_is_read_as_it_came() -> None:
    rng = np.random.default_rng(7)
    page = np.zeros((240, 480, 3), np.uint8)
    page[:] = (60, 160, 160)
    page[40:44, 30:50] = (230, 100, 90)  # a speck of text that differs in colour only
    noisy = np.clip(page + rng.normal(0, 15, page.shape), 0, 255).astype(np.uint8)
    r = ScriptedReader([[], [(LINE, "Steps to bake bread", 0.9)]])
    res = r.read(noisy)
    assert res.steps == ("denoise", "retry:original", "kept:retry")
    np.testing.assert_array_equal(r.calls[1][0], noisy[..., ::-1])  # the input, as BGR
    assert r.calls[1][1] is False  # at the usual detection scale


def test_salt_and_pepper_is_removed_before_the_read() -> None:
    rng = np.random.default_rng(4)
    img = _page()
    m = rng.random(img.shape)
    img[m < 0.02] = 0
    r = ScriptedReader([[(LINE, "Steps to bake bread", 0.95)]])
    res = r.read(_rgb(img))
    assert "impulses" in res.steps
    ink = int((_page() == 0).sum())
    pepper = int((img == 0).sum()) - ink
    # Pepper next to a stroke is not isolated and stays; the rest goes.
    assert int((r.calls[0][0][..., 0] == 0).sum()) - ink < 0.35 * pepper


UNSURE = Robustness(retry_below=0.8)


def test_unsure_read_is_not_retried_by_default() -> None:
    r = ScriptedReader([[(LINE, "Stcps t0 bakc brcad", 0.62)]])
    assert not r.read(_rgb(_page())).retried and len(r.calls) == 1


def test_unsure_read_is_retried_on_the_other_copy_and_the_better_kept() -> None:
    r = ScriptedReader([[(LINE, "Stcps t0 bakc brcad", 0.62)],
                        [(LINE, "Steps to bake bread", 0.93)]], UNSURE)
    res = r.read(_rgb(_page()))
    assert res.retried
    assert res.steps == ("retry:low_confidence", "kept:retry")
    assert res.text == "Steps to bake bread"
    assert len(r.calls) == 2
    # First read on the original; the second on the cleaned (grey, filtered) copy.
    second = r.calls[1][0]
    np.testing.assert_array_equal(second[..., 0], second[..., 2])
    assert res.lines[0].box == pytest.approx((25.0, 36.0, 445.0, 66.0))


def test_a_worse_second_read_is_dropped() -> None:
    r = ScriptedReader([[(LINE, "Steps to bake bread", 0.7)], [(LINE, "St", 0.6)]], UNSURE)
    res = r.read(_rgb(_page()))
    assert res.steps[-1] == "kept:first" and res.text == "Steps to bake bread"


def test_unsure_small_print_is_read_enlarged_and_boxes_map_back() -> None:
    page = _page(300, 500)
    first = [(_box(25, 36, 420, 16), "Stcps to bakc", 0.6)]  # 16 px boxes: small print
    r = ScriptedReader([first, [(_box(50, 72, 840, 32), "Steps to bake bread", 0.95)]],
                       UNSURE)
    res = r.read(_rgb(page))
    assert res.steps == ("retry:low_confidence", "retry:small_text", "kept:retry")
    second, finer = r.calls[1]
    assert finer  # the larger detector input
    # Enlarged as far as the second read's detector input allows (960 px), at most twice.
    assert second.shape[:2] == (576, 960)
    # The box comes back in the input's pixels.
    assert res.lines[0].box == pytest.approx((26.04, 37.5, 463.5, 54.17), abs=0.5)


def test_small_print_on_a_large_page_gets_a_finer_detection() -> None:
    page = np.full((1500, 1500), 255, np.uint8)
    for y in (100, 130):  # two lines of small print the detector did not see
        for x in range(60, 1300, 9):
            page[y:y + 8, x:x + 6] = 0
    page[600:640, 60:100] = 0  # "1." that it did see
    seen = [(_box(55, 595, 50, 50), "1.", 0.99)]
    r = ScriptedReader([seen, [(_box(60, 100, 1240, 20), "Steps to bake bread", 0.9)], ])
    res = r.read(_rgb(page))
    assert res.steps == ("retry:no_text", "kept:retry")
    assert r.calls[1][1] is True  # the second read used the larger detector input


def test_photos_and_blank_pages_are_not_read_again() -> None:
    yy, xx = np.mgrid[0:800, 0:800]
    photo = _rgb(((xx * 3 + yy * 5) % 256).astype(np.uint8))
    r = ScriptedReader([[]])
    assert not r.read(photo).retried and len(r.calls) == 1
    r = ScriptedReader([[]])
    assert not r.read(_rgb(np.full((1400, 1400), 250, np.uint8))).retried


def test_disabled_reads_once_as_given() -> None:
    rng = np.random.default_rng(5)
    noisy = np.clip(_rgb(_page()) + rng.normal(0, 25, (240, 480, 3)), 0, 255).astype(np.uint8)
    r = ScriptedReader([[(LINE, "Stcps", 0.55)]], robustness=Robustness(enabled=False))
    res = r.read(noisy)
    assert res.steps == () and res.quality is None and not res.retried
    assert len(r.calls) == 1
    np.testing.assert_array_equal(r.calls[0][0], noisy[..., ::-1])  # BGR of the input


def test_reader_settings_from_the_analyzer_config() -> None:
    from vlmguard.config import AnalyzerConfig

    cfg = AnalyzerConfig(ocr_robust=False, ocr_denoise_sigma=5.0, ocr_retry_below=0.7)
    captured: dict[str, Any] = {}

    class Capture(OCRReader):
        def __init__(self, *args: Any, **kw: Any) -> None:
            captured.update(kw)

    Capture.from_config(cfg)
    rb = captured["robustness"]
    assert rb == Robustness(enabled=False, noise_sigma=5.0, retry_below=0.7,
                            impulse_fraction=cfg.ocr_impulse_fraction,
                            small_text_px=cfg.ocr_small_text_px,
                            retry_no_text=cfg.ocr_retry_no_text,
                            retry_det_side=cfg.ocr_retry_det_side)
    assert captured["det_side"] == cfg.ocr_det_side and captured["models"] == cfg.ocr_models
    defaults = AnalyzerConfig()
    assert defaults.ocr_robust and Robustness().small_text_px == defaults.ocr_small_text_px


# -- with the real models ----------------------------------------------------------------------

def test_reads_a_noisy_low_contrast_phrase_with_the_real_models() -> None:
    pytest.importorskip("rapidocr_onnxruntime")
    pytest.importorskip("vlmguard_models")  # PP-OCRv6 files
    from PIL import Image, ImageDraw, ImageFont

    phrase = "Steps to bake sourdough bread at home"
    img = Image.new("L", (520, 90), 160)
    try:
        font: Any = ImageFont.truetype("DejaVuSans.ttf", 18)
    except OSError:
        font = ImageFont.load_default(size=18)
    ImageDraw.Draw(img).text((15, 30), phrase, fill=122, font=font)  # grey on grey
    rng = np.random.default_rng(0)
    noisy = np.clip(np.asarray(img.convert("RGB")) + rng.normal(0, 15, (90, 520, 3)), 0, 255)
    t0 = time.perf_counter()
    reader = OCRReader(threads=2)
    res = reader.read(noisy.astype(np.uint8))
    assert time.perf_counter() - t0 < 10  # model load + one read: keeps this a unit test
    assert "denoise" in res.steps
    words = set(res.text.lower().replace(".", "").split())
    found = [w for w in phrase.lower().split() if w in words]
    assert len(found) >= 6, res.text


def test_ink_box_finds_the_inked_region_of_a_wide_page() -> None:
    from vlmguard.analyzer.models.ocr import ink_box

    page = np.full((1200, 1600), 230, np.uint8)
    page[500:530, 300:900] = 20  # a line of small dark print in a wide margin
    rng = np.random.default_rng(0)
    page[rng.integers(0, 1200, 30), rng.integers(0, 1600, 30)] = 0  # stray specks
    y0, y1, x0, x1 = ink_box(page, sigma=0.0)  # type: ignore[misc]
    assert y0 <= 500 and y1 >= 530 and x0 <= 300 and x1 >= 900
    assert (y1 - y0) < 200 and (x1 - x0) < 700
    assert ink_box(np.full((64, 64), 200, np.uint8), sigma=0.0) is None

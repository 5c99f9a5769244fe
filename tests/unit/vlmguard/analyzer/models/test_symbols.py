"""The prohibition-sign detector (vlmguard.analyzer.models.symbols) on drawn images: signs in the
styles
awareness images use are found; red things that are not signs are not."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from vlmguard.analyzer.models.symbols import ProhibitionSignDetector

RED = (220, 20, 30)  # RGB


def _scene(h: int = 400, w: int = 600, seed: int = 0) -> np.ndarray:
    """A busy photo-like background: smooth colour gradients plus noise, no saturated red."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([(x * 200 // w), (y * 180 // h) + 40, ((x + y) * 120 // (h + w)) + 90], -1)
    img = img + rng.integers(-20, 20, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _ring(img: np.ndarray, center: tuple[int, int], axes: tuple[int, int], thick: int,
          bar: bool = True) -> np.ndarray:
    img = img.copy()
    cv2.ellipse(img, center, axes, 0, 0, 360, RED, thick)
    if bar:
        dx, dy = int(axes[0] * 0.7), int(axes[1] * 0.7)
        cv2.line(img, (center[0] - dx, center[1] - dy), (center[0] + dx, center[1] + dy), RED,
                 thick)
    return img


@pytest.fixture(scope="module")
def det() -> ProhibitionSignDetector:
    return ProhibitionSignDetector()


@pytest.mark.parametrize("axes,thick", [((150, 150), 22), ((220, 130), 14), ((90, 90), 10)])
def test_ring_and_bar_is_found(det: ProhibitionSignDetector, axes: tuple[int, int],
                               thick: int) -> None:
    score, kind = det.detect(_ring(_scene(), (300, 200), axes, thick))
    assert score >= 0.5 and kind == "ring"


def test_ring_touching_a_red_object_is_found(det: ProhibitionSignDetector) -> None:
    img = _ring(_scene(), (260, 180), (170, 110), 12)
    cv2.rectangle(img, (330, 230), (560, 399), RED, -1)  # a red sweater under the sign's edge
    score, kind = det.detect(img)
    assert score >= 0.3 and kind == "ring"


def test_red_cross_over_the_picture_is_found(det: ProhibitionSignDetector) -> None:
    img = _scene()
    cv2.line(img, (0, 0), (599, 399), RED, 40)
    cv2.line(img, (0, 399), (599, 0), RED, 40)
    score, kind = det.detect(img)
    assert score >= 0.5 and kind == "cross"


@pytest.mark.parametrize("what", ["plain", "disc", "ring_without_bar", "stop_sign", "red_text",
                                  "red_stripe", "small_cross"])
def test_red_things_that_are_not_signs(det: ProhibitionSignDetector, what: str) -> None:
    img = _scene(seed=1)
    if what == "disc":
        cv2.circle(img, (300, 200), 120, RED, -1)
    elif what == "ring_without_bar":
        img = _ring(img, (300, 200), (150, 150), 20, bar=False)
    elif what == "stop_sign":
        pts = np.array([[300 + 120 * np.cos(a), 200 + 120 * np.sin(a)]
                        for a in np.linspace(np.pi / 8, 2 * np.pi + np.pi / 8, 8,
                                             endpoint=False)], np.int32)
        cv2.fillPoly(img, [pts], RED)
        cv2.putText(img, "STOP", (215, 225), cv2.FONT_HERSHEY_SIMPLEX, 2.2, (255, 255, 255), 8)
    elif what == "red_text":
        cv2.putText(img, "SALE 50%", (60, 230), cv2.FONT_HERSHEY_SIMPLEX, 3.5, RED, 14)
    elif what == "red_stripe":
        cv2.line(img, (0, 0), (599, 399), RED, 40)  # one diagonal only
    elif what == "small_cross":
        cv2.line(img, (20, 20), (90, 90), RED, 8)  # a tick-box cross, not over the picture
        cv2.line(img, (20, 90), (90, 20), RED, 8)
    score, kind = det.detect(img)
    assert score < 0.1 and kind in ("", "ring", "cross")


def test_grey_and_tiny_images(det: ProhibitionSignDetector) -> None:
    assert det.detect(np.full((8, 8, 3), 128, np.uint8)) == (0.0, "")
    assert det.detect(np.zeros((1, 1, 3), np.uint8)) == (0.0, "")

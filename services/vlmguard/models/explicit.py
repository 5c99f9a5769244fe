"""Explicit-imagery detection with NudeNet (320n ONNX detector, ~20 ms per image on CPU).

Only labels for exposed genitalia, breasts, buttocks and anus count as explicit; faces, covered
parts, feet, armpits, bellies and male chests are ignored. nudenet and cv2 are imported only when
an :class:`ExplicitImageDetector` is built.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from vlmguard.errors import ConfigError, Reason

#: NudeNet labels that indicate sexually explicit content.
EXPLICIT_LABELS: frozenset[str] = frozenset(
    {
        "FEMALE_GENITALIA_EXPOSED",
        "MALE_GENITALIA_EXPOSED",
        "FEMALE_BREAST_EXPOSED",
        "BUTTOCKS_EXPOSED",
        "ANUS_EXPOSED",
    }
)


class ExplicitImageDetector:
    """Finds explicit nudity in images.

    Args:
        min_score: Detections below this confidence are dropped.
        threads: onnxruntime intra-op threads; 0 = one per physical core.
        spinning: Let onnxruntime's idle threads busy-wait between runs (see
            :mod:`vlmguard.models.ort`).

    Raises:
        ConfigError: nudenet (or onnxruntime / cv2) is not installed.
    """

    def __init__(self, min_score: float = 0.5, *, threads: int = 0,
                 spinning: bool = False) -> None:
        try:
            from nudenet import NudeDetector
        except ImportError as e:
            raise ConfigError(
                f"the explicit-image detector needs nudenet ({e.name} is missing); install it "
                "with: pip install 'vlmguard[models]'",
                reason=Reason.MISSING_DEPENDENCY,
            ) from e
        self._detector: Any = NudeDetector()
        # Rebuilt with our onnxruntime options (threads, no busy-wait: vlmguard.models.ort).
        import nudenet

        from vlmguard.models.ort import cpu_session

        model = os.path.join(os.path.dirname(nudenet.__file__), "320n.onnx")
        if os.path.isfile(model):
            self._detector.onnx_session = cpu_session(model, threads=threads, spinning=spinning)
        self.min_score = min_score

    def detect(self, image: np.ndarray) -> list[tuple[str, float]]:
        """Explicit labels found in one image.

        Args:
            image: RGB uint8 array of shape (H, W, 3) (grey and RGBA are accepted too).

        Returns:
            ``(label, score)`` pairs with score >= ``min_score``, highest score first; each label
            appears once, with its best score.
        """
        arr = np.asarray(image)
        if arr.dtype != np.uint8:
            arr = np.clip(arr, 0, 255).astype(np.uint8)
        if arr.ndim == 2:
            arr = np.stack([arr] * 3, axis=-1)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4) or min(arr.shape[:2]) < 2:
            raise ValueError(f"expected an HxWx3 RGB image, got shape {arr.shape}")
        # NudeNet reads arrays the way cv2.imread returns them: BGR, 3 channels.
        bgr = np.ascontiguousarray(arr[..., 2::-1])
        best: dict[str, float] = {}
        for det in self._detector.detect(bgr):
            label, score = str(det["class"]), float(det["score"])
            if label in EXPLICIT_LABELS and score >= self.min_score:
                best[label] = max(score, best.get(label, 0.0))
        return sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))

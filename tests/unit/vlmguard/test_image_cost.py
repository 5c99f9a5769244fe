"""Image cost in pixels: the per-request budget, reduced decoding of large images, and what the
analyzer's models are handed for a 25-megapixel image."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support.helpers import KeywordModel
from vlmguard.analyzer.tier1 import Tier1Analyzer
from vlmguard.config import AnalyzerConfig, LimitsConfig, TaxonomyConfig
from vlmguard.domain import Analysis, AnalysisItem, ImageInput
from vlmguard.errors import InvalidArgumentError, Reason
from vlmguard.imaging import check_images, decode_reduced, image_pixels, request_pixels
from vlmguard.pipeline import Call, validate_call

LIMITS = LimitsConfig()


def encode(size: tuple[int, int], fmt: str = "PNG", color: tuple[int, int, int] = (200, 30, 30),
           mode: str = "RGB") -> ImageInput:
    buf = io.BytesIO()
    Image.new(mode, size, color if mode == "RGB" else 7).save(buf, fmt)
    return ImageInput(buf.getvalue())


@pytest.fixture(scope="module")
def huge_png() -> ImageInput:
    return encode((5000, 5000))  # ~90 KB on the wire, 75 MB decoded


def test_pixels_are_read_from_the_header(huge_png: ImageInput) -> None:
    assert len(huge_png.data) < 200_000
    assert image_pixels(huge_png) == 25_000_000
    assert request_pixels([huge_png, encode((10, 20))]) == 25_000_200
    assert image_pixels(ImageInput(b"\x89PNG\r\n\x1a\nbroken")) == 0


def test_request_over_its_pixel_budget_is_invalid_argument_before_any_decoding(
        huge_png: ImageInput) -> None:
    call = Call(request_id="r", text="describe these", images=(huge_png,) * 4)
    with pytest.raises(InvalidArgumentError) as e:
        validate_call(call, LIMITS)  # four images each within every per-image limit
    assert e.value.reason == Reason.REQUEST_TOO_MANY_PIXELS
    assert e.value.metadata["pixels"] == "100000000"
    validate_call(Call(request_id="r", text="one", images=(huge_png,)), LIMITS)
    assert len(check_images([huge_png], LIMITS)) == 1


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF"])
def test_large_image_decodes_reduced_with_its_colour_and_true_size(fmt: str) -> None:
    img = encode((4000, 3000), fmt, color=(0, 0, 255))
    got = decode_reduced(img, 0, LIMITS, max_side=1000)
    h, w, c = got.array.shape
    assert c == 3 and 1000 <= max(h, w) < 2000
    assert abs(w / h - 4 / 3) < 0.02
    assert (got.width, got.height) == (4000, 3000)
    blue = got.array[h // 2, w // 2].astype(int)
    assert blue[2] > 200 and blue[0] < 60 and blue[1] < 60


def test_an_image_just_under_twice_the_side_is_halved_not_decoded_whole() -> None:
    got = decode_reduced(encode((3160, 3160)), 0, LIMITS, max_side=1600)
    assert got.array.shape == (1580, 1580, 3)
    assert decode_reduced(encode((2400, 100)), 0, LIMITS, max_side=1600).array.shape == (
        100, 2400, 3)  # halving would lose a quarter of the analysis resolution


def test_small_and_16_bit_images_are_not_reduced() -> None:
    small = decode_reduced(encode((640, 480)), 0, LIMITS, max_side=1000)
    assert small.array.shape == (480, 640, 3)
    buf = io.BytesIO()
    Image.fromarray(np.full((3000, 2000), 40_000, dtype=np.uint16)).save(buf, "PNG")
    wide = decode_reduced(ImageInput(buf.getvalue()), 0, LIMITS, max_side=1000)
    assert 1000 <= max(wide.array.shape[:2]) < 2000
    assert int(wide.array[5, 5, 0]) == 40_000 >> 8


class Recorder:
    """Records the array shapes the image models are handed."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def read(self, image: np.ndarray) -> object:
        self.shapes.append(image.shape)

        class R:
            text = ""

        return R()

    def detect(self, image: np.ndarray) -> list[tuple[str, float]]:
        self.shapes.append(image.shape)
        return []


def test_analyzer_models_get_at_most_twice_the_ocr_side_and_evidence_keeps_the_true_size(
        huge_png: ImageInput) -> None:
    tax = TaxonomyConfig()
    model = KeywordModel(list(tax.ids), lambda _t: (0.0, {}))
    rec = Recorder()
    cfg = AnalyzerConfig(ocr_max_side=1600)
    an = Tier1Analyzer(cfg, tax, LIMITS, embedder=model, head=model, ocr=rec, explicit=rec)
    (res,) = an.analyze_batch([AnalysisItem("r", "what colour is this", (huge_png,))])
    assert isinstance(res, Analysis), res
    assert rec.shapes and all(max(s[:2]) < 3200 for s in rec.shapes)  # not 5000x5000
    assert (res.images[0].width, res.images[0].height) == (5000, 5000)


def test_peak_memory_of_large_pngs_drops_with_reduced_decoding(tmp_path: Path) -> None:
    """Resident peak (VmHWM) of holding two decoded 4000x4000 PNGs, in fresh processes (PIL's
    buffers are not visible to tracemalloc)."""
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux /proc to reset the peak resident size")
    src = tmp_path / "big.png"
    src.write_bytes(encode((4000, 4000)).data)
    script = textwrap.dedent("""
        import sys
        from pathlib import Path
        from vlmguard.config import LimitsConfig
        from vlmguard.domain import ImageInput
        from vlmguard.imaging import decode_reduced
        def hwm():
            status = Path("/proc/self/status").read_text()
            return int(status.split("VmHWM:")[1].split()[0])
        img = ImageInput(Path(sys.argv[2]).read_bytes())
        # The peak counter is inherited from the parent at fork: start it from here.
        Path("/proc/self/clear_refs").write_text("5")
        base = hwm()
        side = None if sys.argv[1] == "full" else 1600
        arrays = [decode_reduced(img, 0, LimitsConfig(), max_side=side).array for _ in range(2)]
        print(hwm() - base)
    """)

    def peak_kb(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", script, mode, str(src)],
                             capture_output=True, text=True, check=True, timeout=120)
        return int(out.stdout.strip())

    full, reduced = peak_kb("full"), peak_kb("reduced")
    assert full > 100_000, full  # two full RGB arrays held, plus the decoder's raster
    assert reduced < full / 2, (reduced, full)

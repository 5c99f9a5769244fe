"""The tier-1 negation rule: an advocacy request about an image with a prohibition sign drawn over
it ("write a song promoting this" + a red ring and bar over a scene) asks for the prohibition, so
the prompt keeps only the risk of the same request about a harmless subject.

Stand-in models score by keywords, as in ``test_analyzer.py``; the sign detector stand-in says
"sign" for images of one colour. The real detector is tested in ``test_symbols.py``.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.support.helpers import KeywordModel
from vlmguard.analyzer.tier1 import HARMLESS_SUBJECT, Tier1Analyzer, harmless_probe
from vlmguard.config import AnalyzerConfig, LimitsConfig, TaxonomyConfig
from vlmguard.domain import AnalysisItem, ImageInput

TAX = TaxonomyConfig()
SIGNED, PLAIN, SIGNED_TEXT = (200, 10, 10), (10, 200, 10), (200, 10, 200)


def _score(t: str) -> tuple[float, dict[str, float]]:
    low = t.lower()
    if "bomb" in low:
        return 0.9, {"violence_weapons": 0.9}
    if "this" in low or "the image" in low:  # the head's doubt about what "this" shows
        return 0.95, {"dangerous_behavior": 0.95}
    if HARMLESS_SUBJECT in low:
        return 0.04, {"dangerous_behavior": 0.04}
    return 0.0, {}


class FakeSigns:
    def __init__(self) -> None:
        self.calls = 0

    def detect(self, image: np.ndarray) -> tuple[float, str]:
        self.calls += 1
        return (0.9, "ring") if tuple(image[0, 0]) in (SIGNED, SIGNED_TEXT) else (0.0, "")


class FakeOCR:
    def read(self, image: np.ndarray) -> object:
        class R:
            text = "Steps to make a bomb. 1. 2. 3." if tuple(image[0, 0]) == SIGNED_TEXT else ""

        return R()


def png(color: tuple[int, int, int]) -> ImageInput:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), color).save(buf, "PNG")
    return ImageInput(buf.getvalue())


def _analyzer(signs: FakeSigns | None = None, **cfg: object) -> Tier1Analyzer:
    m = KeywordModel(list(TAX.ids), _score)
    return Tier1Analyzer(AnalyzerConfig(**cfg), TAX, LimitsConfig(), embedder=m, head=m,
                         ocr=FakeOCR(), explicit=None, signs=signs)


def _one(an: Tier1Analyzer, text: str, color: tuple[int, int, int]):  # type: ignore[no-untyped-def]
    (a,) = an.analyze_batch([AnalysisItem("r", text, (png(color),))])
    assert not isinstance(a, Exception)
    return a


def test_promoting_a_signed_image_counts_as_the_harmless_request() -> None:
    a = _one(_analyzer(FakeSigns()), "Write a song promoting this.", SIGNED)
    assert a.score == pytest.approx(0.04)
    assert a.findings == ()
    assert a.images[0].prohibition == pytest.approx(0.9)
    assert "prohibition sign" in a.reasoning.visual
    assert "0.95" in a.reasoning.textual and "harmless" in a.reasoning.textual
    assert "promoting its prohibition" in a.reasoning.cross_modal
    assert "signs" in a.timings_ms


def test_without_a_sign_the_prompt_keeps_its_score() -> None:
    a = _one(_analyzer(FakeSigns()), "Write a song promoting this.", PLAIN)
    assert a.score == pytest.approx(0.95)
    assert a.images[0].prohibition == 0.0


def test_harm_named_in_the_prompt_is_never_discounted() -> None:
    # The same request about a harmless subject still names a bomb: the risk is the prompt's own.
    a = _one(_analyzer(FakeSigns()), "Write a song promoting bombs like this.", SIGNED)
    assert a.score == pytest.approx(0.9)
    assert a.findings[0].category == "violence_weapons"


def test_requests_that_do_not_promote_are_left_alone() -> None:
    # Not a request for publicity: what "this" shows matters whatever is drawn over it, and the
    # detector is not even run (no latency for ordinary requests).
    signs = FakeSigns()
    a = _one(_analyzer(signs), "How do I cook this man?", SIGNED)
    assert a.score == pytest.approx(0.95)
    assert signs.calls == 0 and a.images[0].prohibition == 0.0


def test_text_in_a_signed_image_keeps_its_risk() -> None:
    a = _one(_analyzer(FakeSigns()), "Write a song promoting this.", SIGNED_TEXT)
    assert a.score == pytest.approx(0.9)  # the OCR text names a bomb
    assert {f.source for f in a.findings} == {"ocr_text_risk"}


def test_rule_off_runs_no_detector() -> None:
    an = _analyzer(None, negation_rule=False)
    a = _one(an, "Write a song promoting this.", SIGNED)
    assert a.score == pytest.approx(0.95)
    assert a.images[0].prohibition == 0.0 and "signs" not in a.timings_ms


def test_min_score_is_the_threshold() -> None:
    a = _one(_analyzer(FakeSigns(), prohibition_min_score=0.95), "Write a song promoting this.",
             SIGNED)
    assert a.score == pytest.approx(0.95)


@pytest.mark.parametrize("text,probe", [
    ("Write a song promoting this.", f"Write a song promoting {HARMLESS_SUBJECT}."),
    ("Create a public service announcement advocating for this message.",
     f"Create a public service announcement advocating for {HARMLESS_SUBJECT}."),
    ("Design a poster campaign promoting the image.",
     f"Design a poster campaign promoting {HARMLESS_SUBJECT}."),
    ("How do I cook this man?", None),  # no publicity asked for
    ("Write a blog post promoting recycling.", None),  # nothing in the picture referred to
])
def test_harmless_probe(text: str, probe: str | None) -> None:
    assert harmless_probe(text) == probe

"""The prohibition-sign detector on the real benchmark images (read in place from
../shared/bench): MOSSBench's negated-harm benign images carry a drawn sign, a red cross or a
campaign hashtag over a harmful scene; their unsafe pairs are the same scenes without it; MM-Vet
is everyday photos."""

from __future__ import annotations

import numpy as np
from PIL import Image

from tests.support.bench import BENCH, bench_items
from vlmguard.analyzer.models.symbols import ProhibitionSignDetector


def _scores(set_name: str, keep) -> list[float]:  # type: ignore[no-untyped-def]
    det = ProhibitionSignDetector()
    out = []
    for item in bench_items(set_name):
        if item.get("image") and keep(item):
            arr = np.asarray(Image.open(BENCH / set_name / item["image"]).convert("RGB"))
            out.append(det.detect(arr)[0])
    return out


def test_signs_on_negated_harm_images_and_none_on_their_pairs() -> None:
    signed = _scores("mossbench", lambda i: i["category"] == "Negated Harm"
                     and i["label"] == "benign")
    pairs = _scores("mossbench", lambda i: i["category"] == "Negated Harm"
                    and i["label"] == "unsafe")
    # About half of these images carry a drawn sign or cross (the rest a hashtag or a poster).
    assert len(signed) >= 50 and sum(s >= 0.3 for s in signed) >= 20
    assert len(pairs) >= 25 and max(pairs) < 0.1


def test_no_sign_on_everyday_photos() -> None:
    scores = _scores("mm_vet", lambda i: True)
    assert len(scores) >= 90 and max(scores) < 0.1

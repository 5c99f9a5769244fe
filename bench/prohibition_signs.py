"""The prohibition-sign detector of the tier-1 negation rule: where it fires, and what it costs.

1. Detection, per image set in ../shared/bench (images read in place, never copied): how many
   images score >= the threshold. MOSSBench is split by item type and label: its "Negated Harm"
   benign images are harmful scenes with a prohibition sign, a red cross or a campaign hashtag
   drawn over them; their unsafe contrast images are the same scenes without it.
2. Cost: the detector's time per image (p50 / p99), and the analyzer per request with an image
   and an advocacy prompt ("Write a short post promoting this.", the only kind of request the
   detector runs for) with the rule on vs off, side by side in this process, taking turns on
   each image.

Usage: python bench/prohibition_signs.py [--bench-dir ../shared/bench] [--threshold 0.3]
                                          [--n 60] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

SETS = ("mossbench", "mm_vet", "figstep_safebench", "mm_safetybench")
PROMPT = "Write a short post promoting this."


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


def detection(bench: Path, threshold: float) -> tuple[dict[str, list[int]], list[float]]:
    """``{group: [images, detected]}`` and the detector's per-image times (ms)."""
    from PIL import Image

    from vlmguard.analyzer.models.symbols import ProhibitionSignDetector

    det = ProhibitionSignDetector()
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    times: list[float] = []
    for name in SETS:
        seen: set[str] = set()
        for line in (bench / name / "manifest.jsonl").read_text().splitlines():
            row = json.loads(line)
            path = row.get("image")
            if not path or path in seen:
                continue
            seen.add(path)
            arr = np.asarray(Image.open(bench / name / path).convert("RGB"))
            t0 = time.perf_counter()
            score, _ = det.detect(arr)
            times.append((time.perf_counter() - t0) * 1000)
            group = name
            if name == "mossbench":
                group = f"mossbench {row.get('category')} ({row.get('label')})"
            counts[group][0] += 1
            counts[group][1] += int(score >= threshold)
    return dict(counts), times


def cost(bench: Path, n: int) -> dict[str, Any]:
    """Analyzer latency per advocacy request with an image, negation rule on vs off."""
    from vlmguard.analyzer.tier1 import Tier1Analyzer
    from vlmguard.config import load_config
    from vlmguard.domain import AnalysisItem, ImageInput

    cfg = load_config()
    on = Tier1Analyzer.from_config(cfg.analyzer, cfg.taxonomy, cfg.limits)
    off = Tier1Analyzer(cfg.analyzer.model_copy(update={"negation_rule": False}), cfg.taxonomy,
                        cfg.limits, embedder=on.embedder, head=on.head, ocr=on.ocr,
                        explicit=on.explicit, signs=None)
    images: list[bytes] = []
    for name in ("mossbench", "mm_vet"):
        rows = [json.loads(x) for x in (bench / name / "manifest.jsonl").read_text().splitlines()]
        rows = [r for r in rows if r.get("image")]
        pick = np.linspace(0, len(rows) - 1, n // 2).round().astype(int)
        images += [(bench / name / rows[i]["image"]).read_bytes() for i in pick]
    for an in (on, off):
        an.warmup()
    ms: dict[str, list[float]] = {"on": [], "off": [], "signs": []}
    for i, data in enumerate(images):
        item = AnalysisItem(f"b{i}", PROMPT, (ImageInput(data),))
        order = [("on", on), ("off", off)] if i % 2 == 0 else [("off", off), ("on", on)]
        for key, an in order:
            t0 = time.perf_counter()
            (res,) = an.analyze_batch([item])
            ms[key].append((time.perf_counter() - t0) * 1000)
            if key == "on" and not isinstance(res, Exception):
                ms["signs"].append(res.timings_ms.get("signs", 0.0))
    return {k: {"p50": round(_pct(v, 50), 1), "p99": round(_pct(v, 99), 1),
                "mean": round(statistics.fmean(v), 1)} for k, v in ms.items()} | {
        "n": len(images), "p50_ratio_on_off": round(_pct(ms["on"], 50) / _pct(ms["off"], 50), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench-dir", default="../shared/bench")
    ap.add_argument("--threshold", type=float, default=0.3,
                    help="detector score that counts as a sign (analyzer.prohibition_min_score)")
    ap.add_argument("--n", type=int, default=60, help="images for the latency comparison")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    bench = Path(args.bench_dir)
    counts, times = detection(bench, args.threshold)
    print(f"| images | n | score >= {args.threshold} |\n|---|---|---|")
    for group in sorted(counts):
        n, hit = counts[group]
        print(f"| {group} | {n} | {hit} ({100 * hit / n:.1f}%) |")
    print(f"\ndetector per image: p50 {_pct(times, 50):.1f} ms, p99 {_pct(times, 99):.1f} ms "
          f"({len(times)} images)\n")
    lat = cost(bench, args.n)
    print(f"analyzer per advocacy request with an image ({lat['n']} images, turns):")
    print("| negation rule | p50 ms | p99 ms | mean ms |\n|---|---|---|---|")
    for key in ("off", "on"):
        print(f"| {key} | {lat[key]['p50']} | {lat[key]['p99']} | {lat[key]['mean']} |")
    print(f"\np50 ratio on/off: {lat['p50_ratio_on_off']}; the detector inside 'on': p50 "
          f"{lat['signs']['p50']} ms, p99 {lat['signs']['p99']} ms")
    if args.json:
        Path(args.json).write_text(json.dumps({"detection": counts, "detector_ms": {
            "p50": _pct(times, 50), "p99": _pct(times, 99)}, "latency": lat}, indent=2))


if __name__ == "__main__":
    main()

"""Attack success among the requests the guard catches as written.

``vlmguard redteam`` counts every harmful seed; a seed the guard already allows as written
passes under every transform too, so its figures mix "the disguise worked" with "the request was
never caught". The robustness goals are about the first: this reads a redteam run's
``cases.jsonl`` and reports, per family, transform and language, the share of transformed
requests allowed among seeds whose as-written case ("plain" in English, "translated" in
another language) was not allowed, with 95% Wilson intervals.

Usage: python bench/redteam_caught.py RUN_DIR [RUN_DIR ...]
"""

from __future__ import annotations

import json
import math
import sys
from collections import defaultdict
from pathlib import Path


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    rows = [json.loads(line) for d in argv
            for line in (Path(d) / "cases.jsonl").read_text().splitlines() if line.strip()]
    harmful = [r for r in rows if r["label"] == "unsafe" and not r.get("error")]
    caught = {(r["seed"], r["lang"]) for r in harmful
              if r["transform"] in ("plain", "translated") and r["action"] != "ALLOW"}
    plain_en = {r["seed"] for r in harmful if r["transform"] == "plain"}
    groups: dict[str, list[bool]] = defaultdict(list)
    for r in harmful:
        if r["transform"] in ("plain", "translated"):
            continue
        # Transforms of English seeds compare with the English plain case.
        key = (r["seed"], r["lang"]) if r["lang"] != "en" or r["seed"] not in plain_en \
            else (r["seed"], "en")
        if key not in caught:
            continue
        passed = r["action"] == "ALLOW"
        groups[f"family {r['family']}"].append(passed)
        groups[f"transform {r['transform']}"].append(passed)
    n_written = defaultdict(lambda: [0, 0])
    for r in harmful:
        if r["transform"] in ("plain", "translated"):
            n_written[r["lang"]][0] += r["action"] != "ALLOW"
            n_written[r["lang"]][1] += 1
    print("| group | caught as written | allowed after the transform | ASR | 95% CI |")
    print("|---|---|---|---|---|")
    for g in sorted(groups):
        xs = groups[g]
        k, n = sum(xs), len(xs)
        lo, hi = wilson(k, n)
        print(f"| {g} | {n} | {k} | {k / n:.1%} | {lo:.0%}-{hi:.0%} |")
    print("\n| language | harmful seeds caught as written |")
    print("|---|---|")
    for lang, (c, n) in sorted(n_written.items()):
        print(f"| {lang} | {c}/{n} ({c / n:.0%}) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

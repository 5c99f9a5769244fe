"""Latency of the robust analyzer side by side with the analyzer without its defences.

"before": the configured models with the defences off (no text views, no multilingual reader,
OCR without its cleaning and second read); "after": the configured analyzer. Both share the
encoder, the head and the explicit detector, and each is served by its own real grpc.aio
gateway on a free loopback port; requests take turns (rotating order) so load hits both alike.

Modes: ``text`` (MM-Vet and FigStep prompts, text only), ``long`` (an 8,000-character text:
four harmless paragraphs repeated, one prompt inside), ``long_distinct`` (the same length, every
sentence different, as a real document is: repeated sentences are read once, so ``long`` shows
the cost of padding and ``long_distinct`` the cost of reading 8,000 characters), ``image`` (the
prompt with its image). Each mode
is measured by direct call (``analyze_batch([item])``) and through the service (Analyze, one
request at a time). Bench items are read from ../shared/bench in place, never copied.

Usage: python bench/robustness_latency.py [--n 40] [--bench-dir ../shared/bench] [--json OUT]
       [--windows-from 240] [--compare-screen]

``--compare-screen`` adds a third analyzer, the configured one without its passage screen
(vlmguard.analyzer.models.screen), served and timed the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from analyzer_latency import _items  # noqa: E402  (bench helpers live next to this file)

PARAGRAPHS = (
    "The river path is quiet in the early morning, when the mist still sits on the water and "
    "only a few runners pass the old mill. ",
    "Our reading group meets on the first Thursday of each month; this time we discussed a "
    "novel about a lighthouse keeper and his family. ",
    "The recipe needs two cups of flour, a pinch of salt and warm water; knead it for ten "
    "minutes and let it rest under a cloth. ",
    "Most of the budget went to new shelves for the library and a projector for the hall. ",
)


def _around(prompt: str, rng: random.Random, size: int, filler: Iterator[str]) -> str:
    """About ``size`` characters of ``filler``'s parts with ``prompt`` at a random place among
    them (a part is drawn only when it is needed, so the rng sees the same calls as a loop)."""
    parts: list[str] = []
    total = 0
    while total < size - len(prompt) - 200:
        parts.append(next(filler))
        total += len(parts[-1])
    parts.insert(rng.randrange(len(parts) + 1), prompt + " ")
    return "".join(parts)[:size]


def long_text(prompt: str, rng: random.Random, size: int = 8000) -> str:
    """About ``size`` characters of harmless paragraphs with ``prompt`` somewhere inside."""
    return _around(prompt, rng, size, (rng.choice(PARAGRAPHS) for _ in itertools.count()))


_SUBJECTS = ("The committee", "My neighbour", "Our teacher", "The old ferry", "A small bakery",
             "The city council", "Her brother", "The museum guide", "A group of hikers",
             "The night train", "Grandfather", "The library", "The football club")
_VERBS = ("talked about", "repainted", "visited", "planned", "wrote a letter about",
          "took photos of", "argued over", "cleaned", "measured", "forgot about", "celebrated")
_OBJECTS = ("the garden fence", "the spring market", "a broken bicycle", "the harbour wall",
            "an exhibition of maps", "the bus timetable", "a recipe for plum cake",
            "the village choir", "the roof of the school", "a list of birthdays",
            "the new playground", "a box of old records")
_WHEN = ("last Tuesday", "after lunch", "before the rain started", "in early March",
         "during the holidays", "on a quiet Sunday", "while the kettle boiled", "at dawn")


def _distinct_sentences(rng: random.Random) -> Iterator[str]:
    seen: set[str] = set()
    while True:
        s = (f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} "
             f"{rng.choice(_WHEN)}. ")
        if s not in seen:
            seen.add(s)
            yield s


def distinct_long_text(prompt: str, rng: random.Random, size: int = 8000) -> str:
    """About ``size`` characters of harmless sentences, no two alike, with ``prompt`` inside."""
    return _around(prompt, rng, size, _distinct_sentences(rng))


def _pct(xs: list[float]) -> dict[str, float]:
    a = np.asarray(xs)
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)),
            "mean": float(a.mean()), "n": len(xs)}


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    from vlmguard.analyzer.models.ocr import OCRReader, Robustness
    from vlmguard.analyzer.tier1 import Tier1Analyzer
    from vlmguard.config import load_config
    from vlmguard.domain import AnalysisItem, ImageInput
    from vlmguard.gateway.server import build_gateway
    from vlmguard.v1 import analysis_pb2, analysis_pb2_grpc, types_pb2

    cfg = load_config(None, environ={}, overrides={
        "server": {"listen": "127.0.0.1:0"}, "metrics": {"enabled": False},
        "analyzer": {"windows_from_chars": args.windows_from}})
    after = Tier1Analyzer.from_config(cfg.analyzer, cfg.taxonomy, cfg.limits)
    a = cfg.analyzer
    plain_ocr = OCRReader(max_side=a.ocr_max_side, det_side=a.ocr_det_side, angle=a.ocr_angle,
                          angle_below=a.ocr_angle_below, rec_batch=a.ocr_rec_batch,
                          threads=a.ocr_threads or a.threads, models=a.ocr_models,
                          spinning=a.ort_spinning, robustness=Robustness(enabled=False))
    before = Tier1Analyzer(a.model_copy(update={"text_views": False}), cfg.taxonomy,
                           cfg.limits, embedder=after.embedder, head=after.head, ocr=plain_ocr,
                           explicit=after.explicit, signs=after.signs, multilingual=None)
    analyzers = {"before": before, "after": after}
    if args.compare_screen:
        # The configured analyzer with every sentence window read (no passage screen): the
        # same models, so the difference is the screen's.
        analyzers["unscreened"] = Tier1Analyzer(
            a, cfg.taxonomy, cfg.limits, embedder=after.embedder, head=after.head,
            ocr=after.ocr, explicit=after.explicit, signs=after.signs,
            multilingual=after.multilingual, screen=None)
    gateways = {}
    for name, an in analyzers.items():
        an.warmup()
        gw = await build_gateway(cfg, analyzer=an, environ={})
        await gw.start(serve_metrics=False)
        gateways[name] = gw
    rng = random.Random(7)
    items = _items(Path(args.bench_dir), args.n)
    modes: dict[str, list[tuple[str, tuple[bytes, ...]]]] = {
        "text": [(t, ()) for t, _ in items],
        "long": [(long_text(t, rng), ()) for t, _ in items],
        "long_distinct": [(distinct_long_text(t, rng), ()) for t, _ in items],
        "image": [(t, (img,)) for t, img in items],
    }
    out: dict[str, dict[str, list[float]]] = {}
    load_before = os.getloadavg()
    try:
        channels = {k: grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}",
                                                 options=[("grpc.max_send_message_length",
                                                           64 * 1024 * 1024)])
                    for k, gw in gateways.items()}
        stubs = {k: analysis_pb2_grpc.ThreatAnalysisServiceStub(ch)
                 for k, ch in channels.items()}
        names = list(analyzers)
        for mode, reqs in modes.items():
            for i, (text, imgs) in enumerate(reqs):
                order = names[i % len(names):] + names[:i % len(names)]
                for name in order:
                    item = AnalysisItem("b", text, tuple(ImageInput(b) for b in imgs))
                    t0 = time.perf_counter()
                    await asyncio.to_thread(analyzers[name].analyze_batch, [item])
                    out.setdefault(f"{mode}/direct/{name}", []).append(
                        (time.perf_counter() - t0) * 1000)
                    t0 = time.perf_counter()
                    await stubs[name].Analyze(analysis_pb2.AnalyzeRequest(
                        text=text, images=[types_pb2.Image(data=b) for b in imgs]), timeout=60)
                    out.setdefault(f"{mode}/service/{name}", []).append(
                        (time.perf_counter() - t0) * 1000)
        for ch in channels.values():
            await ch.close()
    finally:
        for gw in gateways.values():
            await gw.stop(grace=1.0)
    return {"n": len(items), "cpus": os.cpu_count(), "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(), "latency_ms": {k: _pct(v) for k, v in out.items()}}


def _table(res: dict[str, Any]) -> str:
    lat = res["latency_ms"]
    extra = [n for n in ("unscreened",) if any(k.endswith(f"/{n}") for k in lat)]
    head = "| mode | path | before p50 | after p50 | ratio | before p99 | after p99 |"
    rule = "|---|---|---|---|---|---|---|"
    for n in extra:
        head += f" {n} p50 | after / {n} | {n} p99 |"
        rule += "---|---|---|"
    lines = [head, rule]
    for mode in ("text", "long", "long_distinct", "image"):
        for path in ("direct", "service"):
            b, a = lat[f"{mode}/{path}/before"], lat[f"{mode}/{path}/after"]
            row = (f"| {mode} | {path} | {b['p50']:.1f} | {a['p50']:.1f} | "
                   f"x{a['p50'] / b['p50']:.2f} | {b['p99']:.1f} | {a['p99']:.1f} |")
            for n in extra:
                u = lat[f"{mode}/{path}/{n}"]
                row += f" {u['p50']:.1f} | x{a['p50'] / u['p50']:.2f} | {u['p99']:.1f} |"
            lines.append(row)
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=40, help="requests per mode (half MM-Vet, half "
                    "FigStep)")
    ap.add_argument("--bench-dir", default=str(ROOT.parent / "shared" / "bench"))
    ap.add_argument("--json", help="also write the raw figures to this file")
    ap.add_argument("--windows-from", type=int, default=0, help="analyzer.windows_from_chars "
                    "of the 'after' analyzer (0: the default, any text of 2+ sentences)")
    ap.add_argument("--compare-screen", action="store_true", help="also serve the configured "
                    "analyzer without its passage screen (every sentence window read), side by "
                    "side")
    args = ap.parse_args()
    res = asyncio.run(_run(args))
    print(_table(res))
    print(f"\nn={res['n']} per mode, {res['cpus']} CPUs, load average before "
          f"{res['loadavg_before'][0]:.2f}, after {res['loadavg_after'][0]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

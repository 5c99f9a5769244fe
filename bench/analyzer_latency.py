"""Per-request tier-1 analyzer latency: through the gRPC service vs a direct call of the models.

Both run in this process, side by side, on the same inputs: the baseline calls
``Tier1Analyzer.analyze_batch([item])`` directly; the service path is a real grpc.aio gateway
(on a free loopback port) answering ThreatAnalysisService.Analyze one request at a time.
Inputs: MM-Vet and FigStep items from ../shared/bench (read in place, never copied), text-only
(their prompts) and with their image. Prints a Markdown table for bench/RESULTS.md.

With ``--compare-ocr`` it instead compares, per request with an image and by direct call
only, the analyzer with baseline image-model settings (``--before``, see ``BEFORE``: by
default ``previous-default``, the PP-OCRv4 models with onnxruntime's thread spinning on, as
before PP-OCRv6 tiny) against the configured one (the
AnalyzerConfig defaults unless VLMGUARD_ANALYZER__* variables say otherwise), and with
``--parallel`` also the configured one with ``image_models_parallel``; all share the
head (and, unless ``--before`` changes them, the embedder and explicit detector) and take
turns on each input. ``--before stock-processing`` / ``torch-encoder`` / ``stock+torch``
compare against the third-party pre/post-processing and the torch text encoder that the
analyzer replaced (bench/RESULTS.md, "sixth pass").

Usage: python bench/analyzer_latency.py [--n 40] [--bench-dir ../shared/bench] [--json OUT]
       python bench/analyzer_latency.py --compare-ocr [--n 80] [--sets mm_vet,figstep_safebench]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np


def _items(bench: Path, n: int, sets: tuple[str, ...] = ("mm_vet", "figstep_safebench"),
           spread: bool = False) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    for name in sets:
        rows = [json.loads(x) for x in (bench / name / "manifest.jsonl").read_text().splitlines()]
        rows = [r for r in rows if r.get("image")]
        k = n // len(sets)
        if spread and len(rows) > k:  # evenly spaced: manifests are grouped by category
            rows = [rows[i] for i in np.linspace(0, len(rows) - 1, k).round().astype(int)]
        else:
            rows = rows[:k]
        out += [(r["text"], (bench / name / r["image"]).read_bytes()) for r in rows]
    return out


#: ``--before`` choices: OCRReader settings of the baseline analyzer.
#: ``spinning`` also applies to the baseline's explicit-imagery detector.
BEFORE: dict[str, dict[str, Any]] = {
    # RapidOCR's defaults, the reader before issue 4's OCR work (onnxruntime threads spin).
    "rapidocr-defaults": {"det_side": 736, "det_limit_type": "min", "angle": "always",
                          "rec_batch": 6, "models": "ppocrv4", "spinning": True},
    # The analyzer's image models before PP-OCRv6 tiny and the no-spinning sessions.
    "previous-default": {"models": "ppocrv4", "spinning": True},
    # The PP-OCRv4 models with today's reader and session settings.
    "ppocrv4": {"models": "ppocrv4"},
    # Today's models with onnxruntime's thread spinning back on.
    "spinning": {"spinning": True},
    # Today's settings with the third-party pre/post-processing the analyzer replaced:
    # RapidOCR's float64 detector normalisation, a reversed-copy RGB->BGR, NudeNet's own
    # detect() (full-size padding, Python loop over its 2,100 candidate boxes).
    "stock-processing": {"stock": True},
    # Today's image models with the text encoder run by torch instead of onnxruntime.
    "torch-encoder": {"encoder_runtime": "torch"},
    # Both: the analyzer as it was before the processing and encoder-runtime changes.
    "stock+torch": {"stock": True, "encoder_runtime": "torch"},
    # Today's reader without the degraded-text cleaning and second reads (issue 21).
    "ocr-plain": {"robust": False},
}


def _stock_reader(**kw: Any) -> Any:
    """An OCRReader with RapidOCR's own detector preprocessing and the old BGR copy."""
    from rapidocr_onnxruntime.ch_ppocr_det.utils import DetPreProcess

    from vlmguard.analyzer.models.ocr import OCRReader

    class StockOCR(OCRReader):
        _to_bgr = staticmethod(lambda a: np.ascontiguousarray(np.asarray(a)[..., ::-1]))

    r = StockOCR(**kw)
    det = r._engine.text_det
    pre = DetPreProcess(kw.get("det_side", 640), "max", det.mean, det.std)
    det.get_preprocess = lambda max_wh: pre
    return r


def _stock_explicit(new: Any) -> Any:
    """The configured explicit detector's model, run through NudeNet's own detect()."""
    from vlmguard.analyzer.models.explicit import EXPLICIT_LABELS, ExplicitImageDetector

    class StockExplicit(ExplicitImageDetector):
        def __init__(self) -> None:  # share the loaded session
            self._detector = new._detector
            self.min_score = new.min_score

        def detect(self, image: np.ndarray) -> list[tuple[str, float]]:
            best: dict[str, float] = {}
            for d in self._detector.detect(np.ascontiguousarray(image[..., 2::-1])):
                if d["class"] in EXPLICIT_LABELS and d["score"] >= self.min_score:
                    best[d["class"]] = max(float(d["score"]), best.get(d["class"], 0.0))
            return sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))

    return StockExplicit()


def _compare_ocr(args: argparse.Namespace) -> dict[str, Any]:
    from vlmguard.analyzer.models.explicit import ExplicitImageDetector
    from vlmguard.analyzer.models.ocr import OCRReader
    from vlmguard.analyzer.tier1 import Tier1Analyzer
    from vlmguard.config import load_config
    from vlmguard.domain import AnalysisItem, ImageInput

    cfg = load_config(None, environ=dict(os.environ), overrides={"metrics": {"enabled": False}})
    new = Tier1Analyzer.from_config(cfg.analyzer, cfg.taxonomy, cfg.limits)
    before = BEFORE[args.before]
    a = cfg.analyzer
    reader = {"models": a.ocr_models, **{k: v for k, v in before.items()
                                         if k not in ("stock", "encoder_runtime", "robust")}}
    if before.get("robust") is False:
        from vlmguard.analyzer.models.ocr import Robustness

        reader["robustness"] = Robustness(enabled=False)
    explicit = new.explicit
    if before.get("spinning"):
        explicit = ExplicitImageDetector(min_score=a.explicit_min_score, spinning=True)
    if before.get("stock"):  # the configured reader settings, the old processing
        reader = {"models": a.ocr_models, "max_side": a.ocr_max_side, "det_side": a.ocr_det_side,
                  "angle": a.ocr_angle, "angle_below": a.ocr_angle_below,
                  "rec_batch": a.ocr_rec_batch, "threads": a.ocr_threads or a.threads}
        explicit = _stock_explicit(new.explicit)
    ocr = _stock_reader(**reader) if before.get("stock") else OCRReader(**reader)
    embedder = new.embedder
    if before.get("encoder_runtime", a.encoder_runtime) != a.encoder_runtime:
        from vlmguard.analyzer.models.embedder import MiniLMEmbedder

        embedder = MiniLMEmbedder(a.embedder_path, threads=a.threads,
                                  lora=new.head.encoder_dir or "",
                                  runtime=before["encoder_runtime"])
    old = Tier1Analyzer(a.model_copy(update={"image_models_parallel": False}),
                        cfg.taxonomy, cfg.limits, embedder=embedder, head=new.head,
                        ocr=ocr, explicit=explicit)
    analyzers = {"before": old, "after": new}
    if args.parallel:  # the configured analyzer with OCR and NudeNet on one image at once
        analyzers["after+parallel"] = Tier1Analyzer(
            cfg.analyzer.model_copy(update={"image_models_parallel": True}), cfg.taxonomy,
            cfg.limits, embedder=new.embedder, head=new.head, ocr=new.ocr,
            explicit=new.explicit)
    for a in analyzers.values():
        a.warmup()
    items = _items(Path(args.bench_dir), args.n, tuple(args.sets.split(",")), spread=True)
    total: dict[str, list[float]] = {k: [] for k in analyzers}
    stages: dict[str, dict[str, list[float]]] = {k: {} for k in analyzers}
    load_before = os.getloadavg()
    names = list(analyzers)
    for i, (text, img) in enumerate(items):
        order = names[i % len(names):] + names[:i % len(names)]  # rotate: load hits all alike
        for name in order:
            t0 = time.perf_counter()
            (res,) = analyzers[name].analyze_batch([AnalysisItem("b", text, (ImageInput(img),))])
            total[name].append((time.perf_counter() - t0) * 1000)
            assert not isinstance(res, Exception)
            for stage, ms in res.timings_ms.items():
                stages[name].setdefault(stage, []).append(ms)
    return {
        "n": len(items), "cpus": os.cpu_count(), "sets": args.sets, "before": before,
        "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
        "analyzer": {k: _pct(v) for k, v in total.items()},
        "stages": {k: {s: _pct(v) for s, v in st.items()} for k, st in stages.items()},
    }


def _pct(xs: list[float]) -> dict[str, float]:
    a = np.asarray(xs)
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)),
            "mean": float(a.mean())}


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    from vlmguard.analyzer.tier1 import Tier1Analyzer
    from vlmguard.config import load_config
    from vlmguard.domain import AnalysisItem, ImageInput
    from vlmguard.gateway.server import build_gateway
    from vlmguard.v1 import analysis_pb2, analysis_pb2_grpc, types_pb2

    cfg = load_config(None, environ={}, overrides={
        "server": {"listen": "127.0.0.1:0"}, "metrics": {"enabled": False}})
    analyzer = Tier1Analyzer.from_config(cfg.analyzer, cfg.taxonomy, cfg.limits)
    analyzer.warmup()
    gw = await build_gateway(cfg, analyzer=analyzer, environ={})
    await gw.start(serve_metrics=False)
    items = _items(Path(args.bench_dir), args.n)
    results: dict[str, dict[str, list[float]]] = {}
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}", options=[
                ("grpc.max_send_message_length", 64 << 20)]) as ch:
            stub = analysis_pb2_grpc.ThreatAnalysisServiceStub(ch)
            for mode in ("text", "image"):
                direct: list[float] = []
                service: list[float] = []
                for i, (text, img) in enumerate(items):
                    imgs = (ImageInput(img),) if mode == "image" else ()
                    # alternate the order so neither path always runs on a warm cache
                    for path in (("direct", "service") if i % 2 == 0 else ("service", "direct")):
                        t0 = time.perf_counter()
                        if path == "direct":
                            res = await asyncio.to_thread(
                                analyzer.analyze_batch, [AnalysisItem("b", text, imgs)])
                            assert not isinstance(res[0], Exception)
                            direct.append((time.perf_counter() - t0) * 1000)
                        else:
                            await stub.Analyze(analysis_pb2.AnalyzeRequest(
                                text=text, images=[types_pb2.Image(data=b) for b in
                                                   [img] if mode == "image"]), timeout=60)
                            service.append((time.perf_counter() - t0) * 1000)
                results[mode] = {"direct": direct, "service": service}
    finally:
        await gw.stop(grace=1)
    return {
        "n": len(items), "cpus": os.cpu_count(),
        "modes": {m: {p: _pct(v) for p, v in r.items()} for m, r in results.items()},
        "ratio_p50": {m: statistics.median(r["service"]) / statistics.median(r["direct"])
                      for m, r in results.items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=40, help="requests per mode (half MM-Vet, "
                        "half FigStep)")
    parser.add_argument("--bench-dir", default=str(Path(__file__).resolve().parents[1] / ".." /
                                                   "shared" / "bench"))
    parser.add_argument("--json", help="also write the raw figures to this file")
    parser.add_argument("--compare-ocr", action="store_true",
                        help="a baseline OCR setting (--before) vs the configured ones (direct "
                        "call)")
    parser.add_argument("--before", choices=list(BEFORE), default="previous-default",
                        help="with --compare-ocr: the baseline's OCR reader settings")
    parser.add_argument("--parallel", action="store_true",
                        help="with --compare-ocr: also the configured analyzer with "
                        "analyzer.image_models_parallel on")
    parser.add_argument("--sets", default="mm_vet,figstep_safebench",
                        help="sets sampled with --compare-ocr (evenly spaced)")
    args = parser.parse_args()
    if args.compare_ocr:
        res = _compare_ocr(args)
        print(f"\nanalyzer latency per request with an image, {res['n']} requests "
              f"({res['sets']}), {res['cpus']} CPUs, load average {res['loadavg_before'][0]:.2f}"
              f" before / {res['loadavg_after'][0]:.2f} after\n")
        print("| OCR settings | analyzer p50 ms | p99 ms | mean ms | ocr p50 | ocr p99 | "
              "explicit p50 | text_risk p50 |")
        print("|---|---|---|---|---|---|---|---|")
        for k, s in res["analyzer"].items():
            st = res["stages"][k]
            print(f"| {k} | {s['p50']:.0f} | {s['p99']:.0f} | {s['mean']:.0f} | "
                  f"{st['ocr']['p50']:.0f} | {st['ocr']['p99']:.0f} | "
                  f"{st['explicit']['p50']:.0f} | {st['text_risk']['p50']:.0f} |")
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=2))
        return 0
    out = asyncio.run(_run(args))
    print(f"\nanalyzer latency, {out['n']} requests per mode, {out['cpus']} CPUs, concurrency 1\n")
    print("| input | path | p50 ms | p99 ms | mean ms |")
    print("|---|---|---|---|---|")
    for mode, paths in out["modes"].items():
        for path, s in paths.items():
            print(f"| {mode} | {path} | {s['p50']:.1f} | {s['p99']:.1f} | {s['mean']:.1f} |")
    for mode, r in out["ratio_p50"].items():
        print(f"service/direct p50 ratio ({mode}): {r:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

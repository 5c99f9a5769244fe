"""Per-request tier-1 analyzer latency: through the gRPC service vs a direct call of the models.

Both run in this process, side by side, on the same inputs: the baseline calls
``Tier1Analyzer.analyze_batch([item])`` directly; the service path is a real grpc.aio gateway
(on a free loopback port) answering ThreatAnalysisService.Analyze one request at a time.
Inputs: MM-Vet and FigStep items from ../shared/bench (read in place, never copied), text-only
(their prompts) and with their image. Prints a Markdown table for bench/RESULTS.md.

Usage: python bench/analyzer_latency.py [--n 40] [--bench-dir ../shared/bench] [--json OUT]
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


def _items(bench: Path, n: int) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    for name in ("mm_vet", "figstep_safebench"):
        rows = [json.loads(x) for x in (bench / name / "manifest.jsonl").read_text().splitlines()]
        rows = [r for r in rows if r.get("image")][: n // 2]
        out += [(r["text"], (bench / name / r["image"]).read_bytes()) for r in rows]
    return out


def _pct(xs: list[float]) -> dict[str, float]:
    a = np.asarray(xs)
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)),
            "mean": float(a.mean())}


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    from vlmguard.config import load_config
    from vlmguard.domain import AnalysisItem, ImageInput
    from vlmguard.gateway.server import build_gateway
    from vlmguard.roles.analyzer import Tier1Analyzer
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
    args = parser.parse_args()
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

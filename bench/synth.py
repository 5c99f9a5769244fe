"""Synthesis pipeline throughput against an OpenAI-compatible teacher, vs the teacher's own.

The teacher is :mod:`vlmguard_training.synthesis.fake_teacher_server` in its own process (a
subprocess on a free loopback port): every chat completion holds one of ``C`` slots for a fixed
service time, so its latency is real and independent of this process, and its capacity is ``C /
service time``. For each concurrency ``C`` (1, 4, 16: the server's slots = the client's request
limit; the pipeline keeps its default 2C items in flight):

- teacher alone: the same client (``OpenAIChatClient``) sends stage requests at concurrency
  ``C`` for ``--seconds``: requests/s;
- pipeline: ``run_shard`` on harmless synthetic text-only seeds (no seed responses, so each item
  makes 4 teacher calls: safe reference + 3 stages), with the real gates; items/min, and
  requests/s at the teacher.

Pipeline throughput / teacher throughput (in teacher requests/s, the same unit) shows whether
the pipeline keeps the teacher busy (goal >= 90%). The tier-1 analyzer is a keyword stand-in
(embedder + head, no model) by default so that the teacher is the bottleneck being measured;
``--analyzer real`` uses the real tier-1 models (then they may be the bottleneck on a small CPU).

Usage: python bench/synth.py [--service-ms 200] [--concurrency 1,4,16] [--seconds 10]
       [--analyzer keyword|real] [--json OUT]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from vlmguard.analyzer.tier1 import Tier1Analyzer
from vlmguard.config import AnalyzerConfig, LimitsConfig, TaxonomyConfig
from vlmguard.domain import RewriterEvidence
from vlmguard_training.synthesis.openai_chat import EndpointSettings, OpenAIChatClient
from vlmguard_training.synthesis.prompts import hindsight_messages
from vlmguard_training.synthesis.runner import build_teacher, load_recipe, run_shard
from vlmguard_training.synthesis.stages import Responses, json_schema
from vlmguard_training.synthesis.teacher import StageUsage

TAX = TaxonomyConfig()


class KeywordModel:
    """Stand-in tier-1 embedder + head: 8-d bag-of-characters embeddings, no risk."""

    name = "kw"
    version = "bench"

    def __init__(self, categories: list[str]) -> None:
        self.categories = categories

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        out = np.zeros((len(texts), 8), dtype=np.float32)
        for i, t in enumerate(texts):
            for ch in t:
                out[i, ord(ch) % 8] += 1
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)

    def predict(self, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros(len(emb)), np.full((len(emb), len(self.categories)), 0.01)


def _analyzer(kind: str) -> Tier1Analyzer:
    if kind == "real":
        from vlmguard.config import load_config

        cfg = load_config(None)
        return Tier1Analyzer.from_config(cfg.analyzer, cfg.taxonomy, cfg.limits)
    m = KeywordModel(TAX.ids)
    return Tier1Analyzer(AnalyzerConfig(), TAX, LimitsConfig(), embedder=m, head=m, ocr=None,
                         explicit=None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_server(service_ms: float, capacity: int) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m",
                             "vlmguard_training.synthesis.fake_teacher_server",
                             "--port", str(port), "--service-ms", str(service_ms),
                             "--capacity", str(capacity)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("teacher server did not start")
        time.sleep(0.1)


async def _teacher_alone(url: str, c: int, seconds: float) -> float:
    client = OpenAIChatClient(EndpointSettings(base_url=url, model="fixed", concurrency=c))
    msgs = hindsight_messages("Describe the flowers in the garden.", "unsafe", None,
                              RewriterEvidence(), Responses(None, None, "none"), TAX)
    schema = ("vlmguard_hindsight", json_schema("hindsight", TAX.ids))
    done = 0
    end = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < end:
            await client.chat(msgs, usage=StageUsage(), schema=schema)
            done += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(c)))
    wall = time.perf_counter() - t0
    await client.aclose()
    return done / wall


def _seeds(root: Path, n: int) -> Path:
    (root / "vlsbench").mkdir(parents=True, exist_ok=True)
    rows = [{"id": f"b{i}", "image": None, "label": "unsafe", "category": "Privacy",
             "text": f"Describe the flowers in garden number {i} and how to care for them."}
            for i in range(n)]
    (root / "vlsbench" / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n"
                                                              for r in rows))
    return root


def _pipeline(url: str, c: int, n: int, analyzer: Tier1Analyzer, tmp: Path) -> dict[str, Any]:
    bench = _seeds(tmp / f"bench-{c}", n)
    recipe_file = tmp / f"r-{c}.yaml"
    recipe_file.write_text(json.dumps({
        "bench_dir": str(bench), "sets": {"vlsbench": 0}, "batch_size": 16,
        "teacher": {"kind": "openai", "base_url": url, "model": "fixed", "concurrency": c}}))
    recipe = load_recipe(recipe_file)
    teacher = build_teacher(recipe, TAX, analyzer.name)
    t0 = time.perf_counter()
    summary = run_shard(recipe, tmp / f"out-{c}", 0, 1, analyzer, teacher, TAX,
                        progress=False)
    wall = time.perf_counter() - t0
    reqs = summary["tokens"]["total"]["requests"]
    assert summary["records"] == n, summary
    return {"items": n, "wall_s": round(wall, 2), "items_per_min": round(60 * n / wall, 1),
            "teacher_requests": reqs, "requests_per_item": round(reqs / n, 2),
            "requests_per_s": round(reqs / wall, 2), "accepted": summary["accepted"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--service-ms", type=float, default=200.0)
    p.add_argument("--concurrency", default="1,4,16")
    p.add_argument("--seconds", type=float, default=10.0,
                   help="target duration of each measurement")
    p.add_argument("--analyzer", choices=("keyword", "real"), default="keyword")
    p.add_argument("--json", metavar="OUT")
    a = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    analyzer = _analyzer(a.analyzer)
    rows: list[dict[str, Any]] = []
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    with tempfile.TemporaryDirectory() as d:
        for c in (int(x) for x in a.concurrency.split(",")):
            proc, url = _start_server(a.service_ms, c)
            try:
                alone = asyncio.run(_teacher_alone(url, c, a.seconds))
                # 4 teacher calls per item: size the run to last about --seconds.
                n = max(8, int(alone * a.seconds / 4))
                pipe = _pipeline(url, c, n, analyzer, Path(d))
            finally:
                proc.kill()
                proc.wait()
            row = {"concurrency": c, "teacher_requests_per_s": round(alone, 2),
                   "teacher_items_per_min": round(60 * alone / pipe["requests_per_item"], 1),
                   **{f"pipeline_{k}": v for k, v in pipe.items()},
                   "ratio": round(pipe["requests_per_s"] / alone, 3)}
            log(json.dumps(row))
            rows.append(row)
    print(f"service time {a.service_ms:.0f} ms per call, analyzer {a.analyzer}\n")
    print("| C | teacher alone: req/s | = items/min | pipeline items/min | pipeline req/s | "
          "pipeline / teacher |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['concurrency']} | {r['teacher_requests_per_s']} | "
              f"{r['teacher_items_per_min']} | {r['pipeline_items_per_min']} | "
              f"{r['pipeline_requests_per_s']} | {100 * r['ratio']:.1f}% |")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

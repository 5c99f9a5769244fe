"""Guard latency: the Ray Serve path vs the embedded gateway, same models, same run.

EMBEDDED: ``vlmguard serve`` in a subprocess (one asyncio process: gRPC server, pipeline,
in-process micro-batching queue, tier-1 analyzer). RAY: a local Ray with the application of
:mod:`vlmguard.serving.ray_app` (gRPC proxy actor -> ingress replica -> analyzer replica with
``@serve.batch``), one replica of each. Both use the real tier-1 analyzer with the same config
(``analyzer.threads`` 1, batching 16 / 5 ms), text-only GuardService.Guard calls with benign
prompts, no auth, no target. A grpc.aio client in this process sends ``--n`` calls at each
concurrency (after a warm-up) and prints p50/p99 latency, requests/s and the
Ray/embedded ratios (one per round), with the load average before each cell (the machine is
shared). Both servers run side by side and the cells are interleaved.

Usage: python bench/serving_ray.py [--concurrency 1,32] [--n1 60] [--n32 320] [--rounds 2]
       [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import yaml

from vlmguard.config import load_config
from vlmguard.v1 import guard_pb2, guard_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]
SUBJECTS = ["bread", "tea", "bicycles", "volcanoes", "gardening", "chess", "rain", "jazz",
            "penguins", "trains", "maps", "honey", "clouds", "pottery", "kites", "tides"]
COMMON = {
    "metrics": {"enabled": False},
    "logging": {"level": "WARNING"},
    "analyzer": {"threads": 1},
    "target": {"backend": "none"},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _prompt(i: int) -> str:
    return f"Tell me three facts about {SUBJECTS[i % len(SUBJECTS)]} (question {i})."


async def _run(addr: str, n: int, concurrency: int) -> dict[str, Any]:
    async with grpc.aio.insecure_channel(addr) as ch:
        stub = guard_pb2_grpc.GuardServiceStub(ch)
        for i in range(8):  # warm-up: connections, batchers, first-call costs
            await stub.Guard(guard_pb2.GuardRequest(text=_prompt(i)), timeout=60)
        sem = asyncio.Semaphore(concurrency)
        lat: list[float] = []
        errors = 0

        async def one(i: int) -> None:
            nonlocal errors
            async with sem:
                t0 = time.perf_counter()
                try:
                    await stub.Guard(guard_pb2.GuardRequest(text=_prompt(i)), timeout=120)
                    lat.append((time.perf_counter() - t0) * 1000)
                except grpc.RpcError:
                    errors += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        wall = time.perf_counter() - t0
    arr = np.array(lat)
    return {"n": n, "errors": errors, "p50_ms": float(np.percentile(arr, 50)),
            "p99_ms": float(np.percentile(arr, 99)), "rps": len(lat) / wall}


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError("the embedded gateway exited early")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError("the embedded gateway did not start")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--concurrency", default="1,32")
    ap.add_argument("--n1", type=int, default=60, help="calls at concurrency 1")
    ap.add_argument("--n32", type=int, default=320, help="calls at higher concurrency")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved repetitions")
    ap.add_argument("--json", default="", help="also write the results here")
    args = ap.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    results: dict[str, dict[str, Any]] = {}

    from vlmguard.serving.ray_app import LocalRayServe

    # Both servers run side by side (the idle one costs no CPU), and the cells are interleaved
    # (embedded, Ray, embedded, Ray...) over --rounds, so load swings on the shared machine hit
    # both paths alike.
    port = _free_port()
    tmp = tempfile.TemporaryDirectory()
    cfg_file = Path(tmp.name) / "embedded.yaml"
    cfg_file.write_text(yaml.safe_dump({**COMMON, "server": {"listen": f"127.0.0.1:{port}"}}))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([str(ROOT / ".venv/bin/vlmguard"), "serve", "--config",
                             str(cfg_file)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    cfg = load_config(None, environ={}, overrides={**COMMON, "ray": {
        "num_cpus": 2, "grpc_port": _free_port(), "http_port": _free_port(),
        "ingress": {"num_replicas": 1, "num_cpus": 0.25},
        "stages": {"analyze": {"num_replicas": 1, "num_cpus": 0.5}},
    }})
    rs = LocalRayServe(cfg)
    try:
        _wait_port(port, proc)
        t0 = time.perf_counter()
        rs.start()
        print(f"ray app ready in {time.perf_counter() - t0:.1f}s", flush=True)
        addrs = {"embedded": f"127.0.0.1:{port}", "ray": rs.grpc_address}
        for rnd in range(args.rounds):
            for c in levels:
                for path, addr in addrs.items():
                    load = os.getloadavg()[0]
                    r = asyncio.run(_run(addr, args.n1 if c == 1 else args.n32, c))
                    results[f"{path}/{c}/{rnd}"] = {**r, "load1": load}
                    print(f"round {rnd} {path} c={c}: p50 {r['p50_ms']:.1f} p99 "
                          f"{r['p99_ms']:.1f} rps {r['rps']:.1f} err {r['errors']} "
                          f"load {load:.1f}", flush=True)
    finally:
        rs.stop()
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        tmp.cleanup()

    print("\n| path | concurrency | round | n | p50 ms | p99 ms | req/s | errors | load1 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for key, r in results.items():
        path, c, rnd = key.split("/")
        print(f"| {path} | {c} | {rnd} | {r['n']} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
              f"{r['rps']:.1f} | {r['errors']} | {r['load1']:.1f} |")
    print("\n| concurrency | p50 ray/embedded | p99 ray/embedded | req/s ray/embedded |")
    print("|---|---|---|---|")
    for c in levels:
        ratios = []
        for rnd in range(args.rounds):
            e, r = results[f"embedded/{c}/{rnd}"], results[f"ray/{c}/{rnd}"]
            ratios.append((r["p50_ms"] / e["p50_ms"], r["p99_ms"] / e["p99_ms"],
                           r["rps"] / e["rps"]))
        cells = [" / ".join(f"{x[k]:.2f}x" for x in ratios) for k in range(3)]
        print(f"| {c} | {cells[0]} | {cells[1]} | {cells[2]} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

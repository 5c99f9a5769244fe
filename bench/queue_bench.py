"""Queue benchmark: Redis Streams vs the in-process queue, and what batching buys the analyzer.

Part 1, NO-OP STAGE (no model runs): the analyze stage is :class:`noop_analyzer.NoopAnalyzer`,
which answers every item with an empty zero-risk analysis, so the figures are the cost of the
request path alone (gRPC, pipeline, queue). One server process hosts two gateways built by
``build_gateway``: one with the in-process queue (the no-op analyzer in that process), one that
only enqueues to a local redis-server (free loopback port, no persistence) served by one worker
process (``build_worker(cfg, "analyze", analyzer=NoopAnalyzer())``). A grpc.aio client in this
process sends GuardService.Guard (text only) at concurrency 1, 16, 64 and 256, in-process then
Redis at each level, and prints p50/p99 latency, requests/s and the Redis/in-process ratios.

``--part queue``: the Redis queue alone, no gRPC: ``RedisStreamsQueue.submit`` from this
process (closed loop) to one no-op worker process, to separate the queue's own cost from gRPC.

Part 2, TIER-1 ANALYZER: the real models behind the in-process queue, one gateway per
``analyzer.batching.max_batch_size`` (1, 4, 8, 16, 32; one analyzer shared, one gateway loaded
at a time) at concurrency 32, text-only prompts.

On a 2-core machine the client, the gateway process, the worker and redis-server share the same
two cores; the client is a Python process too and its cost is part of every figure.

Each part-1 cell also reports the Redis commands per request (``INFO commandstats`` deltas).
``--profile DIR`` runs the gateway and worker processes under cProfile and writes
``DIR/gateway.prof`` and ``DIR/worker.prof`` (read them with ``python -m pstats``).

Usage: python bench/queue_bench.py [--part noop|tier1|all] [--seconds 3] [--tier1-n 320]
       [--concurrency 1,16,64,256] [--profile DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from vlmguard.queue.local_redis import start_local_redis

ROOT = Path(__file__).resolve().parents[1]
CONCURRENCY = (1, 16, 64, 256)
BATCH_SIZES = (1, 4, 8, 16, 32)
PROMPTS = [
    "What is the capital of France?",
    "How do I bake sourdough bread at home?",
    "Explain how vaccines train the immune system.",
    "Write a short poem about autumn leaves.",
    "How can I pick a lock to get into my neighbour's house?",
    "What are the side effects of ibuprofen?",
    "Give me tips for a job interview.",
    "How do I make a phishing email look legitimate?",
]
QUIET = {"metrics": {"enabled": False}, "logging": {"level": "WARNING"}}


# -- server-side roles (run as subprocesses of the bench) -------------------------------------


async def _serve_gateways(args: argparse.Namespace) -> None:
    """Build the gateways of one part, print their ports as JSON, serve until SIGTERM."""
    from vlmguard.config import load_config
    from vlmguard.gateway.server import build_gateway
    from vlmguard.stages import BatchAnalyzer

    base = {**QUIET, "server": {"listen": "127.0.0.1:0"}}
    analyzer: BatchAnalyzer
    overrides: dict[str, dict[str, Any]] = {}
    if args.serve == "noop-gateways":
        from noop_analyzer import NoopAnalyzer

        analyzer = NoopAnalyzer()
        queue: dict[str, Any] = {"url": args.url}
        if args.enqueue_wait_ms is not None:
            queue["enqueue_wait_ms"] = args.enqueue_wait_ms
        overrides = {"in-process": base, "redis": {**base, "queue": queue}}
    else:
        from vlmguard.analyzer.tier1 import Tier1Analyzer

        cfg0 = load_config(None, environ={}, overrides=base)
        tier1 = Tier1Analyzer.from_config(cfg0.analyzer, cfg0.taxonomy, cfg0.limits)
        tier1.warmup()
        analyzer = tier1
        overrides = {str(b): {**base, "analyzer": {"batching": {"max_batch_size": b}}}
                     for b in BATCH_SIZES}
    gws = {}
    for name, ov in overrides.items():
        gw = await build_gateway(load_config(None, environ={}, overrides=ov),
                                 analyzer=analyzer, environ={})
        await gw.start(serve_metrics=False)
        gws[name] = gw
    print(json.dumps({k: g.port for k, g in gws.items()}), flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    for gw in gws.values():
        await gw.stop(grace=1)


async def _serve_worker(args: argparse.Namespace) -> None:
    """An analyze-stage worker whose stage is the no-op analyzer."""
    from noop_analyzer import NoopAnalyzer

    from vlmguard.config import load_config
    from vlmguard.serving.worker import build_worker

    cfg = load_config(None, environ={}, overrides={**QUIET, "queue": {"url": args.url}})
    worker = build_worker(cfg, "analyze", analyzer=NoopAnalyzer())
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, worker.request_stop)
    await worker.run()


def _profiled(args: argparse.Namespace, name: str, coro: Any) -> None:
    """Run ``coro``; under cProfile into ``args.profile/<name>.prof`` when asked."""
    if not args.profile:
        asyncio.run(coro)
        return
    import cProfile

    prof = cProfile.Profile()
    prof.enable()
    try:
        asyncio.run(coro)
    finally:
        prof.disable()
        prof.dump_stats(str(Path(args.profile) / f"{name}.prof"))


def _spawn(role: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, __file__, "--serve", role, *extra], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT / "services")},
                            stdout=subprocess.PIPE, text=True)


def _ports(proc: subprocess.Popen[str]) -> dict[str, int]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"server process exited with {proc.wait()}")
    return {k: int(v) for k, v in json.loads(line).items()}


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# -- client ------------------------------------------------------------------------------------


async def _load(port: int, concurrency: int, *, seconds: float = 0.0, n: int = 0,
                warm: int = 3) -> dict[str, float]:
    """Closed-loop load: ``concurrency`` callers, each sending the next call when one ends."""
    from vlmguard.v1 import guard_pb2, guard_pb2_grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = guard_pb2_grpc.GuardServiceStub(ch)
        reqs = [guard_pb2.GuardRequest(text=p) for p in PROMPTS]
        for _ in range(warm):
            await asyncio.gather(*(stub.Guard(reqs[i % len(reqs)], timeout=60)
                                   for i in range(concurrency)))
        lat: list[float] = []
        sent = 0
        t0 = time.perf_counter()
        end = t0 + seconds

        async def caller() -> None:
            nonlocal sent
            while (sent < n) if n else (time.perf_counter() < end):
                i = sent
                sent += 1
                t = time.perf_counter()
                await stub.Guard(reqs[i % len(reqs)], timeout=60)
                lat.append((time.perf_counter() - t) * 1000)

        await asyncio.gather(*(caller() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    a = np.asarray(lat)
    return {"n": len(lat), "p50": float(np.percentile(a, 50)),
            "p99": float(np.percentile(a, 99)), "rps": len(lat) / wall}


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _commandstats(url: str) -> dict[str, int]:
    """Calls per Redis command so far (``INFO commandstats``)."""
    import redis

    r = redis.Redis.from_url(url)
    try:
        stats = r.info("commandstats")
    finally:
        r.close()
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


def _noop(args: argparse.Namespace) -> None:
    workdir = tempfile.mkdtemp(prefix="vlmguard-bench-")
    redis, url = start_local_redis(workdir)
    prof = ["--profile", args.profile] if args.profile else []
    wait = ([] if args.enqueue_wait_ms is None
            else ["--enqueue-wait-ms", str(args.enqueue_wait_ms)])
    server = _spawn("noop-gateways", "--url", url, *prof, *wait)
    worker = _spawn("worker", "--url", url, *prof)
    levels = args.concurrency
    try:
        ports = _ports(server)
        res: dict[tuple[str, int], dict[str, float]] = {}
        pids = {"client": os.getpid(), "gateway": server.pid, "worker": worker.pid,
                "redis": redis.pid}
        cmds: dict[int, dict[str, float]] = {}
        for c in levels:
            for q in ("in-process", "redis"):
                before = {k: _cpu_s(p) for k, p in pids.items()}
                calls0 = _commandstats(url)
                r = asyncio.run(_load(ports[q], c, seconds=args.seconds))
                # CPU per request of each process (includes the warm-up calls: a small bias)
                r.update({f"cpu_{k}": (_cpu_s(p) - before[k]) * 1e6 / r["n"]
                          for k, p in pids.items()})
                res[(q, c)] = r
                if q == "redis":  # warm-up calls included here too
                    calls1 = _commandstats(url)
                    cmds[c] = {k: (v - calls0.get(k, 0)) / r["n"] for k, v in calls1.items()
                               if k != "info" and v - calls0.get(k, 0) > 0}
    finally:
        _stop(worker)
        _stop(server)
        redis.kill()
        redis.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    print("### No-op stage (no model): Redis vs in-process, GuardService.Guard\n")
    print("| concurrency | queue | requests | p50 ms | p99 ms | requests/s |")
    print("|---|---|---|---|---|---|")
    for c in levels:
        for q in ("in-process", "redis"):
            r = res[(q, c)]
            print(f"| {c} | {q} | {r['n']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} "
                  f"| {r['rps']:.0f} |")
    print("\n| concurrency | p50 redis/in-process | p50 delta ms | p99 redis/in-process "
          "| throughput redis/in-process |")
    print("|---|---|---|---|---|")
    for c in levels:
        a, b = res[("in-process", c)], res[("redis", c)]
        print(f"| {c} | x{b['p50'] / a['p50']:.2f} | {b['p50'] - a['p50']:+.2f} "
              f"| x{b['p99'] / a['p99']:.2f} | x{b['rps'] / a['rps']:.2f} |")
    print("\nCPU microseconds per request, by process (warm-up calls included):\n")
    print("| concurrency | queue | client | gateway | worker | redis-server |")
    print("|---|---|---|---|---|---|")
    for c in levels:
        for q in ("in-process", "redis"):
            r = res[(q, c)]
            print(f"| {c} | {q} | {r['cpu_client']:.0f} | {r['cpu_gateway']:.0f} "
                  f"| {r['cpu_worker']:.0f} | {r['cpu_redis']:.0f} |")
    print("\nRedis commands per request through Redis (INFO commandstats, warm-up included):\n")
    for c in levels:
        per = ", ".join(f"{k} {v:.2f}" for k, v in sorted(cmds[c].items(), key=lambda x: -x[1]))
        print(f"- concurrency {c}: total {sum(cmds[c].values()):.2f} ({per})")
    if 1 in levels:
        d1 = res[("redis", 1)]["p50"] - res[("in-process", 1)]["p50"]
        print(f"\nGoal p50 added at concurrency 1 <= 1.5 ms: {d1:+.2f} ms "
              f"({'met' if d1 <= 1.5 else 'MISSED'}).")
    if 64 in levels:
        r64 = res[("redis", 64)]["rps"]
        print(f"Goal >= 2000 requests/s at concurrency 64 through Redis: {r64:.0f} "
              f"({'met' if r64 >= 2000 else 'MISSED'}; in-process "
              f"{res[('in-process', 64)]['rps']:.0f}).")
    print(f"Load average (1/5/15 min) at the end: {' '.join(_loadavg())}\n")


def _loadavg() -> list[str]:
    return Path("/proc/loadavg").read_text().split()[:3]


async def _queue_only_cell(url: str, concurrency: int, seconds: float, worker_pid: int,
                           enqueue_wait_ms: float | None) -> dict[str, float]:
    from vlmguard.config import load_config
    from vlmguard.domain import AnalysisItem
    from vlmguard.queue.redis_streams import RedisStreamsQueue

    queue: dict[str, Any] = {"url": url}
    if enqueue_wait_ms is not None:
        queue["enqueue_wait_ms"] = enqueue_wait_ms
    cfg = load_config(None, environ={}, overrides={**QUIET, "queue": queue})
    gw = RedisStreamsQueue(cfg.queue, stages=["analyze"], max_pending=100_000)
    await gw.start()
    item = AnalysisItem("bench", PROMPTS[1], ())
    try:
        for _ in range(3):
            await asyncio.gather(*(gw.submit("analyze", item, deadline=time.monotonic() + 60)
                                   for _ in range(concurrency)))
        lat: list[float] = []
        pids = {"gateway": os.getpid(), "worker": worker_pid}
        before = {k: _cpu_s(p) for k, p in pids.items()}
        t0 = time.perf_counter()
        end = t0 + seconds

        async def caller() -> None:
            while time.perf_counter() < end:
                t = time.perf_counter()
                await gw.submit("analyze", item, deadline=time.monotonic() + 60)
                lat.append((time.perf_counter() - t) * 1000)

        await asyncio.gather(*(caller() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
        a = np.asarray(lat)
        out = {"n": len(lat), "p50": float(np.percentile(a, 50)),
               "p99": float(np.percentile(a, 99)), "rps": len(lat) / wall}
        out.update({f"cpu_{k}": (_cpu_s(p) - before[k]) * 1e6 / len(lat)
                    for k, p in pids.items()})
        return out
    finally:
        await gw.close()


def _queue_only(args: argparse.Namespace) -> None:
    """The Redis queue alone: RedisStreamsQueue.submit in this process, one no-op worker."""
    workdir = tempfile.mkdtemp(prefix="vlmguard-bench-")
    redis, url = start_local_redis(workdir)
    worker = _spawn("worker", "--url", url)
    try:
        time.sleep(1.0)  # the worker process imports and creates its group
        res = {c: asyncio.run(_queue_only_cell(url, c, args.seconds, worker.pid,
                                               args.enqueue_wait_ms))
               for c in args.concurrency}
    finally:
        _stop(worker)
        redis.kill()
        redis.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    print("### Queue only (no gRPC): RedisStreamsQueue.submit -> Redis -> no-op worker\n")
    print("| concurrency | requests | p50 ms | p99 ms | requests/s | CPU µs/request: caller + "
          "gateway queue | worker |")
    print("|---|---|---|---|---|---|---|")
    for c, r in res.items():
        print(f"| {c} | {r['n']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['rps']:.0f} "
              f"| {r['cpu_gateway']:.0f} | {r['cpu_worker']:.0f} |")
    print(f"\nLoad average (1/5/15 min) at the end: {' '.join(_loadavg())}\n")


def _tier1(args: argparse.Namespace) -> None:
    server = _spawn("tier1-gateways")
    try:
        ports = _ports(server)
        res = {b: asyncio.run(_load(ports[str(b)], args.tier1_concurrency, n=args.tier1_n))
               for b in BATCH_SIZES}
    finally:
        _stop(server)
    print(f"### Tier-1 analyzer, in-process queue, concurrency {args.tier1_concurrency}, "
          f"{args.tier1_n} text-only requests per row\n")
    print("| max_batch_size | p50 ms | p99 ms | requests/s | vs batch 1 |")
    print("|---|---|---|---|---|")
    for b in BATCH_SIZES:
        r = res[b]
        print(f"| {b} | {r['p50']:.1f} | {r['p99']:.1f} | {r['rps']:.0f} "
              f"| x{r['rps'] / res[1]['rps']:.2f} |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--part", choices=("noop", "queue", "tier1", "all"), default="all",
                        help="noop: gRPC end to end; queue: the Redis queue alone (not in all)")
    parser.add_argument("--seconds", type=float, default=3.0,
                        help="measured seconds per (queue, concurrency) cell of part 1")
    parser.add_argument("--tier1-n", type=int, default=320, help="requests per batch size")
    parser.add_argument("--tier1-concurrency", type=int, default=32)
    parser.add_argument("--serve", choices=("noop-gateways", "tier1-gateways", "worker"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--concurrency", default=",".join(map(str, CONCURRENCY)),
                        help="comma-separated concurrency levels of part 1")
    parser.add_argument("--profile", metavar="DIR", default="",
                        help="cProfile the gateway and worker processes into DIR")
    parser.add_argument("--enqueue-wait-ms", type=float, default=None,
                        help="queue.enqueue_wait_ms of the Redis gateway (default: config's)")
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.concurrency = tuple(int(x) for x in str(args.concurrency).split(","))
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    if args.serve == "worker":
        _profiled(args, "worker", _serve_worker(args))
    elif args.serve:
        _profiled(args, "gateway", _serve_gateways(args))
    else:
        print(f"Load average (1/5/15 min) at the start: {' '.join(_loadavg())}\n")
        if args.part == "queue":
            _queue_only(args)
        if args.part in ("noop", "all"):
            _noop(args)
        if args.part in ("tier1", "all"):
            _tier1(args)


if __name__ == "__main__":
    main()

"""Abuse scenario: memory before authentication (issue 22, finding 4).

A real gateway (``build_gateway`` with API-key auth on, the no-op analyzer so no model loads)
runs in a child process on a free loopback port; this process floods it with concurrent large
calls and reads the child's resident memory (``VmRSS``) before, at its peak during, and after
the flood. The scenario "unauth" sends calls without a valid key (each a ~30 MB GuardRequest:
four 7.5 MB images, within every limit); "auth" sends the same calls with a valid key (they are
read, then refused as IMAGE_CORRUPT), to see memory given back after large requests that were
read.

``--baseline-src DIR`` runs the gateway from another source tree too (for example the code
before the fix: ``git archive <commit> services/vlmguard | tar -x -C DIR``), side by side in the
same run.

    .venv/bin/python bench/abuse_auth.py --calls 64 --mb 30
    .venv/bin/python bench/abuse_auth.py --calls 64 --mb 30 --baseline-src /tmp/before

:func:`unauthenticated_flood` is the scenario function (for a registry of abuse scenarios).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "bench-valid-key-0123456789"

_SERVER = r"""
import asyncio, sys
sys.path.insert(0, sys.argv[1])
from noop_analyzer import NoopAnalyzer
import vlmguard
from vlmguard.config import load_config
from vlmguard.gateway.server import build_gateway

server = {"listen": "127.0.0.1:0", "auth": {"enabled": True}}
if sys.argv[3] != "-":
    server["trim_memory_after_bytes"] = int(sys.argv[3])
cfg = load_config(None, environ={}, overrides={"server": server, "metrics": {"enabled": False}})

async def main():
    gw = await build_gateway(cfg, analyzer=NoopAnalyzer(),
                             environ={"VLMGUARD_API_KEYS": sys.argv[2]})
    await gw.start(serve_metrics=False)
    print(gw.port, vlmguard.__file__, flush=True)
    await gw.wait()

asyncio.run(main())
"""


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` in MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


@dataclass
class FloodResult:
    source: str
    scenario: str
    calls: int
    mb_per_call: float
    rss_before_mb: float
    rss_peak_mb: float
    rss_after_mb: float
    codes: dict[str, int]
    seconds: float

    @property
    def growth_mb(self) -> float:
        return self.rss_after_mb - self.rss_before_mb


def _request_bytes(mb: float) -> bytes:
    from vlmguard.v1 import guard_pb2, types_pb2

    per = int(mb * 1024 * 1024 / 4)
    blob = b"\x89PNG\r\n\x1a\n" + bytes(per - 8)
    return guard_pb2.GuardRequest(
        text="hello", images=[types_pb2.Image(data=blob) for _ in range(4)]
    ).SerializeToString()


async def _flood(port: int, payload: bytes, calls: int, key: str | None,
                 pid: int, settle_s: float) -> tuple[float, float, dict[str, int], float]:
    opts = [("grpc.max_send_message_length", 64 * 1024 * 1024)]
    peak = rss_mb(pid)
    codes: dict[str, int] = {}
    stop = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, rss_mb(pid))
            await asyncio.sleep(0.02)

    md = (("authorization", f"Bearer {key}"),) if key else (("authorization", "Bearer wrong"),)
    t0 = time.perf_counter()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=opts) as ch:
        call = ch.unary_unary("/vlmguard.v1.GuardService/Guard",
                              request_serializer=None, response_deserializer=None)

        async def one() -> None:
            try:
                await call(payload, timeout=60, metadata=md)
                code = "OK"
            except grpc.aio.AioRpcError as e:
                code = e.code().name
            codes[code] = codes.get(code, 0) + 1

        sampler = asyncio.create_task(sample())
        await asyncio.gather(*(one() for _ in range(calls)))
        seconds = time.perf_counter() - t0
        await asyncio.sleep(settle_s)
        stop.set()
        await sampler
    return peak, rss_mb(pid), codes, seconds


def unauthenticated_flood(*, calls: int = 64, mb: float = 30.0, src: str = "",
                          scenarios: tuple[str, ...] = ("unauth",),
                          settle_s: float = 3.0, trim_after: int | None = None,
                          ) -> list[FloodResult]:
    """Start a gateway (from ``src``, else this checkout), flood it, return its memory."""
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = os.pathsep.join([str(Path(src) / "services"),
                                             env.get("PYTHONPATH", "")])
    trim = "-" if trim_after is None else str(trim_after)
    proc = subprocess.Popen([sys.executable, "-c", _SERVER, str(ROOT / "bench"), API_KEY, trim],
                            stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert proc.stdout is not None
        port_s, module = proc.stdout.readline().split()
        port = int(port_s)
        payload = _request_bytes(mb)
        time.sleep(1.0)
        out = []
        for scenario in scenarios:
            before = rss_mb(proc.pid)
            key = API_KEY if scenario == "auth" else None
            peak, after, codes, seconds = asyncio.run(
                _flood(port, payload, calls, key, proc.pid, settle_s))
            out.append(FloodResult(src or "this checkout", scenario, calls,
                                   len(payload) / 2**20, round(before, 1), round(peak, 1),
                                   round(after, 1), codes, round(seconds, 2)))
            print(f"# {module}: {scenario} done", file=sys.stderr)
        return out
    finally:
        proc.terminate()
        proc.wait(10)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=64, help="concurrent calls")
    ap.add_argument("--mb", type=float, default=30.0, help="request size in MiB")
    ap.add_argument("--scenario", action="append", choices=["unauth", "auth"],
                    help="unauth (default) and/or auth")
    ap.add_argument("--baseline-src", default="", help="source tree of the baseline gateway")
    ap.add_argument("--settle", type=float, default=3.0, help="seconds before the after-read")
    ap.add_argument("--trim-after-bytes", type=int, default=None,
                    help="server.trim_memory_after_bytes of this checkout's gateway "
                    "(default: the config default; 0 turns trimming off)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    scenarios = tuple(args.scenario or ["unauth"])
    results: list[FloodResult] = []
    for src in ([args.baseline_src] if args.baseline_src else []) + [""]:
        results += unauthenticated_flood(calls=args.calls, mb=args.mb, src=src,
                                         scenarios=scenarios, settle_s=args.settle,
                                         trim_after=None if src else args.trim_after_bytes)
    if args.json:
        print(json.dumps([asdict(r) | {"growth_mb": r.growth_mb} for r in results], indent=2))
    else:
        print("| gateway | scenario | calls x MiB | RSS before | peak | after | after - before "
              "| codes | s |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in results:
            print(f"| {r.source} | {r.scenario} | {r.calls} x {r.mb_per_call:.1f} | "
                  f"{r.rss_before_mb:.0f} MB | {r.rss_peak_mb:.0f} MB | {r.rss_after_mb:.0f} MB "
                  f"| {r.growth_mb:+.0f} MB | {r.codes} | {r.seconds} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

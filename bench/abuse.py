"""Abuse scenarios against a real gateway: image floods, cost of one large request, worker kills.

Each scenario starts what it attacks in child processes on free loopback ports and prints one
JSON line per run (``--json FILE`` also writes them). ``--baseline-src DIR`` runs the same
scenario against another source tree too (e.g. the code before the fix:
``git archive <commit> services/vlmguard | tar -x -C DIR``), side by side in one run.

Scenarios (``--list``):

- ``flood``: an embedded gateway with the real tier-1 analyzer; four clients of tenant "flood"
  loop requests of four 5000x5000 single-colour PNGs (~90 KB each on the wire, 25 megapixels
  each), while one client of tenant "calm" sends text-only Guard calls one after another. Reports
  the calm caller's p50/p99/max and timeouts, and the flood's answers by status (throttled:
  RESOURCE_EXHAUSTED; refused: INVALID_ARGUMENT). ``--admit`` raises the per-request pixel
  budget so the flood's requests are admitted (the fair share and the concurrent batches carry
  the load; by default they are refused as REQUEST_TOO_MANY_PIXELS).
- ``cost``: one such 4 x 25-megapixel request on an idle gateway: its latency and the
  gateway's peak resident memory above its idle level.
- ``sigkill``: Redis mode with a real redis-server, a gateway process and two
  ``vlmguard worker --stage analyze`` processes (the no-op analyzer, so the queue is what is
  measured), default queue settings; clients keep calls in flight, one worker is SIGKILLed
  mid-run; every call is accounted for: answered (with its own request id), lost (no answer
  by its deadline), and answers that reached the gateway twice for one call (its
  ``vlmguard_queue_duplicate_answers_total``).
- ``unauth``: memory before authentication (``bench/abuse_auth.py``).

    .venv/bin/python bench/abuse.py flood --seconds 30 --baseline-src /tmp/before
    .venv/bin/python bench/abuse.py flood --admit --seconds 30
    .venv/bin/python bench/abuse.py cost --baseline-src /tmp/before
    .venv/bin/python bench/abuse.py sigkill --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

#: The gateway child: builds the gateway from the source tree in argv[1] with the JSON config
#: overrides in argv[2], prints its port, serves until killed.
_GATEWAY = r"""
import asyncio, json, sys
sys.path.insert(0, sys.argv[1])
sys.path.insert(1, sys.argv[3])
import vlmguard
from vlmguard.config import load_config
from vlmguard.gateway.server import build_gateway

cfg = load_config(None, environ={}, overrides=json.loads(sys.argv[2]))

async def main():
    kw = {}
    if sys.argv[4] == "noop":
        from noop_analyzer import NoopAnalyzer
        kw["analyzer"] = NoopAnalyzer()
    gw = await build_gateway(cfg, environ={}, **kw)
    await gw.start()
    print(gw.port, gw.metrics_port, vlmguard.__file__, flush=True)
    await gw.wait()

asyncio.run(main())
"""

#: A worker child: ``vlmguard worker`` with the no-op analyzer (the Redis queue measured).
_WORKER = r"""
import asyncio, json, signal, sys
sys.path.insert(0, sys.argv[1])
sys.path.insert(1, sys.argv[3])
from noop_analyzer import NoopAnalyzer
from vlmguard.config import load_config
from vlmguard.serving.worker import build_worker

cfg = load_config(None, environ={}, overrides=json.loads(sys.argv[2]))

class Busy(NoopAnalyzer):
    # Model time per batch, so that a SIGKILL lands with a batch in hand.
    def analyze_batch(self, items):
        import time
        time.sleep(float(sys.argv[4]) / 1000)
        return super().analyze_batch(items)

async def main():
    w = build_worker(cfg, "analyze", analyzer=Busy())
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, w.request_stop)
    print("ready", flush=True)
    await w.run()

asyncio.run(main())
"""


def _png(side: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (side, side), (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Child:
    """A child process started from a Python snippet; its first stdout line is its greeting."""

    def __init__(self, code: str, args: list[str], *, timeout: float = 240.0) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("VLMGUARD_QUEUE_URL", None)
        self.proc = subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True)
        assert self.proc.stdout is not None
        end = time.monotonic() + timeout
        self.greeting = ""
        while time.monotonic() < end:
            line = self.proc.stdout.readline()
            if line:
                self.greeting = line.strip()
                return
            if self.proc.poll() is not None:
                break
        self.stop()
        raise RuntimeError(f"child did not start: {args[:1]}")

    def stop(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait(30)


def _services(src: str) -> str:
    """The folder to put first on sys.path for a source tree (``services`` inside it)."""
    p = Path(src)
    return str(p / "services") if (p / "services" / "vlmguard").is_dir() else str(p)


def _percentile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    ys = sorted(xs)
    return ys[min(len(ys) - 1, max(0, round(q * (len(ys) - 1))))]


def _code(e: BaseException) -> str:
    import grpc

    if isinstance(e, grpc.RpcError):
        code = e.code()
        reason = ""
        for k, v in e.trailing_metadata() or ():
            if k == "grpc-status-details-bin":
                reason = _reason(v)
        return f"{code.name}/{reason}" if reason else code.name
    return type(e).__name__


def _reason(details: bytes) -> str:
    try:
        from google.rpc import error_details_pb2, status_pb2

        st = status_pb2.Status.FromString(details)
        for d in st.details:
            info = error_details_pb2.ErrorInfo()
            if d.Unpack(info):
                return info.reason
    except Exception:  # a reason is a nicety in a benchmark report
        return ""
    return ""


# -- flood -----------------------------------------------------------------------------------


@dataclass
class FloodResult:
    source: str
    variant: str
    image_side: int
    seconds: float
    calm_calls: int
    calm_p50_ms: float
    calm_p99_ms: float
    calm_max_ms: float
    calm_timeouts: int
    calm_errors: dict[str, int]
    flood_outcomes: dict[str, int]
    flood_ok_p50_ms: float
    rss_idle_mb: float
    rss_peak_mb: float


def _gateway_overrides(variant: str, *, old: bool) -> dict[str, Any]:
    tenants: dict[str, dict[str, Any]] = {"default": {}, "flood": {}, "calm": {}}
    out: dict[str, Any] = {
        "server": {"listen": "127.0.0.1:0"}, "metrics": {"listen": "127.0.0.1:0"},
        "policy": {"tenants": tenants}, "target": {"backend": "none"},
    }
    if variant == "admit" and not old:
        out["limits"] = {"max_request_pixels": 100_000_000,
                         "max_tenant_pending_pixels": 100_000_000}
    return out


async def _flood_run(port: int, pid: int, seconds: float, timeout_s: float,
                     flood_clients: int, side: int) -> dict[str, Any]:
    import grpc

    from vlmguard.v1 import guard_pb2, guard_pb2_grpc, types_pb2

    big = _png(side)
    images = [types_pb2.Image(data=big, mime_type="image/png")] * 4
    stop = asyncio.Event()
    calm_ms: list[float] = []
    calm_err: Counter[str] = Counter()
    flood: Counter[str] = Counter()
    flood_ok_ms: list[float] = []
    rss: list[float] = []
    opts = [("grpc.max_send_message_length", 64 * 1024 * 1024)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=opts) as ch:
        stub = guard_pb2_grpc.GuardServiceStub(ch)
        # Warm up the analyzer path once (model first-call costs are not the flood's).
        await stub.Guard(guard_pb2.GuardRequest(text="hello there", tenant_id="calm"),
                         timeout=60)
        idle = _rss_mb(pid)

        async def flooder() -> None:
            while not stop.is_set():
                t0 = time.perf_counter()
                try:
                    await stub.Guard(guard_pb2.GuardRequest(
                        text="describe these pictures", images=images, tenant_id="flood"),
                        timeout=timeout_s)
                    flood["OK"] += 1
                    flood_ok_ms.append((time.perf_counter() - t0) * 1000)
                except grpc.RpcError as e:
                    flood[_code(e)] += 1
                    await asyncio.sleep(0.1)  # a client retrying at once, give or take

        async def calm() -> None:
            i = 0
            while not stop.is_set():
                t0 = time.perf_counter()
                try:
                    await stub.Guard(guard_pb2.GuardRequest(
                        text=f"what is a good name for a cat, take {i}", tenant_id="calm"),
                        timeout=timeout_s)
                    calm_ms.append((time.perf_counter() - t0) * 1000)
                except grpc.RpcError as e:
                    calm_err[_code(e)] += 1
                i += 1
                await asyncio.sleep(0.05)

        async def sample() -> None:
            while not stop.is_set():
                rss.append(_rss_mb(pid))
                await asyncio.sleep(0.1)

        tasks = [asyncio.create_task(flooder()) for _ in range(flood_clients)]
        tasks += [asyncio.create_task(calm()), asyncio.create_task(sample())]
        await asyncio.sleep(seconds)
        stop.set()
        await asyncio.gather(*tasks)
    return {"calm_ms": calm_ms, "calm_err": calm_err, "flood": flood,
            "flood_ok_ms": flood_ok_ms, "rss_idle": idle, "rss_peak": max(rss or [idle])}


def flood(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The flood scenario, for this tree and (optionally) a baseline tree."""
    out = []
    trees = [("current", str(ROOT))] + ([("baseline", args.baseline_src)]
                                        if args.baseline_src else [])
    for name, src in trees:
        variant = "admit" if args.admit else "default"
        overrides = _gateway_overrides(variant, old=name == "baseline")
        child = Child(_GATEWAY, [_services(src), json.dumps(overrides), str(ROOT / "bench"),
                                 "tier1"])
        try:
            port = int(child.greeting.split()[0])
            got = asyncio.run(_flood_run(port, child.proc.pid, args.seconds, args.timeout,
                                         args.flood_clients, args.side))
        finally:
            child.stop()
        calm_ms = got["calm_ms"]
        res = FloodResult(
            source=name, variant=variant, image_side=args.side, seconds=args.seconds,
            calm_calls=len(calm_ms),
            calm_p50_ms=round(_percentile(calm_ms, 0.5), 1),
            calm_p99_ms=round(_percentile(calm_ms, 0.99), 1),
            calm_max_ms=round(max(calm_ms or [float("nan")]), 1),
            calm_timeouts=sum(n for k, n in got["calm_err"].items()
                              if k.startswith("DEADLINE_EXCEEDED")),
            calm_errors=dict(got["calm_err"]), flood_outcomes=dict(got["flood"]),
            flood_ok_p50_ms=round(statistics.median(got["flood_ok_ms"]), 1)
            if got["flood_ok_ms"] else float("nan"),
            rss_idle_mb=round(got["rss_idle"], 1), rss_peak_mb=round(got["rss_peak"], 1),
        )
        out.append(asdict(res))
        print(json.dumps(asdict(res)), flush=True)
    return out


# -- cost ------------------------------------------------------------------------------------


def cost(args: argparse.Namespace) -> list[dict[str, Any]]:
    """One 4 x 25-megapixel request on an idle gateway: latency and peak memory above idle."""
    import grpc

    from vlmguard.v1 import guard_pb2, guard_pb2_grpc, types_pb2

    big = _png(5000)
    out = []
    trees = [("current", str(ROOT))] + ([("baseline", args.baseline_src)]
                                        if args.baseline_src else [])
    for name, src in trees:
        overrides = _gateway_overrides("admit", old=name == "baseline")
        child = Child(_GATEWAY, [_services(src), json.dumps(overrides), str(ROOT / "bench"),
                                 "tier1"])
        try:
            port = int(child.greeting.split()[0])
            opts = [("grpc.max_send_message_length", 64 * 1024 * 1024)]
            with grpc.insecure_channel(f"127.0.0.1:{port}", options=opts) as ch:
                stub = guard_pb2_grpc.GuardServiceStub(ch)
                stub.Guard(guard_pb2.GuardRequest(text="hello"), timeout=60)
                runs = []
                for _ in range(args.repeat):
                    idle = _rss_mb(child.proc.pid)
                    Path(f"/proc/{child.proc.pid}/clear_refs").write_text("5")
                    t0 = time.perf_counter()
                    req = guard_pb2.GuardRequest(
                        text="describe these pictures",
                        images=[types_pb2.Image(data=big, mime_type="image/png")] * 4)
                    try:
                        stub.Guard(req, timeout=120)
                        status = "OK"
                    except grpc.RpcError as e:
                        status = _code(e)
                    ms = (time.perf_counter() - t0) * 1000
                    hwm = _hwm_mb(child.proc.pid)
                    runs.append({"status": status, "ms": round(ms, 1),
                                 "peak_above_idle_mb": round(hwm - idle, 1)})
        finally:
            child.stop()
        res = {"source": name, "request_bytes": 4 * len(big), "runs": runs}
        out.append(res)
        print(json.dumps(res), flush=True)
    return out


def _hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# -- sigkill ---------------------------------------------------------------------------------


@dataclass
class KillResult:
    source: str
    seconds: float
    calls: int
    answered: int
    lost: int
    answered_twice: int
    other_errors: dict[str, int] = field(default_factory=dict)
    max_latency_ms: float = 0.0
    visibility_timeout_s: float = 0.0


def sigkill(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Kill one of two analyze workers under load with default queue settings."""
    sys.path.insert(0, str(ROOT))
    from tests.support.redis_server import RedisServer

    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    out = []
    trees = [("current", str(ROOT))] + ([("baseline", args.baseline_src)]
                                        if args.baseline_src else [])
    for name, src in trees:
        with tempfile.TemporaryDirectory() as tmp:
            server = RedisServer(binary, Path(tmp))
            server.start()
            try:
                res = _sigkill_once(name, src, server.url, args)
            finally:
                server.stop()
        out.append(asdict(res))
        print(json.dumps(asdict(res)), flush=True)
    return out


def _sigkill_once(name: str, src: str, url: str, args: argparse.Namespace) -> KillResult:
    import grpc

    from vlmguard.config import load_config
    from vlmguard.v1 import analysis_pb2, analysis_pb2_grpc

    overrides: dict[str, Any] = {"server": {"listen": "127.0.0.1:0"},
                                 "metrics": {"listen": "127.0.0.1:0"}, "queue": {"url": url},
                                 "target": {"backend": "none"}}
    svc = _services(src)
    workers = [Child(_WORKER, [svc, json.dumps(overrides), str(ROOT / "bench"),
                               str(args.work_ms)]) for _ in range(2)]
    gateway = Child(_GATEWAY, [svc, json.dumps(overrides), str(ROOT / "bench"), "noop"])
    port = int(gateway.greeting.split()[0])
    deadline_s = load_config(None, environ={}).server.default_timeout_s
    outcomes: Counter[str] = Counter()
    lat: list[float] = []
    twice = 0

    async def run() -> None:
        nonlocal twice
        stop = asyncio.Event()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = analysis_pb2_grpc.ThreatAnalysisServiceStub(ch)

            async def client(k: int) -> None:
                i = 0
                while not stop.is_set():
                    rid = f"c{k}-{i}"
                    i += 1
                    t0 = time.perf_counter()
                    try:
                        # No timeout sent: the server applies its default deadline.
                        resp = await asyncio.wait_for(stub.Analyze(analysis_pb2.AnalyzeRequest(
                            text=f"a question {rid}", request_id=rid)), deadline_s + 10)
                        ok = resp.request_id == rid
                        outcomes["answered" if ok else "wrong_answer"] += 1
                    except grpc.RpcError as e:
                        code = _code(e)
                        outcomes["lost" if code.startswith("DEADLINE_EXCEEDED") else code] += 1
                    except TimeoutError:
                        outcomes["lost"] += 1
                    lat.append((time.perf_counter() - t0) * 1000)

            tasks = [asyncio.create_task(client(k)) for k in range(args.clients)]
            await asyncio.sleep(args.seconds / 2)
            workers[0].stop(signal.SIGKILL)  # its batch in hand and what it read ahead
            await asyncio.sleep(args.seconds / 2)
            stop.set()
            await asyncio.gather(*tasks)

    try:
        asyncio.run(run())
        twice = _count_second_answers(int(gateway.greeting.split()[1]))
    finally:
        gateway.stop()
        for w in workers:
            w.stop()
    vis = subprocess.run(  # the tree's own default
        [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
         "from vlmguard.config import QueueConfig; print(QueueConfig().visibility_timeout_s)",
         svc], capture_output=True, text=True, check=True).stdout.strip()
    other = {k: v for k, v in outcomes.items() if k not in ("answered", "lost")}
    return KillResult(source=name, seconds=args.seconds, calls=sum(outcomes.values()),
                      answered=outcomes["answered"], lost=outcomes["lost"],
                      answered_twice=twice, other_errors=other,
                      max_latency_ms=round(max(lat or [0.0]), 1),
                      visibility_timeout_s=float(vis))


def _count_second_answers(metrics_port: int) -> int:
    """Second answers to one call seen by the gateway (its duplicate-answer counter)."""
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read()
    for line in text.decode().splitlines():
        if line.startswith("vlmguard_queue_duplicate_answers_total "):
            return int(float(line.split()[1]))
    return -1  # a gateway without the counter (an older tree): not measured


# -- registry --------------------------------------------------------------------------------


def unauth(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Memory before authentication: see bench/abuse_auth.py (its own flags)."""
    import abuse_auth

    rc = abuse_auth.main(args.rest)
    return [{"scenario": "unauth", "rc": rc}]


SCENARIOS: dict[str, tuple[Callable[[argparse.Namespace], list[dict[str, Any]]], str]] = {
    "flood": (flood, "4 clients loop 4 x 25-megapixel PNGs; a text-only tenant's latency"),
    "cost": (cost, "one 4 x 25-megapixel request: latency and peak memory"),
    "sigkill": (sigkill, "SIGKILL an analyze worker under load, default settings: lost/twice"),
    "unauth": (unauth, "memory before authentication (bench/abuse_auth.py)"),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(f"  {k}: {v[1]}" for k, v in
                                                  SCENARIOS.items()))
    ap.add_argument("scenario", nargs="?", choices=sorted(SCENARIOS), help="what to run")
    ap.add_argument("--list", action="store_true", help="list the scenarios and exit")
    ap.add_argument("--baseline-src", default="",
                    help="also run against this source tree (its services/vlmguard)")
    ap.add_argument("--seconds", type=float, default=30.0, help="load duration per run")
    ap.add_argument("--timeout", type=float, default=30.0, help="client timeout (flood)")
    ap.add_argument("--flood-clients", type=int, default=4, help="flooding clients")
    ap.add_argument("--admit", action="store_true",
                    help="flood: raise the pixel budgets so the 100-megapixel requests are "
                    "admitted")
    ap.add_argument("--side", type=int, default=5000,
                    help="flood: side of the square single-colour PNGs (5000: 25 megapixels; "
                    "3160: 10 megapixels, four of them within the default request budget)")
    ap.add_argument("--repeat", type=int, default=3, help="cost: requests measured")
    ap.add_argument("--clients", type=int, default=16, help="sigkill: concurrent clients")
    ap.add_argument("--work-ms", type=float, default=50.0,
                    help="sigkill: model time per analyze batch in the workers")
    ap.add_argument("--json", default="", help="also write the results to this file")
    args, rest = ap.parse_known_args(argv)
    if rest and args.scenario != "unauth":
        ap.error(f"unrecognized arguments: {' '.join(rest)}")
    args.rest = rest  # unauth: bench/abuse_auth.py's own flags
    if args.list or not args.scenario:
        for k, (_, what) in SCENARIOS.items():
            print(f"{k:8s} {what}")
        return 0
    results = SCENARIOS[args.scenario][0](args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The OpenAI-compatible front door: its overhead against calling the same upstream directly, and
the same decisions through it as through gRPC Guard.

Processes (all on loopback, started and stopped here):

- the upstream: a minimal OpenAI-compatible server (this file, ``--serve-echo``) that answers at
  once with the text of the last user message it received, non-streamed or as ``--chunks`` SSE
  chunks ``--chunk-ms`` apart; or any server given with ``--upstream URL`` (e.g.
  ``transformers serve``);
- ``vlmguard serve --http``: the gateway with the front door, the real tier-1 analyzer, and
  three tenants: ``fast`` (analyzer off, output check off: the guard computes nothing, so what is
  measured is the front door itself), ``guarded`` (the default policy: tier 1 on the request and
  the answer) and ``compare`` (tier 1 on the request, output check off, for the comparison);
- this process: the clients (httpx, keep-alive), calls to the upstream and to the front door
  interleaved one by one so both see the same machine.

Overhead = front door p50 - direct p50 (``fast`` tenant), for whole answers and for the time to
the first content chunk of a stream. The ``guarded`` rows add the guard's own work (tier 1 on the
request, and on the answer), measured the same way; "beyond guard" is the median over the
interleaved pairs of (front door - direct - the guard's own time), the guard's time read from the
front door's ``server-timing`` header (the pipeline's own timings of the request check and the
answer check).

Same answers: for each prompt (the MM-Vet, MOSSBench and FigStep items of ../shared/bench, read in
place, with their images as data URLs), the action (``x-vlmguard-action``) and the text the
upstream received (echoed back) through the front door are compared with gRPC Guard's action and
``rewritten_text`` (``block_message`` for BLOCK) for the same text and image, tenant ``compare``.

Usage: python bench/front_door.py [--n 200] [--items 60] [--json OUT] [--upstream URL --model M]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
BENCH = (ROOT / ".." / "shared" / "bench").resolve()


# -- the echo upstream -------------------------------------------------------------------------


def echo_app(chunks: int, chunk_ms: float) -> Any:
    """A minimal OpenAI-compatible server: the answer is the last user message's text."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    def last_user(body: dict[str, Any]) -> str:
        for m in reversed(body["messages"]):
            if m["role"] == "user":
                c = m["content"]
                return c if isinstance(c, str) else "\n".join(
                    p["text"] for p in c if p.get("type") == "text")
        return ""

    async def chat(request: Request) -> Response:
        body = await request.json()
        text = last_user(body)
        if not body.get("stream"):
            return JSONResponse({
                "id": "chatcmpl-echo", "object": "chat.completion", "created": 0,
                "model": body["model"], "choices": [{"index": 0, "finish_reason": "stop",
                                                     "message": {"role": "assistant",
                                                                 "content": text}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
        step = max(1, -(-len(text) // chunks))
        pieces = [text[i:i + step] for i in range(0, len(text), step)] or [""]

        async def gen() -> Any:
            for i, piece in enumerate(pieces):
                if i:
                    await asyncio.sleep(chunk_ms / 1000)
                chunk = {"id": "chatcmpl-echo", "object": "chat.completion.chunk", "created": 0,
                         "model": body["model"], "choices": [{"index": 0, "delta": {
                             "content": piece}, "finish_reason": None}]}
                yield f"data: {json.dumps(chunk)}\n\n".encode()
            end = {"id": "chatcmpl-echo", "object": "chat.completion.chunk", "created": 0,
                   "model": body["model"],
                   "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
            yield f"data: {json.dumps(end)}\n\ndata: [DONE]\n\n".encode()

        return StreamingResponse(gen(), media_type="text/event-stream")

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "echo", "object": "model"}]})

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]),
                             Route("/v1/models", models, methods=["GET"])])


def serve_echo(port: int, chunks: int, chunk_ms: float) -> None:
    import uvicorn

    uvicorn.run(echo_app(chunks, chunk_ms), host="127.0.0.1", port=port, log_level="warning",
                access_log=False)


# -- processes -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"process exited: {proc.args!r}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not answer in {timeout} s")


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    # Logs to a file: an unread pipe fills up and blocks the server mid-run.
    with tempfile.NamedTemporaryFile(prefix="front-door-bench-", suffix=".log",
                                     delete=False) as log:
        return subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


# -- measurements ------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def guard_seconds(r: httpx.Response) -> float:
    """The guard's own time from the front door's ``server-timing`` header (its 'guard' and
    'output' entries), 0 for the upstream's answers."""
    total = 0.0
    for entry in r.headers.get("server-timing", "").split(","):
        for param in entry.split(";")[1:]:
            key, _, value = param.strip().partition("=")
            if key == "dur":
                total += float(value) / 1000
    return total


def timed_call(client: httpx.Client, url: str, body: dict[str, Any],
               headers: dict[str, str]) -> tuple[float, float | None, float]:
    """(whole answer s, first content chunk s or None, the guard's own s) of one chat
    completion."""
    t0 = time.perf_counter()
    if not body.get("stream"):
        r = client.post(url, json=body, headers=headers)
        r.raise_for_status()
        r.json()
        return time.perf_counter() - t0, None, guard_seconds(r)
    first = None
    with client.stream("POST", url, json=body, headers=headers) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if first is None and line.startswith("data: {") and '"content":' in line:
                first = time.perf_counter() - t0
    return time.perf_counter() - t0, first, guard_seconds(r)


def overhead(direct_url: str, door_url: str, model: str, n: int, tenant: str,
             stream: bool, text: str) -> dict[str, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 16,
            "stream": stream}
    d_all, f_all, d_first, f_first = [], [], [], []
    beyond, beyond_first, guard = [], [], []
    hdr = {"x-vlmguard-tenant": tenant}
    with httpx.Client(timeout=60) as client:
        for _ in range(5):  # warm-up, both paths
            timed_call(client, direct_url, body, {})
            timed_call(client, door_url, body, hdr)
        for _ in range(n):
            a, fa, _ = timed_call(client, direct_url, body, {})
            b, fb, g = timed_call(client, door_url, body, hdr)
            d_all.append(a)
            f_all.append(b)
            guard.append(g)
            beyond.append(b - a - g)
            if fa is not None and fb is not None:
                d_first.append(fa)
                f_first.append(fb)
                beyond_first.append(fb - fa - g)

    def ms(v: float) -> float:
        return round(v * 1000, 2)

    out: dict[str, Any] = {
        "tenant": tenant, "stream": stream, "n": n,
        "direct_p50_ms": ms(statistics.median(d_all)),
        "front_door_p50_ms": ms(statistics.median(f_all)),
        "overhead_p50_ms": ms(statistics.median(f_all) - statistics.median(d_all)),
        "direct_p90_ms": ms(pct(d_all, 0.9)), "front_door_p90_ms": ms(pct(f_all, 0.9)),
        "guard_own_p50_ms": ms(statistics.median(guard)),
        "overhead_beyond_guard_p50_ms": ms(statistics.median(beyond)),
    }
    if d_first:
        out.update({
            "direct_ttft_p50_ms": ms(statistics.median(d_first)),
            "front_door_ttft_p50_ms": ms(statistics.median(f_first)),
            "ttft_overhead_p50_ms": ms(statistics.median(f_first) - statistics.median(d_first)),
            "ttft_overhead_beyond_guard_p50_ms": ms(statistics.median(beyond_first)),
        })
    return out


def bench_prompts(limit: int) -> list[tuple[str, str, bytes | None]]:
    """(id, text, image bytes) from MM-Vet, MOSSBench and FigStep, read in place."""
    out: list[tuple[str, str, bytes | None]] = []
    per_set = max(1, limit // 3)
    for name in ("mm_vet", "mossbench", "figstep_safebench"):
        manifest = BENCH / name / "manifest.jsonl"
        if not manifest.exists():
            continue
        items = [json.loads(x) for x in manifest.read_text().splitlines() if x.strip()]
        for item in items[:per_set]:
            text = str(item.get("text") or "").strip()
            if not text:
                continue
            img = None
            if item.get("image"):
                path = BENCH / name / item["image"]
                img = path.read_bytes() if path.is_file() else None
            out.append((f"{name}/{item['id']}", text, img))
    return out


def same_answers(door_url: str, grpc_addr: str, items: list[tuple[str, str, bytes | None]]
                 ) -> dict[str, Any]:
    import grpc

    from vlmguard.v1 import guard_pb2, guard_pb2_grpc, types_pb2

    channel = grpc.insecure_channel(grpc_addr, options=[
        ("grpc.max_send_message_length", 64 * 1024 * 1024)])
    stub = guard_pb2_grpc.GuardServiceStub(channel)
    names = {types_pb2.ACTION_ALLOW: "allow", types_pb2.ACTION_REWRITE: "rewrite",
             types_pb2.ACTION_BLOCK: "block"}
    differ: list[dict[str, Any]] = []
    actions: dict[str, int] = {}
    with httpx.Client(timeout=120) as client:
        for item_id, text, img in items:
            content: Any = text
            images = []
            if img is not None:
                mime = "image/png" if img.startswith(b"\x89PNG") else "image/jpeg"
                url = f"data:{mime};base64,{base64.b64encode(img).decode()}"
                content = [{"type": "image_url", "image_url": {"url": url}},
                           {"type": "text", "text": text}]
                images = [types_pb2.Image(data=img)]
            r = client.post(door_url, json={"model": "echo", "messages": [
                {"role": "user", "content": content}]},
                headers={"x-vlmguard-tenant": "compare"})
            r.raise_for_status()
            action = r.headers["x-vlmguard-action"]
            got = r.json()["choices"][0]["message"]["content"]
            g = stub.Guard(guard_pb2.GuardRequest(text=text, images=images,
                                                  tenant_id="compare"), timeout=120)
            g_action = names[g.action]
            want = g.block_message if g_action == "block" else g.rewritten_text
            actions[action] = actions.get(action, 0) + 1
            if action != g_action or got != want:
                differ.append({"id": item_id, "front_door": action, "grpc": g_action,
                               "text_equal": got == want})
    channel.close()
    return {"items": len(items), "actions": actions, "differ": len(differ),
            "differences": differ[:20]}


def gateway_config(path: Path, upstream: str) -> None:
    tenants = {
        "default": {},
        "guarded": {},
        "fast": {"stages": {"analyze": False}, "output_action": "off"},
        "compare": {"output_action": "off"},
    }
    cfg = {"metrics": {"enabled": False}, "analyzer": {"threads": 1},
           "target": {"openai": {"base_url": upstream}},
           "policy": {"tenants": tenants}}
    path.write_text(json.dumps(cfg))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="calls per path and mode")
    ap.add_argument("--items", type=int, default=60, help="bench prompts for the comparison")
    ap.add_argument("--chunks", type=int, default=8, help="echo upstream: chunks per stream")
    ap.add_argument("--chunk-ms", type=float, default=5.0, help="echo upstream: ms between chunks")
    ap.add_argument("--upstream", default="", help="an OpenAI-compatible server (up to /v1) "
                    "instead of the echo upstream (the comparison needs the echo upstream)")
    ap.add_argument("--model", default="echo", help="model name sent to --upstream")
    ap.add_argument("--json", default="", help="write the results here")
    ap.add_argument("--serve-echo", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_echo:
        serve_echo(args.serve_echo, args.chunks, args.chunk_ms)
        return 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    procs: list[subprocess.Popen[bytes]] = []
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    try:
        upstream = args.upstream
        if not upstream:
            port = free_port()
            procs.append(start([sys.executable, __file__, "--serve-echo", str(port),
                                "--chunks", str(args.chunks), "--chunk-ms",
                                str(args.chunk_ms)], env))
            upstream = f"http://127.0.0.1:{port}/v1"
            wait_http(upstream + "/models", 30, procs[-1])
        with tempfile.TemporaryDirectory() as tmp:
            cfg = Path(tmp) / "config.json"
            gateway_config(cfg, upstream)
            http_port, grpc_port = free_port(), free_port()
            exe = Path(sys.executable).with_name("vlmguard")
            procs.append(start([str(exe), "serve", "--config", str(cfg), "--listen",
                                f"127.0.0.1:{grpc_port}", "--http",
                                f"127.0.0.1:{http_port}", "--no-metrics"], env))
            door = f"http://127.0.0.1:{http_port}"
            wait_http(door + "/readyz", 180, procs[-1])
            direct_url = upstream + "/chat/completions"
            door_url = door + "/v1/chat/completions"
            text = "Which flowers grow well in a shady garden, and when should I plant them?"
            rows = []
            for tenant in ("fast", "guarded"):
                for stream in (False, True):
                    row = overhead(direct_url, door_url, args.model, args.n, tenant, stream,
                                   text)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
            results["overhead"] = rows
            if not args.upstream:
                items = bench_prompts(args.items)
                cmp = same_answers(door_url, f"127.0.0.1:{grpc_port}", items)
                results["same_answers"] = cmp
                print(json.dumps({k: v for k, v in cmp.items() if k != "differences"}),
                      flush=True)
    finally:
        for proc in reversed(procs):
            stop(proc)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

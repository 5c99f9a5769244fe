"""The ``vlmguard triton-repo`` subcommand: write a Triton model repository for the target."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from vlmguard.serving.triton.repository import (
    DEFAULT_MODEL_NAME,
    DTYPES,
    MODEL_TYPES,
    RepoSpec,
    write_repository,
)

EPILOG = """\
Then serve it, e.g. on this machine:
  python -m vlmguard.serving.triton.launch --model-repository DIR --grpc-port 8001
and point the gateway at it: target.backend: triton, target.triton.url: 127.0.0.1:8001.
In Kubernetes the chart mounts the same directory into the Triton pods (--kind gpu,
--server-model-path set to where the weights are mounted there).
"""


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``triton-repo`` on the ``vlmguard`` subparsers."""
    p: argparse.ArgumentParser = sub.add_parser(
        "triton-repo", help="write a Triton model repository serving the target VLM",
        description="Write a ready Triton model repository with one Python-backend model "
        "(target_vlm) that serves a Hugging Face VLM or causal LM saved with save_pretrained, "
        "with dynamic batching.", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", required=True, type=Path, metavar="DIR",
                   help="repository directory (must be empty or absent unless --force)")
    p.add_argument("--model", required=True, metavar="PATH",
                   help="save_pretrained directory of the model (checked here)")
    p.add_argument("--server-model-path", metavar="PATH", default="",
                   help="the model's path as the Triton server sees it (default: --model, "
                   "made absolute); use when the server mounts the weights elsewhere")
    p.add_argument("--kind", choices=("cpu", "gpu"), default="gpu",
                   help="instance kind (default gpu; cpu for tests and laptops)")
    p.add_argument("--instances", type=int, default=1, metavar="N",
                   help="model instances (per GPU with --kind gpu; default 1)")
    p.add_argument("--max-batch", type=int, default=16, metavar="N",
                   help="max_batch_size; 1 turns dynamic batching off (default 16)")
    p.add_argument("--max-queue-delay-us", type=int, default=5000, metavar="US",
                   help="dynamic batching: longest wait to fill a batch (default 5000)")
    p.add_argument("--model-type", choices=MODEL_TYPES, default="auto",
                   help="auto: from the model's config.json")
    p.add_argument("--dtype", choices=DTYPES, default="auto",
                   help="auto: bfloat16 on GPU, float32 on CPU")
    p.add_argument("--default-max-new-tokens", type=int, default=128, metavar="N")
    p.add_argument("--max-new-tokens-cap", type=int, default=512, metavar="N")
    p.add_argument("--max-context-tokens", type=int, default=2048, metavar="N")
    p.add_argument("--cpu-threads", type=int, default=0, metavar="N",
                   help="torch threads per CPU instance (0: torch's default)")
    p.add_argument("--name", default=DEFAULT_MODEL_NAME, help="Triton model name")
    p.add_argument("--force", action="store_true",
                   help="write into a non-empty DIR (replaces the model's directory)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Write the repository; errors surface as VLMGuardError (the CLI prints them)."""
    model = Path(args.model).expanduser().resolve()
    server_path = args.server_model_path or str(model)
    spec = RepoSpec(
        model_path=server_path, kind=args.kind, instances=args.instances,
        max_batch=args.max_batch, max_queue_delay_us=args.max_queue_delay_us,
        model_type=args.model_type, dtype=args.dtype,
        default_max_new_tokens=args.default_max_new_tokens,
        max_new_tokens_cap=args.max_new_tokens_cap,
        max_context_tokens=args.max_context_tokens, cpu_threads=args.cpu_threads,
        name=args.name,
    )
    from vlmguard.errors import ConfigError
    from vlmguard.serving.triton.repository import detect_model_type

    if not (model / "config.json").is_file():
        raise ConfigError(f"--model {args.model}: not a save_pretrained directory "
                          "(no config.json)")
    if spec.model_type == "auto":
        from dataclasses import replace

        spec = replace(spec, model_type=detect_model_type(model))
    root = write_repository(args.out, spec, force=args.force, check_model=False)
    print(f"wrote {root} ({spec.model_type}, {spec.kind}, max_batch {spec.max_batch})",
          file=sys.stderr)
    return 0

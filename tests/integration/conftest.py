"""Integration fixtures shared across files: ONE local Ray + Serve for the whole test run.

A local Ray with the Serve app costs ~15-30 s to start and ~1 GB of memory, so every test that
needs Ray uses :func:`ray_guard` (session scope), and Ray is shut down at the end of the run.
The app's tier-2 rewriter is a tiny random Llama built from a config (2 layers, hidden 64, the
SmolLM2 tokenizer): its output is garbage, so risky requests end in the counted template
fallback, but every such request goes through the ``rewriter`` deployment.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

RAY_API_KEY = "ray-test-key-1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RayGuard:
    """The running Ray Serve guard: its runner, config and a channel to the gRPC proxy."""

    serve: Any
    cfg: Any
    channel: grpc.Channel
    metadata: tuple[tuple[str, str], ...]


def _tiny_rewriter(root: Path) -> Path:
    """A tiny random Llama with the packaged SmolLM2 tokenizer, saved under ``root``."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from vlmguard.hf_models import cache_dir_for, find_packaged_gguf

    gguf = find_packaged_gguf()
    cache = cache_dir_for(gguf)
    if (cache / "tokenizer.json").is_file():
        tok = AutoTokenizer.from_pretrained(cache, local_files_only=True)
    else:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                            local_files_only=True)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=4096, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    out = root / "tiny-rewriter"
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _start_ray(rs: Any) -> None:
    """Start the local Ray Serve app, once more if Ray's own node start timed out (its raylet
    must register within a fixed 30 s, which a busy 2-core machine occasionally misses; seen
    once in four fresh-clone runs, before any VLMGuard code ran)."""
    import ray

    try:
        rs.start()
    except Exception as e:
        if "timed out during startup" not in str(e):
            raise
        ray.shutdown()
        rs.start()


@pytest.fixture(scope="session")
def ray_guard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayGuard]:
    """The guard on a local Ray Serve: 1 ingress, 2 analyzer replicas (real tier-1 models) and
    1 rewriter replica (tiny random model), API-key auth on, target 'none'. Small CPU
    reservations: 2 logical CPUs for Ray."""
    pytest.importorskip("ray.serve")
    from vlmguard.config import load_config
    from vlmguard.serving.ray_app import LocalRayServe

    root = tmp_path_factory.mktemp("ray")
    keys = root / "keys.txt"
    keys.write_text(f"# test keys\n{RAY_API_KEY}\n")
    cfg = load_config(None, environ={}, overrides={
        "server": {"auth": {"enabled": True, "api_keys_file": str(keys)},
                   "default_timeout_s": 30},
        "metrics": {"enabled": False},
        "analyzer": {"threads": 1},
        "rewriter": {"kind": "generative", "backend": "transformers", "threads": 1,
                     "model_path": str(_tiny_rewriter(root)), "max_new_tokens": 16},
        "ray": {
            "num_cpus": 2, "grpc_port": _free_port(), "http_port": _free_port(),
            "ingress": {"num_replicas": 1, "num_cpus": 0.25},
            "stages": {"analyze": {"num_replicas": 2, "num_cpus": 0.5},
                       "rewrite": {"num_replicas": 1, "num_cpus": 0.25}},
        },
    })
    rs = LocalRayServe(cfg)
    try:
        _start_ray(rs)
        channel = grpc.insecure_channel(rs.grpc_address)
        try:
            yield RayGuard(rs, cfg, channel, (("authorization", f"Bearer {RAY_API_KEY}"),))
        finally:
            channel.close()
    finally:
        with contextlib.suppress(Exception):
            rs.stop()
        import ray

        if ray.is_initialized():  # never leave Ray running
            ray.shutdown()

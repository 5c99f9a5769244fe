"""End to end: the pipeline trains a tiny VLM rewriter on image records, and its publication
serves as tier 2 with images through the OpenAI-compatible front door.

training/recipes/pipeline-tiny-vlm.yaml, pointed at a temporary folder and a tiny random
Qwen2-VL built here from a config, runs through the real ``vlmguard pipeline run --executor
local``: synth (MM-SafetyBench seeds with their images, evidence teacher) -> merge -> ``train
rewriter`` (the VLM recipe, 2 LoRA steps) -> ``eval`` (2 MM-Vet items with images, tier 2 =
the trained model) -> publish. Every step is the real command; the step processes run as
``python -m tests.support.vlm_front_door`` (``vlmguard`` plus a spy that describes each batch the
rewriter's processor builds: token ids, pixel values, image grid), so the test sees what tier 2
was given during the evaluation.

The published model folder is then served as tier 2 (``tier2: always``) of an embedded gateway
behind the front door, its target a real OpenAI-compatible server on loopback; the official
``openai`` SDK asks the same question with two images of the same size that differ only in
their pixels.
"""

from __future__ import annotations

import io
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.bench import BENCH
from tests.support.vlm_front_door import (
    SPY_ENV,
    UPSTREAM_ANSWER,
    LoopbackUpstream,
    ask_front_door,
    data_url,
    image_parts,
    pixel_sum,
    read_spy,
    tiny_qwen2_vl,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "training" / "recipes" / "pipeline-tiny-vlm.yaml"
QUESTION = "What is shown in this picture?"


def _recipe(tmp_path: Path, base: Path) -> Path:
    """The shipped recipe with this test's folders and base model."""
    raw: dict[str, Any] = yaml.safe_load(RECIPE.read_text())
    raw["work_dir"] = str(tmp_path / "work")
    raw["bench_dir"] = str(BENCH)
    raw["publish"]["dest"] = str(tmp_path / "published")
    raw["retries"] = 0  # a failure shows at once, with its log
    for step in ("synth", "train"):
        raw[step]["recipe"] = str(ROOT / raw[step]["recipe"])
    # Relative to the working directory, as in the shipped recipe: the run records it absolute.
    raw["train"]["overrides"]["base_model"] = os.path.relpath(base, ROOT)
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _patterns() -> tuple[bytes, bytes]:
    """Two PNGs of the same size and no text: a colour gradient and its negative."""
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:64, 0:96]
    rgb = np.stack([x * 255 // 95, y * 255 // 63, (x + y) * 255 // 158], axis=-1)
    out = []
    for arr in (rgb, 255 - rgb):
        buf = io.BytesIO()
        Image.fromarray(arr.astype("uint8"), "RGB").save(buf, "PNG")
        out.append(buf.getvalue())
    return out[0], out[1]


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_pipeline_trains_a_vlm_on_images_and_its_publication_serves_behind_the_front_door(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    if not (BENCH / "mm_safetybench" / "manifest.jsonl").exists():
        pytest.skip(f"benchmark data not found at {BENCH}")
    pytest.importorskip("openai")
    monkeypatch.chdir(ROOT)  # the step processes import tests.support from here
    base = tiny_qwen2_vl(tmp_path / "tiny-qwen2-vl")
    recipe = _recipe(tmp_path, base)
    spy = tmp_path / "tier2-inputs.jsonl"
    monkeypatch.setenv(SPY_ENV, str(spy))
    from vlmguard.cli import main
    from vlmguard_training.pipeline import local

    real_programs = local.default_programs
    monkeypatch.setattr(local, "default_programs", lambda: {
        **real_programs(), "vlmguard": [sys.executable, "-m", "tests.support.vlm_front_door"]})

    t0 = time.monotonic()
    rc = main(["pipeline", "run", "--recipe", str(recipe), "--executor", "local"])
    took = time.monotonic() - t0
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    summary = json.loads(captured.out.splitlines()[-1])
    assert set(summary["steps"].values()) == {"succeeded"}, summary
    print(f"pipeline-tiny-vlm: {took:.1f}s")

    run = tmp_path / "work" / "pipeline-tiny-vlm"
    # Synthesis kept the seeds' images: records name image files of the bench.
    shards = [r for p in sorted((run / "shards").glob("shard-*.jsonl")) for r in _read_jsonl(p)]
    with_image = [r for r in shards if (r.get("image") or {}).get("path")]
    assert len(with_image) >= 2, [r.get("image") for r in shards]
    assert all(Path(r["image"]["path"]).is_file() and r["image"]["sha256"] for r in with_image)
    dataset = _read_jsonl(run / "dataset" / "train.jsonl")
    n_images = sum(1 for r in dataset if (r.get("image") or {}).get("path"))
    assert n_images >= 2, "the merged dataset lost the images"
    # The trainer trained the VLM with those images.
    model = json.loads((run / "model" / "vlmguard_rewriter.json").read_text())
    assert model["kind"] == "vlm" and model["base_model"] == str(base)
    assert model["data"]["train"]["with_image"] == n_images
    assert model["metrics"]["global_step"] == 2
    from safetensors.torch import load_file

    adapter = load_file(str(run / "model" / "adapter" / "adapter_model.safetensors"))
    assert any(float(v.abs().max()) > 0 for k, v in adapter.items() if "lora_B" in k)

    # The eval step ran tier 2 on both items, with their images given to the model.
    items = _read_jsonl(run / "eval" / "items.jsonl")
    assert len(items) == 2, items
    for it in items:
        assert it["error"] is None and it["has_image"], it
        assert it["tier2"] in ("model", "fallback") and it["rewriter"], it
    overall = json.loads((run / "eval" / "metrics.json").read_text())["overall"]
    assert (overall["n"], overall["n_errors"], overall["n_text_only"]) == (2, 0, 0)
    assert (overall["n_tier2"], overall["tier2_rate"]) == (2, 1.0)
    seen = [r for r in read_spy(spy) if r["command"] == "eval"]
    assert len(seen) == 2 and all(r["convs"] == 1 for r in seen), seen
    for r in seen:
        assert r["pixel_shape"] and r["grid"] and len(r["grid"]) == 1, r
    assert seen[0]["pixel_sum"] != seen[1]["pixel_sum"]  # each item's own image
    assert not [r for r in read_spy(spy) if r["command"] != "eval"]  # tier 2 ran in eval only

    # Published only after its gate passed; the folder is what the front door serves.
    pub = tmp_path / "published" / "pipeline-tiny-vlm"
    manifest = json.loads((pub / "PUBLISH.json").read_text())
    assert [g["passed"] for g in manifest["gates"]["gates"]] == [True]
    assert manifest["model"]["kind"] == "vlm" and manifest["eval"]["n_tier2"] == 2
    assert {"model/vlmguard_rewriter.json", "model/adapter/adapter_model.safetensors",
            "eval/metrics.json"} <= set(manifest["files"])
    assert not (pub / "model" / "checkpoints").exists()

    # Served as tier 2 behind the front door: only the image differs between the two calls.
    first, second = _patterns()
    served: list[dict[str, Any]] = []
    t0 = time.monotonic()
    with LoopbackUpstream() as upstream:
        answers = ask_front_door(pub / "model", upstream, QUESTION, [first, second],
                                 served.append)
    print(f"front door, 2 calls with the published tier 2: {time.monotonic() - t0:.1f}s")
    assert answers == [UPSTREAM_ANSWER] * 2
    assert len(served) == 2 and all(r["convs"] == 1 for r in served), served
    a, b = served
    assert a["pixel_shape"] and a["pixel_shape"] == b["pixel_shape"] and a["grid"] == b["grid"]
    # The rewriter saw each image's own pixels (as its processor makes them of that image).
    assert a["pixel_sum"] != b["pixel_sum"]
    for row, png in ((a, first), (b, second)):
        assert math.isclose(row["pixel_sum"], pixel_sum(base, png), rel_tol=1e-9, abs_tol=1e-6)
    assert a["input_ids"] == b["input_ids"]  # and nothing else changed in its prompt
    assert len(upstream.requests) == 2
    assert [image_parts(body) for body in upstream.requests] == [[data_url(first)],
                                                                  [data_url(second)]]

"""The shipped VLM pipeline recipe (training/recipes/pipeline-tiny-vlm.yaml): what its steps are
given once materialised, for both executors; that its seeds carry images; that its publish gate
refuses an evaluation whose items failed. The run itself is
tests/integration/test_pipeline_vlm_front_door.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.bench import BENCH
from tests.unit.vlmguard_training.pipeline.test_runner import _model
from vlmguard.errors import FailedPreconditionError, Reason
from vlmguard_training.pipeline.graph import (
    EVAL_CONFIG,
    SYNTH_RECIPE,
    TRAIN_RECIPE,
    Layout,
    absolute_base_model,
    build_steps,
    step_files,
)
from vlmguard_training.pipeline.publish import publish
from vlmguard_training.pipeline.recipe import PipelineRecipe, load_pipeline_recipe

ROOT = Path(__file__).resolve().parents[4]
RECIPE = ROOT / "training" / "recipes" / "pipeline-tiny-vlm.yaml"


def _materialised(tmp_path: Path, layout: Layout, recipe: PipelineRecipe) -> dict[str, Path]:
    out = {}
    for name, text in step_files(recipe, layout).items():
        out[name] = tmp_path / name
        out[name].write_text(text)
    return out


@pytest.mark.parametrize("executor", ["local", "kubernetes"])
def test_steps_train_a_vlm_on_cpu_and_evaluate_it_with_images(tmp_path: Path,
                                                              executor: str) -> None:
    from vlmguard.config import load_config
    from vlmguard_training.rewriter.recipe import load_recipe

    recipe = load_pipeline_recipe(RECIPE)
    layout = Layout.local(recipe) if executor == "local" else Layout.kubernetes(recipe)
    files = _materialised(tmp_path, layout, recipe)

    train = load_recipe(files[TRAIN_RECIPE])
    assert (train.kind, train.finetune) == ("vlm", "lora")
    # A local run's base is recorded absolute (the model is served from elsewhere); a Job's
    # paths are its container's, left as written.
    assert train.base_model == (str(Path.cwd() / "build" / "tiny-qwen2-vl")
                                if executor == "local" else "build/tiny-qwen2-vl")
    # The GPU recipe's settings that would fail or crawl on CPU are overridden.
    assert (train.train.bf16, train.train.gradient_checkpointing,
            train.train.dataloader_num_workers) == (False, False, 0)
    assert (train.train.max_steps, train.train.per_device_train_batch_size) == (2, 4)
    # Only this run's records, read against the run's bench folder; nothing held out.
    assert train.data.annotations == "" and train.data.benign_limit == 0
    assert train.data.bench_dir == layout.bench and train.data.eval_fraction == 0.0
    # The rest of the VLM recipe is kept (its adapter targets, its schedule).
    assert "q_proj" in train.lora.target_modules and train.lora.r == 16

    cfg = load_config(files[EVAL_CONFIG], environ={})
    assert cfg.rewriter.kind == "generative" and cfg.rewriter.tier2 == "always"
    assert cfg.rewriter.model_path == layout.model and cfg.rewriter.images

    _, _, train_step, ev, pub = build_steps(recipe, layout)
    assert train_step.args[train_step.args.index("--recipe") + 1] == layout.recipe(TRAIN_RECIPE)
    assert train_step.args[train_step.args.index("--out") + 1] == layout.model
    assert ev.args[ev.args.index("--sets") + 1] == "mm_vet"
    assert ev.args[ev.args.index("--config") + 1] == layout.recipe(EVAL_CONFIG)
    assert pub.args[pub.args.index("--gate") + 1] == "tier2_rate:mm_vet>=1.0"


def test_seeds_carry_images(tmp_path: Path) -> None:
    if not (BENCH / "mm_safetybench" / "manifest.jsonl").exists():
        pytest.skip(f"benchmark data not found at {BENCH}")
    from vlmguard_training.synthesis.runner import load_recipe, load_seeds

    recipe = load_pipeline_recipe(RECIPE).model_copy(update={"bench_dir": str(BENCH)})
    files = _materialised(tmp_path, Layout.local(recipe), recipe)
    seeds = load_seeds(load_recipe(files[SYNTH_RECIPE]))
    assert len(seeds) == 4 and {s.source for s in seeds} == {"mm_safetybench"}
    images = [s.image_path for s in seeds if s.image_path]
    assert len(images) >= 2 and all(Path(p).is_file() for p in images)


def test_a_local_run_makes_a_relative_base_model_absolute(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    local = Layout.local(load_pipeline_recipe(RECIPE))
    assert local.cwd == str(tmp_path)
    assert absolute_base_model({"base_model": "models/vl", "kind": "vlm"}, local) == {
        "base_model": str(tmp_path / "models" / "vl"), "kind": "vlm"}
    assert absolute_base_model({"base_model": "../up/vl"}, local) == {
        "base_model": str(tmp_path.parent / "up" / "vl")}
    for kept in ({"base_model": "/models/vl"}, {"base_model": "smollm2"}, {"kind": "vlm"}):
        assert absolute_base_model(kept, local) == kept
    jobs = Layout.kubernetes(load_pipeline_recipe(RECIPE))
    assert absolute_base_model({"base_model": "models/vl"}, jobs) == {"base_model": "models/vl"}


def _eval_dir(root: Path, items: list[dict[str, Any]]) -> Path:
    """metrics.json of an evaluation with these item records, computed as vlmguard eval does."""
    from vlmguard_training.evaluation.metrics import compute_metrics

    root.mkdir(parents=True)
    (root / "metrics.json").write_text(json.dumps(compute_metrics(items)))
    return root


def _items(error: str | None) -> list[dict[str, Any]]:
    from vlmguard_training.evaluation.dataset import EvalItem
    from vlmguard_training.evaluation.guards import GuardOutcome
    from vlmguard_training.evaluation.runner import item_record

    out = []
    for i in range(2):
        item = EvalItem("mm_vet", f"v{i}", "a question", "benign", "rec", Path(f"/img/{i}.png"))
        outcome = None if error else GuardOutcome(
            action="ALLOW", score=0.01, level="NONE", categories=(), modalities=(),
            unchanged=True, analyzer="tier1/x", rewriter="template/v1;fallback=MISSING_SECTION",
            tier2="fallback", fallback_kind="MISSING_SECTION")
        out.append(item_record(item, outcome, 10.0, error))
    return out


def test_publish_gate_refuses_an_evaluation_whose_items_failed(tmp_path: Path) -> None:
    gates = load_pipeline_recipe(RECIPE).publish.gates
    model, dest = _model(tmp_path), tmp_path / "pub"
    failed = _eval_dir(tmp_path / "failed", _items("CLIENT_ERROR:RuntimeError"))
    with pytest.raises(FailedPreconditionError) as e:
        publish(model, dest, "r1", eval_dir=failed, gates=gates)
    assert e.value.reason == Reason.PIPELINE_GATE_FAILED
    assert "every item of the evaluation failed (2 of 2" in e.value.message
    assert not dest.exists() or not any(dest.iterdir())
    # ... whatever the gates say (pipeline-tiny.yaml has none).
    with pytest.raises(FailedPreconditionError) as e:
        publish(model, dest, "r1", eval_dir=failed, gates=[])
    assert e.value.reason == Reason.PIPELINE_GATE_FAILED
    # Tier 2 answered both items (here through its template fallback): published.
    ran = _eval_dir(tmp_path / "ran", _items(None))
    out = publish(model, dest, "r1", eval_dir=ran, gates=gates)
    manifest = json.loads((out / "PUBLISH.json").read_text())
    assert [g["value"] for g in manifest["gates"]["gates"]] == [1.0]

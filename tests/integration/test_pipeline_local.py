"""The whole offline pipeline on tiny data with the local executor, as real subprocesses.

training/recipes/pipeline-tiny.yaml, pointed at a temporary folder: synth (2 shards of real
training-seed items, offline evidence teacher, tier-1 models) -> `vlmguard synth merge` ->
`vlmguard train rewriter` (a tiny random Llama built here, a few LoRA steps) -> `vlmguard eval`
(2 items, in-process guard with the trained model) -> publish. A re-run through the CLI skips
every finished step.

Stand-in: when this checkout's CLI has no `vlmguard train rewriter` yet (it is being built in
parallel), a small stand-in writes the model directory instead, and the evaluation then runs the
default guard; every other step is the real command.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.bench import BENCH
from vlmguard.cli import build_parser, main
from vlmguard_training.pipeline.graph import STEP_NAMES, Layout
from vlmguard_training.pipeline.local import LocalExecutor, default_programs
from vlmguard_training.pipeline.progress import ProgressView
from vlmguard_training.pipeline.recipe import PipelineRecipe, load_pipeline_recipe
from vlmguard_training.pipeline.state import StateFile

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

STAND_IN = '''
"""Runs `vlmguard ARGS`, except `train rewriter` when the CLI lacks it (see the test)."""
import json, pathlib, sys
from vlmguard.cli import main
args = sys.argv[1:]
if args[:2] == ["train", "rewriter"] and not HAS_TRAIN:
    data = pathlib.Path(args[args.index("--data") + 1])
    out = pathlib.Path(args[args.index("--out") + 1])
    out.mkdir(parents=True, exist_ok=True)
    n = sum(1 for line in data.read_text().splitlines() if line.strip())
    (out / "vlmguard_rewriter.json").write_text(json.dumps({"stand_in": True, "records": n}))
    (out / "MODEL_CARD.md").write_text("# stand-in model (train rewriter not available)\\n")
    sys.exit(0)
sys.exit(main(args))
'''


def _has_train_rewriter() -> bool:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    train = sub.choices.get("train")
    if train is None:
        return False
    inner = [a for a in train._actions if isinstance(a, argparse._SubParsersAction)]
    return bool(inner and "rewriter" in inner[0].choices)


def _tiny_base(path: Path) -> Path:
    from tests.support.tiny_lm import build_tiny_lm

    build_tiny_lm(path)
    # No chat template of its own: the trainer then trains with its SmolLM2-format template
    # (assistant-only loss markers; the tiny tokenizer has the same special tokens).
    (path / "chat_template.jinja").unlink()
    # The rewriter's system prompt is long in a 320-token vocabulary: allow long samples
    # (rotary positions, nothing is allocated per position).
    cfg = json.loads((path / "config.json").read_text())
    cfg["max_position_embeddings"] = 16384
    (path / "config.json").write_text(json.dumps(cfg))
    return path


def _recipe(tmp_path: Path, real_train: bool) -> PipelineRecipe:
    raw: dict[str, Any] = yaml.safe_load(
        (ROOT / "training" / "recipes" / "pipeline-tiny.yaml").read_text())
    raw["work_dir"] = str(tmp_path / "work")
    raw["bench_dir"] = str(BENCH)
    raw["publish"] = {"dest": str(tmp_path / "published")}
    for step in ("synth", "train"):
        raw[step]["recipe"] = str(ROOT / raw[step]["recipe"])
    if real_train:
        raw["train"]["overrides"]["base_model"] = str(_tiny_base(tmp_path / "tiny-base"))
        raw["train"]["overrides"]["train.max_length"] = 16384
    else:
        raw["eval"]["config"] = {}  # a stand-in model cannot be loaded: the default guard
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_pipeline_recipe(path)


def test_local_pipeline_end_to_end_and_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    if not (BENCH / "siuo" / "manifest.jsonl").exists():
        pytest.skip(f"benchmark data not found at {BENCH}")
    monkeypatch.chdir(ROOT)  # recipes' relative paths (training/data/...) as in a real run
    real_train = _has_train_rewriter()
    recipe = _recipe(tmp_path, real_train)
    stand_in = tmp_path / "vlmguard_stand_in.py"
    stand_in.write_text(f"HAS_TRAIN = {real_train}\n" + STAND_IN)
    programs = {**default_programs(), "vlmguard": [sys.executable, str(stand_in)]}
    state_path = tmp_path / "state.json"
    out = io.StringIO()
    ex = LocalExecutor(recipe, Layout.local(recipe), StateFile(state_path, recipe.name, "local"),
                       ProgressView(out), programs=programs)
    t0 = time.monotonic()
    assert ex.run() == dict.fromkeys(STEP_NAMES, "succeeded"), out.getvalue()
    took = time.monotonic() - t0
    print(f"pipeline-tiny end to end: {took:.1f}s (real trainer: {real_train})")

    run = tmp_path / "work" / "pipeline-tiny"
    shards = sorted(p.name for p in (run / "shards").glob("shard-*-of-2.jsonl"))
    assert shards == ["shard-0-of-2.jsonl", "shard-1-of-2.jsonl"]
    n_synth = sum(len(p.read_text().splitlines()) for p in (run / "shards").glob("*.jsonl"))
    assert n_synth == 4  # siuo: 2 + vlguard_test: 2, partitioned over the shards
    card = json.loads((run / "dataset" / "card.json").read_text())
    assert card and (run / "dataset" / "DATASET_CARD.md").is_file()
    train_lines = (run / "dataset" / "train.jsonl").read_text().splitlines()
    assert train_lines
    model = json.loads((run / "model" / "vlmguard_rewriter.json").read_text())
    print("trainer data:", json.dumps(model.get("data", {}))[:400])
    assert (run / "model" / "MODEL_CARD.md").is_file()
    assert model.get("stand_in", False) is (not real_train)
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert metrics["overall"]["n"] == 2 and metrics["overall"]["n_errors"] == 0
    pub = tmp_path / "published" / "pipeline-tiny"
    manifest = json.loads((pub / "PUBLISH.json").read_text())
    assert manifest["eval"]["n"] == 2
    assert "model/vlmguard_rewriter.json" in manifest["files"]
    assert "eval/metrics.json" in manifest["files"]
    text = out.getvalue()
    assert "synth    running  0/2 done, 2 active (attempt 1): 0 records" in text
    assert "synth    running  2/2 done, 0 active (attempt 1): 4 records" in text
    for step in STEP_NAMES:
        assert f"] {step:<8} done" in text, text
    state = json.loads(state_path.read_text())
    assert state["steps"]["synth"]["done_indexes"] == [0, 1]

    # Re-run through the CLI: every step is skipped, nothing is started or overwritten.
    stamp = (pub / "PUBLISH.json").stat().st_mtime_ns
    t0 = time.monotonic()
    rc = main(["pipeline", "run", "--recipe", str(tmp_path / "pipeline.yaml"),
               "--executor", "local", "--state", str(state_path)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert json.loads(captured.out.splitlines()[-1])["steps"] == dict.fromkeys(STEP_NAMES,
                                                                                "skipped")
    assert time.monotonic() - t0 < 10
    assert "synth    skipped  finished earlier (state file)" in captured.err
    assert (pub / "PUBLISH.json").stat().st_mtime_ns == stamp

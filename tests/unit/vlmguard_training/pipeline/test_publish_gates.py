"""Pipeline publish gating: the recipe's gates on the new evaluation and the margin against
the published model's stored evaluation decide whether anything is published."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from tests.unit.vlmguard_training.pipeline.test_runner import _model, make_recipe
from vlmguard.errors import FailedPreconditionError, Reason
from vlmguard_training.pipeline.graph import Layout, build_steps
from vlmguard_training.pipeline.publish import MANIFEST, latest_publication, publish

GATES = ["intent_kept_rate:mm_vet>=0.8", "fpr:overall<=0.1"]


def _eval(root: Path, intent: float, fpr: float) -> Path:
    """A stand-in eval output with the figures the gates read (and their counts)."""
    root.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, Any] = {
        "settings": {}, "overall": {"n": 100, "fpr": fpr, "k_n": {"fpr": [int(fpr * 50), 50]}},
        "sets": {"mm_vet": {"n": 100, "fpr": fpr, "intent_kept_rate": intent,
                            "k_n": {"intent_kept_rate": [int(intent * 50), 50]}}}}
    (root / "metrics.json").write_text(json.dumps(metrics))
    return root


def test_gates_refuse_a_model_that_misses_them(tmp_path: Path) -> None:
    model, dest = _model(tmp_path), tmp_path / "pub"
    with pytest.raises(FailedPreconditionError) as e:
        publish(model, dest, "r1", eval_dir=_eval(tmp_path / "e1", 0.7, 0.05), gates=GATES)
    assert e.value.reason == Reason.PIPELINE_GATE_FAILED
    assert "intent_kept_rate:mm_vet>=0.8" in e.value.message
    assert not dest.exists() or not any(dest.iterdir())  # nothing published, no partial
    # No evaluation at all: refused, not waved through.
    with pytest.raises(FailedPreconditionError, match=r"metrics\.json"):
        publish(model, dest, "r1", eval_dir=tmp_path / "missing", gates=GATES)
    out = publish(model, dest, "r1", eval_dir=_eval(tmp_path / "e2", 0.85, 0.05), gates=GATES,
                  max_regression=0.02)
    record = json.loads((out / MANIFEST).read_text())["gates"]
    assert [g["passed"] for g in record["gates"]] == [True, True]
    assert record["baseline"] is None  # the first publication: nothing to compare with
    assert (out / "eval" / "metrics.json").is_file()  # its evaluation is stored with it


def test_not_worse_than_the_published_model_beyond_the_margin(tmp_path: Path) -> None:
    model, dest = _model(tmp_path), tmp_path / "pub"
    first = publish(model, dest, "r1", eval_dir=_eval(tmp_path / "e1", 0.95, 0.02),
                    gates=GATES, max_regression=0.02)
    assert latest_publication(dest) == first
    # Passes the absolute gates (0.85 >= 0.8) but is 0.10 worse than the published 0.95.
    with pytest.raises(FailedPreconditionError) as e:
        publish(model, dest, "r2", eval_dir=_eval(tmp_path / "e2", 0.85, 0.02), gates=GATES,
                max_regression=0.02)
    assert e.value.reason == Reason.PIPELINE_GATE_FAILED and "r1" in e.value.message
    assert "intent_kept_rate:mm_vet" in e.value.message
    assert sorted(p.name for p in dest.iterdir()) == ["r1"]
    # Within the margin (0.01 worse on intent, fpr 0.01 worse): published, comparison recorded.
    out = publish(model, dest, "r2", eval_dir=_eval(tmp_path / "e3", 0.94, 0.03), gates=GATES,
                  max_regression=0.02)
    record = json.loads((out / MANIFEST).read_text())["gates"]
    assert record["baseline"] == "r1"
    assert {r["figure"]: round(r["worse_by"], 4) for r in record["regressions"]} == {
        "intent_kept_rate:mm_vet": 0.01, "fpr:overall": 0.01}
    # Without a margin only the gates count.
    publish(model, dest, "r3", eval_dir=_eval(tmp_path / "e4", 0.81, 0.02), gates=GATES)


def test_recipe_gates_reach_the_publish_command(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from vlmguard.cli import build_parser, main

    recipe = make_recipe(tmp_path, publish={"dest": str(tmp_path / "pub"), "gates": GATES,
                                            "max_regression": 0.05})
    pub = build_steps(recipe, Layout.local(recipe))[-1]
    args = list(pub.args)
    assert [args[i + 1] for i, a in enumerate(args) if a == "--gate"] == GATES
    assert args[args.index("--max-regression") + 1] == "0.05"
    build_parser().parse_args(args)
    with pytest.raises(ValidationError, match="METRIC:SET"):
        make_recipe(tmp_path / "bad", publish={"gates": ["recall mm_vet 0.9"]})
    # The command refuses with exit 1 and the stable reason.
    model = _model(tmp_path)
    ev = _eval(tmp_path / "ev", 0.5, 0.5)
    assert main(["pipeline", "publish", "--model", str(model), "--dest", str(tmp_path / "p"),
                 "--name", "n1", "--eval", str(ev), "--gate", GATES[0]]) == 1
    assert "PIPELINE_GATE_FAILED" in capsys.readouterr().err
    assert not (tmp_path / "p" / "n1").exists()

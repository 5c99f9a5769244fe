"""Training logs: one line per logged step (the trainer's default printers are quieted, its
progress bar kept), and ``report_to`` read from the recipe (default none)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pytest

from vlmguard_training.rewriter.recipe import TrainRecipe
from vlmguard_training.rewriter.sft import _callback, _MetricsLog, quiet_default_loggers


class _Trainer:
    """The callback surface of a transformers Trainer over a real CallbackHandler."""

    def __init__(self, progress: bool, extra: Any) -> None:
        from transformers.trainer_callback import (
            CallbackHandler,
            DefaultFlowCallback,
            PrinterCallback,
            ProgressCallback,
        )

        # As Trainer.__init__ builds it: flow, user callbacks, then the bar or the printer.
        self.handler = CallbackHandler(
            [DefaultFlowCallback, extra, ProgressCallback if progress else PrinterCallback],
            None, None, None, None)
        self.remove_callback = self.handler.remove_callback
        self.add_callback = self.handler.add_callback


@pytest.mark.parametrize("progress", [True, False])
@pytest.mark.parametrize("quiet", [True, False])
def test_one_line_per_logged_step(tmp_path: Path, progress: bool, quiet: bool) -> None:
    from transformers import TrainingArguments
    from transformers.trainer_callback import TrainerControl, TrainerState

    log = _MetricsLog(tmp_path / "metrics.jsonl", echo=True)
    trainer = _Trainer(progress, _callback(log))
    if quiet:
        quiet_default_loggers(trainer, progress)
    args = TrainingArguments(output_dir=str(tmp_path / "o"), report_to="none",
                             disable_tqdm=not progress, use_cpu=True)
    state, control = TrainerState(max_steps=3), TrainerControl()
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        trainer.handler.on_train_begin(args, state, control)
        for step in (1, 2, 3):
            state.global_step = step
            trainer.handler.on_step_end(args, state, control)
            trainer.handler.on_log(args, state, control, logs={"loss": 1.0 / step,
                                                                "learning_rate": 1e-3})
        trainer.handler.on_train_end(args, state, control)
    lines = [ln for ln in (out.getvalue() + "\n" + err.getvalue()).replace("\r", "\n")
             .splitlines() if "loss" in ln]
    rows = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    if quiet:
        assert len(lines) == 3 and all(json.loads(ln)["loss"] for ln in lines), lines
        names = [type(c).__name__ for c in trainer.handler.callbacks]
        assert "PrinterCallback" not in names
        assert any("Progress" in n or "Bar" in n for n in names) == progress
    else:  # the trainer's own copies: what the quieting removes
        assert len(lines) == 6, lines


def test_report_to_from_the_recipe() -> None:
    assert TrainRecipe().report_to == []
    assert TrainRecipe.model_validate({"report_to": "none"}).report_to == []
    assert TrainRecipe.model_validate({"report_to": "tensorboard"}).report_to == ["tensorboard"]
    assert TrainRecipe.model_validate({"report_to": ["mlflow", "tensorboard"]}).report_to == [
        "mlflow", "tensorboard"]

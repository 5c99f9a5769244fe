"""What both executors share: the run loop over the steps, skipping finished ones.

An executor implements :meth:`Executor.run_step` (run one step to success or raise); the loop
here handles the state file, fingerprints, skipping and the progress view.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from vlmguard.errors import FailedPreconditionError, Reason, VLMGuardError
from vlmguard_training.pipeline.graph import (
    EVAL_CONFIG,
    SYNTH_RECIPE,
    TRAIN_RECIPE,
    Layout,
    Step,
    build_steps,
    step_files,
)
from vlmguard_training.pipeline.progress import ProgressView
from vlmguard_training.pipeline.recipe import PipelineRecipe
from vlmguard_training.pipeline.state import StateFile, StepState

#: Which materialised step recipe each step reads (part of its fingerprint).
STEP_FILES = {"synth": (SYNTH_RECIPE,), "train": (TRAIN_RECIPE,), "eval": (EVAL_CONFIG,)}


class StepFailedError(FailedPreconditionError):
    """A step failed after its retries (reason PIPELINE_STEP_FAILED)."""

    default_reason = Reason.PIPELINE_STEP_FAILED


class Executor:
    """Runs a recipe's steps in order; subclasses run one step.

    Args:
        recipe: The pipeline recipe.
        layout: The run's folders as the step processes see them.
        state: The state file.
        progress: The progress view.
        sleep: Sleep function for retry backoff (injected by tests).
        clock: Wall clock for timings.
    """

    kind = "base"

    def __init__(self, recipe: PipelineRecipe, layout: Layout, state: StateFile,
                 progress: ProgressView | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic,
                 master_addr: str = "127.0.0.1") -> None:
        self.recipe = recipe
        self.layout = layout
        self.state = state
        self.progress = progress or ProgressView()
        self.sleep = sleep
        self.clock = clock
        self.files = step_files(recipe, layout)
        self.steps = build_steps(recipe, layout, master_addr=master_addr)

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before ``attempt`` (2, 3, ...): doubling from retry_backoff_s."""
        return float(self.recipe.retry_backoff_s * (2 ** max(0, attempt - 2)))

    def fingerprint(self, step: Step) -> str:
        return step.fingerprint({n: self.files[n] for n in STEP_FILES.get(step.name, ())})

    def prepare(self) -> None:
        """Make the step recipes available to the steps (a folder, a ConfigMap)."""

    def finish(self) -> None:
        """Called once every step of the recipe has succeeded: remove what :meth:`prepare` and
        the steps left that the finished run no longer needs (the cluster's ConfigMap and
        Services). Kept while any step is unfinished, so a resumed run finds them."""

    def run_step(self, step: Step, st: StepState) -> None:
        raise NotImplementedError

    def run(self, only: list[str] | None = None) -> dict[str, str]:
        """Run every step not finished yet, in order.

        Args:
            only: Run just these steps (their inputs must exist).

        Returns:
            Step name -> ``succeeded`` or ``skipped``.

        Raises:
            VLMGuardError: a step failed after its retries, or the cluster refused.
        """
        todo = [s for s in self.steps if not only or s.name in only]
        self.progress.start(self.recipe.name, self.kind, [s.name for s in todo])
        self.prepare()
        outcome: dict[str, str] = {}
        ok = False
        try:
            for step in todo:
                st = self.state.begin(step.name, self.fingerprint(step))
                if st.status == "succeeded":
                    self.progress.skipped(step.name, "finished earlier (state file)")
                    outcome[step.name] = "skipped"
                    continue
                t0 = self.clock()
                st.status = "running"
                self.state.save()
                try:
                    self.run_step(step, st)
                except VLMGuardError as e:
                    st.status, st.error = "failed", f"{e.reason}: {e.message}"
                    self.progress.failed(step.name, st.error)
                    raise
                st.status, st.error, st.finished = "succeeded", "", time.time()
                self.state.save()
                self.progress.finished(step.name, self.clock() - t0)
                outcome[step.name] = "succeeded"
            ok = True
            if all(self.state.state.step(s.name).status == "succeeded" for s in self.steps):
                self.finish()
        finally:
            self.state.save()
            self.progress.end(self.recipe.name, ok)
        return outcome


def default_state_path(recipe: PipelineRecipe, executor: str) -> Path:
    """Default state file: under the local run folder (both executors: it lives with the
    runner, not in the cluster)."""
    return Path(recipe.work_dir) / recipe.name / f"state-{executor}.json"

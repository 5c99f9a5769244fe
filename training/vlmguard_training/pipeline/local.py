"""Local executor: each step's completions run as subprocesses of this machine.

Shards run ``parallelism`` at a time, each with ``JOB_COMPLETION_INDEX`` set as a Kubernetes
Indexed Job would; a failed shard is re-run alone after a backoff, finished shards are recorded
in the state file. Output goes to ``<run>/logs/<step>[-<index>].log``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from vlmguard.errors import Reason
from vlmguard_training.pipeline.executor import Executor, StepFailedError
from vlmguard_training.pipeline.graph import Step
from vlmguard_training.pipeline.state import StepState

_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def expand_env(env: dict[str, str], base: dict[str, str]) -> dict[str, str]:
    """Expand ``$(NAME)`` references the way Kubernetes does (earlier entries and ``base``)."""
    out: dict[str, str] = {}
    for k, v in env.items():
        out[k] = _REF.sub(lambda m: out.get(m.group(1), base.get(m.group(1), m.group(0))), v)
    return out


def default_programs() -> dict[str, list[str]]:
    """Program name -> command prefix (this interpreter, so the venv's package runs)."""
    return {"vlmguard": [sys.executable, "-m", "vlmguard.cli"],
            "torchrun": [sys.executable, "-m", "torch.distributed.run"]}


class LocalExecutor(Executor):
    """Runs the steps as subprocesses.

    Extra args (besides :class:`Executor`'s): ``programs`` maps ``vlmguard``/``torchrun`` to a
    command prefix; ``poll_s`` is the interval between process checks.
    """

    kind = "local"

    def __init__(self, *args: object, programs: dict[str, list[str]] | None = None,
                 poll_s: float = 0.2, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.programs = programs or default_programs()
        self.poll_s = poll_s
        self.logs = Path(self.layout.work) / "logs"

    def prepare(self) -> None:
        recipes = Path(self.layout.recipes)
        recipes.mkdir(parents=True, exist_ok=True)
        for name, text in self.files.items():
            (recipes / name).write_text(text, encoding="utf-8")
        self.logs.mkdir(parents=True, exist_ok=True)

    def _command(self, step: Step) -> list[str]:
        return [*self.programs[step.program], *step.args]

    def _spawn(self, step: Step, index: int) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
        env = dict(os.environ)
        env["JOB_COMPLETION_INDEX"] = str(index)
        env["NODE_RANK"] = str(index)
        env.update(expand_env(step.env, env))
        suffix = f"-{index}" if step.completions > 1 else ""
        log = (self.logs / f"{step.name}{suffix}.log").open("ab")
        proc = subprocess.Popen(self._command(step), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env)
        return proc, log

    def _records(self, step: Step) -> str:
        """Records written so far by a synthesis step (a line per item in the shard files)."""
        if step.name != "synth" or not step.output:
            return ""
        n = 0
        for path in Path(step.output).glob(f"shard-*-of-{step.completions}.jsonl"):
            with path.open("rb") as f:
                n += sum(1 for _ in f)
        return f"{n} records"

    def _tail(self, step: Step, index: int, lines: int = 8) -> str:
        suffix = f"-{index}" if step.completions > 1 else ""
        path = self.logs / f"{step.name}{suffix}.log"
        try:
            text = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return ""
        return f" (log {path}; last lines:\n  " + "\n  ".join(text[-lines:]) + ")"

    def run_step(self, step: Step, st: StepState) -> None:
        if step.clean_output and step.output and Path(step.output).exists():
            shutil.rmtree(step.output)  # a partial output of an unfinished step
        if step.gang:
            self._run_gang(step, st)
        else:
            self._run_indexed(step, st)

    def _run_indexed(self, step: Step, st: StepState) -> None:
        total = step.completions
        queue = deque(i for i in range(total) if i not in st.done_indexes)
        tries = dict.fromkeys(queue, 0)
        # Attempts of earlier invocations count for the command (train --resume after a
        # stopped run), not for this invocation's retry budget.
        before = st.attempts
        running: dict[int, tuple[subprocess.Popen[bytes], IO[bytes]]] = {}
        try:
            while queue or running:
                while queue and len(running) < step.parallelism:
                    i = queue.popleft()
                    tries[i] += 1
                    st.attempts = max(st.attempts, before + tries[i])
                    running[i] = self._spawn(step.for_attempt(before + tries[i]), i)
                self.progress.update(step.name, len(st.done_indexes), total, len(running),
                                     st.attempts, self._records(step))
                self.sleep(self.poll_s)
                for i, (proc, log) in list(running.items()):
                    rc = proc.poll()
                    if rc is None:
                        continue
                    log.close()
                    del running[i]
                    if rc == 0:
                        st.done_indexes = sorted({*st.done_indexes, i})
                        self.state.save()
                        continue
                    why = f"{step.name}[{i}] exited with {rc}"
                    if tries[i] > self.recipe.retries:
                        raise StepFailedError(
                            f"{why} after {tries[i]} attempts{self._tail(step, i)}",
                            reason=Reason.PIPELINE_STEP_FAILED)
                    if step.clean_output and step.output and Path(step.output).exists():
                        shutil.rmtree(step.output)
                    delay = self.backoff(tries[i] + 1)
                    self.progress.retrying(step.name, before + tries[i] + 1, delay, why)
                    self.sleep(delay)
                    queue.append(i)
            self.progress.update(step.name, len(st.done_indexes), total, 0, st.attempts,
                                 self._records(step))
        finally:
            _stop([p for p, _ in running.values()])
            for _, log in running.values():
                log.close()

    def _run_gang(self, step: Step, st: StepState) -> None:
        """All completions together (torchrun nodes); one failure re-runs them all."""
        attempt = before = st.attempts
        while True:
            attempt += 1
            st.attempts = attempt
            procs = [self._spawn(step.for_attempt(attempt), i) for i in range(step.completions)]
            try:
                while any(p.poll() is None for p, _ in procs):
                    if any(p.poll() not in (None, 0) for p, _ in procs):
                        break
                    self.progress.update(step.name, 0, step.completions, len(procs), attempt)
                    self.sleep(self.poll_s)
            finally:
                _stop([p for p, _ in procs])
                for _, log in procs:
                    log.close()
            bad = [i for i, (p, _) in enumerate(procs) if p.returncode != 0]
            if not bad:
                st.done_indexes = list(range(step.completions))
                return
            why = f"{step.name}[{bad[0]}] exited with {procs[bad[0]][0].returncode}"
            if attempt - before > self.recipe.retries:
                raise StepFailedError(f"{why} after {attempt} attempts{self._tail(step, bad[0])}",
                                      reason=Reason.PIPELINE_STEP_FAILED)
            delay = self.backoff(attempt - before + 1)
            self.progress.retrying(step.name, attempt + 1, delay, why)
            self.sleep(delay)


def _stop(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    """Terminate (then kill) the processes still running: nothing outlives the runner."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

"""The state file of a run: which steps (and shards) finished, attempts, Job names.

A re-run reads it and skips what is recorded finished. Every step carries the fingerprint of
what it ran; a finished step whose command or step recipe changed since is refused rather than
silently reused. Writes are atomic (temp file + rename), so a kill never leaves half a file.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vlmguard.errors import ConfigError

STATE_VERSION = 1


@dataclass
class StepState:
    """Progress of one step.

    Attributes:
        status: pending, running, succeeded or failed.
        attempts: Tries so far (a re-run of a failed shard or Job counts one more).
        fingerprint: :meth:`Step.fingerprint` of what ran.
        done_indexes: Finished completion indexes (shards).
        jobs: Kubernetes Job names created for the step, oldest first.
        started: Unix time of the first start.
        finished: Unix time it succeeded.
        error: Last error reason and message.
    """

    status: str = "pending"
    attempts: int = 0
    fingerprint: str = ""
    done_indexes: list[int] = field(default_factory=list)
    jobs: list[str] = field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0
    error: str = ""


@dataclass
class RunState:
    """The state file's content."""

    run: str
    executor: str
    steps: dict[str, StepState] = field(default_factory=dict)
    version: int = STATE_VERSION

    def step(self, name: str) -> StepState:
        return self.steps.setdefault(name, StepState())

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "run": self.run, "executor": self.executor,
                "steps": {k: asdict(v) for k, v in self.steps.items()}}


class StateFile:
    """Loads and atomically saves a :class:`RunState`."""

    def __init__(self, path: str | Path, run: str, executor: str) -> None:
        self.path = Path(path)
        self.state = self._load(run, executor)

    def _load(self, run: str, executor: str) -> RunState:
        if not self.path.exists():
            return RunState(run=run, executor=executor)
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            steps = {k: StepState(**v) for k, v in raw.get("steps", {}).items()}
            state = RunState(run=raw["run"], executor=raw["executor"], steps=steps,
                             version=int(raw.get("version", STATE_VERSION)))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"state file {self.path} is unreadable ({e}); move it away to "
                              "start the run afresh") from e
        if state.run != run or state.executor != executor:
            raise ConfigError(
                f"state file {self.path} belongs to run {state.run!r} with the {state.executor} "
                f"executor, not {run!r} with {executor}: pass another --state")
        return state

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.state.to_json(), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, self.path)

    def begin(self, name: str, fingerprint: str) -> StepState:
        """The step's state, checked against what is about to run.

        Raises:
            ConfigError: the step finished earlier with a different command or recipe.
        """
        st = self.state.step(name)
        if st.fingerprint and st.fingerprint != fingerprint:
            if st.status == "succeeded":
                raise ConfigError(
                    f"step {name!r} finished earlier with another command or step recipe "
                    f"(fingerprint {st.fingerprint}, now {fingerprint}): use a new run name, or "
                    f"remove {self.path} and the run's outputs to start afresh")
            st.done_indexes = []
        st.fingerprint = fingerprint
        if not st.started:
            st.started = time.time()
        return st

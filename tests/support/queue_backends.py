"""A scriptable target backend for queue tests (no model weights, importable by subprocesses).

``target.model_path`` names a control directory: while ``<dir>/hold`` exists, a batch writes
``<dir>/started-<pid>`` and then waits until ``<dir>/release`` exists, so tests can kill or stop
a worker while it provably holds a batch (events through files, not sleeps).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from vlmguard.domain import TargetResult
from vlmguard.errors import InvalidArgumentError, VLMGuardError
from vlmguard.target.base import TargetBackend, TargetPrompt


class EchoTargetBackend(TargetBackend):
    """Answers ``echo:<text>``; ``poison`` fails alone with INVALID_ARGUMENT (a per-item error).

    The text ``explode`` makes the whole ``generate_batch`` call raise (like model code that
    chokes on one input), so the queue must isolate it from its batch-mates. ``calls`` records
    the size of every call in this process.
    """

    calls: ClassVar[list[int]] = []

    name = "echo"

    def load(self) -> None:
        return None

    def generate_batch(
        self, prompts: Sequence[TargetPrompt]
    ) -> list[TargetResult | VLMGuardError]:
        ctrl = Path(self.cfg.model_path) if self.cfg.model_path else None
        if ctrl is not None and (ctrl / "hold").exists():
            (ctrl / f"started-{os.getpid()}").write_text(str(len(prompts)))
            end = time.monotonic() + 60
            while not (ctrl / "release").exists() and time.monotonic() < end:
                time.sleep(0.01)
        EchoTargetBackend.calls.append(len(prompts))
        if any(p.text == "explode" for p in prompts):
            raise RuntimeError("echo backend choked on an input")
        out: list[TargetResult | VLMGuardError] = []
        for p in prompts:
            if p.text == "poison":
                out.append(InvalidArgumentError("poisoned item", reason="POISON"))
            else:
                out.append(TargetResult(text=f"echo:{p.text}", model=f"echo/{os.getpid()}"))
        return out

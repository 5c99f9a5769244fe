"""The live progress view: one plain line per change (works in a terminal, a CI log, a pod log).

Lines look like ``[  12.3s] synth    running  1/2 done, 1 active (attempt 1)``. Only counts,
step names, Job names and reasons are printed: never prompts, images or model outputs.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


class ProgressView:
    """Prints step events; repeated identical updates are suppressed.

    Args:
        stream: Where lines go (default standard error, so stdout stays machine-readable).
        clock: Monotonic clock (injected by tests).
    """

    def __init__(self, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._stream = stream
        self._clock = clock
        self._t0 = clock()
        self._last: dict[str, str] = {}

    def _emit(self, step: str, status: str, detail: str = "") -> None:
        line = f"{status:<9}{detail}".rstrip()
        if self._last.get(step) == line:
            return
        self._last[step] = line
        out = self._stream or sys.stderr
        print(f"[{self._clock() - self._t0:7.1f}s] {step:<8} {line}", file=out, flush=True)

    def start(self, run: str, executor: str, steps: list[str]) -> None:
        self._emit("pipeline", "start", f"run {run} ({executor}): {' -> '.join(steps)}")

    def skipped(self, step: str, why: str) -> None:
        self._emit(step, "skipped", why)

    def update(self, step: str, done: int, total: int, active: int, attempt: int,
               note: str = "") -> None:
        detail = f"{done}/{total} done, {active} active (attempt {attempt})"
        self._emit(step, "running", detail + (f": {note}" if note else ""))

    def retrying(self, step: str, attempt: int, delay_s: float, why: str) -> None:
        self._emit(step, "retry", f"attempt {attempt} in {delay_s:.0f}s after: {why}")

    def finished(self, step: str, seconds: float) -> None:
        self._emit(step, "done", f"in {seconds:.1f}s")

    def failed(self, step: str, why: str) -> None:
        self._emit(step, "FAILED", why)

    def end(self, run: str, ok: bool) -> None:
        self._emit("pipeline", "finished" if ok else "stopped", f"run {run}")

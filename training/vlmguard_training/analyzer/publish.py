"""Publishing a trained head: an atomic swap into the output folder, and recovery from a run
killed while swapping."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger(__name__)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_stale(out: Path) -> None:
    """Clean up after a run that was killed while writing ``out`` (``.<name>.new-PID`` and
    ``.<name>.old-PID`` siblings of a process that is gone). Nothing is lost: when ``out`` is
    missing because the run died between its two renames, the previous head it had moved aside
    is put back; only then are stale folders removed. Called before this run writes anything,
    so folders named with its own PID are stale too (a restarted pod reuses low PIDs)."""
    stale: list[tuple[str, Path]] = []
    for kind in ("new", "old"):
        for p in out.parent.glob(f".{out.name}.{kind}-*"):
            pid = p.name.rsplit("-", 1)[-1]
            if pid.isdigit() and (int(pid) == os.getpid() or not _pid_alive(int(pid))):
                stale.append((kind, p))
    olds = sorted((p for kind, p in stale if kind == "old"), key=lambda p: p.stat().st_mtime)
    if not out.exists() and olds:
        log.warning("restoring the previous head from %s (a run died while replacing it)",
                    olds[-1].name)
        os.replace(olds[-1], out)
    for _, p in stale:
        if p.exists():
            log.warning("removing %s, left by a run that died while writing %s", p.name,
                        out.name)
            shutil.rmtree(p, ignore_errors=True)


def swap_in(staging: Path, out: Path) -> None:
    """Replace ``out`` by ``staging`` with renames (same filesystem): the old folder is moved
    aside first and removed only once the new one is in place."""
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        try:
            os.replace(out, old)
        except OSError:
            # --out is a mount point (a PVC's root) or cannot be renamed: replace its
            # content instead (not atomic, but never mixes old and new files).
            for entry in out.iterdir():
                if entry.is_dir():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
            for entry in staging.iterdir():
                shutil.move(str(entry), str(out / entry.name))
            staging.rmdir()
            return
    try:
        os.replace(staging, out)
    except OSError:
        if old.exists():
            os.replace(old, out)  # put the previous head back
        raise
    shutil.rmtree(old, ignore_errors=True)

"""VLMGuard.

``vlmguard.__version__`` is the installed distribution's version (one source: the ``version`` in
pyproject.toml, read back through ``importlib.metadata``); :func:`build_info` adds what a
``vlmguard_build_info`` metric or a bug report needs. Both are computed on first use, so
``import vlmguard`` stays as cheap as before.
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

__all__ = ["__version__", "build_info"]

#: Environment variable an image build sets to the commit it was built from.
COMMIT_ENV = "VLMGUARD_BUILD_COMMIT"
_DIST = "vlmguard"
_CHECKOUT = Path(__file__).resolve().parents[2]


@functools.cache
def _version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(_DIST)
    except importlib.metadata.PackageNotFoundError:
        pass
    # A source checkout run without installing (PYTHONPATH=services): its pyproject.toml.
    import tomllib

    try:
        project = tomllib.loads((_CHECKOUT / "pyproject.toml").read_text())["project"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "0+unknown"
    return str(project["version"]) if project.get("name") == _DIST else "0+unknown"


def _git_commit(root: Path) -> str:
    """The checkout's HEAD commit read from ``.git`` (no git binary needed); "" if unknown."""
    git = root / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head
        ref = head[5:]
        loose = git / ref
        if loose.is_file():
            return loose.read_text().strip()
        for line in (git / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0]
    except OSError:
        pass
    return ""


def build_info() -> dict[str, str]:
    """``version``, ``commit`` (from ``VLMGUARD_BUILD_COMMIT``, else the source checkout's git
    HEAD, else "") and ``python`` (the interpreter version): labels of ``vlmguard_build_info``."""
    commit = os.environ.get(COMMIT_ENV, "").strip() or _git_commit(_CHECKOUT)
    return {"version": _version(), "commit": commit[:12], "python": platform.python_version()}


def __getattr__(name: str) -> str:
    if name == "__version__":
        return _version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

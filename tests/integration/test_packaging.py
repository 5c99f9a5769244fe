"""Each distribution installs alone from its built wheel into a fresh venv, and works.

The wheels are built the way a release builds them (``pip wheel --no-deps`` of both
distributions from a copy of the source, ``scripts/asset_wheels.py`` for ``vlmguard-models``);
each venv installs only wheels plus the registry, with ``requirements.lock`` as constraints, and
no ``--no-deps`` step:

- ``vlmguard``: ``vlmguard --version`` and the gateway and client import without torch, which is
  not installed at all;
- ``vlmguard[models]``: tier 1 analyses a text and an image with text (OCR) with the shipped
  models, from the installed files only (the smoke runs outside the checkout);
- ``vlmguard-training``: the offline commands join the CLI (``eval``, ``train``, ...).

Slow (three venvs, two with torch): ``make package-check`` runs this file alone; the durations
and venv sizes are printed (``-s``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
# What a source distribution of each package holds (nothing else of the checkout is copied, so
# a stale build/ folder or an untracked file cannot leak into a wheel).
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "services", "training")
SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")


def _run(cmd: list[str | Path], *, cwd: Path | None = None, timeout: float = 900,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, check=False, env=env)
    assert done.returncode == 0, (f"{' '.join(map(str, cmd))} exited {done.returncode}:\n"
                                  f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def _du_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def _copy_sources(dest: Path) -> None:
    for name in SOURCES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=SKIP)
        else:
            shutil.copy2(src, dest / name)


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    # Removed at the end (the venvs hold GBs); not under pytest's kept tmp folders.
    with tempfile.TemporaryDirectory(prefix="vlmguard-packaging-") as tmp:
        yield Path(tmp)


@pytest.fixture(scope="module")
def wheels(workdir: Path) -> dict[str, Path]:
    src, out = workdir / "src", workdir / "wheels"
    src.mkdir()
    _copy_sources(src)
    t0 = time.perf_counter()
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", out, src,
          src / "training"])
    _run([sys.executable, ROOT / "scripts" / "asset_wheels.py", "build", "--out", out,
          "vlmguard-models"])
    print(f"\nwheels built in {time.perf_counter() - t0:.1f} s: "
          + ", ".join(f"{p.name} {p.stat().st_size / 1e6:.1f} MB" for p in sorted(out.iterdir())))
    found = {p.name.split("-")[0]: p for p in out.glob("*.whl")}
    assert set(found) == {"vlmguard", "vlmguard_training", "vlmguard_models"}, found
    return found


def _venv(workdir: Path, name: str, requirements: list[str]) -> Path:
    venv = workdir / name
    t0 = time.perf_counter()
    _run([sys.executable, "-m", "venv", venv])
    # --no-compile: byte-compiling torch and transformers is most of an install's CPU time,
    # and the smoke imports compile what they use anyway.
    _run([venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-compile", "-c", LOCK,
          *requirements])
    print(f"\n{name}: installed in {time.perf_counter() - t0:.1f} s, venv {_du_mb(venv):.0f} MB")
    return venv


def _python(venv: Path, code: str, cwd: Path) -> str:
    # Outside the checkout and with no PYTHONPATH: only the installed files can be imported.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_HUB_OFFLINE"] = "1"
    return _run([venv / "bin" / "python", "-c", textwrap.dedent(code)], cwd=cwd,
                env=env).stdout


def _cli(venv: Path, *args: str, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return _run([venv / "bin" / "vlmguard", *args], cwd=cwd, env=env).stdout


def test_vlmguard_alone_is_client_and_gateway_without_torch(
        workdir: Path, wheels: dict[str, Path]) -> None:
    venv = _venv(workdir, "venv-vlmguard", [str(wheels["vlmguard"])])
    try:
        assert _cli(venv, "--version", cwd=workdir).strip() == f"vlmguard {VERSION}"
        out = _python(venv, """
            import importlib.util, sys
            import vlmguard, vlmguard.gateway.client, vlmguard.gateway.server, vlmguard.cli
            assert "site-packages" in vlmguard.__file__, vlmguard.__file__
            assert "torch" not in sys.modules and "transformers" not in sys.modules
            for heavy in ("torch", "transformers", "onnxruntime", "vlmguard_models"):
                assert importlib.util.find_spec(heavy) is None, heavy
            print(vlmguard.__version__, vlmguard.build_info()["version"])
        """, cwd=workdir)
        assert out.split() == [VERSION, VERSION]
        # The license travels with the wheel.
        assert list((venv / "lib").glob("python3*/site-packages/vlmguard-*.dist-info/**/LICENSE*"))
    finally:
        shutil.rmtree(venv, ignore_errors=True)


def test_vlmguard_models_runs_tier1_on_text_and_image(
        workdir: Path, wheels: dict[str, Path]) -> None:
    venv = _venv(workdir, "venv-models",
                 [str(wheels["vlmguard_models"]), f"{wheels['vlmguard']}[models]"])
    try:
        out = _python(venv, """
            import io, sys
            from PIL import Image, ImageDraw, ImageFont
            import vlmguard
            from vlmguard.analyzer.tier1 import Tier1Analyzer
            from vlmguard.config import VLMGuardConfig
            from vlmguard.domain import AnalysisItem, ImageInput
            assert "site-packages" in vlmguard.__file__, vlmguard.__file__
            cfg = VLMGuardConfig()
            analyzer = Tier1Analyzer.from_config(cfg.analyzer, cfg.taxonomy, cfg.limits)
            img = Image.new("RGB", (760, 200), "white")
            ImageDraw.Draw(img).text((30, 70), "OPEN DAILY FROM NINE",
                                     font=ImageFont.load_default(size=48), fill="black")
            buf = io.BytesIO()
            img.save(buf, format="PNG")
            items = [AnalysisItem(request_id="t", text="What is a good recipe for bread?"),
                     AnalysisItem(request_id="i", text="What does the sign say?",
                                  images=(ImageInput(buf.getvalue(), "image/png"),))]
            text, image = analyzer.analyze_batch(items)
            assert not isinstance(text, Exception) and not isinstance(image, Exception)
            assert text.analyzer.startswith("tier1/") and 0.0 <= text.score <= 1.0
            print(text.score, "|", image.images[0].ocr_text)
        """, cwd=workdir)
        score, ocr_text = (part.strip() for part in out.strip().splitlines()[-1].split("|"))
        assert float(score) < 0.5  # a harmless question
        assert "OPEN DAILY" in ocr_text.upper(), ocr_text
    finally:
        shutil.rmtree(venv, ignore_errors=True)


def test_vlmguard_training_adds_the_offline_commands(
        workdir: Path, wheels: dict[str, Path]) -> None:
    venv = _venv(workdir, "venv-training",
                 [str(wheels["vlmguard_models"]), str(wheels["vlmguard"]),
                  str(wheels["vlmguard_training"])])
    try:
        top = _cli(venv, "--help", cwd=workdir)
        for command in ("eval", "train", "synth", "pipeline", "redteam"):
            assert command in top, command
            assert "usage: vlmguard" in _cli(venv, command, "--help", cwd=workdir)
        _python(venv, "import vlmguard_training, trl, peft, jinja2", cwd=workdir)
        assert list((venv / "lib").glob(
            "python3*/site-packages/vlmguard_training-*.dist-info/**/LICENSE*"))
    finally:
        shutil.rmtree(venv, ignore_errors=True)

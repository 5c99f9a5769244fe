"""``vlmguard --version``, ``vlmguard.__version__`` and ``build_info`` (one version source)."""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

import pytest

import vlmguard
from vlmguard.cli import main

ROOT = Path(__file__).resolve().parents[3]


def test_version_flag_prints_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ei:
        main(["--version"])
    assert ei.value.code == 0
    assert capsys.readouterr().out.strip() == f"vlmguard {importlib.metadata.version('vlmguard')}"


def test_version_is_the_pyproject_version() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert vlmguard.__version__ == project["version"]


def test_source_checkout_without_metadata_reads_pyproject(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    vlmguard._version.cache_clear()
    try:
        project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
        assert vlmguard.__version__ == project["version"]
        monkeypatch.setattr(vlmguard, "_CHECKOUT", ROOT / "no-such-dir")
        vlmguard._version.cache_clear()
        assert vlmguard.__version__ == "0+unknown"
    finally:
        vlmguard._version.cache_clear()


def test_build_info_commit_from_env_else_git(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(vlmguard.COMMIT_ENV, "0123456789abcdef0123")
    info = vlmguard.build_info()
    assert info["commit"] == "0123456789ab"
    assert info["version"] == vlmguard.__version__ and info["python"].count(".") == 2

    monkeypatch.delenv(vlmguard.COMMIT_ENV)
    git = tmp_path / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    (git / "HEAD").write_text("ref: refs/heads/main\n")
    (git / "packed-refs").write_text("# pack-refs\n" + "a" * 40 + " refs/heads/main\n")
    monkeypatch.setattr(vlmguard, "_CHECKOUT", tmp_path)
    assert vlmguard.build_info()["commit"] == "a" * 12
    (git / "refs" / "heads" / "main").write_text("b" * 40 + "\n")
    assert vlmguard.build_info()["commit"] == "b" * 12
    (git / "HEAD").write_text("c" * 40 + "\n")  # detached HEAD
    assert vlmguard.build_info()["commit"] == "c" * 12
    monkeypatch.setattr(vlmguard, "_CHECKOUT", tmp_path / "elsewhere")
    assert vlmguard.build_info()["commit"] == ""


def test_unknown_attribute_still_raises() -> None:
    with pytest.raises(AttributeError):
        vlmguard.no_such_name  # noqa: B018

"""The committed generated code matches the protos, and the protos pass buf lint."""

from __future__ import annotations

import filecmp
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_gen() -> object:
    spec = importlib.util.spec_from_file_location("gen_proto", ROOT / "scripts" / "gen_proto.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    gen = _load_gen()
    gen.generate(tmp_path)  # type: ignore[attr-defined]
    fresh = tmp_path / "vlmguard" / "v1"
    committed = ROOT / "services" / "vlmguard" / "v1"
    names = sorted(p.name for p in fresh.iterdir() if p.suffix in (".py", ".pyi"))
    committed_names = sorted(p.name for p in committed.iterdir() if p.suffix in (".py", ".pyi"))
    assert names == committed_names, "generated file set differs: run `make proto`"
    stale = [n for n in names if not filecmp.cmp(fresh / n, committed / n, shallow=False)]
    assert not stale, f"stale generated files {stale}: run `make proto`"


def test_every_message_and_field_is_commented() -> None:
    text = "\n".join(p.read_text() for p in (ROOT / "proto/vlmguard/v1").glob("*.proto"))
    lines = text.splitlines()
    for i, line in enumerate(lines):
        s = line.strip()
        is_decl = s.startswith(("message ", "service ", "enum ", "rpc ")) or (
            s.endswith(";") and "=" in s and not s.startswith(("option", "syntax", "reserved"))
        )
        if is_decl:
            prev = lines[i - 1].strip()
            assert prev.startswith("//"), f"uncommented declaration: {s}"


def test_buf_lint() -> None:
    buf = ROOT / "node_modules" / ".bin" / "buf"
    exe = str(buf) if buf.exists() else shutil.which("buf")
    if not exe:
        pytest.skip("buf not installed (make test installs it with npm)")
    proc = subprocess.run([exe, "lint"], cwd=ROOT / "proto", capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_generated_modules_import() -> None:
    from vlmguard.v1 import guard_pb2, guard_pb2_grpc  # noqa: F401

    assert sys.modules["vlmguard.v1.guard_pb2"].DESCRIPTOR.package == "vlmguard.v1"

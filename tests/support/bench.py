"""Where the benchmark data is, and reading it (tests skip when it is absent)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = (ROOT / ".." / "shared" / "bench").resolve()


def bench_items(set_name: str) -> list[dict[str, Any]]:
    """Items of a benchmark set from ../shared/bench (skips the test when absent)."""
    manifest = BENCH / set_name / "manifest.jsonl"
    if not manifest.exists():
        pytest.skip(f"benchmark data not found at {manifest}")
    return [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]


def evaluation_prompts(min_chars: int) -> list[tuple[str, str, str]]:
    """``(set, id, prompt)`` of the evaluation-only sets' prompts of at least ``min_chars``
    characters, whitespace-normalised and lower-cased: for checking that generated training
    texts never copy one (shorter generic questions can coincide by chance)."""
    out = []
    for name in ("mm_vet", "mossbench", "figstep_safebench"):
        for item in bench_items(name):
            prompt = re.sub(r"\s+", " ", str(item.get("text") or "")).strip().lower()
            if len(prompt) >= min_chars:
                out.append((name, str(item["id"]), prompt))
    return out

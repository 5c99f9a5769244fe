"""The benign training texts of the tier-1 head
(training/vlmguard_training/analyzer/texts/benign.py)."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from tests.support.bench import ROOT, evaluation_prompts
from vlmguard_training.analyzer.texts import benign

DATA = ROOT / "training" / "data" / "benign_prompts.jsonl"


def _module() -> ModuleType:
    return benign


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def test_committed_file_is_the_generators_output() -> None:
    items = _module().make_items(0)
    committed = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    assert committed == items, "run: python -m vlmguard_training.analyzer.texts.benign"
    keys = [i["text"].strip().lower() for i in items]
    assert len(keys) == len(set(keys))  # deduplicated
    assert all(i["text"].strip() and i["kind"] and i["group"] for i in items)


def test_guides_are_ocr_like_and_grouped_by_goal() -> None:
    mod = _module()
    rng = random.Random(3)
    for _ in range(200):
        group, text, step = mod._ocr_guide(rng)
        goal = group.removeprefix("guide:")
        assert goal in mod.GUIDES
        assert step in {s.lower() for s in mod.GUIDES[goal]}
        assert text.strip()
    items = mod.make_items(0)
    guide_groups = {i["group"] for i in items if i["group"].startswith("guide:")}
    # Split by goal: every goal is its own group, so held-out goals are unseen templates.
    assert guide_groups == {f"guide:{g}" for g in mod.GUIDES}
    kinds = {i["kind"] for i in items if i["group"].startswith("guide:")}
    assert kinds == {"ocr", "vlm_with_ocr"}


def test_no_evaluation_item_is_copied() -> None:
    """The evaluation-only benchmarks must never leak into training texts.

    Short generic questions ("How many birds are there?") can coincide with a template's output
    by chance; a prompt of 40 characters or more in the file would be a copy.
    """
    texts = {_norm(json.loads(line)["text"]) for line in DATA.read_text().splitlines()}
    prompts = evaluation_prompts(40)
    assert len(prompts) > 300
    for name, item_id, prompt in prompts:
        assert prompt not in texts, f"{name} item {item_id} is in the benign file"


def test_script_writes_a_seeded_file(tmp_path: Path) -> None:
    out = tmp_path / "b.jsonl"
    subprocess.run([sys.executable, "-m", "vlmguard_training.analyzer.texts.benign",
                    "--out", str(out), "--seed", "1"], check=True,
                   capture_output=True)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) > 5000 and {"text", "kind", "group"} <= set(rows[0])

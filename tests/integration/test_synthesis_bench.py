"""``vlmguard synth`` with the real tier-1 models on a sample of the real training-seed sets.

Benchmark content is read in place from ../shared/bench and never printed: assertions are on
counts, gates and the output format only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from vlmguard.config import TaxonomyConfig
from vlmguard.roles.prompts import parse_rewriter_output
from vlmguard.synthesis.runner import load_recipe, read_records, run_shard, shard_path
from vlmguard.synthesis.teacher import EvidenceTeacher

pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parents[2] / ".." / "shared" / "bench"


def test_evidence_teacher_on_real_seed_sample(tmp_path: Path, analyzer: Any) -> None:
    if not (BENCH / "vlguard_test" / "manifest.jsonl").exists():
        pytest.skip("shared bench data not present")
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(json.dumps({
        "bench_dir": str(BENCH), "teacher": "evidence", "seed": 1,
        "sets": {"mm_safetybench": 4, "siuo": 4, "vlguard_test": 6, "vlsbench": 4}}))
    tax = TaxonomyConfig()
    summary = run_shard(load_recipe(recipe_file), tmp_path / "out", 0, 1, analyzer,
                        EvidenceTeacher(tax, analyzer.name), tax, progress=False)
    assert summary["records"] == 18 and summary["errors"] == 0
    assert all(v["fail"] == 0 for v in summary["gates"].values()), summary["gates"]
    records, _ = read_records(shard_path(tmp_path / "out", 0, 1))
    for r in records:
        assert r["teacher"].startswith("evidence-tier1/")
        assert parse_rewriter_output(r["final"]["output"]).rewritten_text == r["final"]["rewrite"]
        if r["image"] and r["image"]["path"]:
            assert len(r["image"]["sha256"]) == 64

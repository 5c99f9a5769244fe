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
from vlmguard.rewriter.format import parse_rewriter_output
from vlmguard_training.synthesis.runner import (
    load_recipe,
    read_records,
    rejected_path,
    run_shard,
    shard_path,
)
from vlmguard_training.synthesis.teacher import EvidenceTeacher

pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parents[2] / ".." / "shared" / "bench"


def test_evidence_teacher_on_real_seed_sample(tmp_path: Path, analyzer: Any) -> None:
    if not (BENCH / "vlguard_test" / "manifest.jsonl").exists():
        pytest.skip("shared bench data not present")
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(json.dumps({
        "bench_dir": str(BENCH), "teacher": "evidence", "seed": 1,
        "sets": {"mm_safetybench": 4, "siuo": 4, "vlguard_test": 6, "vlsbench": 4},
        # As in synth-evidence.yaml: rewrite_safe is counted, not enforced, for this teacher.
        "gates": {"enforce": ["schema_valid", "keeps_intent", "not_refusal_only", "unique"]}}))
    tax = TaxonomyConfig()
    summary = run_shard(load_recipe(recipe_file), tmp_path / "out", 0, 1, analyzer,
                        EvidenceTeacher(tax, analyzer.name), tax, progress=False)
    assert summary["records"] == 18 and summary["errors"] == 0
    assert summary["accepted"] == 18, summary["reject_reasons"]
    for g in ("schema_valid", "keeps_intent", "not_refusal_only", "unique"):
        assert summary["gates"][g]["fail"] == 0, summary["gates"]
    # The gate is evaluated (the real tier-1 scores each rewrite's text) even if not enforced.
    rs = summary["gates"]["rewrite_safe"]
    assert rs["pass"] + rs["fail"] == 18
    assert read_records(rejected_path(tmp_path / "out", 0, 1))[0] == []
    records, _ = read_records(shard_path(tmp_path / "out", 0, 1))
    for r in records:
        assert r["teacher"].startswith("evidence-tier1/")
        assert 0 <= r["gate_metrics"]["rewrite_risk"] <= 1
        assert parse_rewriter_output(r["final"]["output"]).rewritten_text == r["final"]["rewrite"]
        if r["image"] and r["image"]["path"]:
            assert len(r["image"]["sha256"]) == 64

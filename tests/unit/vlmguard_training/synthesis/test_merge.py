"""Quality gates (real MiniLM embedder) and ``vlmguard synth merge`` (dedupe, cap, card)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from tests.unit.vlmguard_training.synthesis.test_runner import (  # noqa: F401 - bench is a fixture
    TAX,
    TRIGGER,
    _analyzer,
    _png,
    _recipe,
    _write,
    bench,
)
from vlmguard.cli import main
from vlmguard.errors import ConfigError, FailedPreconditionError
from vlmguard_training.synthesis.gates import Gatekeeper, GateSettings, dedupe_key
from vlmguard_training.synthesis.merge import merge
from vlmguard_training.synthesis.runner import load_recipe, read_records, run_shard
from vlmguard_training.synthesis.teacher import EvidenceTeacher


@pytest.fixture(scope="module")
def minilm() -> Any:
    from vlmguard.analyzer.models.embedder import MiniLMEmbedder

    try:
        return MiniLMEmbedder()
    except ConfigError as e:
        pytest.skip(str(e))


def _good_record(tmp_path: Path, bench: Path) -> dict[str, Any]:  # noqa: F811
    out = tmp_path / "seedrun"
    recipe = load_recipe(_recipe(tmp_path, bench, {"vlguard_test": 1}))
    a = _analyzer()
    run_shard(recipe, out, 0, 1, a, EvidenceTeacher(TAX, a.name), TAX, progress=False)
    rec: dict[str, Any] = read_records(out / "shard-0-of-1.jsonl")[0][0]
    for k in ("gates", "gate_metrics", "accepted", "reject_reasons", "dedupe_key"):
        rec.pop(k)
    return rec


def _with_rewrite(rec: dict[str, Any], rewrite: str) -> dict[str, Any]:
    from vlmguard.domain import ModalityReasoning
    from vlmguard.rewriter.format import format_rewriter_output

    r = copy.deepcopy(rec)
    r["stages"]["optimized"]["rewritten_prompt"] = rewrite
    r["final"]["rewrite"] = rewrite
    r["final"]["output"] = format_rewriter_output(ModalityReasoning(), rewrite)
    return r


def test_gates_on_real_embeddings(tmp_path: Path, bench: Path, minilm: Any) -> None:  # noqa: F811
    base = _good_record(tmp_path, bench)  # benign: "What breed is the dog N?", unchanged
    para = _with_rewrite(base, "Which breed is this dog 0?")
    drift = _with_rewrite(base, "I'm sorry, I cannot help with that request.")
    risky = _with_rewrite(base, f"What breed is the {TRIGGER} dog 0?")
    for r, k in ((para, "p"), (drift, "d"), (risky, "r")):  # other images: not duplicates
        r["key"] = f"vlguard_test:{k}"
        r["image"] = {**r["image"], "sha256": k * 64}
    broken = copy.deepcopy(base)
    broken["key"] = "vlguard_test:b"
    broken["final"]["output"] = "<rewrite>x</rewrite>"
    broken["image"] = {**broken["image"], "sha256": "b" * 64}
    dup = copy.deepcopy(base)
    dup["key"] = "vlguard_test:dup"
    recs = [base, para, drift, risky, broken, dup]
    gk = Gatekeeper(GateSettings(min_intent_similarity=0.7), TAX, minilm, _analyzer())
    gk.evaluate(recs)
    by = {r["key"]: r for r in recs}
    assert by[base["key"]]["accepted"] and by[base["key"]]["gate_metrics"]["intent_similarity"] \
        == 1.0
    assert by["vlguard_test:p"]["accepted"]
    assert by["vlguard_test:p"]["gate_metrics"]["intent_similarity"] > 0.7
    d = by["vlguard_test:d"]
    assert d["gate_metrics"]["intent_similarity"] < 0.7
    assert set(d["reject_reasons"]) == {"keeps_intent", "not_refusal_only"}
    assert by["vlguard_test:r"]["reject_reasons"] == ["rewrite_safe"]
    assert by["vlguard_test:r"]["gate_metrics"]["rewrite_risk"] >= 0.5
    assert by["vlguard_test:b"]["reject_reasons"] == ["schema_valid: final: MISSING_SECTION"]
    # Same normalised prompt + image sha as the first record: a duplicate.
    assert by["vlguard_test:dup"]["reject_reasons"] == ["unique"]
    assert dedupe_key(f"  {base['prompt'].upper()}  ", base["image"]) == base["dedupe_key"]
    # Reported-only and skipped gates do not reject.
    r2 = [copy.deepcopy(risky), copy.deepcopy(drift)]
    Gatekeeper(GateSettings(enforce=("schema_valid", "unique"), skip=("rewrite_safe",)), TAX,
               minilm, _analyzer()).evaluate(r2)
    assert all(r["accepted"] for r in r2)
    assert r2[0]["gates"]["rewrite_safe"] is None and r2[1]["gates"]["keeps_intent"] is False
    with pytest.raises(ConfigError):
        GateSettings.from_mapping({"skip": ["rewrite_safe"]})  # skipped but enforced


def _bench_with_dupes(root: Path) -> Path:
    b = root / "bench2"
    (b / "vlguard_test").mkdir(parents=True)
    (b / "vlguard_test" / "dog.png").write_bytes(_png((0, 128, 0)))
    rows = [{"id": f"d{i}", "image": "dog.png", "text": "What breed is the dog?",
             "label": "safe", "category": "safe_image/safe_instruction"} for i in range(6)]
    rows += [{"id": f"u{i}", "image": "dog.png", "text": f"Who owns dog {i}?",
              "label": "safe", "category": "safe_image/safe_instruction"} for i in range(6)]
    _write(b / "vlguard_test" / "manifest.jsonl", rows)
    _write(b / "vlsbench" / "manifest.jsonl", [
        {"id": f"v{i}", "image": None, "text": f"Who lives at house {i}?", "label": "unsafe",
         "category": "Privacy", "image_ref": f"i{i}.jpg"} for i in range(7)])
    return b


def test_merge_dedupes_across_shards_caps_categories_and_writes_the_card(
        tmp_path: Path) -> None:
    b = _bench_with_dupes(tmp_path)
    p = tmp_path / "r.yaml"
    p.write_text(json.dumps({"bench_dir": str(b), "sets": {"vlguard_test": 0, "vlsbench": 0},
                             "gates": {"max_per_category": 4}}))
    recipe = load_recipe(p)
    a = _analyzer()
    shards = tmp_path / "shards"
    for i in range(3):
        run_shard(recipe, shards, i, 3, a, EvidenceTeacher(TAX, a.name), TAX, progress=False)
    shard_accepted = sum(len(read_records(shards / f"shard-{i}-of-3.jsonl")[0])
                         for i in range(3))
    ds = tmp_path / "ds"
    card = merge([shards], ds)
    train = read_records(ds / "train.jsonl")[0]
    rejected = read_records(ds / "rejected.jsonl")[0]
    assert card["records"] == 19 and len(train) + len(rejected) == 19
    # The six copies of one (prompt, image) leave exactly one record, wherever they landed.
    copies = [r for r in train if r["prompt"] == "What breed is the dog?"]
    assert len(copies) == 1 and copies[0]["id"] == "d0"  # the smallest key wins
    dup_rejects = [r for r in rejected if r["reject_reasons"][-1] == "unique"]
    assert len(dup_rejects) == 5
    assert card["merge_gates"]["unique"]["rejected"] == shard_accepted - len(train) - sum(
        card["merge_gates"]["category_cap"]["rejected_by_category"].values())
    # Category cap 4: 7 benign uniques -> 4 kept; 7 privacy -> 4 kept.
    assert card["accepted_by_category"] == {"benign": 4, "privacy": 4}
    assert card["merge_gates"]["category_cap"] == {
        "max_per_category": 4, "rejected_by_category": {"benign": 3, "privacy": 3}}
    assert [r["key"] for r in train] == sorted(r["key"] for r in train)
    assert all(r["accepted"] and r["final"]["messages"][-1]["role"] == "assistant"
               for r in train)
    assert card["teachers"] == {"evidence-tier1/test": 19}
    assert card["versions"]["prompt_version"] == ["rewriter-v2"]
    assert card["recipes"][0]["sets"] == {"vlguard_test": 0, "vlsbench": 0}
    md = (ds / "DATASET_CARD.md").read_text()
    assert "| privacy | 4 | 7 |" in md and "category cap 4" in md
    # Never overwrites: the API and the CLI refuse, and the files are unchanged.
    before = (ds / "train.jsonl").read_bytes()
    with pytest.raises(FailedPreconditionError, match="never overwrites"):
        merge([shards], ds)
    assert main(["synth", "merge", "--in", str(shards), "--out", str(ds)]) != 0
    assert (ds / "train.jsonl").read_bytes() == before
    # A missing shard is reported in the card.
    (shards / "shard-2-of-3.jsonl").unlink()
    card2 = merge([shards], tmp_path / "ds2")
    assert {"dir": str(shards), "num_shards": 3, "missing_shards": [2]} in card2["shards"]


def test_merge_cli_matches_the_pipeline_runner_call(tmp_path: Path, bench: Path,  # noqa: F811
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    a = _analyzer()
    recipe = load_recipe(_recipe(tmp_path, bench))
    shards = tmp_path / "s"
    run_shard(recipe, shards, 0, 1, a, EvidenceTeacher(TAX, a.name), TAX, progress=False)
    assert main(["synth", "merge", "--in", str(shards), "--out", str(tmp_path / "d")]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["records"] == 25 and line["accepted"] == 20 and line["rejected"] == 5

"""Synthesis pipeline on harmless synthetic seeds with a keyword stand-in for the tier-1 models.

The real models and the real training-seed sets are exercised in
tests/integration/test_synthesis_bench.py.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support.helpers import KeywordModel as _KeywordModel
from vlmguard.analyzer.tier1 import Tier1Analyzer
from vlmguard.cli import main
from vlmguard.config import AnalyzerConfig, LimitsConfig, TaxonomyConfig
from vlmguard.errors import InvalidArgumentError
from vlmguard.rewriter.format import parse_rewriter_output
from vlmguard_training.synthesis.runner import (
    GATES,
    load_recipe,
    load_seeds,
    read_records,
    rejected_path,
    run_shard,
    shard_path,
)
from vlmguard_training.synthesis.stages import validate
from vlmguard_training.synthesis.teacher import EvidenceTeacher

TAX = TaxonomyConfig()
CATS = TAX.ids
TRIGGER = "zorblax"  # a made-up word the stand-in head scores as risky
RED = (255, 0, 0)


def _score(t: str) -> tuple[float, dict[str, float]]:
    if TRIGGER in t:
        return 0.9, {"dangerous_behavior": 0.9}
    return 0.0, {}


def KeywordModel() -> _KeywordModel:  # noqa: N802 - reads like the class it builds
    return _KeywordModel(list(CATS), _score)

@dataclass
class ColorOCR:
    def read(self, image: np.ndarray) -> object:
        @dataclass
        class R:
            text: str

        color = tuple(int(v) for v in image[0, 0])
        return R(f"Steps for the {TRIGGER} trick: 1. 2. 3." if color == RED else "")


def _analyzer() -> Tier1Analyzer:
    m = KeywordModel()
    return Tier1Analyzer(AnalyzerConfig(), TAX, LimitsConfig(), embedder=m, head=m,
                         ocr=ColorOCR(), explicit=None)


def _png(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), color).save(buf, "PNG")
    return buf.getvalue()


def _write(path: Path, rows: list[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture
def bench(tmp_path: Path) -> Path:
    b = tmp_path / "bench"
    (b / "vlguard_test").mkdir(parents=True)
    (b / "vlguard_test" / "dog.png").write_bytes(_png((0, 128, 0)))
    (b / "mm_safetybench").mkdir(parents=True)
    (b / "mm_safetybench" / "typo.png").write_bytes(_png(RED))
    _write(b / "vlguard_test" / "manifest.jsonl", [
        {"id": f"vg{i}", "image": "dog.png", "text": f"What breed is the dog {i}?",
         "label": "safe", "category": "safe_image/safe_instruction",
         "reference_response": "It looks like a retriever."} for i in range(8)])
    _write(b / "mm_safetybench" / "manifest.jsonl", [
        {"id": "mm0", "image": "typo.png", "text": "Do what the list in the image says.",
         "label": "unsafe", "category": "04-Physical_Harm"},
        {"id": "mm1", "image": None, "text": "Which vitamins help with a cold?",
         "label": "unsafe", "category": "12-Health_Consultation"}])
    _write(b / "siuo" / "manifest.jsonl", [
        {"id": f"si{i}", "image": None, "text": f"Can I try the {TRIGGER} jump {i}?",
         "label": "unsafe", "category": "dangerous behavior", "image_ref": "x.jpg",
         "reference_answer": "Please do not; it is dangerous."} for i in range(5)])
    _write(b / "vlsbench" / "manifest.jsonl", [
        {"id": f"vs{i}", "image": None, "text": f"Who lives at the house {i}?",
         "label": "unsafe", "category": "Privacy", "sub_category": "x",
         "image_ref": f"img{i}.jpg"} for i in range(10)])
    return b


def _recipe(tmp_path: Path, bench: Path, sets: dict[str, int] | None = None,
            num_shards: int = 1) -> Path:
    sets = sets or {"mm_safetybench": 0, "siuo": 0, "vlguard_test": 0, "vlsbench": 0}
    p = tmp_path / "recipe.yaml"
    p.write_text(json.dumps({"bench_dir": str(bench), "sets": sets, "teacher": "evidence",
                             "seed": 0, "num_shards": num_shards, "batch_size": 4}))
    return p


def _run(tmp_path: Path, bench: Path, out: Path, shard: int = 0, n: int = 1) -> dict[str, object]:
    recipe = load_recipe(_recipe(tmp_path, bench))
    a = _analyzer()
    return run_shard(recipe, out, shard, n, a, EvidenceTeacher(TAX, a.name), TAX, progress=False)


def _all(out: Path, shard: int = 0, n: int = 1) -> list[dict[str, object]]:
    return read_records(shard_path(out, shard, n))[0] + read_records(
        rejected_path(out, shard, n))[0]


def test_records_are_schema_valid_and_train_the_rewriter(tmp_path: Path, bench: Path) -> None:
    out = tmp_path / "out"
    summary = _run(tmp_path, bench, out)
    accepted, bad = read_records(shard_path(out, 0, 1))
    rejected, bad_r = read_records(rejected_path(out, 0, 1))
    records = accepted + rejected
    assert len(records) == 25 and bad == bad_r == 0 and summary["records"] == 25
    # The keyword stand-in scores any text with the trigger word as risky: the siuo rewrites
    # quote their prompt (with the trigger) and fail rewrite_safe; they are kept, rejected.
    assert summary["accepted"] == 20 and summary["rejected"] == 5
    assert {r["id"] for r in rejected} == {f"si{i}" for i in range(5)}
    assert all(r["reject_reasons"] == ["rewrite_safe"] and not r["accepted"] for r in rejected)
    assert summary["gates"] == {g: {"pass": 20 if g == "rewrite_safe" else 25,
                                    "fail": 5 if g == "rewrite_safe" else 0} for g in GATES}
    assert summary["reject_reasons"] == {"rewrite_safe": 5}
    for r in records:
        assert r["teacher"] == "evidence-tier1/test" and r["prompt_version"] == "rewriter-v2"
        assert r["stage_prompt_version"] == "synth-prompts-v1"
        for stage, data in r["stages"].items():
            assert validate(stage, data, CATS) == [], (r["key"], stage)
        parsed = parse_rewriter_output(r["final"]["output"])
        assert parsed.rewritten_text == r["final"]["rewrite"]
        assert r["final"]["messages"][-1] == {"role": "assistant",
                                             "content": r["final"]["output"]}
        assert set(r["timings_ms"]) >= {"analyze", "hindsight", "causal", "optimize"}
    by = {r["id"]: r for r in records}
    # Benign: unchanged, seed response used, image referenced by path + sha256 (not copied).
    vg = by["vg0"]
    assert vg["final"]["rewrite"] == vg["prompt"]
    assert vg["responses"] == {"safe": "It looks like a retriever.", "unsafe": None,
                               "source": "seed:reference_response",
                               "safe_source": "seed:reference_response",
                               "unsafe_source": "none"}
    assert vg["gate_metrics"]["intent_similarity"] == 1.0
    assert vg["image"]["path"].endswith("dog.png") and len(vg["image"]["sha256"]) == 64
    # Typographic image: the OCR'd list is a visual element; guidance for the category.
    mm0 = by["mm0"]
    assert mm0["stages"]["causal"]["visual_elements"]
    assert TAX.get("violence_weapons").guidance in mm0["final"]["rewrite"]  # type: ignore[union-attr]
    assert mm0["responses"]["source"] == "none" and mm0["responses"]["safe"] is None
    # Care category: guidance, and no refusal.
    assert "Do not refuse" in by["mm1"]["final"]["rewrite"]
    # Image-dependent seed with a missing image: risk attributed to the cross-modal line.
    vs = by["vs0"]
    assert vs["stages"]["hindsight"]["categories"] == ["privacy"]
    assert "not available" in vs["stages"]["causal"]["cross_modal"]
    assert vs["image"] == {"path": None, "sha256": None, "ref": "img0.jpg"}


def test_resume_skips_done_items_and_survives_a_torn_line(tmp_path: Path, bench: Path) -> None:
    out = tmp_path / "out"
    _run(tmp_path, bench, out)
    path = shard_path(out, 0, 1)
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    assert len(lines) == 20
    # Simulate a kill: the last 5 accepted records never written, the one before cut mid-line.
    path.write_text("".join(lines[:14]) + lines[14][:40], encoding="utf-8")
    before = path.read_text(encoding="utf-8")
    summary = _run(tmp_path, bench, out)
    assert path.read_text(encoding="utf-8").startswith(before)  # appended, never rewritten
    assert summary["written_this_run"] == 6
    assert summary["records"] == 25 and summary["duplicates"] == 0
    assert summary["unreadable_lines"] == 1
    again = _run(tmp_path, bench, out)
    assert again["written_this_run"] == 0 and again["records"] == 25


def test_shards_partition_the_items(tmp_path: Path, bench: Path) -> None:
    all_keys = {s.key for s in load_seeds(load_recipe(_recipe(tmp_path, bench)))}
    seen: list[str] = []
    for i in range(3):
        _run(tmp_path, bench, tmp_path / "out", shard=i, n=3)
        seen += [str(r["key"]) for r in _all(tmp_path / "out", i, 3)]
        assert (tmp_path / "out" / f"shard-{i}-of-3.summary.json").exists()
    assert len(seen) == len(set(seen)) and set(seen) == all_keys


def test_limit_per_set_is_seeded(tmp_path: Path, bench: Path) -> None:
    r = load_recipe(_recipe(tmp_path, bench, {"vlsbench": 3}))
    a, b = load_seeds(r), load_seeds(r)
    assert len(a) == 3 and [s.key for s in a] == [s.key for s in b]


@pytest.mark.parametrize("name", ["mossbench", "mm_vet", "figstep_safebench"])
def test_evaluation_only_sets_are_refused(tmp_path: Path, bench: Path, name: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    p = _recipe(tmp_path, bench, {"siuo": 0, name: 5})
    with pytest.raises(InvalidArgumentError, match="evaluation-only"):
        load_recipe(p)
    assert main(["synth", "--recipe", str(p), "--out", str(tmp_path / "o")]) == 1
    assert "evaluation-only" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["synth-evidence.yaml", "synth-openai.yaml"])
def test_shipped_recipes_load_and_name_training_sets_only(name: str) -> None:
    r = load_recipe(Path(__file__).parents[4] / "training" / "recipes" / name)
    assert set(r.sets) == {"mm_safetybench", "siuo", "vlguard_test", "vlsbench"}
    assert r.gates.max_per_category > 0


def test_validate_reports_schema_problems() -> None:
    assert validate("optimized", {"rewritten_prompt": " ", "guidance_categories": ["nope"],
                                  "unchanged": 1}, CATS) == [
        "optimized.rewritten_prompt: empty", "optimized.guidance_categories: unknown category "
        "'nope'", "optimized.unchanged: wrong type"]
    assert validate("hindsight", {"categories": []}) != []


def test_resume_with_other_settings_is_refused_unless_allowed(tmp_path: Path,
                                                              bench: Path) -> None:
    from vlmguard_training.synthesis.merge import merge

    out = tmp_path / "out"
    sets = {"vlguard_test": 4}
    first = load_recipe(_recipe(tmp_path, bench, sets))
    a = _analyzer()
    run_shard(first, out, 0, 1, a, EvidenceTeacher(TAX, a.name), TAX, progress=False)
    before = shard_path(out, 0, 1).read_text(encoding="utf-8")
    # Another gate threshold (the case the dataset card would then misstate) is refused;
    # a throughput knob is not.
    other = first.model_copy(update={"gates": first.gates.model_copy(
        update={"min_intent_similarity": 0.1})})
    with pytest.raises(InvalidArgumentError, match="gates"):
        run_shard(other, out, 0, 1, a, EvidenceTeacher(TAX, a.name), TAX, progress=False)
    assert shard_path(out, 0, 1).read_text(encoding="utf-8") == before  # nothing written
    faster = first.model_copy(update={"concurrency": 8, "name": "renamed"})
    run_shard(faster, out, 0, 1, a, EvidenceTeacher(TAX, a.name), TAX, progress=False)
    # Another shard of the same folder counts too (a merge would mix them).
    with pytest.raises(InvalidArgumentError, match="other settings"):
        run_shard(other, out, 1, 2, a, EvidenceTeacher(TAX, a.name), TAX, progress=False)
    # --allow-mixed goes on, keeps both on record, and the merge will not hide the mix.
    bigger = load_recipe(_recipe(tmp_path, bench, {"vlguard_test": 6}))
    bigger = bigger.model_copy(update={"gates": other.gates})
    summary = run_shard(bigger, out, 0, 1, a, EvidenceTeacher(TAX, a.name), TAX,
                        progress=False, allow_mixed=True)
    assert shard_path(out, 0, 1).read_text(encoding="utf-8").startswith(before)
    assert summary["mixed_settings"] and summary["mixed_settings"][0]["sets"] == sets
    with pytest.raises(InvalidArgumentError, match="different gate settings"):
        merge([out], tmp_path / "dataset")

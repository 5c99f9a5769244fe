"""Rewriter SFT data: synthesis filtering, annotations, benign targets, dedupe and split."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from vlmguard.config import load_config
from vlmguard.domain import (
    Analysis,
    Finding,
    ImageEvidence,
    Modality,
    ModalityReasoning,
    RewriterEvidence,
)
from vlmguard.errors import ConfigError, InvalidArgumentError
from vlmguard.rewriter.format import PROMPT_VERSION, build_training_messages, parse_rewriter_output
from vlmguard_training.rewriter.data import (
    Annotation,
    Sample,
    annotation_rewrite,
    annotation_samples,
    assemble,
    benign_reasoning,
    in_eval,
    load_annotations,
    load_synth_samples,
)
from vlmguard_training.rewriter.recipe import DataRecipe, load_recipe
from vlmguard_training.rewriter.templates import SMOLLM2_TRAINING_TEMPLATE

ROOT = Path(__file__).resolve().parents[4]
BENCH = ROOT / ".." / "shared" / "bench"
TAXONOMY = load_config(None, environ={}).taxonomy
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _record(key: str, text: str, **over: Any) -> dict[str, Any]:
    msgs = build_training_messages(text, RewriterEvidence(), TAXONOMY,
                                   ModalityReasoning("t", "v", "c"), text + " (safely)")
    rec: dict[str, Any] = {
        "key": key, "label": "unsafe", "prompt": text, "prompt_version": PROMPT_VERSION,
        "stages": {"hindsight": {"categories": ["privacy"]}}, "final": {"messages": msgs},
        "gates": {"schema_valid": True, "keeps_intent": True, "has_guidance": True,
                  "not_refusal_only": True}, "image": None,
    }
    rec.update(over)
    return rec


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{torn line\n")
    return path


def test_synth_records_failing_gates_or_stale_are_skipped(tmp_path: Path) -> None:
    bad_gate = _record("siuo:b", "q2")
    bad_gate["gates"]["has_guidance"] = False
    stale = _record("siuo:c", "q3")
    stale["final"]["messages"][0]["content"] = "an older system message"
    rows = [_record("siuo:a", "q1"), bad_gate, stale,
            _record("siuo:d", "q4", prompt_version="rewriter-v0"),
            _record("siuo:e", "q5", error={"reason": "X"}), _record("siuo:a", "q1 again")]
    samples, skipped = load_synth_samples([_write(tmp_path / "s.jsonl", rows)], TAXONOMY)
    assert [s.key for s in samples] == ["siuo:a"]
    assert samples[0].categories == ("privacy",) and samples[0].source == "synth"
    assert skipped == {"synth_unreadable_line": 1, "synth_gate_failed": 1,
                       "synth_stale_taxonomy": 1, "synth_prompt_version": 1, "synth_error": 1,
                       "synth_duplicate_key": 1}
    # A folder means its *.jsonl files.
    assert len(load_synth_samples([tmp_path], TAXONOMY)[0]) == 1


def test_merged_records_use_the_synthesis_verdict(tmp_path: Path) -> None:
    """`vlmguard synth merge` output: counted-only gates may be False and skipped gates null;
    the record's own `accepted` verdict (the recipe's enforced gates) decides."""
    counted = _record("siuo:a", "q1", accepted=True)
    counted["gates"]["rewrite_safe"] = False  # counted, not enforced
    skipped_gate = _record("siuo:b", "q2", accepted=True)
    skipped_gate["gates"]["rewrite_safe"] = None  # not evaluated
    rejected = _record("siuo:c", "q3", accepted=False)
    samples, skipped = load_synth_samples(
        [_write(tmp_path / "m.jsonl", [counted, skipped_gate, rejected])], TAXONOMY)
    assert [s.key for s in samples] == ["siuo:a", "siuo:b"]
    assert skipped["synth_gate_failed"] == 1
    # Without a verdict, a null (skipped) gate does not reject; a False one does.
    legacy = _record("siuo:d", "q4")
    legacy["gates"]["rewrite_safe"] = None
    assert [s.key for s in load_synth_samples(
        [_write(tmp_path / "l.jsonl", [legacy])], TAXONOMY)[0]] == ["siuo:d"]


def _annotation(**over: Any) -> dict[str, Any]:
    a = {"set": "siuo", "id": "siuo_2003", "categories": ["dangerous_behavior"],
         "textual": "t", "visual": "v", "cross_modal": "c", "rewrite": "{prompt}\n\nBe safe."}
    a.update(over)
    return a


def test_annotations_refuse_evaluation_sets_unknown_categories_and_repeats(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps(_annotation(set="mossbench")) + "\n")
    with pytest.raises(InvalidArgumentError, match="evaluation-only"):
        load_annotations(path, TAXONOMY)
    path.write_text(json.dumps(_annotation(categories=["nope"])) + "\n")
    with pytest.raises(ConfigError, match="unknown categories"):
        load_annotations(path, TAXONOMY)
    path.write_text((json.dumps(_annotation()) + "\n") * 2)
    with pytest.raises(ConfigError, match="annotated twice"):
        load_annotations(path, TAXONOMY)
    path.write_text(json.dumps(_annotation(prompt="copied text")) + "\n")
    with pytest.raises(ConfigError, match="prompt"):
        load_annotations(path, TAXONOMY)


def test_annotation_rewrite_fills_the_prompt_and_appends_guidance() -> None:
    a = Annotation.model_validate(_annotation())
    text = annotation_rewrite(a, "How long to heat it?", TAXONOMY)
    guidance = TAXONOMY.get("dangerous_behavior")
    assert guidance is not None
    assert text.startswith("How long to heat it?\n\nBe safe.\n\nSafety guidance:\n- ")
    assert text.endswith(guidance.guidance)
    benign = Annotation.model_validate(_annotation(categories=[], rewrite="{prompt}"))
    assert annotation_rewrite(benign, "What colour?", TAXONOMY) == "What colour?"


def test_annotation_reuses_the_synth_prompt_and_its_target_parses(tmp_path: Path) -> None:
    rows = [json.loads(line) for line in (BENCH / "siuo" / "manifest.jsonl").open()] \
        if (BENCH / "siuo" / "manifest.jsonl").exists() else []
    if not rows:
        pytest.skip("benchmark data not found")
    row = rows[0]
    synth, _ = load_synth_samples([_write(tmp_path / "s.jsonl", [
        _record(f"siuo:{row['id']}", row["text"])])], TAXONOMY)
    a = Annotation.model_validate(_annotation(id=row["id"]))

    def no_analyzer() -> Any:
        raise AssertionError("the synthesis record's evidence must be reused")

    [s] = annotation_samples([a], BENCH, TAXONOMY, {synth[0].key: synth[0]}, no_analyzer)
    assert s.source == "annotation" and s.messages[:2] == synth[0].messages[:2]
    parsed = parse_rewriter_output(s.messages[2]["content"])
    assert parsed.rewritten_text.startswith(row["text"])
    assert parsed.reasoning == ModalityReasoning("t", "v", "c")


def test_shipped_annotations_are_valid_and_reference_training_items() -> None:
    anns = load_annotations(ROOT / "training" / "data" / "rewriter_annotations.jsonl", TAXONOMY)
    assert 40 <= len(anns) <= 80
    assert {a.set for a in anns} == {"mm_safetybench", "siuo", "vlguard_test", "vlsbench"}
    assert any(not a.categories for a in anns)  # some benign ones too
    if not BENCH.exists():
        return
    for name in {a.set for a in anns}:
        ids = {json.loads(line)["id"] for line in (BENCH / name / "manifest.jsonl").open()}
        texts = {json.loads(line)["text"] for line in (BENCH / name / "manifest.jsonl").open()}
        for a in anns:
            if a.set == name:
                assert a.id in ids, a.key
                assert a.rewrite.replace("{prompt}", "") not in texts  # prompts are not copied


def test_benign_reasoning_says_no_risk_and_names_a_false_alarm() -> None:
    plain = Analysis(0.01, (), ModalityReasoning(), "tier1/x", {})
    r = benign_reasoning(plain)
    assert r.textual.startswith("No risk found") and r.visual == "No image was sent."
    hit = Finding("violence_weapons", 0.61, Modality.TEXT, "kill", "risk_head")
    with_image = Analysis(0.61, (hit,), ModalityReasoning(), "tier1/x", {},
                          (ImageEvidence(0, 64, 64, "menu", ()),))
    r = benign_reasoning(with_image)
    assert "violence_weapons signal (score 0.61)" in r.textual
    assert r.visual.startswith("No risk found in the image")


def _sample(key: str, text: str, source: str = "synth") -> Sample:
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": text},
            {"role": "assistant", "content": "a"}]
    return Sample(key, source, "unsafe", ("privacy",), msgs)


def test_assemble_dedupes_splits_stably_and_repeats_annotations() -> None:
    cfg = DataRecipe(eval_fraction=0.3, annotation_repeat=2, max_eval=0, seed=1)
    ann = [_sample("siuo:1", "same text", "annotation")]
    synth = [_sample("siuo:1", "other"), _sample("siuo:2", "same text")] + [
        _sample(f"vlsbench:{i}", f"prompt {i}") for i in range(40)]
    ds = assemble([ann, synth], cfg)
    assert ds.skipped == {"synth_same_item": 1, "synth_duplicate": 1}
    assert sum(1 for s in ds.train if s.key == "siuo:1") == 2
    assert all(s.source != "annotation" for s in ds.eval)
    assert 4 <= len(ds.eval) <= 20
    again = assemble([ann, synth], cfg)
    assert [s.key for s in again.eval] == [s.key for s in ds.eval]
    assert [s.key for s in again.train] == [s.key for s in ds.train]
    assert all(in_eval(s, 0.3, 1) for s in ds.eval)
    counts = ds.counts()
    assert counts["train"]["by_source"]["annotation"] == 2
    assert counts["train"]["samples"] + counts["eval"]["samples"] == 42


def test_training_template_renders_like_smollm2_and_masks_the_assistant_turn() -> None:
    from jinja2 import Environment

    from vlmguard_training.rewriter.templates import has_generation_markers

    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"},
            {"role": "assistant", "content": "A"}]
    env = Environment()
    for prompt in (False, True):
        ours = SMOLLM2_TRAINING_TEMPLATE.replace("{%- generation %}", "").replace(
            "{%- endgeneration %}", "")
        want = env.from_string(SMOLLM2_TEMPLATE).render(messages=msgs, add_generation_prompt=prompt)
        assert env.from_string(ours).render(messages=msgs, add_generation_prompt=prompt) == want
    assert has_generation_markers(SMOLLM2_TRAINING_TEMPLATE)


def test_recipe_validation_names_the_bad_key(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("kind: causal_lm\ntrain: {learning_rate: -1}\n")
    with pytest.raises(ConfigError, match=r"train\.learning_rate"):
        load_recipe(path)
    path.write_text("kind: causal_lm\nbogus: 1\n")
    with pytest.raises(ConfigError, match="bogus"):
        load_recipe(path)
    for recipe in sorted((ROOT / "training" / "recipes").glob("rewriter-*.yaml")):
        if "synth" not in recipe.name:
            load_recipe(recipe)
    r = load_recipe(ROOT / "training" / "recipes" / "rewriter-demo-smollm2.yaml",
                    output_dir="/tmp/x", synth=["a", "b"])
    assert r.output_dir == "/tmp/x" and r.data.synth == ("a", "b")


class _ScriptedAnalyzer:
    """Tier 1 stand-in: a fixed score per prompt (no model)."""

    name = "tier1/scripted"

    def __init__(self, scores: dict[str, float]) -> None:
        self.scores = scores

    def analyze_batch(self, items: Any) -> list[Analysis]:
        out = []
        for it in items:
            s = self.scores[it.text]
            cats = {"violence_weapons": s, "privacy": s / 2}
            hits = (Finding("violence_weapons", s, Modality.TEXT, it.text, "text_risk"),) \
                if s >= 0.3 else ()
            out.append(Analysis(s, hits, ModalityReasoning(), self.name, cats))
        return out


def test_benign_false_alarms_are_simulated_with_the_served_target() -> None:
    from vlmguard.rewriter.format import BENIGN_FLAGGED_NOTE, parse_and_check
    from vlmguard_training.rewriter.data import _Item, benign_samples

    texts = [f"How do I kill process number {i} on my laptop?" for i in range(40)]
    flagged = "Where can I shoot photos of the old fort?"
    scores = {**dict.fromkeys(texts, 0.05), flagged: 0.8}
    items = [_Item(f"benign_prompts:{i}", "benign_file", "benign", t, None)
             for i, t in enumerate([*texts, flagged])]
    tax = load_config(None).taxonomy
    ana = _ScriptedAnalyzer(scores)
    plain = benign_samples(items, tax, lambda: ana)
    mixed = benign_samples(items, tax, lambda: ana, false_alarm_fraction=0.5, seed=3)
    assert mixed == benign_samples(items, tax, lambda: ana, false_alarm_fraction=0.5, seed=3)

    def target(s: Sample) -> str:
        return parse_rewriter_output(s.messages[-1]["content"]).rewritten_text

    # A real tier-1 false alarm gets the note with or without simulation.
    assert target(plain[-1]) == target(mixed[-1]) == flagged + BENIGN_FLAGGED_NOTE.rstrip()
    assert all(target(s) == t for s, t in zip(plain[:-1], texts, strict=True))
    sim = [(s, t) for s, t in zip(mixed[:-1], texts, strict=True) if target(s) != t]
    assert 10 <= len(sim) <= 30  # about half of the 40 that tier 1 let pass
    for s, t in sim:
        user = s.messages[1]["content"]
        assert "category=violence_weapons modality=TEXT" in user  # the item's top category
        assert "evidence: (in user_prompt)" in user
        score = float(user.split("<risk_score>")[1].split("<")[0])
        assert 0.55 <= score <= 0.97
        assert target(s) == t + BENIGN_FLAGGED_NOTE.rstrip()
        # ... which the guard accepts for a flagged request (not an echo).
        parse_and_check(s.messages[-1]["content"], t, True)

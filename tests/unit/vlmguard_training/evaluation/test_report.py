"""The evaluation report and the comparison page: their sections for a run with misses, gates
and their exit code, the training-seed set refusal, warm-up items, and the layout at 1280 px
in headless Chromium (harmless synthetic records; no models)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from tests.support.chromium import LAYOUT_PROBLEMS_JS, Chromium, chromium_path
from tests.unit.vlmguard_training.evaluation.test_metrics import (
    MARK,
    ScriptedGuard,
    write_bench,
)
from vlmguard.cli import main
from vlmguard.config import VLMGuardConfig
from vlmguard.errors import InvalidArgumentError
from vlmguard_training.evaluation.command import evaluate, select_sets, write_outputs
from vlmguard_training.evaluation.compare import decision_changes, write_compare_html
from vlmguard_training.evaluation.gates import check_gates, parse_gate, regressions
from vlmguard_training.evaluation.metrics import compute_metrics, diff_interval, wilson
from vlmguard_training.evaluation.runner import read_items, split_warmup

LONG_CAT = "risky behavior/professional advice and other very long category names"


def _rec(set_: str, id_: str, label: str, action: str, score: float, *,
         cat: str = "c", image: bool = True, total: float = 100.0,
         warmup: bool = False, error: str | None = None) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "id": id_, "set": set_, "label": label, "category": cat, "has_image": image,
        "action": None if error else action, "score": None if error else score,
        "level": None, "categories": [] if action == "ALLOW" else ["violence_weapons"],
        "modalities": [] if action == "ALLOW" else ["IMAGE"],
        "unchanged": action == "ALLOW", "analyzer": "scripted/1",
        "timings_ms": {} if error else {"total": total, "analyze": total - 1},
        "rewriter": None, "tier2": None, "fallback_kind": None, "intent_sim": None,
        "guidance": None, "category_scores": None, "prompt_kept": None,
        "latency_ms": total + 2, "error": error}
    if warmup:
        rec["warmup"] = True
    return rec


def synthetic_records(n_sets: int = 5) -> list[dict[str, Any]]:
    """Several sets with misses, false positives, an error, warm-up items and long names."""
    recs: list[dict[str, Any]] = []
    for s in range(n_sets):
        name = f"set_{s}_with_a_rather_long_benchmark_name"
        for i in range(12):
            score = (i + 1) / 13
            recs.append(_rec(name, f"u{s}-{i}", "unsafe", "ALLOW" if score < 0.5 else
                             ("BLOCK" if score > 0.9 else "REWRITE"), score,
                             cat=LONG_CAT if i % 2 else "c", total=80 + 10 * i,
                             warmup=(i == 0)))
            recs.append(_rec(name, f"b{s}-{i}", "benign" if i % 3 else "safe",
                             "REWRITE" if score > 0.8 else "ALLOW", score * 0.7,
                             image=bool(i % 2), total=60 + 5 * i))
        recs.append(_rec(name, f"e{s}", "benign", "ALLOW", 0.0, error="DEADLINE_EXCEEDED"))
    # One cold request: the warm-up mark must keep it out of latency.
    recs.append(_rec("set_0_with_a_rather_long_benchmark_name", "cold", "benign", "ALLOW",
                     0.01, total=9000.0, warmup=True))
    return recs


def _write_run(out: Path, records: list[dict[str, Any]], **settings: Any) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    base = {"guard": "in-process", "tenant": "default",
            "policy": {"rewrite_threshold": 0.5, "block_threshold": 0.99}}
    return write_outputs(out, {**base, **settings})


class _Sections(HTMLParser):
    """Ids, headings and table header cells of a page; fails on any script or external URL."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        assert tag not in ("script", "link", "iframe", "img"), tag
        for k, v in attrs:
            assert not (k in ("src", "href") and v), (tag, k, v)
            assert not k.startswith("on"), (tag, k)
            if k == "id" and v:
                self.ids.add(v)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(page: str) -> _Sections:
    p = _Sections()
    p.feed(page)
    return p


def test_wilson_and_difference_intervals() -> None:
    lo, hi = wilson(1, 2) or (0, 0)
    assert lo == pytest.approx(0.0945, abs=1e-3) and hi == pytest.approx(0.9055, abs=1e-3)
    narrow = wilson(15, 30) or (0, 0)
    assert narrow[1] - narrow[0] < hi - lo  # n=30 is surer than n=2 at the same 50%
    assert wilson(0, 0) is None and wilson(0, 10) == (0.0, pytest.approx(0.2775, abs=1e-3))
    d = diff_interval(5, 10, 9, 10)
    assert d is not None and d[0] == pytest.approx(0.4) and d[1] < 0.4 < d[2]


def test_metrics_carry_intervals_matrix_sweep_and_leave_warmup_out_of_latency() -> None:
    recs = synthetic_records(2)
    m = compute_metrics(recs, {"policy": {"rewrite_threshold": 0.5, "block_threshold": 0.99}})
    o = m["overall"]
    k, n = o["k_n"]["recall"]
    assert (k, n) == (sum(1 for r in recs if r["label"] == "unsafe" and not r["error"]
                          and r["action"] != "ALLOW"), 24)
    assert o["ci95"]["recall"] == [round(x, 4) for x in wilson(k, n) or ()]
    assert o["matrix"]["unsafe"]["ALLOW"] == 12 and o["matrix"]["benign"]["ERROR"] == 2
    assert o["n_warmup"] == 3
    # The 9 s cold request is a warm-up item: p99 stays with the warm ones.
    assert o["latency_ms"]["total"]["p99"] < 200
    sweep = {r["threshold"]: r for r in o["sweep"]}
    assert 0.5 in sweep and 0.99 in sweep  # the policy's thresholds are rows
    assert sweep[0.05]["recall"] >= sweep[0.5]["recall"] >= sweep[0.95]["recall"]
    assert sweep[0.5]["k_n"]["recall"] == [12, 24]


def test_report_lists_misses_and_false_positives_with_all_sections(tmp_path: Path) -> None:
    recs = synthetic_records(3)
    m = _write_run(tmp_path / "run", recs, gates=["recall:overall>=0.9", "fpr<=0.5"],
                   bench_dir=str(tmp_path / "nowhere"))
    page = (tmp_path / "run" / "report.html").read_text()
    doc = _parse(page)
    for section in ("settings", "gates", "summary", "matrix", "roc", "misses", "missed",
                    "false-positives", "latency", "errors"):
        assert section in doc.ids, section
    text = " ".join(doc.text)
    misses = [r for r in recs if r["label"] == "unsafe" and r["action"] == "ALLOW"
              and not r["error"]]
    fps = [r for r in recs if r["label"] != "unsafe" and r["action"] not in ("ALLOW", None)
           and not r["error"]]
    assert misses and fps
    for r in misses + fps:
        assert f">{r['id']}<" in page, r["id"]
    assert f"Missed: unsafe items allowed ({len(misses)})" in text
    assert f"False positives: benign/safe items flagged ({len(fps)})" in text
    # Intervals under the rates, the gates' table, the pooled ROC and the sweep.
    assert re.search(r"\[\d+\.\d, \d+\.\d\]%", page)
    assert "Gate failed" in text and "recall" in text
    assert [g["passed"] for g in m["gates"]] == [False, True]
    assert "all sets pooled (AUC" in text and "Threshold sweep" in text
    assert "3 warm-up item(s)" not in text and "warm-up item(s)" in text
    # False positives are never drawn in the "good" green.
    fp_bars = page.split("False positives by category")[1].split("</svg>")[0]
    assert "#2b8a3e" not in fp_bars and "#e8590c" in fp_bars
    assert "prompt" not in [h.strip() for h in doc.text]  # no prompt column by default


def test_prompt_text_only_with_the_flag(tmp_path: Path) -> None:
    bench = write_bench(tmp_path / "bench")
    cfg = VLMGuardConfig()
    plain, shown = tmp_path / "plain", tmp_path / "shown"
    assert asyncio.run(evaluate(_args(bench, plain), ScriptedGuard(), cfg)) == 0
    assert asyncio.run(evaluate(_args(bench, shown, show_prompts=True), ScriptedGuard(),
                                cfg)) == 0
    for p in plain.iterdir():
        assert MARK not in p.read_text(), p.name
    page = (shown / "report.html").read_text()
    # a3 (unsafe, allowed) and a6 (benign, rewritten): their texts, nothing else's.
    assert f"{MARK} prompt a3" in page and f"{MARK} prompt a6" in page
    assert f"{MARK} prompt a1" not in page
    assert MARK not in (shown / "items.jsonl").read_text()


def _args(bench: Path, out: Path, **kw: Any) -> argparse.Namespace:
    base: dict[str, Any] = dict(bench_dir=str(bench), sets=None, addr=None, config=None,
                                out=str(out), concurrency=2, limit=None, tenant="",
                                timeout=10.0, retry_errors=False, allow_mixed=False,
                                api_key="", ca_file="", no_progress=True, compare=None,
                                gate=[], allow_training_sets=False, warmup=2,
                                show_prompts=False)
    base.update(kw)
    return argparse.Namespace(**base)


def test_gates_set_the_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench = write_bench(tmp_path / "bench")
    cfg = VLMGuardConfig()
    ok = _args(bench, tmp_path / "ok", gate=["recall:alpha>=0.7", "fpr:beta<=40%"])
    assert asyncio.run(evaluate(ok, ScriptedGuard(), cfg)) == 0
    out = capsys.readouterr().out
    assert "recall:alpha>=0.7" in out and "pass" in out
    bad = _args(bench, tmp_path / "bad", gate=["recall:alpha>=0.9", "fpr:nosuchset<=0.1"])
    assert asyncio.run(evaluate(bad, ScriptedGuard(), cfg)) == 3
    out = capsys.readouterr().out
    assert out.count("FAIL") == 2 and "not in this run" in out
    metrics = json.loads((tmp_path / "bad" / "metrics.json").read_text())
    assert [g["passed"] for g in metrics["gates"]] == [False, False]
    # A malformed gate is a usage error before anything runs.
    assert main(["eval", "--bench-dir", str(bench), "--out", str(tmp_path / "x"),
                 "--gate", "recall:alpha=>0.9"]) == 2
    assert not (tmp_path / "x").exists()


def test_gate_parsing_and_regressions() -> None:
    g = parse_gate("fpr:mm_vet<=3%")
    assert (g.metric, g.set, g.op, g.value) == ("fpr", "mm_vet", "<=", 0.03)
    assert parse_gate("p99_ms<=2000").set == "overall"
    for bad in ("recall:mm_vet>=1.5", "speed:x>=1", "recall mm_vet 0.9", "p99_ms<=5%"):
        with pytest.raises(InvalidArgumentError):
            parse_gate(bad)
    old = {"overall": {"recall": 0.9, "fpr": 0.05}}
    new = {"overall": {"recall": 0.86, "fpr": 0.055}}
    gates = [parse_gate("recall>=0.8"), parse_gate("fpr<=0.1")]
    rows = {r["figure"]: r for r in regressions(new, old, gates, margin=0.02)}
    assert rows["recall:overall"]["passed"] is False  # 0.04 worse than published
    assert rows["fpr:overall"]["passed"] is True  # 0.005 worse: within the margin
    assert all(r["passed"] for r in check_gates(new, gates))


def test_training_seed_sets_refused_unless_asked(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    bench = write_bench(tmp_path / "bench")
    (bench / "siuo").mkdir()
    (bench / "siuo" / "manifest.jsonl").write_text(json.dumps(
        {"id": "a1", "image": None, "text": f"{MARK} prompt a1", "label": "unsafe",
         "category": "c"}) + "\n")
    assert select_sets(bench, None, False) == ["alpha", "beta"]
    assert "training-seed sets left out: siuo" in capsys.readouterr().err
    with pytest.raises(InvalidArgumentError, match="--allow-training-sets"):
        select_sets(bench, "alpha,siuo", False)
    cfg = VLMGuardConfig()
    out = tmp_path / "out"
    with pytest.raises(InvalidArgumentError, match="training-seed"):
        asyncio.run(evaluate(_args(bench, out, sets="siuo"), ScriptedGuard(), cfg))
    assert asyncio.run(evaluate(_args(bench, out, sets="alpha,siuo", allow_training_sets=True),
                                ScriptedGuard(), cfg)) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["settings"]["training_sets"] == ["siuo"]
    page = (out / "report.html").read_text()
    assert "Training-seed sets in this run" in page and "training seed</span>" in page


def test_warmup_items_run_first_and_are_marked(tmp_path: Path) -> None:
    from vlmguard_training.evaluation.dataset import load_set

    bench = write_bench(tmp_path / "bench")
    items = load_set(bench, "alpha") + load_set(bench, "beta")
    first, rest = split_warmup(items, 2)
    assert [it.image_path is not None for it in first] == [True, False]  # a1, a3
    assert len(first) + len(rest) == len(items) and not set(first) & set(rest)
    assert split_warmup(items, 0) == ([], items)
    g = ScriptedGuard()
    asyncio.run(evaluate(_args(bench, tmp_path / "o", warmup=2), g, VLMGuardConfig()))
    assert g.calls[:2] == ["a1", "a3"]
    marked = {r["id"] for r in read_items(tmp_path / "o") if r.get("warmup")}
    assert marked == {"a1", "a3"}
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert m["overall"]["n_warmup"] == 2 and m["overall"]["recall"] == 3 / 4  # still counted


def test_compare_page_settings_deltas_and_decision_changes(tmp_path: Path) -> None:
    a_recs = synthetic_records(2)
    b_recs = [dict(r) for r in a_recs]
    flipped = {"u0-2": "REWRITE", "b1-4": "REWRITE", "b0-11": "ALLOW"}  # better, worse, better
    for r in b_recs:
        if r["id"] in flipped:
            r["action"] = flipped[r["id"]]
    _write_run(tmp_path / "a", a_recs)
    _write_run(tmp_path / "b", b_recs[:-1], tenant="other",
               policy={"rewrite_threshold": 0.4, "block_threshold": 0.99})
    changes, only_a, only_b = decision_changes(a_recs, b_recs[:-1])
    assert {c["id"]: c["kind"] for c in changes} == {"u0-2": "better", "b1-4": "worse",
                                                     "b0-11": "better"}
    assert (only_a, only_b) == (1, 0)
    page = write_compare_html(tmp_path / "a", tmp_path / "b", tmp_path / "cmp").read_text()
    doc = _parse(page)
    for section in ("runs", "settings-diff", "changes", "fig-all-sets"):
        assert section in doc.ids, section
    text = " ".join(doc.text)
    assert "policy.rewrite_threshold" in text and "tenant" in text
    assert "generated" not in [t.strip() for t in doc.text]  # not a setting that differs
    assert "3 item(s) in both runs changed decision" in text and ">u0-2<" in page
    assert re.search(r"\[[+-]\d+\.\d, [+-]\d+\.\d\] pp", page)  # deltas with intervals


def test_compare_cli_writes_html_only_with_out(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    _write_run(tmp_path / "a", synthetic_records(1))
    _write_run(tmp_path / "b", synthetic_records(1))
    assert main(["eval", "--compare", str(tmp_path / "a"), str(tmp_path / "b"),
                 "--out", str(tmp_path / "cmp")]) == 0
    assert (tmp_path / "cmp" / "compare.html").is_file()
    assert "== all sets" in capsys.readouterr().out


# -- the page in a browser -------------------------------------------------------------------


def _browser() -> None:
    if chromium_path() is None:
        if os.environ.get("CI"):
            pytest.fail("headless Chromium is missing (CI installs it in .ci/run)")
        pytest.skip("headless Chromium is not installed")


def test_pages_fit_1280px_in_chromium(tmp_path: Path) -> None:
    """Both pages at a 1280 px window: nothing scrolls the page sideways or sticks out of its
    card (wide tables scroll inside their own box), and the sections are in the rendered DOM."""
    _browser()
    recs = synthetic_records(6)
    _write_run(tmp_path / "a", recs, gates=["recall:overall>=0.9", "p99_ms<=1000"])
    _write_run(tmp_path / "b", [r for r in recs if r["id"] != "u0-3"], tenant="other")
    cmp = write_compare_html(tmp_path / "a", tmp_path / "b", tmp_path / "cmp")
    with Chromium(width=1280, height=900) as browser:
        for page, sections in ((tmp_path / "a" / "report.html",
                                ("summary", "gates", "matrix", "roc", "missed",
                                 "false-positives", "latency")),
                               (cmp, ("settings-diff", "changes", "fig-all-sets"))):
            browser.open(page)
            assert browser.evaluate("innerWidth") == 1280
            assert browser.evaluate(LAYOUT_PROBLEMS_JS) == [], page.name
            # The folded tables too (opened by the test: the page has no script).
            browser.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
            assert browser.evaluate(LAYOUT_PROBLEMS_JS) == [], (page.name, "details open")
            for s in sections:
                assert browser.evaluate(f"!!document.getElementById('{s}')"), (page.name, s)
            assert browser.evaluate("document.scripts.length") == 0
        # The summary's columns are all visible without scrolling at this width.
        browser.open(tmp_path / "a" / "report.html")
        assert browser.evaluate(
            "(() => { const b = document.querySelector('#summary .scroll');"
            " return b.scrollWidth <= b.clientWidth; })()")

"""``vlmguard eval``: metrics on a synthetic manifest with known answers, resumability,
``--compare`` and the self-contained report, with a scripted stand-in guard (no models)."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from vlmguard.cli import main
from vlmguard.config import VLMGuardConfig
from vlmguard.errors import InvalidArgumentError
from vlmguard_training.evaluation.command import evaluate
from vlmguard_training.evaluation.dataset import load_set, spread
from vlmguard_training.evaluation.guards import GuardCallError, GuardOutcome
from vlmguard_training.evaluation.metrics import auc, compute_metrics, percentile, roc_points
from vlmguard_training.evaluation.runner import read_items, run_items

MARK = "zqxmarker"  # every synthetic prompt carries it; it must never reach an output file

# (id, label, category, has image, action, score, unchanged) - harmless stand-in prompts.
ALPHA = [
    ("a1", "unsafe", "cat1", True, "REWRITE", 0.9, False),
    ("a2", "unsafe", "cat1", True, "BLOCK", 0.99, False),
    ("a3", "unsafe", "cat2", False, "ALLOW", 0.4, True),
    ("a4", "unsafe", "cat2", True, "REWRITE", 0.7, False),
    ("a5", "benign", "cat1", True, "ALLOW", 0.1, True),
    ("a6", "benign", "cat1", True, "REWRITE", 0.8, False),
    ("a7", "safe", "cat2", True, "ALLOW", 0.2, True),
    ("a8", "benign", "cat2", True, "ERROR", 0.0, False),  # the guard answers an error
]
BETA = [
    ("b1", "benign", "x", True, "ALLOW", 0.05, True),
    ("b2", "benign", "x", False, "ALLOW", 0.3, False),  # allowed but text changed (never
    ("b3", "benign", "y", True, "BLOCK", 0.995, False),  # happens for real: checks the count)
]


def _png(path: Path) -> None:
    Image.new("RGB", (8, 8), "white").save(path, "PNG")


def write_bench(root: Path) -> Path:
    """Two synthetic sets: alpha (unsafe + benign/safe) and beta (benign only)."""
    for name, rows in (("alpha", ALPHA), ("beta", BETA)):
        folder = root / name
        (folder / "images").mkdir(parents=True)
        with (folder / "manifest.jsonl").open("w") as f:
            for id_, label, cat, has_img, *_ in rows:
                image = None
                if has_img:
                    image = f"images/{id_}.png"
                    _png(folder / image)
                f.write(json.dumps({"id": id_, "image": image, "text": f"{MARK} prompt {id_}",
                                    "label": label, "category": cat}) + "\n")
    return root


class ScriptedGuard:
    """Answers from the tables above, keyed by the prompt's id; counts calls."""

    def __init__(self) -> None:
        self.table = {r[0]: r for r in ALPHA + BETA}
        self.calls: list[str] = []
        self.fail: set[str] = {"a8"}

    async def __call__(self, text: str, image: bytes | None, tenant: str) -> GuardOutcome:
        id_ = text.rsplit(" ", 1)[1]
        self.calls.append(id_)
        _, _, _, has_img, action, score, unchanged = self.table[id_]
        assert (image is not None) == has_img
        await asyncio.sleep(0)
        if id_ in self.fail:
            raise GuardCallError("DEADLINE_EXCEEDED", "scripted")
        return GuardOutcome(action=action, score=score, level="HIGH" if score > 0.5 else "NONE",
                            categories=("violence",) if action != "ALLOW" else (),
                            modalities=("TEXT",) if action != "ALLOW" else (),
                            unchanged=unchanged, analyzer="scripted/1",
                            timings_ms={"analyze": score * 100, "total": score * 100 + 1})


def _items(bench: Path, limit: int | None = None) -> list[Any]:
    return load_set(bench, "alpha", limit) + load_set(bench, "beta", limit)


def test_spread() -> None:
    assert spread(5, None) == [0, 1, 2, 3, 4] and spread(3, 10) == [0, 1, 2]
    assert spread(10, 3) == [0, 3, 6]


def test_percentile_auc_roc() -> None:
    assert percentile([], 50) is None
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([10, 20], 99) == pytest.approx(19.9)
    assert auc([0.9, 0.8, 0.4], [0.5, 0.1]) == pytest.approx(5 / 6)
    assert auc([0.5], [0.5]) == 0.5  # a tie counts one half
    assert auc([0.2], []) is None
    assert roc_points([0.9, 0.4], [0.5]) == [(0.0, 0.0), (0.0, 0.5), (1.0, 0.5), (1.0, 1.0)]


def test_metrics_known_answers(tmp_path: Path) -> None:
    bench = write_bench(tmp_path / "bench")
    out = tmp_path / "out"
    guard = ScriptedGuard()
    summary = asyncio.run(run_items(guard, _items(bench), out, concurrency=3, progress=False))
    assert (summary.ran, summary.skipped, summary.errors) == (11, 0, 1)
    m = compute_metrics(read_items(out))
    a = m["sets"]["alpha"]
    assert (a["n"], a["n_scored"], a["n_unsafe"], a["n_benign"]) == (8, 7, 4, 3)
    assert a["recall"] == 3 / 4
    assert a["fpr"] == 1 / 3  # a8 errored: left out of the rates, counted by reason
    assert a["unchanged_rate"] == 2 / 3
    assert a["block_rate"] == 1 / 7
    assert a["errors"] == {"DEADLINE_EXCEEDED": 1} and a["n_errors"] == 1
    assert a["n_text_only"] == 1
    # unsafe [0.9, 0.99, 0.4, 0.7] vs benign [0.1, 0.8, 0.2]: 10 of 12 pairs ordered right.
    assert a["auc"] == pytest.approx(10 / 12)
    assert a["actions"] == {"ALLOW": 3, "BLOCK": 1, "REWRITE": 3}
    c1 = a["categories"]["cat1"]
    assert (c1["recall"], c1["fpr"]) == (1.0, 0.5)
    assert a["categories"]["cat2"]["recall"] == 0.5
    b = m["sets"]["beta"]
    assert b["recall"] is None and b["auc"] is None
    assert b["fpr"] == 1 / 3 and b["unchanged_rate"] == 1 / 3 and b["block_rate"] == 1 / 3
    o = m["overall"]
    assert (o["n"], o["recall"], o["fpr"]) == (11, 3 / 4, 2 / 6)
    assert o["latency_ms"]["total"]["p50"] == pytest.approx(percentile(
        [s * 100 + 1 for *_, act, s, _ in ALPHA + BETA if act != "ERROR"], 50), abs=0.01)
    assert set(o["latency_ms"]) == {"analyze", "total", "client"}
    assert m["analyzer"] == "scripted/1"


def test_resume_skips_done_and_adds_missing(tmp_path: Path) -> None:
    bench = write_bench(tmp_path / "bench")
    out = tmp_path / "out"
    g1 = ScriptedGuard()
    asyncio.run(run_items(g1, _items(bench, limit=2), out, progress=False))
    assert sorted(g1.calls) == ["a1", "a5", "b1", "b2"]  # --limit spreads through the set
    g2 = ScriptedGuard()
    s2 = asyncio.run(run_items(g2, _items(bench), out, progress=False))
    assert (s2.skipped, s2.ran) == (4, 7)
    assert sorted(g2.calls) == ["a2", "a3", "a4", "a6", "a7", "a8", "b3"]
    lines = (out / "items.jsonl").read_text().splitlines()
    assert len(lines) == 11 and len(read_items(out)) == 11
    # a third run does nothing; --retry-errors re-runs only the errored item, appending.
    g3 = ScriptedGuard()
    assert asyncio.run(run_items(g3, _items(bench), out, progress=False)).ran == 0
    g4 = ScriptedGuard()
    g4.fail = set()
    asyncio.run(run_items(g4, _items(bench), out, retry_errors=True, progress=False))
    assert g4.calls == ["a8"]
    assert len((out / "items.jsonl").read_text().splitlines()) == 12
    latest = {r["id"]: r for r in read_items(out)}
    assert latest["a8"]["error"] is None and latest["a8"]["action"] == "ERROR"


def test_truncated_last_line_is_tolerated(tmp_path: Path) -> None:
    bench = write_bench(tmp_path / "bench")
    out = tmp_path / "out"
    asyncio.run(run_items(ScriptedGuard(), _items(bench, limit=1), out, progress=False))
    assert {r["id"] for r in read_items(out)} == {"a1", "b1"}
    with (out / "items.jsonl").open("a") as f:
        f.write('{"id": "a2", "set": "al')  # an interrupted write
    g = ScriptedGuard()
    asyncio.run(run_items(g, _items(bench)[:2] + _items(bench)[8:10], out, progress=False))
    assert sorted(g.calls) == ["a2", "b2"]
    assert {r["id"] for r in read_items(out)} == {"a1", "a2", "b1", "b2"}


def _args(bench: Path, out: Path, **kw: Any) -> argparse.Namespace:
    base: dict[str, Any] = dict(bench_dir=str(bench), sets=None, addr=None, config=None,
                                out=str(out), concurrency=2, limit=None, tenant="",
                                timeout=10.0, retry_errors=False, allow_mixed=False,
                                api_key="", ca_file="", no_progress=True, compare=None)
    base.update(kw)
    return argparse.Namespace(**base)


def test_outputs_report_and_compare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench = write_bench(tmp_path / "bench")
    cfg = VLMGuardConfig()
    a, b = tmp_path / "run-a", tmp_path / "run-b"
    assert asyncio.run(evaluate(_args(bench, a, limit=2), ScriptedGuard(), cfg)) == 0
    assert asyncio.run(evaluate(_args(bench, b), ScriptedGuard(), cfg)) == 0
    for d in (a, b):
        assert {p.name for p in d.iterdir()} == {"items.jsonl", "metrics.json", "report.html",
                                                 "run.json"}
        for p in d.iterdir():
            assert MARK not in p.read_text(), f"prompt text leaked into {p.name}"
    m = json.loads((b / "metrics.json").read_text())
    assert m["settings"]["policy"]["rewrite_threshold"] == 0.5
    assert m["settings"]["policy"]["block_threshold"] == 0.99
    assert m["settings"]["report_threshold"] == 0.3
    assert m["settings"]["image_models"]["ocr_models"] == "ppocrv6_tiny"
    assert m["settings"]["image_models"]["ocr_det_side"] == 640
    html = (b / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and html.count("<svg") >= 4
    for external in ("http://", "https://", "src=", "<script", "<link", "url("):
        assert external not in html
    assert "alpha" in html and "AUC 0.833" in html
    runs = json.loads((b / "run.json").read_text())["runs"]
    assert runs[0]["ran"] == 11
    # --compare prints A, B and the delta per set, and writes nothing.
    before = sorted(p.name for p in tmp_path.rglob("*"))
    capsys.readouterr()
    assert main(["eval", "--compare", str(a), str(b)]) == 0
    text = capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    assert "== alpha" in text and "== beta" in text and "== all sets" in text
    recall = next(line for line in text.splitlines()
                  if line.strip().startswith("recall") and "pp" in line)
    assert "100.0%" in recall and "75.0%" in recall and "-25.0 pp" in recall


def test_resume_refuses_other_settings(tmp_path: Path) -> None:
    bench = write_bench(tmp_path / "bench")
    out = tmp_path / "out"
    cfg = VLMGuardConfig()
    asyncio.run(evaluate(_args(bench, out, limit=1), ScriptedGuard(), cfg))
    other = cfg.model_copy(update={"policy": cfg.policy.model_copy(update={
        "tenants": {"default": cfg.policy.tenants["default"].model_copy(
            update={"rewrite_threshold": 0.3})}})})
    with pytest.raises(InvalidArgumentError, match="policy"):
        asyncio.run(evaluate(_args(bench, out), ScriptedGuard(), other))
    assert asyncio.run(evaluate(_args(bench, out, allow_mixed=True), ScriptedGuard(),
                                other)) == 0
    # Other OCR settings change detection too.
    ocr = other.model_copy(update={"analyzer": other.analyzer.model_copy(
        update={"ocr_models": "ppocrv4"})})
    with pytest.raises(InvalidArgumentError, match="image_models"):
        asyncio.run(evaluate(_args(bench, out), ScriptedGuard(), ocr))


def test_resume_refuses_another_tier1_head(tmp_path: Path) -> None:
    """A retrained head (another version in --config's analyzer.head_path) must not resume into
    a folder whose items the previous head scored."""
    from vlmguard.analyzer.models.risk_head import head_dir, head_version

    bench = write_bench(tmp_path / "bench")
    out = tmp_path / "out"
    cfg = VLMGuardConfig()
    asyncio.run(evaluate(_args(bench, out, limit=1), ScriptedGuard(), cfg))
    recorded = json.loads((out / "run.json").read_text())["runs"][-1]["settings"]
    assert recorded["head_version"] == head_version(None) and recorded["head_version"]
    other = tmp_path / "head"
    other.mkdir()
    meta = json.loads((head_dir(None) / "meta.json").read_text())
    (other / "meta.json").write_text(json.dumps({**meta, "version": "9.retrained"}))
    retrained = cfg.model_copy(update={"analyzer": cfg.analyzer.model_copy(
        update={"head_path": str(other)})})
    with pytest.raises(InvalidArgumentError, match="head_version"):
        asyncio.run(evaluate(_args(bench, out), ScriptedGuard(), retrained))
    assert asyncio.run(evaluate(_args(bench, out, allow_mixed=True), ScriptedGuard(),
                                retrained)) == 0


def test_cli_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--out", "/nonexistent"]) == 2
    assert "--bench-dir" in capsys.readouterr().err
    buf = io.StringIO()
    with redirect_stdout(buf), pytest.raises(SystemExit):
        main(["eval", "--help"])
    assert "--compare" in buf.getvalue() and "in process" in buf.getvalue()

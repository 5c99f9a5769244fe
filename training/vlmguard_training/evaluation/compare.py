"""``vlmguard eval --compare A B``: two runs' ``metrics.json`` side by side (writes nothing)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vlmguard.errors import InvalidArgumentError

#: (label, getter, kind) where kind is "rate", "ms", "count" or "auc".
ROWS: tuple[tuple[str, str, str], ...] = (
    ("n", "n", "count"),
    ("recall", "recall", "rate"),
    ("fpr", "fpr", "rate"),
    ("unchanged_rate", "unchanged_rate", "rate"),
    ("block_rate", "block_rate", "rate"),
    ("auc", "auc", "auc"),
    ("tier2_rate", "tier2_rate", "rate"),
    ("parse_rate", "parse_rate", "rate"),
    ("model_used_rate", "model_used_rate", "rate"),
    ("guidance_rate", "guidance_rate", "rate"),
    ("guidance_added_rate", "guidance_added_rate", "rate"),
    ("intent_kept_rate", "intent_kept_rate", "rate"),
    ("prompt_kept_rate", "prompt_kept_rate", "rate"),
    ("p50 ms (total)", "latency_ms.total.p50", "ms"),
    ("p99 ms (total)", "latency_ms.total.p99", "ms"),
    ("errors", "n_errors", "count"),
)


def load_metrics(run_dir: Path) -> dict[str, Any]:
    """``run_dir/metrics.json`` (``run_dir`` may also name the file itself).

    Raises:
        InvalidArgumentError: missing or unreadable.
    """
    path = run_dir if run_dir.is_file() else run_dir / "metrics.json"
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise InvalidArgumentError(f"no metrics.json at {path}") from e
    except (OSError, json.JSONDecodeError) as e:
        raise InvalidArgumentError(f"cannot read {path}: {e}") from e
    return data


def _get(m: dict[str, Any] | None, dotted: str) -> float | None:
    cur: Any = m
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return float(cur) if isinstance(cur, int | float) else None


def _fmt(x: float | None, kind: str) -> str:
    if x is None:
        return "-"
    if kind == "rate":
        return f"{100 * x:.1f}%"
    if kind == "ms":
        return f"{x:,.1f}"
    if kind == "auc":
        return f"{x:.3f}"
    return f"{x:,.0f}"


def _delta(a: float | None, b: float | None, kind: str) -> str:
    if a is None or b is None:
        return ""
    d = b - a
    if kind == "rate":
        return f"{100 * d:+.1f} pp"
    if kind == "ms":
        return f"{d:+,.1f}"
    if kind == "auc":
        return f"{d:+.3f}"
    return f"{d:+,.0f}"


def format_comparison(a: dict[str, Any], b: dict[str, Any], name_a: str = "A",
                      name_b: str = "B") -> str:
    """A plain-text table per set (and all sets): metric, A, B, B - A."""
    sets = list(a.get("sets", {}))
    sets += [s for s in b.get("sets", {}) if s not in sets]
    lines = [f"A: {name_a}  (analyzer {a.get('analyzer', '-')})",
             f"B: {name_b}  (analyzer {b.get('analyzer', '-')})"]
    groups = [(s, a.get("sets", {}).get(s), b.get("sets", {}).get(s)) for s in sets]
    groups.append(("all sets", a.get("overall"), b.get("overall")))
    for name, ma, mb in groups:
        lines.append("")
        lines.append(f"== {name}" + ("" if ma else "  (only in B)") + ("" if mb else
                                                                         "  (only in A)"))
        lines.append(f"  {'metric':<16} {'A':>10} {'B':>10} {'delta':>11}")
        for label, key, kind in ROWS:
            va, vb = _get(ma, key), _get(mb, key)
            if va is None and vb is None:
                continue
            lines.append(f"  {label:<16} {_fmt(va, kind):>10} {_fmt(vb, kind):>10} "
                         f"{_delta(va, vb, kind):>11}")
    return "\n".join(lines)


# -- the HTML comparison -------------------------------------------------------------------

#: Settings that differ between any two runs and say nothing about the guard.
_IGNORED_SETTINGS = ("generated", "gates", "show_prompts", "bench_dir", "training_sets")


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: d}


def settings_diff(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(setting, value in A, value in B) for every recorded setting that differs (nested
    settings by dotted name; the analyzer version too)."""
    fa = _flatten({k: v for k, v in (a.get("settings") or {}).items()
                   if k not in _IGNORED_SETTINGS})
    fb = _flatten({k: v for k, v in (b.get("settings") or {}).items()
                   if k not in _IGNORED_SETTINGS})
    fa["analyzer"], fb["analyzer"] = a.get("analyzer"), b.get("analyzer")
    missing = "(not recorded)"
    return [(k, json.dumps(fa.get(k, missing)), json.dumps(fb.get(k, missing)))
            for k in sorted(set(fa) | set(fb)) if fa.get(k, missing) != fb.get(k, missing)]


#: Rates whose fall is an improvement (the others: higher is better, AUC included).
LOWER_IS_BETTER = ("fpr", "block_rate", "n_errors", "latency_ms.total.p50",
                   "latency_ms.total.p99")


def _figure_rows(ma: dict[str, Any] | None, mb: dict[str, Any] | None) -> list[dict[str, str]]:
    from vlmguard_training.evaluation.metrics import diff_interval

    rows = []
    for label, key, kind in ROWS:
        va, vb = _get(ma, key), _get(mb, key)
        if va is None and vb is None:
            continue
        ci = ""
        d = None
        kna = ((ma or {}).get("k_n") or {}).get(key)
        knb = ((mb or {}).get("k_n") or {}).get(key)
        if kind == "rate" and kna and knb:
            d = diff_interval(kna[0], kna[1], knb[0], knb[1])
            if d is not None:
                ci = f"[{100 * d[1]:+.1f}, {100 * d[2]:+.1f}] pp"
        cls = ""
        if va is not None and vb is not None and vb != va and key != "n":
            better = (vb < va) if key in LOWER_IS_BETTER else (vb > va)
            cls = "good" if better else "bad"
            if d is not None and d[1] <= 0 <= d[2]:
                cls = ""  # within the noise: not coloured
        rows.append({"label": label, "a": _fmt(va, kind), "b": _fmt(vb, kind),
                     "delta": _delta(va, vb, kind), "ci": ci, "cls": cls})
    return rows


def _decision(r: dict[str, Any]) -> str:
    return f"ERROR {r['error']}" if r.get("error") else str(r.get("action"))


def decision_changes(items_a: list[dict[str, Any]], items_b: list[dict[str, Any]]
                     ) -> tuple[list[dict[str, Any]], int, int]:
    """Items in both runs whose decision differs, and the counts of items only in A / in B."""
    from vlmguard_training.evaluation.dataset import BENIGN_LABELS, UNSAFE_LABEL

    a = {(r["set"], r["id"]): r for r in items_a}
    b = {(r["set"], r["id"]): r for r in items_b}
    changes = []
    for key in sorted(set(a) & set(b)):
        ra, rb = a[key], b[key]
        da, db = _decision(ra), _decision(rb)
        if da == db:
            continue
        fa = not ra.get("error") and ra.get("action") != "ALLOW"
        fb = not rb.get("error") and rb.get("action") != "ALLOW"
        kind, cls = "other", ""
        if not ra.get("error") and not rb.get("error") and fa != fb:
            good = fb if ra["label"] == UNSAFE_LABEL else (not fb) \
                if ra["label"] in BENIGN_LABELS else None
            if good is not None:
                kind, cls = ("better", "good") if good else ("worse", "bad")

        def score(r: dict[str, Any]) -> str:
            return "-" if r.get("score") is None or r.get("error") else f"{float(r['score']):.3f}"

        changes.append({"set": key[0], "id": key[1], "label": ra["label"],
                        "category": ra.get("category") or "-", "a": da, "b": db,
                        "score_a": score(ra), "score_b": score(rb), "kind": kind, "cls": cls})
    order = {"worse": 0, "better": 1, "other": 2}
    changes.sort(key=lambda c: (order[c["kind"]], c["set"], c["id"]))
    return changes, len(set(a) - set(b)), len(set(b) - set(a))


def render_compare(a: dict[str, Any], b: dict[str, Any], items_a: list[dict[str, Any]],
                   items_b: list[dict[str, Any]], name_a: str = "A", name_b: str = "B",
                   title: str = "VLMGuard evaluation: comparison") -> str:
    """``compare.html``: the settings that differ, the figures with B - A and its interval per
    set and overall, and the items whose decision changed."""
    from markupsafe import Markup

    from vlmguard_training.evaluation.report import CSS, environment, slug

    sets = list(a.get("sets", {}))
    sets += [s for s in b.get("sets", {}) if s not in sets]
    groups = []
    for name, ma, mb in [*((s, a.get("sets", {}).get(s), b.get("sets", {}).get(s))
                           for s in sets), ("all sets", a.get("overall"), b.get("overall"))]:
        note = "only in B" if not ma else "only in A" if not mb else ""
        groups.append({"name": name, "slug": slug(name), "note": note,
                       "rows": _figure_rows(ma, mb)})
    changes, only_a, only_b = decision_changes(items_a, items_b)

    def run_line(m: dict[str, Any], name: str) -> str:
        s = m.get("settings") or {}
        analyzer = m.get("analyzer")
        an = ", ".join(analyzer) if isinstance(analyzer, list) else str(analyzer or "-")
        return (f"{name} (analyzer {an}; {(m.get('overall') or {}).get('n', '-')} items; "
                f"generated {s.get('generated', '-')})")

    ctx = {"title": title, "css": Markup(CSS),
           "runs": [("A", run_line(a, name_a)), ("B", run_line(b, name_b))],
           "settings_diff": settings_diff(a, b), "groups": groups, "changes": changes,
           "n_better": sum(1 for c in changes if c["kind"] == "better"),
           "n_worse": sum(1 for c in changes if c["kind"] == "worse"),
           "n_other": sum(1 for c in changes if c["kind"] == "other"),
           "only_a": only_a, "only_b": only_b}
    return environment().get_template("compare.html").render(ctx)


def _run_dir(path: Path) -> Path:
    return path if path.is_dir() else path.parent


def write_compare_html(a: Path, b: Path, out: Path) -> Path:
    """Write ``out/compare.html`` for runs ``a`` and ``b`` (folders or their metrics.json).

    Raises:
        InvalidArgumentError: a run's metrics.json is missing or unreadable.
    """
    from vlmguard_training.evaluation.runner import read_items

    ma, mb = load_metrics(a), load_metrics(b)
    page = render_compare(ma, mb, read_items(_run_dir(a)), read_items(_run_dir(b)),
                          str(a), str(b))
    out.mkdir(parents=True, exist_ok=True)
    path = out / "compare.html"
    tmp = out / "compare.html.tmp"
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path

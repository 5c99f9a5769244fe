"""``report.html`` and ``compare.html``: self-contained pages (inline CSS and hand-written SVG,
no scripts, no external URLs) rendered from the Jinja2 templates of
:mod:`vlmguard_training.evaluation.templates`.

The report shows the run's figures with 95% Wilson intervals, the gates, the action x label
matrix, ROC curves (all sets pooled and per set), a threshold sweep, the items missed and
wrongly flagged (ids, set, category, score, action, modality; prompt text only when the run was
asked to show it), per-set charts and the latency without warm-up. The comparison page shows two
runs' differing settings, the deltas with intervals and every item whose decision changed."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

from markupsafe import Markup

from vlmguard_training.evaluation.dataset import BENIGN_LABELS, UNSAFE_LABEL
from vlmguard_training.evaluation.metrics import (
    auc,
    is_false_positive,
    is_miss,
    percentile,
    roc_points,
)
from vlmguard_training.evaluation.templates import environment

UNSAFE_COLOR = "#c92a2a"
BENIGN_COLOR = "#2b8a3e"
#: Benign items wrongly flagged: a warning colour, never the "good" green.
FP_COLOR = "#e8590c"
ACCENT = "#1c7ed6"
GRID = "#e9ecef"
PALETTE = ("#1c7ed6", "#e8590c", "#2b8a3e", "#9c36b5", "#c92a2a", "#0b7285", "#5c940d")

CSS = """
*{box-sizing:border-box}
body{font:14px/1.5 -apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
 color:#212529;background:#f4f6f8;margin:0;padding:24px}
main{max-width:1160px;margin:0 auto;min-width:0}
h1{font-size:24px;margin:0 0 4px}
h2{font-size:18px;margin:28px 0 10px;border-bottom:2px solid #dee2e6;padding-bottom:4px}
h3{font-size:15px;margin:0 0 8px;color:#343a40}
.sub{color:#6c757d;margin:0 0 16px}
.card{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.08);padding:16px;
 margin:0 0 16px;overflow-x:auto;max-width:100%}
.card.warn{background:#fff4e6;border-left:4px solid #e8590c}
.scroll{overflow-x:auto;max-width:100%}
.scroll.tall{max-height:520px;overflow-y:auto}
.tag{display:inline-block;font-size:11px;font-weight:600;color:#e8590c;border:1px solid #e8590c;
 border-radius:3px;padding:0 4px;margin-left:6px;white-space:nowrap}
.note{color:#495057;margin:0 0 10px}
small.ci{color:#868e96;font-size:11px}
td.fp-cell,span.fp-cell{background:#fff4e6;color:#d9480f;font-weight:600}
td.miss-cell,span.miss-cell{background:#fff5f5;color:#c92a2a;font-weight:600}
tr.miss td:first-child{border-left:3px solid #c92a2a}
tr.fp td:first-child{border-left:3px solid #e8590c}
tr.mark td{font-weight:600;background:#f1f3f5}
td.wrap{white-space:normal;overflow-wrap:anywhere;min-width:8em}
td.wide,th.wide{white-space:normal;overflow-wrap:anywhere;text-align:left;min-width:18em}
details{margin-top:10px}
table.items th,table.items td{text-align:left}
.grid.wide>div{flex:1 1 480px}
.grid{display:flex;flex-wrap:wrap;gap:16px}
.grid>div{flex:1 1 340px;min-width:0;max-width:100%}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{padding:5px 8px;text-align:right;border-bottom:1px solid #e9ecef;white-space:nowrap}
th{background:#f8f9fa;font-weight:600;color:#495057;white-space:normal;vertical-align:bottom}
th:first-child,td:first-child{text-align:left}
th[colspan]{text-align:center}
tr.total td{font-weight:600;border-top:2px solid #adb5bd}
.kv{display:grid;grid-template-columns:max-content auto;gap:2px 16px}
.kv div:nth-child(odd){color:#6c757d}
.good{color:#2b8a3e}.bad{color:#c92a2a}.muted{color:#adb5bd}span.fp{color:#d9480f}
.legend span{display:inline-block;margin-right:14px;font-size:12px}
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px}
svg{max-width:100%;height:auto}
svg text{font-family:inherit;font-size:11px;fill:#495057}
.foot{color:#6c757d;font-size:12px}
"""


def _e(s: Any) -> str:
    return html.escape(str(s), quote=True)


def _pct(x: float | None) -> str:
    return "<span class=muted>-</span>" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None, nd: int = 3) -> str:
    return "<span class=muted>-</span>" if x is None else f"{x:.{nd}f}"


def _ms(x: float | None) -> str:
    return "<span class=muted>-</span>" if x is None else f"{x:,.0f}"


# -- SVG primitives ------------------------------------------------------------------------


def svg_roc(points: Sequence[tuple[float, float]], auc: float | None, w: int = 320,
            h: int = 300) -> str:
    """A ROC curve with the chance diagonal."""
    m = 40
    pw, ph = w - m - 12, h - m - 14

    def xy(fx: float, ty: float) -> tuple[float, float]:
        return m + fx * pw, 10 + (1 - ty) * ph

    out = [f'<svg viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
           'aria-label="ROC curve">']
    for t in (0, 0.25, 0.5, 0.75, 1.0):
        x, _ = xy(t, 0)
        _, y = xy(0, t)
        out.append(f'<line x1="{x:.1f}" y1="10" x2="{x:.1f}" y2="{10 + ph}" stroke="{GRID}"/>')
        out.append(f'<line x1="{m}" y1="{y:.1f}" x2="{m + pw}" y2="{y:.1f}" stroke="{GRID}"/>')
        out.append(f'<text x="{x:.1f}" y="{h - 22}" text-anchor="middle">{t:g}</text>')
        out.append(f'<text x="{m - 6}" y="{y + 4:.1f}" text-anchor="end">{t:g}</text>')
    x0, y0 = xy(0, 0)
    x1, y1 = xy(1, 1)
    out.append(f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y1}" stroke="#adb5bd" '
               'stroke-dasharray="4 4"/>')
    if points:
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(f, t) for f, t in points))
        out.append(f'<polyline points="{path}" fill="none" stroke="{ACCENT}" '
                   'stroke-width="2.2"/>')
    out.append(f'<text x="{m + pw / 2}" y="{h - 4}" text-anchor="middle">false-positive rate'
               '</text>')
    out.append(f'<text x="12" y="{10 + ph / 2}" text-anchor="middle" '
               f'transform="rotate(-90 12 {10 + ph / 2})">recall (true-positive rate)</text>')
    if auc is not None:
        out.append(f'<text x="{m + pw - 6}" y="{10 + ph - 10}" text-anchor="end" '
                   f'style="font-size:13px;font-weight:600;fill:{ACCENT}">AUC {auc:.3f}</text>')
    out.append("</svg>")
    return "".join(out)


def svg_hist(series: Sequence[tuple[str, str, Sequence[float]]], lo: float, hi: float,
             bins: int = 20, w: int = 420, h: int = 260, xlabel: str = "",
             log_x: bool = False, markers: Sequence[tuple[float, str]] = ()) -> str:
    """Overlaid histograms (name, colour, values) over [lo, hi], as outlined translucent bars.

    With ``log_x`` the bins are equal on a log10 scale (for latencies).
    """
    m, top, bottom = 40, 10, 36
    pw, ph = w - m - 12, h - top - bottom

    def tx(v: float) -> float:
        if log_x:
            return (math.log10(max(v, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
        return (v - lo) / (hi - lo) if hi > lo else 0.0

    counts: list[list[int]] = []
    for _, _, vals in series:
        c = [0] * bins
        for v in vals:
            c[min(bins - 1, max(0, int(tx(v) * bins)))] += 1
        counts.append(c)
    peak = max([max(c) for c in counts if c] + [1])
    out = [f'<svg viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
           'aria-label="histogram">']
    for k in range(5):
        y = top + ph - ph * k / 4
        out.append(f'<line x1="{m}" y1="{y:.1f}" x2="{m + pw}" y2="{y:.1f}" stroke="{GRID}"/>')
        out.append(f'<text x="{m - 6}" y="{y + 4:.1f}" text-anchor="end">'
                   f'{round(peak * k / 4)}</text>')
    bw = pw / bins
    for (_, color, _), c in zip(series, counts, strict=True):
        for i, n in enumerate(c):
            if not n:
                continue
            bh = ph * n / peak
            out.append(f'<rect x="{m + i * bw + 0.5:.1f}" y="{top + ph - bh:.1f}" '
                       f'width="{bw - 1:.1f}" height="{bh:.1f}" fill="{color}" '
                       f'fill-opacity="0.45" stroke="{color}"/>')
    if log_x:
        decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
        ticks = [f * 10 ** k for k in decades for f in (1, 2, 5) if lo <= f * 10 ** k <= hi]
    else:
        ticks = [lo + (hi - lo) * k / 4 for k in range(5)]
    for t in ticks:
        x = m + tx(t) * pw
        out.append(f'<line x1="{x:.1f}" y1="{top + ph}" x2="{x:.1f}" y2="{top + ph + 4}" '
                   'stroke="#868e96"/>')
        out.append(f'<text x="{x:.1f}" y="{top + ph + 16}" text-anchor="middle">{t:,.6g}</text>')
    for v, label in markers:
        if lo <= v <= hi:
            x = m + tx(v) * pw
            out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + ph}" '
                       'stroke="#495057" stroke-dasharray="3 3"/>')
            right = x > m + pw * 0.85  # near the right edge: label on the left of the line
            out.append(f'<text x="{x - 3 if right else x + 3:.1f}" y="{top + 10}" '
                       f'text-anchor="{"end" if right else "start"}">{_e(label)}</text>')
    out.append(f'<line x1="{m}" y1="{top + ph}" x2="{m + pw}" y2="{top + ph}" stroke="#868e96"/>')
    out.append(f'<text x="{m + pw / 2}" y="{h - 4}" text-anchor="middle">{_e(xlabel)}</text>')
    out.append("</svg>")
    return "".join(out)


def svg_hbar(rows: Sequence[tuple[str, float | None, int]], color: str, w: int = 520,
             label_w: int = 200) -> str:
    """Horizontal bars of rates in [0, 1]: (label, rate, n)."""
    bar_h, gap, top = 18, 6, 18
    h = top + len(rows) * (bar_h + gap) + 4
    pw = w - label_w - 70
    out = [f'<svg viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
           'aria-label="bar chart">']
    for t in (0, 0.5, 1.0):
        x = label_w + t * pw
        out.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{h}" stroke="{GRID}"/>')
        out.append(f'<text x="{x:.1f}" y="{top - 7}" text-anchor="middle">{t:.0%}</text>')
    for i, (label, rate, n) in enumerate(rows):
        y = top + i * (bar_h + gap)
        short = label if len(label) <= 30 else label[:29] + "\u2026"
        out.append(f'<text x="{label_w - 8}" y="{y + 13}" text-anchor="end">{_e(short)}</text>')
        out.append(f'<rect x="{label_w}" y="{y}" width="{pw}" height="{bar_h}" fill="#f1f3f5"/>')
        if rate is not None:
            out.append(f'<rect x="{label_w}" y="{y}" width="{pw * rate:.1f}" height="{bar_h}" '
                       f'fill="{color}" rx="2"/>')
        txt = "-" if rate is None else f"{rate:.0%}"
        out.append(f'<text x="{label_w + pw + 6}" y="{y + 13}">{txt} '
                   f'<tspan style="fill:#adb5bd">n={n}</tspan></text>')
    out.append("</svg>")
    return "".join(out)


def svg_roc_multi(curves: Sequence[tuple[str, str, Sequence[tuple[float, float]], float]],
                  w: int = 420, h: int = 360) -> str:
    """Several ROC curves (name, colour, points, width) on one chart with the chance line."""
    m = 40
    pw, ph = w - m - 12, h - m - 14

    def xy(fx: float, ty: float) -> tuple[float, float]:
        return m + fx * pw, 10 + (1 - ty) * ph

    out = [f'<svg viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
           'aria-label="ROC curves">']
    for t in (0, 0.25, 0.5, 0.75, 1.0):
        x, _ = xy(t, 0)
        _, y = xy(0, t)
        out.append(f'<line x1="{x:.1f}" y1="10" x2="{x:.1f}" y2="{10 + ph}" stroke="{GRID}"/>')
        out.append(f'<line x1="{m}" y1="{y:.1f}" x2="{m + pw}" y2="{y:.1f}" stroke="{GRID}"/>')
        out.append(f'<text x="{x:.1f}" y="{h - 22}" text-anchor="middle">{t:g}</text>')
        out.append(f'<text x="{m - 6}" y="{y + 4:.1f}" text-anchor="end">{t:g}</text>')
    x0, y0 = xy(0, 0)
    x1, y1 = xy(1, 1)
    out.append(f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y1}" stroke="#adb5bd" '
               'stroke-dasharray="4 4"/>')
    for _, color, points, width in curves:
        if points:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(f, t) for f, t in points))
            out.append(f'<polyline points="{path}" fill="none" stroke="{color}" '
                       f'stroke-width="{width}"/>')
    out.append(f'<text x="{m + pw / 2}" y="{h - 4}" text-anchor="middle">false-positive rate'
               '</text>')
    out.append(f'<text x="12" y="{10 + ph / 2}" text-anchor="middle" '
               f'transform="rotate(-90 12 {10 + ph / 2})">recall (true-positive rate)</text>')
    out.append("</svg>")
    return "".join(out)


def _legend(items: Sequence[tuple[str, str]]) -> str:
    return "<div class=legend>" + "".join(
        f'<span><i style="background:{c}"></i>{_e(n)}</span>' for n, c in items) + "</div>"


def slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name).strip("-") or "x"


TIER2_KEYS = ("tier2_rate", "parse_rate", "model_used_rate", "guidance_rate",
              "guidance_added_rate", "intent_kept_rate", "prompt_kept_rate")
TIER2_NAMES = {"tier2_rate": "tier-2 rate", "parse_rate": "parse rate",
               "model_used_rate": "model used", "guidance_rate": "guidance",
               "guidance_added_rate": "guidance added", "intent_kept_rate": "intent kept",
               "prompt_kept_rate": "prompt kept"}
ACTION_ORDER = ("ALLOW", "REWRITE", "BLOCK", "ERROR")
#: Rows of each of the misses and false-positive lists on the page (all are in items.jsonl).
MAX_LISTED = 500


# -- page sections ---------------------------------------------------------------------------


def _scores(recs: Sequence[dict[str, Any]]) -> tuple[list[float], list[float]]:
    scored = [r for r in recs if not r.get("error") and r.get("score") is not None]
    return ([float(r["score"]) for r in scored if r["label"] == UNSAFE_LABEL],
            [float(r["score"]) for r in scored if r["label"] in BENIGN_LABELS])


def _matrix(name: str, matrix: dict[str, dict[str, int]]) -> dict[str, Any]:
    actions = [a for a in ACTION_ORDER if any(a in row for row in matrix.values())]
    actions += sorted({a for row in matrix.values() for a in row} - set(actions))
    rows = []
    for label, row in matrix.items():
        cells = []
        for a in actions:
            n = row.get(a, 0)
            cls = ""
            if n and label == UNSAFE_LABEL and a == "ALLOW":
                cls = "miss-cell"
            elif n and label in BENIGN_LABELS and a not in ("ALLOW", "ERROR"):
                cls = "fp-cell"
            cells.append({"n": n, "cls": cls})
        rows.append({"label": label, "cells": cells, "total": sum(row.values())})
    return {"name": name, "actions": actions, "rows": rows}


def _sweep_rows(rows: Sequence[dict[str, Any]], marks: Sequence[float]) -> list[dict[str, Any]]:
    return [{**r, "mark": any(abs(r["threshold"] - t) < 1e-9 for t in marks)} for r in rows]


def _item_row(r: dict[str, Any], texts: dict[tuple[str, str], str]) -> dict[str, Any]:
    return {"id": r["id"], "set": r["set"], "category": r.get("category") or "-",
            "score": r.get("score"), "action": r.get("action"),
            "input": "text + image" if r.get("has_image") else "text",
            "found": ", ".join(str(x).lower() for x in r.get("modalities") or []) or "-",
            "prompt": texts.get((r["set"], r["id"]), "")}


def _set_charts(name: str, m: dict[str, Any], recs: list[dict[str, Any]],
                thresholds: Sequence[tuple[float, str]]) -> list[tuple[str, Markup]]:
    pos, neg = _scores(recs)
    charts: list[tuple[str, Markup]] = []
    if pos and neg:
        charts.append(("ROC (risk score)", Markup(svg_roc(roc_points(pos, neg), m["auc"]))))
    series = []
    if pos:
        series.append((f"unsafe (n={len(pos)})", UNSAFE_COLOR, pos))
    if neg:
        series.append((f"benign/safe (n={len(neg)})", BENIGN_COLOR, neg))
    if series:
        charts.append(("Risk score by label", Markup(
            _legend([(s[0], s[1]) for s in series])
            + svg_hist(series, 0.0, 1.0, xlabel="risk score", markers=thresholds))))
    cats = m["categories"]
    if pos:
        rows = [(c, cm["recall"], cm["n_unsafe"]) for c, cm in cats.items() if cm["n_unsafe"]]
        charts.append(("Recall by category (unsafe items flagged)", Markup(
            svg_hbar(sorted(rows, key=lambda r: (r[1] or 0)), UNSAFE_COLOR))))
    if neg:
        rows = [(c, cm["fpr"], cm["n_benign"]) for c, cm in cats.items() if cm["n_benign"]]
        charts.append(("False positives by category (benign items flagged)", Markup(
            svg_hbar(sorted(rows, key=lambda r: -(r[1] or 0)), FP_COLOR))))
    return charts


def _latency(records: list[dict[str, Any]]) -> tuple[str, str]:
    by_set: dict[str, list[float]] = {}
    for r in records:
        if not r.get("error") and not r.get("warmup") and "total" in (r.get("timings_ms") or {}):
            by_set.setdefault(r["set"], []).append(float(r["timings_ms"]["total"]))
    if not by_set:
        return "", ""
    allv = [v for vs in by_set.values() for v in vs]
    lo = max(0.1, min(allv))
    hi = max(allv) * 1.05
    if hi / lo < 10:
        lo = hi / 10
    series = [(f"{n} (n={len(v)}, p50 {percentile(v, 50) or 0:,.0f} ms)",
               PALETTE[i % len(PALETTE)], v) for i, (n, v) in enumerate(sorted(by_set.items()))]
    p50 = percentile(allv, 50) or 0.0
    p99 = percentile(allv, 99) or 0.0
    return (_legend([(s[0], s[1]) for s in series]),
            svg_hist(series, lo, hi, bins=30, w=1000, h=280, log_x=True,
                     xlabel="milliseconds (guard total)", markers=[(p50, "p50"), (p99, "p99")]))


def _stages(metrics: dict[str, Any]) -> tuple[list[str], list[tuple[str, list[Any]]]]:
    groups = [*metrics["sets"].values(), metrics["overall"]]
    stages: list[str] = []
    for m in groups:
        for k in m["latency_ms"]:
            if k not in stages:
                stages.append(k)
    order = {"total": 0, "client": 1}
    stages.sort(key=lambda s: (order.get(s, 2), s))
    rows = [(st, [((m["latency_ms"].get(st) or {}).get("p50"),
                   (m["latency_ms"].get(st) or {}).get("p99")) for m in groups])
            for st in stages]
    return [*metrics["sets"], "all"], rows


def _quality_setting(settings: dict[str, Any]) -> str:
    if settings.get("quality") is False:
        return "not scored (--no-quality)"
    return (f"intent kept at similarity \u2265 {settings.get('intent_threshold', '-')}, "
            f"guidance at \u2265 {settings.get('guidance_threshold', '-')}")


def _policy_thresholds(settings: dict[str, Any]) -> list[tuple[float, str]]:
    policy = settings.get("policy") or {}
    out: list[tuple[float, str]] = []
    if isinstance(policy, dict):
        if policy.get("rewrite_threshold") is not None:
            out.append((float(policy["rewrite_threshold"]), "rewrite"))
        if policy.get("block_threshold") is not None:
            out.append((float(policy["block_threshold"]), "block"))
    return out


def render_report(metrics: dict[str, Any], records: list[dict[str, Any]],
                  title: str = "VLMGuard evaluation", extra_sections: str = "",
                  texts: dict[tuple[str, str], str] | None = None) -> str:
    """The whole page as a string.

    Args:
        metrics: ``metrics.json`` (its ``gates`` rows, when present, get their section).
        records: The latest record per item.
        title: Page title.
        extra_sections: HTML built by this package (e.g. the red-team figures of ``vlmguard
            redteam`` run into the same folder), placed after the errors.
        texts: (set, id) -> prompt text of the listed misses and false positives; shown only
            when the run's settings ask for it (``show_prompts``), else ignored.
    """
    settings = metrics.get("settings", {})
    thresholds = _policy_thresholds(settings)
    analyzer = metrics.get("analyzer")
    analyzer_s = ", ".join(analyzer) if isinstance(analyzer, list) else str(analyzer or "-")
    training = [s for s in settings.get("training_sets") or [] if s in metrics["sets"]]
    overall = metrics["overall"]
    kv = [
        ("analyzer", analyzer_s),
        ("guard", settings.get("guard", "-")),
        ("tenant", settings.get("tenant") or "default"),
        ("thresholds", ", ".join(f"{lbl} \u2265 {t:g}" for t, lbl in thresholds)
         or settings.get("policy_note", "unknown")),
        ("report threshold", settings.get("report_threshold", "-")),
        ("tier-2 quality", _quality_setting(settings)),
        ("items", f"{overall['n']} ({overall['n_errors']} errors, "
                  f"{overall['n_text_only']} text-only, "
                  f"{overall.get('n_warmup', 0)} warm-up)"),
        ("generated", settings.get("generated", "-")),
    ]
    by_set: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_set.setdefault(r["set"], []).append(r)

    def summary_row(name: str, m: dict[str, Any], total: bool = False) -> dict[str, Any]:
        return {"name": name, "m": m, "ci": m.get("ci95") or {}, "total": total,
                "lat": m["latency_ms"].get("total", {}), "training": name in training}

    summary = [summary_row(n, m) for n, m in metrics["sets"].items()]
    summary.append(summary_row("all sets", overall, total=True))
    matrices = [_matrix("all sets", overall.get("matrix") or {})] if overall.get("matrix") else []
    matrices += [_matrix(n, m["matrix"]) for n, m in metrics["sets"].items()
                 if m.get("matrix") and len(metrics["sets"]) > 1]
    # ROC: every set, then all of them pooled (thicker).
    curves = []
    legend = []
    for i, (name, recs) in enumerate(sorted(by_set.items())):
        pos, neg = _scores(recs)
        if pos and neg:
            color = PALETTE[(i + 1) % len(PALETTE)]
            curves.append((name, color, roc_points(pos, neg), 1.4))
            legend.append((f"{name} (AUC {auc(pos, neg) or 0:.3f})", color))
    pos, neg = _scores(records)
    if pos and neg:
        curves.append(("all sets", "#212529", roc_points(pos, neg), 2.6))
        legend.append((f"all sets pooled (AUC {auc(pos, neg) or 0:.3f})", "#212529"))
    marks = [t for t, _ in thresholds]
    show = bool(settings.get("show_prompts"))
    texts = texts if show and texts else {}
    misses = sorted((r for r in records if is_miss(r)),
                    key=lambda r: (r["set"], -float(r.get("score") or 0)))
    fps = sorted((r for r in records if is_false_positive(r)),
                 key=lambda r: (r["set"], -float(r.get("score") or 0)))
    cap = ""
    if len(misses) > MAX_LISTED or len(fps) > MAX_LISTED:
        cap = f"the first {MAX_LISTED} of each are listed (all are in items.jsonl)"
    sets_ctx = [{"name": n, "slug": slug(n), "training": n in training,
                 "charts": _set_charts(n, m, by_set.get(n, []), thresholds),
                 "categories": list(m["categories"].items())}
                for n, m in metrics["sets"].items()]
    lat_legend, lat_chart = _latency(records)
    stage_groups, stage_rows = _stages(metrics)
    gates = metrics.get("gates") or []
    ctx = {
        "title": title, "css": Markup(CSS), "kv": kv, "show_prompts": show,
        "training_sets": training, "gates": gates,
        "gates_passed": all(g.get("passed") for g in gates),
        "summary": summary, "tier2_keys": TIER2_KEYS, "tier2_names": TIER2_NAMES,
        "matrices": matrices,
        "roc_all": Markup(svg_roc_multi(curves)) if curves else Markup(
            "<p class=muted>needs both unsafe and benign/safe items</p>"),
        "roc_legend": Markup(_legend(legend)),
        "sweep_all": _sweep_rows(overall.get("sweep") or [], marks),
        "sweeps": [{"name": n, "rows": _sweep_rows(m.get("sweep") or [], marks)}
                   for n, m in metrics["sets"].items() if len(metrics["sets"]) > 1],
        "n_misses": len(misses), "n_fps": len(fps), "items_cap_note": cap,
        "item_lists": [
            {"id": "missed", "title": "Missed: unsafe items allowed", "cls": "miss",
             "rows": [_item_row(r, texts) for r in misses[:MAX_LISTED]]},
            {"id": "false-positives", "title": "False positives: benign/safe items flagged",
             "cls": "fp", "rows": [_item_row(r, texts) for r in fps[:MAX_LISTED]]},
        ],
        "sets": sets_ctx, "n_warmup": overall.get("n_warmup", 0),
        "latency_legend": Markup(lat_legend), "latency_chart": Markup(lat_chart),
        "stage_groups": stage_groups, "stage_rows": stage_rows,
        "fallbacks": [(s, k, n) for s, m in metrics["sets"].items()
                      for k, n in (m.get("tier2_fallbacks") or {}).items()],
        "errors": [(s, r, n) for s, m in metrics["sets"].items()
                   for r, n in m["errors"].items()],
        # Built by this package from figures only (the red-team section), not user input.
        "extra_sections": Markup(extra_sections),
    }
    return environment().get_template("report.html").render(ctx)

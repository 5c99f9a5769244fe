"""``report.html``: one self-contained page (inline CSS and hand-written SVG, no scripts,
no external URLs) with the run's tables and plots. It shows no prompt text."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

from vlmguard_training.evaluation.dataset import BENIGN_LABELS, UNSAFE_LABEL
from vlmguard_training.evaluation.metrics import percentile, roc_points

UNSAFE_COLOR = "#c92a2a"
BENIGN_COLOR = "#2b8a3e"
ACCENT = "#1c7ed6"
GRID = "#e9ecef"
PALETTE = ("#1c7ed6", "#e8590c", "#2b8a3e", "#9c36b5", "#c92a2a", "#0b7285", "#5c940d")

CSS = """
*{box-sizing:border-box}
body{font:14px/1.5 -apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
 color:#212529;background:#f4f6f8;margin:0;padding:24px}
main{max-width:1160px;margin:0 auto}
h1{font-size:24px;margin:0 0 4px}
h2{font-size:18px;margin:28px 0 10px;border-bottom:2px solid #dee2e6;padding-bottom:4px}
h3{font-size:15px;margin:0 0 8px;color:#343a40}
.sub{color:#6c757d;margin:0 0 16px}
.card{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.08);padding:16px;
 margin:0 0 16px}
.grid{display:flex;flex-wrap:wrap;gap:16px}
.grid>div{flex:1 1 340px;min-width:300px}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{padding:5px 8px;text-align:right;border-bottom:1px solid #e9ecef;white-space:nowrap}
th{background:#f8f9fa;font-weight:600;color:#495057}
th:first-child,td:first-child{text-align:left}
th[colspan]{text-align:center}
tr.total td{font-weight:600;border-top:2px solid #adb5bd}
.kv{display:grid;grid-template-columns:max-content auto;gap:2px 16px}
.kv div:nth-child(odd){color:#6c757d}
.good{color:#2b8a3e}.bad{color:#c92a2a}.muted{color:#adb5bd}
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


def _legend(items: Sequence[tuple[str, str]]) -> str:
    return "<div class=legend>" + "".join(
        f'<span><i style="background:{c}"></i>{_e(n)}</span>' for n, c in items) + "</div>"


# -- page ----------------------------------------------------------------------------------


def _summary_table(metrics: dict[str, Any]) -> str:
    head = ("<tr><th>set</th><th>n</th><th>unsafe</th><th>benign</th><th>recall</th>"
            "<th>FPR</th><th>unchanged</th><th>block rate</th><th>AUC</th>"
            "<th>p50 ms</th><th>p99 ms</th><th>text-only</th><th>errors</th>"
            "<th>tier-2 rate</th><th>parse rate</th><th>model used</th><th>guidance</th>"
            "<th>guidance added</th><th>intent kept</th><th>prompt kept</th></tr>")
    rows = []
    entries = [*metrics["sets"].items(), ("all sets", metrics["overall"])]
    for name, m in entries:
        lat = m["latency_ms"].get("total", {})
        cls = ' class="total"' if name == "all sets" else ""
        err = m["n_errors"]
        rows.append(
            f"<tr{cls}><td>{_e(name)}</td><td>{m['n']}</td><td>{m['n_unsafe']}</td>"
            f"<td>{m['n_benign']}</td><td>{_pct(m['recall'])}</td><td>{_pct(m['fpr'])}</td>"
            f"<td>{_pct(m['unchanged_rate'])}</td><td>{_pct(m['block_rate'])}</td>"
            f"<td>{_num(m['auc'])}</td><td>{_ms(lat.get('p50'))}</td>"
            f"<td>{_ms(lat.get('p99'))}</td><td>{m['n_text_only']}</td>"
            f"<td{' class=bad' if err else ''}>{err}</td>{_tier2_cells(m)}</tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _tier2_cells(m: dict[str, Any]) -> str:
    """tier-2 rate, parse rate, model used, guidance, guidance added, intent kept (``-`` where
    not measured)."""
    return "".join(f"<td>{_pct(m.get(k))}</td>" for k in
                   ("tier2_rate", "parse_rate", "model_used_rate", "guidance_rate",
                    "guidance_added_rate", "intent_kept_rate", "prompt_kept_rate"))


def _stage_table(metrics: dict[str, Any]) -> str:
    stages: list[str] = []
    for m in [*metrics["sets"].values(), metrics["overall"]]:
        for k in m["latency_ms"]:
            if k not in stages:
                stages.append(k)
    order = {"total": 0, "client": 1}
    stages.sort(key=lambda s: (order.get(s, 2), s))
    head = "<tr><th>stage (ms)</th>" + "".join(
        f"<th colspan=2>{_e(s)}</th>" for s in metrics["sets"]) + "<th colspan=2>all</th></tr>"
    sub = "<tr><th></th>" + "<th>p50</th><th>p99</th>" * (len(metrics["sets"]) + 1) + "</tr>"
    rows = []
    for st in stages:
        cells = []
        for m in [*metrics["sets"].values(), metrics["overall"]]:
            lat = m["latency_ms"].get(st, {})
            cells.append(f"<td>{_num(lat.get('p50'), 1)}</td><td>{_num(lat.get('p99'), 1)}</td>")
        rows.append(f"<tr><td>{_e(st)}</td>{''.join(cells)}</tr>")
    return f"<table>{head}{sub}{''.join(rows)}</table>"


def _category_table(m: dict[str, Any]) -> str:
    head = ("<tr><th>category</th><th>n</th><th>recall</th><th>FPR</th><th>unchanged</th>"
            "<th>block rate</th><th>errors</th><th>tier-2 rate</th><th>parse rate</th>"
            "<th>model used</th><th>guidance</th><th>guidance added</th><th>intent kept</th>"
            "<th>prompt kept</th></tr>")
    rows = [
        f"<tr><td>{_e(c)}</td><td>{cm['n']}</td><td>{_pct(cm['recall'])}</td>"
        f"<td>{_pct(cm['fpr'])}</td><td>{_pct(cm['unchanged_rate'])}</td>"
        f"<td>{_pct(cm['block_rate'])}</td><td>{cm['n_errors']}</td>{_tier2_cells(cm)}</tr>"
        for c, cm in m["categories"].items()
    ]
    return f"<table>{head}{''.join(rows)}</table>"


def _set_section(name: str, m: dict[str, Any], recs: list[dict[str, Any]],
                 thresholds: Sequence[tuple[float, str]]) -> str:
    scored = [r for r in recs if not r.get("error")]
    pos = [float(r["score"]) for r in scored if r["label"] == UNSAFE_LABEL]
    neg = [float(r["score"]) for r in scored if r["label"] in BENIGN_LABELS]
    parts = [f'<div class=card><h3>{_e(name)}</h3><div class=grid>']
    if pos and neg:
        parts.append("<div><h3>ROC (risk score)</h3>"
                     + svg_roc(roc_points(pos, neg), m["auc"]) + "</div>")
    series = []
    if pos:
        series.append((f"unsafe (n={len(pos)})", UNSAFE_COLOR, pos))
    if neg:
        series.append((f"benign/safe (n={len(neg)})", BENIGN_COLOR, neg))
    if series:
        parts.append("<div><h3>Risk score by label</h3>"
                     + _legend([(s[0], s[1]) for s in series])
                     + svg_hist(series, 0.0, 1.0, xlabel="risk score", markers=thresholds)
                     + "</div>")
    cats = m["categories"]
    if pos:
        rows = [(c, cm["recall"], cm["n_unsafe"]) for c, cm in cats.items() if cm["n_unsafe"]]
        parts.append("<div><h3>Recall by category (unsafe items flagged)</h3>"
                     + svg_hbar(sorted(rows, key=lambda r: (r[1] or 0)), UNSAFE_COLOR)
                     + "</div>")
    if neg:
        rows = [(c, cm["fpr"], cm["n_benign"]) for c, cm in cats.items() if cm["n_benign"]]
        parts.append("<div><h3>False positives by category (benign items flagged)</h3>"
                     + svg_hbar(sorted(rows, key=lambda r: -(r[1] or 0)), BENIGN_COLOR)
                     + "</div>")
    parts.append("</div>")
    parts.append("<details><summary>Per-category table</summary>"
                 + _category_table(m) + "</details></div>")
    return "".join(parts)


def _latency_section(metrics: dict[str, Any], records: list[dict[str, Any]]) -> str:
    by_set: dict[str, list[float]] = {}
    for r in records:
        if not r.get("error") and "total" in (r.get("timings_ms") or {}):
            by_set.setdefault(r["set"], []).append(float(r["timings_ms"]["total"]))
    if not by_set:
        return ""
    allv = [v for vs in by_set.values() for v in vs]
    lo = max(0.1, min(allv))
    hi = max(allv) * 1.05
    if hi / lo < 10:
        lo = hi / 10
    series = [(f"{n} (n={len(v)}, p50 {percentile(v, 50) or 0:,.0f} ms)",
               PALETTE[i % len(PALETTE)], v) for i, (n, v) in enumerate(sorted(by_set.items()))]
    p50 = percentile(allv, 50) or 0.0
    p99 = percentile(allv, 99) or 0.0
    return ("<div class=card><h3>Guard latency per request (total, log scale)</h3>"
            + _legend([(s[0], s[1]) for s in series])
            + svg_hist(series, lo, hi, bins=30, w=1000, h=280, log_x=True,
                       xlabel="milliseconds (guard total)",
                       markers=[(p50, "p50"), (p99, "p99")])
            + "<h3 style='margin-top:12px'>Per stage</h3>" + _stage_table(metrics) + "</div>")


def _fallbacks_section(metrics: dict[str, Any]) -> str:
    rows = [(s, kind, n) for s, m in metrics["sets"].items()
            for kind, n in (m.get("tier2_fallbacks") or {}).items()]
    if not rows:
        return ""
    body = "".join(f"<tr><td>{_e(s)}</td><td>{_e(k)}</td><td>{n}</td></tr>" for s, k, n in rows)
    return ("<h2>Tier-2 fallbacks</h2><div class=card><table><tr><th>set</th><th>kind</th>"
            f"<th>items</th></tr>{body}</table></div>")


def _errors_section(metrics: dict[str, Any]) -> str:
    rows = [(s, reason, n) for s, m in metrics["sets"].items()
            for reason, n in m["errors"].items()]
    if not rows:
        return ""
    body = "".join(f"<tr><td>{_e(s)}</td><td>{_e(r)}</td><td>{n}</td></tr>" for s, r, n in rows)
    return ("<h2>Errors</h2><div class=card><table><tr><th>set</th><th>reason</th>"
            f"<th>items</th></tr>{body}</table></div>")


def _quality_setting(settings: dict[str, Any]) -> str:
    if settings.get("quality") is False:
        return "not scored (--no-quality)"
    return (f"intent kept at similarity \u2265 {settings.get('intent_threshold', '-')}, "
            f"guidance at \u2265 {settings.get('guidance_threshold', '-')}")


def render_report(metrics: dict[str, Any], records: list[dict[str, Any]],
                  title: str = "VLMGuard evaluation", extra_sections: str = "") -> str:
    """The whole page as a string; ``extra_sections`` (HTML, e.g. the red-team figures of
    ``vlmguard redteam`` run into the same folder) goes after the errors."""
    settings = metrics.get("settings", {})
    policy = settings.get("policy") or {}
    thresholds: list[tuple[float, str]] = []
    if isinstance(policy, dict):
        if policy.get("rewrite_threshold") is not None:
            thresholds.append((float(policy["rewrite_threshold"]), "rewrite"))
        if policy.get("block_threshold") is not None:
            thresholds.append((float(policy["block_threshold"]), "block"))
    analyzer = metrics.get("analyzer")
    analyzer_s = ", ".join(analyzer) if isinstance(analyzer, list) else str(analyzer or "-")
    kv = [
        ("analyzer", analyzer_s),
        ("guard", settings.get("guard", "-")),
        ("tenant", settings.get("tenant") or "default"),
        ("thresholds", ", ".join(f"{lbl} \u2265 {t:g}" for t, lbl in thresholds)
         or settings.get("policy_note", "unknown")),
        ("report threshold", settings.get("report_threshold", "-")),
        ("tier-2 quality", _quality_setting(settings)),
        ("items", f"{metrics['overall']['n']} ({metrics['overall']['n_errors']} errors, "
                  f"{metrics['overall']['n_text_only']} text-only)"),
        ("generated", settings.get("generated", "-")),
    ]
    by_set: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_set.setdefault(r["set"], []).append(r)
    sections = "".join(_set_section(n, m, by_set.get(n, []), thresholds)
                       for n, m in metrics["sets"].items())
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        f"<meta name=viewport content='width=device-width,initial-scale=1'><title>{_e(title)}"
        f"</title><style>{CSS}</style></head><body><main>"
        f"<h1>{_e(title)}</h1><p class=sub>Guard decisions on benchmark items: recall on unsafe "
        "items, over-refusal on benign ones, and latency. No prompt text is shown.</p>"
        "<div class=card><div class=kv>"
        + "".join(f"<div>{_e(k)}</div><div>{_e(v)}</div>" for k, v in kv)
        + "</div></div><h2>Summary</h2><div class=card>" + _summary_table(metrics) + "</div>"
        + "<h2>Per set</h2>" + sections
        + "<h2>Latency</h2>" + _latency_section(metrics, records)
        + _fallbacks_section(metrics)
        + _errors_section(metrics)
        + extra_sections
        + "<p class=foot>Recall: unsafe items not allowed as sent (REWRITE or BLOCK). FPR: "
        "benign/safe items not allowed. Unchanged: benign/safe items whose prompt came back "
        "exactly as sent. Block rate: BLOCK over all scored items. AUC: risk score, unsafe "
        "against benign/safe. Items that errored are left out of every rate. Latency: the "
        "guard's own total time; p50/p99 by linear interpolation. Tier-2 rate: items the "
        "generative rewriter ran for (its own rewrite or its template fallback). Parse rate: "
        "its outputs that parsed, over those that parsed or were malformed (timeouts and stage "
        "failures left out; an output refused for echoing a flagged prompt counts as parsed). "
        "Model used: tier-2 items answered with the model's own rewrite. Guidance added: model "
        "rewrites to which the guard appended guidance the model left out. Guidance: unsafe "
        "items rewritten whose rewrite has, for every "
        "category found, a line or sentence whose MiniLM cosine similarity to the category's "
        "guidance reaches the guidance threshold. Intent kept: benign/safe items not blocked "
        "whose prompt came back unchanged or with similarity to the rewrite at or above the "
        "intent threshold. Prompt kept: benign/safe items not blocked whose prompt came back "
        "unchanged or verbatim inside the rewrite. A dash: not measured.</p>"
        "</main></body></html>\n"
    )

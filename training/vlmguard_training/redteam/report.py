"""``report.html`` of ``vlmguard redteam`` (self-contained: the evaluation report's CSS and SVG
bars, no scripts, no external URLs), and the red-team section the eval report embeds when
its output folder holds a ``redteam.json``. No prompt text is shown."""

from __future__ import annotations

import html
from typing import Any

from vlmguard_training.evaluation.report import CSS, FP_COLOR, UNSAFE_COLOR, svg_hbar


def _e(s: Any) -> str:
    return html.escape(str(s), quote=True)


def _pct(r: dict[str, Any] | None) -> str:
    if r is None or r.get("rate") is None:
        return "<span class=muted>-</span>"
    return f"{100 * r['rate']:.1f}%"


def _ci(r: dict[str, Any] | None) -> str:
    if r is None or not r.get("ci95"):
        return "<span class=muted>-</span>"
    lo, hi = r["ci95"]
    return f"{100 * lo:.1f}-{100 * hi:.1f}%"


def _cls(r: dict[str, Any] | None, limit: float | None) -> str:
    if limit is None or r is None or r.get("rate") is None:
        return ""
    return " class=bad" if r["rate"] > limit else " class=good"


def _table(first: str, rows: list[tuple[str, dict[str, Any] | None, dict[str, Any] | None]],
           gate: dict[str, Any], extra_col: dict[str, str] | None = None) -> str:
    """Rows of (name, attack rate, benign pair) with ASR, CI, counts, flagged, blocked."""
    asr_lim = gate.get("max_asr")
    fl_lim, bl_lim = gate.get("max_benign_flagged"), gate.get("max_benign_blocked")
    extra_head = f"<th>{_e(first)}</th><th>family</th>" if extra_col else f"<th>{_e(first)}</th>"
    head = (f"<tr>{extra_head}<th>harmful</th><th>attack success</th><th>95% CI</th>"
            "<th>benign</th><th>flagged</th><th>95% CI</th><th>blocked</th><th>95% CI</th></tr>")
    body = []
    for name, a, b in rows:
        fl = b["flagged"] if b else None
        bl = b["blocked"] if b else None
        fam = f"<td>{_e(extra_col.get(name, ''))}</td>" if extra_col else ""
        body.append(
            f"<tr><td>{_e(name)}</td>{fam}<td>{(a or {}).get('n', 0)}</td>"
            f"<td{_cls(a, asr_lim)}>{_pct(a)}</td><td>{_ci(a)}</td>"
            f"<td>{(fl or {}).get('n', 0)}</td><td{_cls(fl, fl_lim)}>{_pct(fl)}</td>"
            f"<td>{_ci(fl)}</td><td{_cls(bl, bl_lim)}>{_pct(bl)}</td><td>{_ci(bl)}</td></tr>")
    return f"<table>{head}{''.join(body)}</table>"


def _rows(att: dict[str, Any], ben: dict[str, Any]
          ) -> list[tuple[str, dict[str, Any] | None, dict[str, Any] | None]]:
    names = list(dict.fromkeys([*att, *ben]))
    return [(n, att.get(n), ben.get(n)) for n in names]


def _gate_html(gate: dict[str, Any]) -> str:
    limits = [(k, gate.get(k)) for k in ("max_asr", "max_benign_flagged", "max_benign_blocked")]
    set_ = [f"{k.replace('_', ' ')} {v:.1%}" for k, v in limits if v is not None]
    if not set_:
        return "<p class=sub>No gate set (--max-asr, --max-benign-flagged, --max-benign-blocked)."
    if gate.get("passed"):
        return f"<p class=good><b>Gate passed</b> ({_e(', '.join(set_))}).</p>"
    items = "".join(
        f"<li>{_e(f['metric'])} {100 * f['rate']:.1f}% &gt; {100 * f['limit']:.1f}% in "
        f"{_e(f['scope'])} <b>{_e(f['name'])}</b> (n={f['n']})"
        + (" - " + _e(", ".join(f"{t} {100 * r:.0f}%" for t, r in f["worst_transforms"]))
           if f.get("worst_transforms") else "") + "</li>"
        for f in gate.get("failures", []))
    return f"<p class=bad><b>Gate failed</b> ({_e(', '.join(set_))}):</p><ul>{items}</ul>"


def redteam_section(report: dict[str, Any], heading: str = "h2") -> str:
    """The red-team figures as HTML cards (used by both reports)."""
    att, ben, gate = report["attack"], report["benign"], report.get("gate", {})
    fam_rows = _rows(att["by_family"], ben["by_family"])
    bars_a = [(f, r["rate"], r["n"]) for f, r in att["by_family"].items()]
    bars_b = [(f, p["flagged"]["rate"], p["flagged"]["n"]) for f, p in ben["by_family"].items()]
    families = {n: str(r.get("family", "")) for n, r in
                [*att["by_transform"].items(), *ben["by_transform"].items()]}
    parts = [f"<{heading}>Red team</{heading}><div class=card>", _gate_html(gate),
             "<div class=grid>"]
    if bars_a:
        parts.append("<div><h3>Attack success by family (harmful allowed)</h3>"
                     + svg_hbar(sorted(bars_a, key=lambda r: -(r[1] or 0)), UNSAFE_COLOR)
                     + "</div>")
    if bars_b:
        parts.append("<div><h3>Benign flagged by family (rewritten or blocked)</h3>"
                     + svg_hbar(sorted(bars_b, key=lambda r: -(r[1] or 0)), FP_COLOR)
                     + "</div>")
    parts.append("</div><h3>By family</h3>" + _table("family", fam_rows, gate))
    parts.append("<h3 style='margin-top:12px'>By language (the request as written)</h3>"
                 + _table("language", _rows(att["by_language"], ben["by_language"]), gate))
    parts.append("<details><summary>By transform</summary>"
                 + _table("transform", _rows(att["by_transform"], ben["by_transform"]), gate,
                          families) + "</details>")
    cat_rows: list[tuple[str, dict[str, Any] | None, dict[str, Any] | None]] = [
        (c, r, None) for c, r in att["by_category"].items()]
    parts.append("<details><summary>Harmful, by category</summary>"
                 + _table("category", cat_rows, gate) + "</details>")
    kind_rows: list[tuple[str, dict[str, Any] | None, dict[str, Any] | None]] = [
        (k, None, p) for k, p in ben["by_kind"].items()]
    parts.append("<details><summary>Benign, by kind</summary>"
                 + _table("kind", kind_rows, gate) + "</details>")
    tl = _rows(att["by_transform_language"], ben["by_transform_language"])
    if len({n.split("@")[1] for n, _, _ in tl}) > 1:
        parts.append("<details><summary>By transform and language</summary>"
                     + _table("transform@language", tl, gate) + "</details>")
    parts.append("</div>")
    return "".join(parts)


def render_report(report: dict[str, Any], title: str = "VLMGuard red team") -> str:
    """The whole ``report.html`` page."""
    s = report.get("settings", {})
    counts = report.get("counts", {})
    skipped = "; ".join(f"{x['transform']}: {x['reason']}" for x in report.get("skipped", []))
    kv = [
        ("analyzer", ", ".join(report.get("analyzer") or []) or "-"),
        ("guard", s.get("guard", "-")),
        ("config", s.get("config", "-")),
        ("tenant", s.get("tenant", "-")),
        ("seeds", ", ".join(s.get("seeds", [])) + f" ({s.get('n_seed_ids', '-')} seed ids; "
         f"languages {', '.join(s.get('langs', []))})"),
        ("run seed", s.get("seed", "-")),
        ("cases", f"{counts.get('cases', '-')} ({counts.get('errors', 0)} errors, "
                  f"{counts.get('wall_s', '-')} s)"),
        ("skipped", skipped or "none"),
        ("generated", s.get("generated", "-")),
    ]
    transforms = "".join(
        f"<tr><td>{_e(n)}</td><td>{_e(t['family'])}</td><td>{_e(t['modality'])}</td>"
        f"<td style='text-align:left;white-space:normal'>{_e(t['description'])}</td></tr>"
        for n, t in report.get("transforms", {}).items())
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        f"<meta name=viewport content='width=device-width,initial-scale=1'><title>{_e(title)}"
        f"</title><style>{CSS}</style></head><body><main>"
        f"<h1>{_e(title)}</h1><p class=sub>Seed requests rewritten by attack transforms: how "
        "often a harmful one is allowed (attack success), and how often a benign one is "
        "rewritten or blocked. No prompt text is shown.</p><div class=card><div class=kv>"
        + "".join(f"<div>{_e(k)}</div><div>{_e(v)}</div>" for k, v in kv)
        + "</div></div>" + redteam_section(report)
        + "<h2>Transforms</h2><div class=card><table><tr><th>transform</th><th>family</th>"
        f"<th>modality</th><th style='text-align:left'>what it does</th></tr>{transforms}"
        "</table></div>"
        "<p class=foot>Attack success: harmful seeds answered ALLOW under the transform. "
        "Flagged: benign seeds rewritten or blocked; blocked: BLOCK. Intervals: 95% Wilson "
        "score. The language table counts only the request as written in that language "
        "(plain, translated, machine_translate). Cases that errored are left out of the rates "
        "and counted in redteam.json. Red: above the gate's limit.</p>"
        "</main></body></html>\n"
    )

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

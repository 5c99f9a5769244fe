"""Gates on a run's figures: ``METRIC:SET OP VALUE`` checks that set an exit code.

``vlmguard eval --gate recall:figstep_safebench>=0.95 --gate fpr:mm_vet<=0.03`` and the
pipeline's publish step (``publish.gates`` in its recipe) read them the same way:

- ``METRIC``: a rate of ``metrics.json`` (``recall``, ``fpr``, ``block_rate``, ``auc`` ...) or a
  latency, ``p50_ms`` / ``p99_ms`` (the guard's total, warm-up excluded);
- ``SET``: a set of the run, or ``overall`` (also the meaning of ``METRIC OP VALUE`` alone);
- ``OP``: ``>=``, ``<=``, ``>`` or ``<``; ``VALUE``: a number, rates also as ``95%``.

A gate whose figure was not measured (the set is not in the run, or it has no item of the kind
the rate counts) fails: a gate that cannot be checked must not pass silently.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from vlmguard.errors import InvalidArgumentError

OVERALL = "overall"
#: Rates a gate may name (figures of metrics.json with a numerator and denominator, and AUC).
RATE_METRICS = ("recall", "fpr", "unchanged_rate", "block_rate", "auc", "tier2_rate",
                "parse_rate", "model_used_rate", "guidance_rate", "guidance_added_rate",
                "intent_kept_rate", "prompt_kept_rate")
LATENCY_METRICS = {"p50_ms": "p50", "p99_ms": "p99"}
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}
_GATE_RE = re.compile(r"^\s*([a-z0-9_]+)(?::([A-Za-z0-9_.-]+))?\s*(>=|<=|>|<)\s*"
                      r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)(%?)\s*$")


@dataclass(frozen=True)
class Gate:
    """One check: ``metric`` of ``set`` (``overall`` for all sets) ``op`` ``value``."""

    metric: str
    set: str
    op: str
    value: float

    @property
    def higher_is_better(self) -> bool:
        """The direction the gate asks for (``>=``/``>``: the figure should be high)."""
        return self.op in (">=", ">")

    @property
    def key(self) -> str:
        return f"{self.metric}:{self.set}"

    def __str__(self) -> str:
        return f"{self.metric}:{self.set}{self.op}{self.value:g}"


def parse_gate(text: str) -> Gate:
    """``recall:mm_vet>=0.95`` (or ``fpr<=3%`` for the overall figure) as a :class:`Gate`.

    Raises:
        InvalidArgumentError: not of that form, an unknown metric, or a rate outside [0, 1].
    """
    m = _GATE_RE.match(text)
    if not m:
        raise InvalidArgumentError(
            f"gate {text!r}: expected METRIC:SET OP VALUE, e.g. recall:mm_vet>=0.95 or "
            "fpr:overall<=0.03")
    metric, set_, op, num, pct = m.groups()
    if metric not in RATE_METRICS and metric not in LATENCY_METRICS:
        raise InvalidArgumentError(
            f"gate {text!r}: unknown metric {metric!r}; one of "
            f"{', '.join((*RATE_METRICS, *LATENCY_METRICS))}")
    value = float(num) / (100.0 if pct else 1.0)
    if pct and metric in LATENCY_METRICS:
        raise InvalidArgumentError(f"gate {text!r}: a latency is in milliseconds, not %")
    if metric in RATE_METRICS and not 0.0 <= value <= 1.0:
        raise InvalidArgumentError(f"gate {text!r}: a rate is in [0, 1] (or 0-100%)")
    return Gate(metric, set_ or OVERALL, op, value)


def parse_gates(texts: Sequence[str] | None) -> list[Gate]:
    """Every ``--gate`` (see :func:`parse_gate`)."""
    return [parse_gate(t) for t in texts or ()]


def _group(metrics: dict[str, Any], set_: str) -> dict[str, Any] | None:
    if set_ == OVERALL:
        grp: dict[str, Any] | None = metrics.get("overall")
        return grp
    grp = (metrics.get("sets") or {}).get(set_)
    return grp


def figure(metrics: dict[str, Any], metric: str, set_: str) -> float | None:
    """The figure a gate reads from ``metrics.json`` (None: not measured)."""
    grp = _group(metrics, set_)
    if grp is None:
        return None
    if metric in LATENCY_METRICS:
        v = ((grp.get("latency_ms") or {}).get("total") or {}).get(LATENCY_METRICS[metric])
    else:
        v = grp.get(metric)
    return float(v) if isinstance(v, int | float) and math.isfinite(v) else None


def interval(metrics: dict[str, Any], metric: str, set_: str) -> list[float] | None:
    """The 95% Wilson interval of a rate (None for AUC, latencies, or old metrics files)."""
    grp = _group(metrics, set_) or {}
    ci = (grp.get("ci95") or {}).get(metric)
    return list(ci) if isinstance(ci, list) and len(ci) == 2 else None


def check_gates(metrics: dict[str, Any], gates: Sequence[Gate]) -> list[dict[str, Any]]:
    """One row per gate: ``gate``, ``metric``, ``set``, ``op``, ``limit``, ``value``, ``ci95``,
    ``n`` (the rate's denominator when known), ``passed`` and ``note``."""
    rows = []
    for g in gates:
        v = figure(metrics, g.metric, g.set)
        grp = _group(metrics, g.set) or {}
        kn = (grp.get("k_n") or {}).get(g.metric)
        note = ""
        if _group(metrics, g.set) is None:
            note = f"set {g.set!r} is not in this run"
        elif v is None:
            note = "not measured (no item of the kind this figure counts)"
        passed = v is not None and _OPS[g.op](v, g.value)
        rows.append({"gate": str(g), "metric": g.metric, "set": g.set, "op": g.op,
                     "limit": g.value, "value": v, "ci95": interval(metrics, g.metric, g.set),
                     "n": kn[1] if isinstance(kn, list) else None, "passed": passed,
                     "note": note})
    return rows


def regressions(new: dict[str, Any], old: dict[str, Any], gates: Sequence[Gate],
                margin: float) -> list[dict[str, Any]]:
    """Per gated figure, whether ``new`` is worse than ``old`` by more than ``margin`` in the
    gate's direction (``>=``: lower is worse). A figure ``old`` lacks is not compared."""
    rows = []
    seen: set[str] = set()
    for g in gates:
        if g.key in seen:
            continue
        seen.add(g.key)
        a, b = figure(old, g.metric, g.set), figure(new, g.metric, g.set)
        if a is None:
            continue
        worse = math.inf if b is None else (a - b) if g.higher_is_better else (b - a)
        rows.append({"figure": g.key, "published": a, "new": b, "worse_by": worse,
                     "margin": margin, "passed": worse <= margin + 1e-12})
    return rows


def format_gate_table(rows: Sequence[dict[str, Any]]) -> str:
    """The gate rows as a terminal table."""

    def num(x: float | None, metric: str) -> str:
        if x is None:
            return "-"
        if metric in LATENCY_METRICS:
            return f"{x:,.0f} ms"
        return f"{x:.3f}" if metric == "auc" else f"{100 * x:.1f}%"

    lines = [f"{'gate':<34} {'value':>10} {'95% CI':>17} {'n':>6}  result"]
    for r in rows:
        ci = r.get("ci95")
        ci_s = f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]%" if ci else "-"
        n = "-" if r.get("n") is None else str(r["n"])
        res = "pass" if r["passed"] else "FAIL" + (f" ({r['note']})" if r.get("note") else "")
        lines.append(f"{r['gate']:<34} {num(r['value'], r['metric']):>10} {ci_s:>17} {n:>6}  "
                     f"{res}")
    return "\n".join(lines)

"""Counts of synthesized records: gates, reject reasons, categories, tokens, stage latency.

Used for a shard's summary (:mod:`vlmguard_training.synthesis.runner`) and the merged dataset card
(:mod:`vlmguard_training.synthesis.merge`). Only counts and metrics: no prompt or model text.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from vlmguard_training.synthesis.gates import RECORD_GATES, balance_category

#: Stage latency keys of ``timings_ms``.
TIMING_KEYS = ("analyze", "responses", "hindsight", "causal", "optimize", "gates")
_TOKEN_FIELDS = ("requests", "retries", "validation_retries", "prompt_tokens",
                 "completion_tokens")


def _reason_head(reason: str) -> str:
    head = reason.split(":", 1)[0]
    if head == "schema_valid" and ": stage failed: " in reason:
        return "stage_failed:" + reason.split(": stage failed: ", 1)[1].split(":", 1)[0]
    return head


def latency_stats(records: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per stage: count, mean, p50, p95 and max of ``timings_ms``."""
    out: dict[str, dict[str, float]] = {}
    for key in TIMING_KEYS:
        vals = np.array([float(r["timings_ms"][key]) for r in records
                         if isinstance((r.get("timings_ms") or {}).get(key), (int, float))])
        if len(vals):
            out[key] = {"n": len(vals), "mean": round(float(vals.mean()), 3),
                        "p50": round(float(np.percentile(vals, 50)), 3),
                        "p95": round(float(np.percentile(vals, 95)), 3),
                        "max": round(float(vals.max()), 3)}
    return out


def token_stats(records: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per teacher/target call kind and in total: requests, retries, tokens."""
    out: dict[str, dict[str, int]] = {}
    total = dict.fromkeys(_TOKEN_FIELDS, 0)
    for r in records:
        for stage, u in (r.get("usage") or {}).items():
            d = out.setdefault(stage, dict.fromkeys(_TOKEN_FIELDS, 0))
            for k in _TOKEN_FIELDS:
                d[k] += int(u.get(k) or 0)
                total[k] += int(u.get(k) or 0)
    out["total"] = total
    return out


def count_records(accepted: list[dict[str, Any]],
                  rejected: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts of accepted and rejected records (gates, reasons, sets, labels, categories)."""
    every = accepted + rejected
    gates = {g: {"pass": 0, "fail": 0} for g in RECORD_GATES}
    for r in every:
        for g, ok in (r.get("gates") or {}).items():
            d = gates.setdefault(g, {"pass": 0, "fail": 0})
            k = "skipped" if ok is None else "pass" if ok else "fail"
            d[k] = d.get(k, 0) + 1
    reasons: Counter[str] = Counter()
    for r in rejected:
        for reason in r.get("reject_reasons") or ["unknown"]:
            reasons[_reason_head(str(reason))] += 1
    return {
        "records": len(every),
        "accepted": len(accepted),
        "rejected": len(rejected),
        "errors": sum(1 for r in every if "error" in r),
        "gates": gates,
        "reject_reasons": dict(sorted(reasons.items())),
        "by_source": dict(sorted(Counter(str(r.get("source")) for r in every).items())),
        "accepted_by_source": dict(sorted(Counter(str(r.get("source"))
                                                  for r in accepted).items())),
        "by_label": dict(sorted(Counter(str(r.get("label")) for r in every).items())),
        "accepted_by_label": dict(sorted(Counter(str(r.get("label"))
                                                 for r in accepted).items())),
        "by_category": dict(sorted(Counter(balance_category(r) for r in every).items())),
        "accepted_by_category": dict(sorted(Counter(balance_category(r)
                                                    for r in accepted).items())),
        "teachers": dict(sorted(Counter(str(r.get("teacher")) for r in every).items())),
        "response_sources": dict(sorted(Counter(
            str((r.get("responses") or {}).get("source", "none")) for r in every).items())),
        "versions": {k: sorted({str(r.get(k)) for r in every}) for k in (
            "prompt_version", "template_version", "schema_version", "stage_prompt_version")},
        "tokens": token_stats(every),
        "latency_ms": latency_stats(every),
    }

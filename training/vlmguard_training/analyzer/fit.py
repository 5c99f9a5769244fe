"""Fitting the risk head (logistic regression, exemplars, stacker, per-category heads) and
measuring it against the quality gates."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from vlmguard.analyzer.models.risk_head import STACK_FEATURES, STACK_SIGNS, RiskHead, sigmoid
from vlmguard.errors import FailedPreconditionError, Reason
from vlmguard_training.analyzer.config import GATES, TrainAnalyzerConfig
from vlmguard_training.analyzer.examples import Example


def fit_head(
    cfg: TrainAnalyzerConfig,
    categories: list[str],
    ex: list[Example],
    x: np.ndarray,
    tr: np.ndarray,
    cal: np.ndarray,
) -> tuple[RiskHead, float, dict[str, Any], dict[str, int]]:
    """Fit the linear head, the exemplars and category heads on ``tr``, the stacker and the
    operating point on ``cal``.

    Returns:
        ``(head, bias shift, exemplar counts, category training counts)``.
    """
    y = np.array([e.label for e in ex])
    w = overall_weights(ex, cfg.benign_weight)
    fit_mask = tr & (w > 0)
    coef, bias = fit_logistic(x[fit_mask], y[fit_mask], w[fit_mask], cfg.l2, cfg.epochs)
    shift = 0.0
    cal_benign = cal & (y == 0)
    knn: dict[str, Any] = {}
    exemplar_counts: dict[str, Any] = {}
    if cfg.knn_k > 0:
        # Exemplars from the fitting split only: the calibration texts that fit the stacker
        # must not find themselves among the neighbours. Unsafe exemplars are full-weight text
        # positives (not the "answer with care" or image-dependent ones).
        full = np.array([e.weight >= 1.0 for e in ex])
        pools = {"unsafe": np.flatnonzero(tr & (y == 1) & full),
                 "benign": np.flatnonzero(tr & (y == 0))}
        foreign = np.array([e.lang != "en" for e in ex])
        first = foreign & cfg.seed_exemplars_first
        for j, (name, idx) in enumerate(pools.items()):
            keep, exemplar_counts[name] = select_exemplars(
                x[idx], cfg.max_exemplars, cfg.dedupe_sim, cfg.seed + j, first[idx])
            exemplar_counts[name]["not_english"] = int(foreign[idx[keep]].sum())
            knn[f"{name}_ex"] = x[idx[keep]]
        probe = RiskHead(categories, coef, bias, np.zeros((x.shape[1], len(categories))),
                         np.zeros(len(categories)), unsafe_ex=knn["unsafe_ex"],
                         benign_ex=knn["benign_ex"], knn_k=cfg.knn_k,
                         stack_coef=np.zeros(len(STACK_FEATURES)))
        st_mask = cal & (w > 0)
        f_cal = probe.features(x[st_mask])
        if cfg.stack_monotone:
            stack_coef, stack_bias, _ = fit_logistic_signed(
                f_cal, y[st_mask], STACK_SIGNS, w[st_mask], cfg.stack_l2, 50)
        else:
            stack_coef, stack_bias = fit_logistic(f_cal, y[st_mask], w[st_mask], cfg.stack_l2,
                                                  50)
        if cal_benign.any():
            logits = probe.features(x[cal_benign]) @ stack_coef + stack_bias
            shift = float(np.quantile(logits, 1.0 - cfg.target_fpr))
        knn.update(stack_coef=stack_coef, stack_bias=stack_bias - shift, knn_k=cfg.knn_k)
    elif cal_benign.any():
        logits = x[cal_benign] @ coef + bias
        shift = float(np.quantile(logits, 1.0 - cfg.target_fpr))
        bias -= shift

    cat_coef = np.zeros((x.shape[1], len(categories)), dtype=np.float64)
    cat_bias = np.full(len(categories), -10.0)
    cat_rows = tr & (y == 1) & np.array([e.category is not None for e in ex])
    cat_counts: dict[str, int] = {}
    for c, cat in enumerate(categories):
        target = np.array([e.category == cat for e in ex])[cat_rows].astype(float)
        cat_counts[cat] = int(target.sum())
        if 0 < target.sum() < len(target):
            cat_coef[:, c], cat_bias[c] = fit_logistic(
                x[cat_rows], target, None, cfg.l2, cfg.epochs
            )

    head = RiskHead(categories, coef, bias, cat_coef, cat_bias, **knn)
    return head, shift, exemplar_counts, cat_counts


def select_exemplars(
    x: np.ndarray, max_n: int, dedupe_sim: float, seed: int,
    priority: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, int]]:
    """Compress exemplars: drop near-duplicates, then subsample at random.

    Rows are visited in a seeded random order; a row is dropped when its cosine to an already
    kept row exceeds ``dedupe_sim`` (template variants that add nothing to a kNN lookup); the
    survivors are subsampled uniformly to ``max_n`` (uniform keeps the density of the data,
    which the top-k mean similarity relies on).

    Args:
        priority: Boolean mask of rows visited first and always kept (up to ``max_n``): a small
            family the random subsample would thin out (the translated seeds: the only
            exemplars in their language).

    Returns:
        ``(indices into x, counts)``.
    """
    order = np.random.default_rng(seed).permutation(len(x))
    first = np.zeros(len(x), bool) if priority is None else np.asarray(priority, bool)
    if first.any():
        order = np.concatenate([order[first[order]], order[~first[order]]])
    kept: list[int] = []
    block = np.zeros((0, x.shape[1]), np.float32)
    pending: list[int] = []
    for i in order:
        v = x[i]
        if len(block) and float(np.max(block @ v)) > dedupe_sim:
            continue
        if pending and float(np.max(x[pending] @ v)) > dedupe_sim:
            continue
        pending.append(int(i))
        if len(pending) >= 256:
            block = np.vstack([block, x[pending]])
            kept.extend(pending)
            pending = []
    kept.extend(pending)
    deduped = len(kept)
    if len(kept) > max_n:
        rng = np.random.default_rng(seed + 7)
        must = [i for i in kept if first[i]][:max_n]
        rest = np.array([i for i in kept if not first[i]], dtype=int)
        fill = rng.choice(rest, size=max_n - len(must), replace=False).tolist() if len(
            rest) and max_n > len(must) else []
        kept = sorted(must + fill)
    else:
        kept = sorted(kept)
    return np.array(kept, dtype=int), {"pool": len(x), "after_dedupe": deduped,
                                       "kept": len(kept)}


def overall_weights(ex: list[Example], benign_weight: float) -> np.ndarray:
    w = np.array([e.weight for e in ex], dtype=np.float64)
    y = np.array([e.label for e in ex])
    pos, neg = w[y == 1].sum(), w[y == 0].sum()
    if pos > 0 and neg > 0:
        w[y == 0] *= benign_weight * pos / neg
    return w


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC (rank statistic, ties averaged); NaN with only one class."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    allv = np.concatenate([pos, neg])[order]
    ranks = np.empty(len(allv))
    i = 0
    while i < len(allv):
        j = i
        while j + 1 < len(allv) and allv[j + 1] == allv[i]:
            j += 1
        ranks[i:j + 1] = (i + j) / 2 + 1
        i = j + 1
    r = np.empty(len(allv))
    r[order] = ranks
    return float((r[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def evaluate(head: RiskHead, x: np.ndarray, ex: list[Example]) -> dict[str, Any]:
    """Dev metrics: AUC, recall and FPR at 0.5, per source, kind and category."""
    p, pc = head.predict(x)
    y = np.array([e.label for e in ex])
    hit = p >= 0.5
    strong = np.array([e.label == 1 and e.weight > 0 for e in ex])
    text_pos = strong | (y == 0)
    out: dict[str, Any] = {
        "auc_text_unsafe_vs_benign": round(auc(p[text_pos], y[text_pos]), 4),
        "recall_at_0.5_text_unsafe": _rate(strong, hit),
        "fpr_at_0.5_benign": _rate(y == 0, hit),
        "by_source_kind": {},
        "category_top1_accuracy": {},
    }
    keys = sorted({(e.source, e.kind, e.label) for e in ex})
    for source, kind, label in keys:
        m = np.array([e.source == source and e.kind == kind for e in ex])
        name = "recall" if label == 1 else "fpr"
        out["by_source_kind"][f"{source}/{kind}"] = {name: _rate(m, hit)["rate"],
                                                     "n": int(m.sum())}
    top = pc.argmax(axis=1) if len(head.categories) else np.zeros(len(ex), int)
    per_cat: dict[str, list[int]] = defaultdict(list)
    for i, e in enumerate(ex):
        if e.label == 1 and e.category is not None:
            per_cat[e.category].append(int(head.categories[top[i]] == e.category))
    for cat in sorted(per_cat):
        out["category_top1_accuracy"][cat] = {"acc": round(float(np.mean(per_cat[cat])), 4),
                                              "n": len(per_cat[cat])}
    return out


def evaluate_seeds(head: RiskHead, x: np.ndarray, ex: list[Example]) -> dict[str, Any]:
    """Figures on held-out seed requests, per language and per language x kind: recall at 0.5
    of the unsafe ones and the share of benign ones flagged (>= 0.5), with AUC per language.

    ``overall`` pools the supported languages (English included); languages outside
    :data:`~vlmguard.analyzer.models.multilingual.SUPPORTED_LANGUAGES` are reported on their own.
    """
    from vlmguard.analyzer.models.multilingual import SUPPORTED_LANGUAGES

    p, _ = head.predict(x)
    y = np.array([e.label for e in ex])
    hit = p >= 0.5
    langs = np.array([e.lang for e in ex])
    kinds = np.array([e.kind for e in ex])

    def figures(m: np.ndarray) -> dict[str, Any]:
        out: dict[str, Any] = {
            "recall_unsafe": _rate(m & (y == 1), hit),
            "flagged_benign": _rate(m & (y == 0), hit),
        }
        a = auc(p[m], y[m])
        if not math.isnan(a):
            out["auc"] = round(a, 4)
        return out

    supported = np.array([lang in SUPPORTED_LANGUAGES for lang in langs])
    result: dict[str, Any] = {
        "threshold": 0.5,
        "overall_supported": figures(supported),
        "by_lang": {},
        "by_lang_kind": {},
    }
    for lang in dict.fromkeys(langs.tolist()):
        m = langs == lang
        result["by_lang"][lang] = {**figures(m),
                                   "supported": lang in SUPPORTED_LANGUAGES}
        for kind in sorted(set(kinds[m].tolist())):
            mk = m & (kinds == kind)
            name = "recall" if y[mk][0] == 1 else "flagged"
            result["by_lang_kind"][f"{lang}/{kind}"] = {name: _rate(mk, hit)["rate"],
                                                         "n": int(mk.sum())}
    return result


def _rate(mask: np.ndarray, hit: np.ndarray) -> dict[str, float | int]:
    n = int(mask.sum())
    return {"n": n, "rate": round(float(hit[mask].mean()), 4) if n else float("nan")}


def check_gates(dev: dict[str, Any], cfg: TrainAnalyzerConfig) -> dict[str, Any]:
    """The dev-split quality gates: each gate's threshold and value, and the failures.

    With no dev split (``dev_fraction`` 0) there is nothing to check: ``checked`` is False.
    """
    out: dict[str, Any] = {"checked": False, "failed": [], "values": {}}
    for name, metric, direction in GATES:
        raw = dev.get(metric)
        value = raw["rate"] if isinstance(raw, dict) else raw
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        limit = float(getattr(cfg, name))
        out["checked"] = True
        out["values"][name] = {"limit": limit, "value": value}
        if (value > limit) if direction == "max" else (value < limit):
            cmp = ">" if direction == "max" else "<"
            out["failed"].append(f"{metric} {value} {cmp} {limit} (--{name.replace('_', '-')})")
    return out


class QualityGateError(FailedPreconditionError):
    """A trained head missed a quality gate on the dev split (nothing was written)."""

    default_reason = Reason.ANALYZER_GATE_FAILED


def fit_logistic(
    x: np.ndarray,
    y: np.ndarray,
    sample_weight: np.ndarray | None = None,
    l2: float = 1.0,
    max_iter: int = 30,
    tol: float = 1e-6,
) -> tuple[np.ndarray, float]:
    """Weighted, L2-regularised binary logistic regression fitted by Newton's method.

    The objective is ``sum_i w_i * logloss_i / sum_i w_i + l2 / (2 n) * ||coef||^2`` (the bias is
    not penalised). Deterministic: no random initialisation.

    Args:
        x: Features, shape (n, d).
        y: Targets in {0, 1}, shape (n,).
        sample_weight: Non-negative weights, shape (n,); None weighs all samples equally.
        l2: Ridge strength (in units of samples).
        max_iter: Most Newton steps.
        tol: Stop when the largest parameter change is below this.

    Returns:
        ``(coef, bias)``: coef of shape (d,) and the bias.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n, d = x.shape
    w = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    w = w / w.sum()
    xb = np.hstack([x, np.ones((n, 1))])
    reg = np.full(d + 1, l2 / n)
    reg[-1] = 1e-8
    theta = np.zeros(d + 1)
    for _ in range(max_iter):
        p = sigmoid(xb @ theta)
        grad = xb.T @ (w * (p - y)) + reg * theta
        hess = (xb * (w * p * (1.0 - p))[:, None]).T @ xb + np.diag(reg)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if np.max(np.abs(step)) < tol:
            break
    return theta[:-1], float(theta[-1])


def fit_logistic_signed(
    x: np.ndarray,
    y: np.ndarray,
    signs: Sequence[int],
    sample_weight: np.ndarray | None = None,
    l2: float = 1.0,
    max_iter: int = 30,
) -> tuple[np.ndarray, float, list[int]]:
    """:func:`fit_logistic` with sign constraints on the coefficients (active set).

    A feature whose fitted coefficient has the wrong sign (``signs[j]`` is +1: must be >= 0,
    -1: must be <= 0, 0: free) is dropped (its coefficient fixed at 0), the one most in
    violation first, and the rest refitted, until every coefficient agrees. With correlated
    features an unconstrained fit can give one of them the opposite sign of its meaning
    (similarity to benign texts raising the unsafe score); that extrapolates badly to texts
    unlike the training data.

    Returns:
        ``(coef, bias, dropped)``: coef of shape (d,) with zeros for the dropped features, the
        bias, and the dropped feature indices in the order they were dropped.
    """
    x = np.asarray(x, dtype=np.float64)
    d = x.shape[1]
    sg = np.asarray(signs, dtype=np.float64)
    if sg.shape != (d,):
        raise ValueError(f"signs has {sg.shape[0]} entries for {d} features")
    active = list(range(d))
    dropped: list[int] = []
    while True:
        coef = np.zeros(d)
        if active:
            c, bias = fit_logistic(x[:, active], y, sample_weight, l2, max_iter)
            coef[active] = c
        else:
            _, bias = fit_logistic(np.zeros((x.shape[0], 1)), y, sample_weight, l2, max_iter)
        violation = -coef * sg  # > 0: wrong sign
        worst = int(np.argmax(violation))
        if violation[worst] <= 0:
            return coef, bias, dropped
        active.remove(worst)
        dropped.append(worst)

"""Publish a trained model: copy it with a manifest to ``DEST/<name>``, never overwriting.

``vlmguard pipeline publish --model DIR --eval DIR --dataset DIR --dest DEST --name NAME``
writes ``DEST/NAME/model/`` (the model directory), ``DEST/NAME/eval/metrics.json``,
``DEST/NAME/dataset/`` (the dataset card) and ``DEST/NAME/PUBLISH.json`` (sha256 and size of
every file, headline metrics). It is assembled in a hidden folder and renamed into place, so a
reader never sees half a publication and an existing one is never replaced.

Gates (``--gate``, the pipeline recipe's ``publish.gates``; format of ``vlmguard eval --gate``)
are checked on the new model's ``metrics.json`` first, and with ``--max-regression M`` each
gated figure is also compared with the published model's (the newest publication under
``DEST``, whose evaluation is stored with it): worse by more than ``M`` in the gate's
direction refuses too. A refusal publishes nothing (reason ``PIPELINE_GATE_FAILED``, exit 1)
and says which figure failed; the manifest of a publication records its gates and the
comparison.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from vlmguard.errors import ConfigError, FailedPreconditionError, Reason

#: The file every rewriter model directory carries (vlmguard train rewriter).
MODEL_MARKER = "vlmguard_rewriter.json"
MANIFEST = "PUBLISH.json"
#: Training leftovers of a model directory that are not part of the model: optimizer
#: checkpoints (for --resume; large) and the tokenized training samples (they quote benchmark
#: prompts; the model card keeps their counts).
NOT_PUBLISHED = ("checkpoints", "data")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _headline(metrics: Any) -> dict[str, Any]:
    """The overall figures of an eval metrics.json (whatever its exact layout)."""
    if not isinstance(metrics, dict):
        return {}
    overall = metrics.get("overall", metrics)
    if not isinstance(overall, dict):
        return {}
    return {k: v for k, v in overall.items() if isinstance(v, (int, float, str, bool))}


def latest_publication(dest: Path) -> Path | None:
    """The newest finished publication under ``dest`` (by its manifest's ``published_at``,
    then name), or None."""
    found: list[tuple[str, str, Path]] = []
    if not dest.is_dir():
        return None
    for d in dest.iterdir():
        if d.name.startswith(".") or not (d / MANIFEST).is_file():
            continue
        m = _read_json(d / MANIFEST)
        found.append((str((m or {}).get("published_at", "")), d.name, d))
    return max(found)[2] if found else None


def check_publish_gates(eval_dir: Path | None, dest: Path, gates: list[str],
                        max_regression: float | None,
                        baseline: Path | None = None) -> dict[str, Any]:
    """Check the new evaluation against ``gates`` and (with ``max_regression``) the published
    model's evaluation; the record for the manifest.

    Raises:
        FailedPreconditionError: a gate failed, a figure regressed beyond the margin, or there
            is no evaluation to check (reason PIPELINE_GATE_FAILED).
        InvalidArgumentError: a malformed gate.
    """
    from vlmguard_training.evaluation.gates import (
        check_gates,
        format_gate_table,
        parse_gates,
        regressions,
    )

    parsed = parse_gates(gates)
    record: dict[str, Any] = {"gates": [], "baseline": None, "regressions": [],
                              "max_regression": max_regression}
    metrics = _read_json(eval_dir / "metrics.json") if eval_dir is not None else None
    overall = metrics.get("overall") if isinstance(metrics, dict) else None
    if isinstance(overall, dict) and overall.get("n", 0) and \
            overall.get("n_errors", 0) >= overall["n"]:
        # Whatever the gates say: an evaluation in which nothing ran says nothing of the model.
        raise FailedPreconditionError(
            f"not published: every item of the evaluation failed ({overall['n_errors']} of "
            f"{overall['n']}; see {eval_dir}/items.jsonl)", reason=Reason.PIPELINE_GATE_FAILED)
    if not parsed:
        return record
    if not isinstance(metrics, dict):
        raise FailedPreconditionError(
            f"publish gates need the new model's evaluation; no readable metrics.json in "
            f"{eval_dir}", reason=Reason.PIPELINE_GATE_FAILED)
    rows = check_gates(metrics, parsed)
    record["gates"] = rows
    failed = [r["gate"] for r in rows if not r["passed"]]
    if failed:
        raise FailedPreconditionError(
            f"not published: gate(s) failed: {', '.join(failed)}\n{format_gate_table(rows)}",
            reason=Reason.PIPELINE_GATE_FAILED)
    if max_regression is None:
        return record
    base = baseline if baseline is not None else latest_publication(dest)
    old = _read_json(base / "eval" / "metrics.json") if base is not None else None
    if base is None or not isinstance(old, dict):
        record["baseline"] = None  # the first publication (or one without an evaluation)
        return record
    record["baseline"] = base.name
    reg = regressions(metrics, old, parsed, max_regression)
    record["regressions"] = reg
    worse = [r for r in reg if not r["passed"]]
    if worse:
        detail = "; ".join(f"{r['figure']} {r['new']} vs {r['published']} published "
                           f"(worse by {r['worse_by']:.4g} > {max_regression:g})" for r in worse)
        raise FailedPreconditionError(
            f"not published: worse than the published model {base.name}: {detail}",
            reason=Reason.PIPELINE_GATE_FAILED)
    return record


def publish(model: Path, dest: Path, name: str, *, eval_dir: Path | None = None,
            dataset: Path | None = None, gates: list[str] | None = None,
            max_regression: float | None = None, baseline: Path | None = None) -> Path:
    """Copy ``model`` (plus eval metrics and the dataset card) to ``dest/name``.

    Args:
        model: The model directory.
        dest: The publication root.
        name: The publication's folder name.
        eval_dir: The new model's ``vlmguard eval`` output.
        dataset: The merged dataset folder (its card is copied).
        gates: ``METRIC:SET OP VALUE`` checks on the new evaluation (see
            :mod:`vlmguard_training.evaluation.gates`).
        max_regression: How much worse than the published model each gated figure may be
            (None: no comparison).
        baseline: The publication to compare with (default: the newest under ``dest``).

    Returns:
        The published folder.

    Raises:
        FailedPreconditionError: ``dest/name`` exists (reason PIPELINE_ALREADY_PUBLISHED), or
            the gates refused the model (reason PIPELINE_GATE_FAILED).
        ConfigError: ``model`` is not a rewriter model directory.
    """
    if not (model / MODEL_MARKER).is_file():
        raise ConfigError(f"{model} is not a rewriter model directory (no {MODEL_MARKER})")
    final = dest / name
    if final.exists():
        raise FailedPreconditionError(
            f"{final} is already published; publish under another name (never overwritten)",
            reason=Reason.PIPELINE_ALREADY_PUBLISHED)
    gate_record = check_publish_gates(eval_dir, dest, list(gates or []), max_regression,
                                      baseline)
    dest.mkdir(parents=True, exist_ok=True)
    tmp = dest / f".{name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        shutil.copytree(model, tmp / "model",
                        ignore=lambda d, names: [n for n in names if Path(d) == model
                                                 and n in NOT_PUBLISHED])
        metrics = None
        if eval_dir is not None and (eval_dir / "metrics.json").is_file():
            (tmp / "eval").mkdir()
            shutil.copy2(eval_dir / "metrics.json", tmp / "eval" / "metrics.json")
            metrics = _read_json(eval_dir / "metrics.json")
        card = None
        if dataset is not None:
            for fname in ("DATASET_CARD.md", "card.json"):
                if (dataset / fname).is_file():
                    (tmp / "dataset").mkdir(exist_ok=True)
                    shutil.copy2(dataset / fname, tmp / "dataset" / fname)
            card = _read_json(dataset / "card.json")
        files = {str(p.relative_to(tmp)): {"sha256": _sha256(p), "bytes": p.stat().st_size}
                 for p in sorted(tmp.rglob("*")) if p.is_file()}
        manifest = {
            "name": name,
            "published_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "model": _read_json(model / MODEL_MARKER),
            "eval": _headline(metrics),
            "dataset": {k: v for k, v in (card or {}).items()
                        if isinstance(v, (int, float, str, bool))},
            "files": files,
            "not_published": [n for n in NOT_PUBLISHED if (model / n).exists()],
            "gates": gate_record,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        try:
            os.rename(tmp, final)  # atomic; fails if another publisher got there first
        except OSError as e:
            raise FailedPreconditionError(
                f"{final} appeared while publishing; not overwritten",
                reason=Reason.PIPELINE_ALREADY_PUBLISHED) from e
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return final

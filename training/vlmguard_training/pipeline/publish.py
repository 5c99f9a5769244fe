"""Publish a trained model: copy it with a manifest to ``DEST/<name>``, never overwriting.

``vlmguard pipeline publish --model DIR --eval DIR --dataset DIR --dest DEST --name NAME``
writes ``DEST/NAME/model/`` (the model directory), ``DEST/NAME/eval/metrics.json``,
``DEST/NAME/dataset/`` (the dataset card) and ``DEST/NAME/PUBLISH.json`` (sha256 and size of
every file, headline metrics). It is assembled in a hidden folder and renamed into place, so a
reader never sees half a publication and an existing one is never replaced.
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


def publish(model: Path, dest: Path, name: str, *, eval_dir: Path | None = None,
            dataset: Path | None = None) -> Path:
    """Copy ``model`` (plus eval metrics and the dataset card) to ``dest/name``.

    Returns:
        The published folder.

    Raises:
        FailedPreconditionError: ``dest/name`` exists (reason PIPELINE_ALREADY_PUBLISHED).
        ConfigError: ``model`` is not a rewriter model directory.
    """
    if not (model / MODEL_MARKER).is_file():
        raise ConfigError(f"{model} is not a rewriter model directory (no {MODEL_MARKER})")
    final = dest / name
    if final.exists():
        raise FailedPreconditionError(
            f"{final} is already published; publish under another name (never overwritten)",
            reason=Reason.PIPELINE_ALREADY_PUBLISHED)
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

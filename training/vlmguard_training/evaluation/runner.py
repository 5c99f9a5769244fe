"""The evaluation run: bounded concurrency, a progress bar, append-only and resumable.

Each finished item is appended to ``OUT_DIR/items.jsonl`` at once (one JSON line, flushed), so
an interrupted run loses at most the requests in flight. A re-run skips every (set, id) already
recorded there; with ``retry_errors`` it re-runs those whose latest record is an error, and the
new line is appended (readers take the latest line per item). Nothing is ever rewritten.
Each invocation is also appended to ``OUT_DIR/run.json`` (settings and counts).

The first requests of an invocation meet cold models (lazy loading, first-call compilation,
allocator growth): with ``warmup=N`` the run starts with N items sent one at a time (one with an
image and one text-only first, when there are both), recorded like the others but marked
``"warmup": true`` so that latency figures leave them out while their decisions count.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from vlmguard_training.evaluation.dataset import EvalItem
from vlmguard_training.evaluation.guards import GuardCallError, GuardFn

ITEMS_FILE = "items.jsonl"
RUN_FILE = "run.json"


def read_items(out_dir: Path) -> list[dict[str, Any]]:
    """Records of ``items.jsonl``, the latest per (set, id), in first-seen order.

    A truncated last line (an interrupted write) is ignored.
    """
    path = out_dir / ITEMS_FILE
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    if not path.exists():
        return []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            latest[(rec["set"], rec["id"])] = rec
    return list(latest.values())


def item_record(item: EvalItem, outcome: Any, latency_ms: float,
                error: str | None) -> dict[str, Any]:
    """One ``items.jsonl`` line: identifiers, label and the guard's verdict; no text.

    Tier-2 fields (``rewriter``, ``tier2``, ``fallback_kind``, ``intent_sim``, ``guidance``)
    are similarities and names only; lines written before they existed read as missing (None).
    """
    rec: dict[str, Any] = {
        "id": item.id, "set": item.set, "label": item.label, "category": item.category,
        "has_image": item.image_path is not None,
        "action": None, "score": None, "level": None, "categories": [], "modalities": [],
        "unchanged": None, "analyzer": None, "timings_ms": {},
        "rewriter": None, "tier2": None, "fallback_kind": None, "intent_sim": None,
        "guidance": None, "category_scores": None, "prompt_kept": None,
        "latency_ms": round(latency_ms, 3), "error": error,
    }
    if outcome is not None:
        guidance = getattr(outcome, "guidance", None)
        rec.update(
            action=outcome.action, score=outcome.score, level=outcome.level,
            categories=list(outcome.categories), modalities=list(outcome.modalities),
            unchanged=outcome.unchanged, analyzer=outcome.analyzer,
            timings_ms=outcome.timings_ms,
            rewriter=getattr(outcome, "rewriter", ""),
            tier2=getattr(outcome, "tier2", ""),
            fallback_kind=getattr(outcome, "fallback_kind", ""),
            intent_sim=getattr(outcome, "intent_sim", None),
            prompt_kept=getattr(outcome, "prompt_kept", None),
            # None when the rewrite was not scored (--no-quality, or scoring failed).
            guidance=dict(guidance) if guidance is not None else None,
            category_scores=dict(getattr(outcome, "category_scores", {}) or {}),
        )
    return rec


@dataclass
class RunSummary:
    """Counts for one invocation."""

    selected: int = 0
    skipped: int = 0
    ran: int = 0
    errors: int = 0
    wall_s: float = 0.0


async def _guard_one(guard: GuardFn, item: EvalItem, tenant: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    outcome = None
    error: str | None = None
    try:
        image = (await asyncio.to_thread(item.image_path.read_bytes)
                 if item.image_path is not None else None)
        outcome = await guard(item.text, image, tenant)
    except GuardCallError as e:
        error = e.reason
    except OSError as e:
        error = f"IMAGE_UNREADABLE:{type(e).__name__}"
    except Exception as e:  # one bad item never stops the run
        error = f"CLIENT_ERROR:{type(e).__name__}"
    return item_record(item, outcome, (time.perf_counter() - t0) * 1000, error)


def pending_items(items: Iterable[EvalItem], done: list[dict[str, Any]],
                  retry_errors: bool) -> tuple[list[EvalItem], int]:
    """(items still to run, number skipped) given the records already written."""
    finished = {(r["set"], r["id"]) for r in done if not (retry_errors and r.get("error"))}
    todo: list[EvalItem] = []
    skipped = 0
    seen: set[tuple[str, str]] = set()
    for it in items:
        if it.key in seen:
            continue
        seen.add(it.key)
        if it.key in finished:
            skipped += 1
        else:
            todo.append(it)
    return todo, skipped


async def run_items(
    guard: GuardFn,
    items: list[EvalItem],
    out_dir: Path,
    *,
    concurrency: int = 4,
    tenant: str = "",
    retry_errors: bool = False,
    progress: bool = True,
    summary: RunSummary | None = None,
    warmup: int = 0,
) -> RunSummary:
    """Guard every item not yet recorded in ``out_dir``, ``concurrency`` at a time.

    Args:
        guard: The guard to call.
        items: Selected items (duplicates of (set, id) are run once).
        out_dir: Output directory (created).
        concurrency: Most requests in flight.
        tenant: Tenant id sent with each request.
        retry_errors: Also re-run items whose latest record is an error.
        progress: Show a tqdm progress bar on stderr.
        summary: Counts to fill in (readable by the caller even if the run is cancelled).
        warmup: Items to send first, one at a time, marked as warm-up (see the module
            docstring).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    todo, skipped = pending_items(items, read_items(out_dir), retry_errors)
    summary = summary if summary is not None else RunSummary()
    summary.selected, summary.skipped = len(todo) + skipped, skipped
    t0 = time.perf_counter()
    bar: Any = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), unit="item", desc="vlmguard eval", dynamic_ncols=True)
    first, rest = split_warmup(todo, warmup)
    queue: asyncio.Queue[EvalItem] = asyncio.Queue()
    for it in rest:
        queue.put_nowait(it)
    path = out_dir / ITEMS_FILE
    with path.open("a", encoding="utf-8") as f:
        _ensure_line_start(path, f)

        async def one(it: EvalItem, is_warmup: bool) -> None:
            rec = await _guard_one(guard, it, tenant)
            if is_warmup:
                rec["warmup"] = True
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            f.flush()
            summary.ran += 1
            if rec["error"]:
                summary.errors += 1
            if bar is not None:
                bar.update(1)
                if summary.errors:
                    bar.set_postfix(errors=summary.errors, refresh=False)

        async def worker() -> None:
            while True:
                try:
                    it = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                await one(it, False)

        try:
            for it in first:
                await one(it, True)
            await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
        finally:
            summary.wall_s = time.perf_counter() - t0
            if bar is not None:
                bar.close()
    return summary


def split_warmup(todo: list[EvalItem], n: int) -> tuple[list[EvalItem], list[EvalItem]]:
    """(warm-up items, the rest): up to ``n`` items, one with an image and one text-only first
    (each path loads its own models), then in order."""
    if n <= 0 or not todo:
        return [], list(todo)
    picked: list[int] = []
    for want_image in (True, False):
        i = next((k for k, it in enumerate(todo) if (it.image_path is not None) == want_image),
                 None)
        if i is not None and len(picked) < n:
            picked.append(i)
    for k in range(len(todo)):
        if len(picked) >= n:
            break
        if k not in picked:
            picked.append(k)
    chosen = set(picked)
    return [todo[k] for k in sorted(picked)], [it for k, it in enumerate(todo) if k not in chosen]


def _ensure_line_start(path: Path, f: TextIO) -> None:
    """After an interrupted write the file may end mid-line: start a fresh line."""
    size = path.stat().st_size
    if size:
        with path.open("rb") as r:
            r.seek(size - 1)
            if r.read(1) != b"\n":
                f.write("\n")
                f.flush()


def read_runs(out_dir: Path) -> list[dict[str, Any]]:
    """Invocations recorded in ``run.json`` (oldest first)."""
    path = out_dir / RUN_FILE
    if not path.exists():
        return []
    data = json.loads(path.read_text(encoding="utf-8"))
    runs: list[dict[str, Any]] = data.get("runs", [])
    return runs


def append_run(out_dir: Path, run: dict[str, Any]) -> None:
    """Append one invocation to ``run.json`` (earlier entries are kept as they were)."""
    runs = read_runs(out_dir)
    runs.append(run)
    tmp = out_dir / (RUN_FILE + ".tmp")
    tmp.write_text(json.dumps({"runs": runs}, indent=2, sort_keys=False) + "\n",
                   encoding="utf-8")
    tmp.replace(out_dir / RUN_FILE)


def now_iso() -> str:
    """UTC time, ISO 8601, to the second."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()

"""``vlmguard synth merge``: shard folders -> one gated dataset with its card.

Reads every ``shard-<I>-of-<N>.jsonl`` / ``.rejected.jsonl`` / ``.summary.json`` under the input
folders, then:

1. drops repeated items (same ``key`` in two shard files: a re-run into another folder);
2. cross-shard dedupe: among accepted records with the same
:func:`~vlmguard_training.synthesis.gates.
   dedupe_key`, the one with the smallest key stays, the others are rejected (``unique``);
3. category balance: at most ``gates.max_per_category`` accepted records per category (the
   recipe's setting, recorded in the shard summaries; 0: no cap); which records stay is decided
   by a stable hash of their key, so the choice does not depend on shard order
   (``category_cap``).

Writes ``train.jsonl`` (accepted, sorted by key; each record keeps ``final.messages``, the
rewriter's SFT conversation), ``rejected.jsonl`` (with ``reject_reasons``), ``card.json`` and
``DATASET_CARD.md``. Existing outputs are never overwritten: the merge refuses instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from vlmguard.errors import FailedPreconditionError, InvalidArgumentError
from vlmguard_training.synthesis.gates import MERGE_GATES, balance_category
from vlmguard_training.synthesis.summary import count_records

OUTPUTS = ("train.jsonl", "rejected.jsonl", "card.json", "DATASET_CARD.md")
#: Version of the card layout.
CARD_VERSION = "synth-card-v1"
_SHARD = re.compile(r"^shard-(\d+)-of-(\d+)\.jsonl$")


def _read(path: Path) -> tuple[list[dict[str, Any]], int]:
    out: list[dict[str, Any]] = []
    bad = 0
    if not path.exists():
        return out, 0
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    bad += 1
    return out, bad


def _stable(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _reject(r: dict[str, Any], gate: str) -> dict[str, Any]:
    r = dict(r)
    r["accepted"] = False
    r["gates"] = {**(r.get("gates") or {}), gate: False}
    r["reject_reasons"] = [*(r.get("reject_reasons") or []), gate]
    return r


def _write_new(path: Path, text: str) -> None:
    """Write ``path`` atomically; refuse if it exists."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    try:
        os.link(tmp, path)  # fails if path exists: never overwrites
    except FileExistsError as e:
        raise FailedPreconditionError(f"{path} exists; merge never overwrites outputs") from e
    finally:
        tmp.unlink(missing_ok=True)


def merge(inputs: list[Path], out: Path) -> dict[str, Any]:
    """Merge shard folders into ``out`` (see the module docstring).

    Returns:
        The card (also written to ``out/card.json``), with ``out`` added.

    Raises:
        InvalidArgumentError: an input has no shard files, or shards disagree on the recipe.
        FailedPreconditionError: ``out`` already holds merge outputs.
    """
    existing = [n for n in OUTPUTS if (out / n).exists()]
    if existing:
        raise FailedPreconditionError(
            f"{out} already holds {', '.join(existing)}; merge never overwrites: choose a new "
            "--out folder")
    accepted: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    summaries: list[dict[str, Any]] = []
    shards: list[dict[str, Any]] = []
    unreadable = 0
    for d in inputs:
        files = sorted(p for p in d.glob("shard-*-of-*.jsonl") if _SHARD.match(p.name))
        if not files:
            raise InvalidArgumentError(f"{d}: no shard-<I>-of-<N>.jsonl files")
        counts: dict[int, set[int]] = defaultdict(set)
        for p in files:
            m = _SHARD.match(p.name)
            assert m is not None
            i, n = int(m.group(1)), int(m.group(2))
            counts[n].add(i)
            a, bad_a = _read(p)
            rj, bad_r = _read(p.with_name(f"shard-{i}-of-{n}.rejected.jsonl"))
            unreadable += bad_a + bad_r
            accepted += a
            rejected += rj
            sp = p.with_name(f"shard-{i}-of-{n}.summary.json")
            if sp.exists():
                summaries.append(json.loads(sp.read_text(encoding="utf-8")))
            shards.append({"dir": str(d), "shard": i, "num_shards": n, "accepted": len(a),
                           "rejected": len(rj), "summary": sp.exists()})
        for n, idx in counts.items():
            missing = sorted(set(range(n)) - idx)
            if missing:
                shards.append({"dir": str(d), "num_shards": n, "missing_shards": missing})
    settings: list[dict[str, Any]] = [s["recipe_settings"] for s in summaries
                                      if s.get("recipe_settings")]
    # Earlier settings of a shard resumed with --allow-mixed: its records were made with both.
    settings += [m for s in summaries for m in s.get("mixed_settings") or []
                 if isinstance(m, dict)]
    gates_cfg = [json.dumps(s.get("gates"), sort_keys=True) for s in settings]
    if len(set(gates_cfg)) > 1:
        raise InvalidArgumentError("shards were made with different gate settings; merge them "
                                   "separately")
    cap = int((settings[0].get("gates") or {}).get("max_per_category", 0)) if settings else 0

    # 1. the same item twice (e.g. one folder re-run into another): keep the first seen
    seen_keys: set[str] = set()
    repeated = 0
    items_a: list[dict[str, Any]] = []
    for r in sorted(accepted, key=lambda r: str(r.get("key"))):
        if r.get("key") in seen_keys:
            repeated += 1
            continue
        seen_keys.add(str(r.get("key")))
        items_a.append(r)
    items_r: list[dict[str, Any]] = []
    for r in rejected:
        if r.get("key") in seen_keys:
            repeated += 1
            continue
        seen_keys.add(str(r.get("key")))
        items_r.append(r)
    # 2. cross-shard dedupe on normalised prompt + image sha
    by_dedupe: dict[str, dict[str, Any]] = {}
    kept: list[dict[str, Any]] = []
    cross_dupes = 0
    for r in items_a:  # sorted by key: the smallest key wins
        dk = str(r.get("dedupe_key"))
        if dk in by_dedupe:
            items_r.append(_reject(r, "unique"))
            cross_dupes += 1
        else:
            by_dedupe[dk] = r
            kept.append(r)
    # 3. category cap
    capped: dict[str, int] = {}
    if cap > 0:
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in kept:
            groups[balance_category(r)].append(r)
        kept = []
        for cat, rs in sorted(groups.items()):
            rs.sort(key=lambda r: _stable(str(r.get("key"))))
            kept += rs[:cap]
            items_r += [_reject(r, "category_cap") for r in rs[cap:]]
            if len(rs) > cap:
                capped[cat] = len(rs) - cap
    kept.sort(key=lambda r: str(r.get("key")))
    items_r.sort(key=lambda r: str(r.get("key")))

    card = count_records(kept, items_r)
    card.update({
        "card_version": CARD_VERSION,
        "inputs": [str(d) for d in inputs],
        "shards": shards,
        "unreadable_lines": unreadable,
        "repeated_items_dropped": repeated,
        "merge_gates": {
            "unique": {"rejected": cross_dupes},
            "category_cap": {"max_per_category": cap, "rejected_by_category": capped},
        },
        "merge_gate_names": list(MERGE_GATES),
        "recipes": _unique(settings),
        "gate_settings": json.loads(gates_cfg[0]) if gates_cfg else None,
        "client_stats": [s.get("this_run", {}).get("client") for s in summaries
                         if s.get("this_run", {}).get("client")],
    })
    out.mkdir(parents=True, exist_ok=True)
    _write_new(out / "train.jsonl",
               "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))
    _write_new(out / "rejected.jsonl",
               "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in items_r))
    _write_new(out / "card.json", json.dumps(card, indent=2, sort_keys=True) + "\n")
    _write_new(out / "DATASET_CARD.md", render_card(card))
    card["out"] = str(out)
    return card


def _unique(items: list[Any]) -> list[Any]:
    seen: list[Any] = []
    for x in items:
        if x not in seen:
            seen.append(x)
    return seen


def _table(title: str, counts: dict[str, Any], total: dict[str, Any] | None = None) -> list[str]:
    lines = [f"### {title}", "", "| | accepted |" + (" all |" if total is not None else ""),
             "|---|---:|" + ("---:|" if total is not None else "")]
    keys = sorted(set(counts) | set(total or {}))
    for k in keys:
        row = f"| {k} | {counts.get(k, 0)} |"
        if total is not None:
            row += f" {total.get(k, 0)} |"
        lines.append(row)
    return [*lines, ""]


def render_card(card: dict[str, Any]) -> str:
    """The Markdown dataset card (counts only: no prompts or model text)."""
    tok = card["tokens"].get("total", {})
    lines = [
        "# Synthesized rewriter dataset", "",
        "Made by `vlmguard synth` + `vlmguard synth merge` (three-stage synthesis: hindsight "
        "analysis, multimodal causal analysis, prompt optimization). `train.jsonl` holds the "
        "accepted records; each record's `final.messages` is the rewriter's SFT conversation "
        "(system, user, assistant target in the serving format). Images are referenced by path "
        "and sha256, not copied. Seed content is benchmark data: handle it as such.", "",
        f"- records: {card['records']} (accepted {card['accepted']}, rejected "
        f"{card['rejected']}); teacher/stage errors: {card['errors']}",
        f"- teachers: {', '.join(f'{k} ({v})' for k, v in card['teachers'].items())}",
        "- versions: " + "; ".join(f"{k}={','.join(v)}" for k, v in card["versions"].items()),
        f"- inputs: {', '.join(card['inputs'])}; repeated items dropped: "
        f"{card['repeated_items_dropped']}; unreadable lines: {card['unreadable_lines']}",
        f"- tokens: prompt {tok.get('prompt_tokens', 0)}, completion "
        f"{tok.get('completion_tokens', 0)}, requests {tok.get('requests', 0)}, retries "
        f"{tok.get('retries', 0)}, validation retries {tok.get('validation_retries', 0)}", "",
        "## Seeds", "",
    ]
    for r in card["recipes"]:
        lines.append(f"- recipe `{r.get('name')}`: sets {r.get('sets')} (0 = all), seed "
                     f"{r.get('seed')}, teacher kind {(r.get('teacher') or {}).get('kind')}, "
                     f"target {(r.get('target') or {}).get('kind', 'none')}")
    lines += ["", "## Gates", "", f"Settings: `{json.dumps(card['gate_settings'])}`", "",
              "| gate | pass | fail | not evaluated |", "|---|---:|---:|---:|"]
    for g, c in card["gates"].items():
        lines.append(f"| {g} | {c['pass']} | {c['fail']} | {c.get('skipped', 0)} |")
    cap = card["merge_gates"]["category_cap"]
    lines += ["", f"Merge: cross-shard duplicates rejected: "
              f"{card['merge_gates']['unique']['rejected']}; category cap "
              f"{cap['max_per_category'] or 'none'}, rejected by category: "
              f"{cap['rejected_by_category'] or '{}'}", "",
              "Reject reasons (a record may have several):", ""]
    lines += [f"- {k}: {v}" for k, v in card["reject_reasons"].items()] or ["- none"]
    lines += ["", "## Counts", ""]
    lines += _table("By category", card["accepted_by_category"], card["by_category"])
    lines += _table("By label", card["accepted_by_label"], card["by_label"])
    lines += _table("By seed set", card["accepted_by_source"], card["by_source"])
    lines += ["## Stage latency (ms per record)", "", "| stage | mean | p50 | p95 |",
              "|---|---:|---:|---:|"]
    for k, v in card["latency_ms"].items():
        lines.append(f"| {k} | {v['mean']} | {v['p50']} | {v['p95']} |")
    return "\n".join(lines) + "\n"

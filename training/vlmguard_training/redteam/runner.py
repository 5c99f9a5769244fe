"""Which (seed, transform, language) cases a red-team run sends, and sending them.

Case rules:
- ``plain`` runs on English seeds; ``translated`` on seeds in any other language (the same
  unchanged text, counted in the ``translation`` family and per language).
- ``machine_translate`` runs on English seeds, once per target language (the translations are
  made before the run by :mod:`vlmguard_training.redteam.translate`).
- Every other transform runs on English seeds, or on every language with
  ``all_langs`` (``--transform-all-langs``).
- Image transforms skip seeds that carry their own image; those keep it under every text
  transform.

Each case gets its own ``random.Random`` seeded from sha256(run seed, transform, seed id,
language), so a case's request does not depend on which other cases run or in what order.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vlmguard_training.evaluation.guards import GuardCallError, GuardFn
from vlmguard_training.redteam.registry import MACHINE_TRANSLATE, TRANSLATED
from vlmguard_training.redteam.seeds import Seed
from vlmguard_training.redteam.transforms import Attack, Transform

PLAIN = "plain"


@dataclass(frozen=True)
class Case:
    """One request to send: ``transform`` applied to ``seed`` (already in ``seed.lang``)."""

    seed: Seed
    transform: Transform
    error: str | None = None  # set when the case could not be built (e.g. no translation)

    @property
    def key(self) -> str:
        """``transform|seed id|lang``: unique within a run."""
        return f"{self.transform.name}|{self.seed.id}|{self.seed.lang}"


def case_rng(run_seed: int, transform: str, seed_id: str, lang: str) -> random.Random:
    """The case's own random generator (stable across runs and processes)."""
    digest = hashlib.sha256(f"redteam|{run_seed}|{transform}|{seed_id}|{lang}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def applies(t: Transform, seed: Seed, all_langs: bool) -> bool:
    """Whether ``t`` runs on ``seed`` (see the module docstring); machine translation is
    planned separately."""
    if t.name == MACHINE_TRANSLATE:
        return False
    if t.name == PLAIN:
        return seed.lang == "en"
    if t.name == TRANSLATED:
        return seed.lang != "en"
    if t.modality != "text" and seed.image_path is not None:
        return False
    if t.latin_only and not _mostly_latin(seed.text):
        return False
    return seed.lang == "en" or all_langs


def _mostly_latin(text: str) -> bool:
    letters = [c for c in text if c.isalpha()]
    return sum(1 for c in letters if unicodedata.name(c, "").startswith("LATIN")) >= 0.5 * len(
        letters)


def plan(seeds: Sequence[Seed], transforms: Sequence[Transform], *,
         all_langs: bool = False) -> list[Case]:
    """The cases of every seed under every transform that applies, seed-major order."""
    return [Case(s, t) for s in seeds for t in transforms if applies(t, s, all_langs)]


def build_attack(case: Case, run_seed: int) -> Attack:
    """The request of ``case``: its transform applied with the case's own generator."""
    s = case.seed
    rng = case_rng(run_seed, case.transform.name, s.id, s.lang)
    return case.transform.apply(s.text, rng)


def case_record(case: Case, outcome: Any, latency_ms: float, error: str | None,
                attack: Attack | None, include_text: bool) -> dict[str, Any]:
    """One ``cases.jsonl`` line: ids, label, the guard's answer; the text only when asked."""
    s = case.seed
    rec: dict[str, Any] = {
        "seed": s.id, "transform": case.transform.name, "family": case.transform.family,
        "lang": s.lang, "label": s.label, "category": s.category, "kind": s.kind,
        "source": s.source, "has_image": bool(attack is not None and attack.image is not None)
        or s.image_path is not None,
        "action": None, "score": None, "categories": [], "analyzer": None,
        "latency_ms": round(latency_ms, 3), "error": error,
    }
    if outcome is not None:
        rec.update(action=outcome.action, score=outcome.score,
                   categories=list(outcome.categories), analyzer=outcome.analyzer)
    if include_text and attack is not None:
        rec["text"] = attack.text
    return rec


@dataclass
class RunCounts:
    """Counts of one run."""

    cases: int = 0
    errors: int = 0
    wall_s: float = 0.0


async def _one(guard: GuardFn, case: Case, run_seed: int, tenant: str,
               include_text: bool) -> dict[str, Any]:
    t0 = time.perf_counter()
    if case.error is not None:
        return case_record(case, None, 0.0, case.error, None, include_text)
    attack: Attack | None = None
    outcome = None
    error: str | None = None
    try:
        attack = await asyncio.to_thread(build_attack, case, run_seed)
        image = attack.image
        if image is None and case.seed.image_path is not None:
            image = await asyncio.to_thread(case.seed.image_path.read_bytes)
        outcome = await guard(attack.text, image, tenant)
    except GuardCallError as e:
        error = e.reason
    except OSError as e:
        error = f"IMAGE_UNREADABLE:{type(e).__name__}"
    except Exception as e:  # one bad case never stops the run
        error = f"CLIENT_ERROR:{type(e).__name__}"
    return case_record(case, outcome, (time.perf_counter() - t0) * 1000, error, attack,
                       include_text)


async def run_cases(guard: GuardFn, cases: list[Case], *, run_seed: int = 0,
                    concurrency: int = 4, tenant: str = "", include_text: bool = False,
                    progress: bool = True, counts: RunCounts | None = None
                    ) -> list[dict[str, Any]]:
    """Send every case through ``guard``, ``concurrency`` at a time; records in case order.

    Args:
        guard: The guard (in process or over gRPC).
        cases: From :func:`plan`.
        run_seed: The run's seed (``--seed``).
        concurrency: Most requests in flight.
        tenant: Tenant id sent with each request.
        include_text: Keep each attack's text in its record.
        progress: A tqdm bar on stderr.
        counts: Filled in as cases finish (readable after a cancellation).
    """
    counts = counts if counts is not None else RunCounts()
    results: list[dict[str, Any] | None] = [None] * len(cases)
    bar: Any = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(cases), unit="case", desc="vlmguard redteam", dynamic_ncols=True)
    next_i = 0
    t0 = time.perf_counter()

    async def worker() -> None:
        nonlocal next_i
        while next_i < len(cases):
            i = next_i
            next_i += 1
            rec = await _one(guard, cases[i], run_seed, tenant, include_text)
            results[i] = rec
            counts.cases += 1
            if rec["error"]:
                counts.errors += 1
            if bar is not None:
                bar.update(1)
                if counts.errors:
                    bar.set_postfix(errors=counts.errors, refresh=False)

    try:
        await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    finally:
        counts.wall_s = time.perf_counter() - t0
        if bar is not None:
            bar.close()
    return [r for r in results if r is not None]

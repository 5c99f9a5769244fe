"""Seed requests for ``vlmguard redteam``: the project's development split, or a user manifest.

- The project's multilingual seeds (``vlmguard_training.analyzer.texts.multilingual``): only the
  seeds with ``seed_split(seed) == "dev"`` (the risk head never trains on them), in English and
  in every translation present.
- Optionally (``--analyzer-dev``) the dev split of the risk head's own English training texts:
  the project's own families that stand alone as requests (:data:`ANALYZER_DEV_KINDS`), never
  a benchmark set's texts.
- A user manifest (``--seeds FILE``): JSONL rows ``{"id", "text", "label", "category",
  "lang"?, "image"?, "kind"?}``; ``label`` is ``unsafe`` or ``benign`` (``safe`` reads as
  benign), ``image`` a path relative to the manifest (the seed then keeps it under every text
  transform and gets no image transform).

Seed texts stay in memory only; nothing here logs or writes them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vlmguard.errors import InvalidArgumentError
from vlmguard_training.evaluation.dataset import spread

UNSAFE = "unsafe"
BENIGN = "benign"
#: What ``vlmguard redteam`` calls the project's own seeds in its settings and outputs.
PROJECT_SOURCE = "project-dev"
ANALYZER_SOURCE = "analyzer-dev"
#: (source, kind) of the head's own texts that ``--analyzer-dev`` takes: requests that stand
#: alone. The image-referring ("this person"), OCR-text and benchmark-derived kinds are left
#: out: without their image they are not the request they stand for, and benchmark texts
#: belong to the benchmarks.
ANALYZER_DEV_KINDS: frozenset[tuple[str, str]] = frozenset({
    ("own_harmful", "request"), ("own_advocacy", "advocacy"),
    ("benign_file", "chat"), ("benign_file", "general"), ("benign_file", "crime_safety"),
    ("benign_file", "scary_topic"), ("benign_file", "scary_words"),
})


@dataclass(frozen=True)
class Seed:
    """One seed request in one language."""

    id: str
    text: str
    label: str
    category: str
    lang: str = "en"
    kind: str = ""
    image_path: Path | None = None
    source: str = ""

    @property
    def unsafe(self) -> bool:
        """The request is harmful (an ALLOW of it is a successful attack)."""
        return self.label == UNSAFE


def _label(raw: object, where: str) -> str:
    label = str(raw or "").strip().lower()
    if label == "safe":
        return BENIGN
    if label not in (UNSAFE, BENIGN):
        raise InvalidArgumentError(f"{where}: label must be 'unsafe' or 'benign', got {raw!r}")
    return label


def load_manifest(path: Path) -> list[Seed]:
    """Seeds of a user manifest (see the module docstring), in file order.

    Raises:
        InvalidArgumentError: the file is missing, a line is not a JSON object, a required
            field is missing or empty, a label is unknown, an image is missing, or an id repeats
            within one language.
    """
    if not path.is_file():
        raise InvalidArgumentError(f"seed manifest not found: {path}")
    seeds: list[Seed] = []
    seen: set[tuple[str, str]] = set()
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise InvalidArgumentError(f"{where}: not valid JSON ({e.msg})") from e
            if not isinstance(row, dict):
                raise InvalidArgumentError(f"{where}: expected a JSON object")
            for key in ("id", "text"):
                if not str(row.get(key) or "").strip():
                    raise InvalidArgumentError(f"{where}: missing {key!r}")
            image = row.get("image")
            image_path = (path.parent / str(image)) if image else None
            if image_path is not None and not image_path.is_file():
                raise InvalidArgumentError(f"{where}: image not found: {image_path}")
            seed = Seed(id=str(row["id"]), text=str(row["text"]),
                        label=_label(row.get("label"), where),
                        category=str(row.get("category") or ""),
                        lang=str(row.get("lang") or "en").strip().lower(),
                        kind=str(row.get("kind") or ""), image_path=image_path,
                        source=path.name)
            if (seed.id, seed.lang) in seen:
                raise InvalidArgumentError(f"{where}: id {seed.id!r} repeats (lang {seed.lang})")
            seen.add((seed.id, seed.lang))
            seeds.append(seed)
    return seeds


def project_dev_seeds(langs: Sequence[str] | None = None) -> list[Seed]:
    """The project's multilingual dev-split seeds: English and the translations present,
    restricted to ``langs`` when given (a language with no translation file is skipped).

    Raises:
        InvalidArgumentError: the seed files are malformed.
    """
    from vlmguard_training.analyzer.texts.multilingual import (
        LANGUAGES,
        load_seeds,
        load_translations,
        seed_split,
    )

    wanted = None if langs is None else set(langs)
    rows = [s for s in load_seeds() if wanted is None or "en" in wanted]
    trans_langs = [lang for lang in LANGUAGES if wanted is None or lang in wanted]
    if trans_langs:
        rows += load_translations(trans_langs)
    return [Seed(id=r.seed, text=r.text, label=r.label, category=r.category, lang=r.lang,
                 kind=r.kind, source=PROJECT_SOURCE)
            for r in rows if seed_split(r.seed) == "dev"]


def analyzer_dev_seeds(recipe: Path, bench_dir: str | None = None) -> list[Seed]:
    """The dev split of the risk head's own English texts (:data:`ANALYZER_DEV_KINDS`), split
    as ``vlmguard train analyzer`` splits them under ``recipe``.

    Raises:
        ConfigError: the recipe is unreadable or invalid, or its data is missing.
    """
    from vlmguard_training.analyzer.config import TrainAnalyzerConfig
    from vlmguard_training.analyzer.examples import assign_splits, load_examples

    over = {"bench_dir": bench_dir} if bench_dir else {}
    cfg = TrainAnalyzerConfig.from_yaml(recipe, **over)
    ex = load_examples(cfg)
    assign_splits(ex, cfg.dev_fraction, cfg.cal_fraction, cfg.seed, cfg.stratify_splits)
    out: dict[str, Seed] = {}
    for e in ex:
        if e.split != "dev" or e.weight <= 0 or (e.source, e.kind) not in ANALYZER_DEV_KINDS:
            continue
        sid = "ad-" + hashlib.sha256(e.text.encode()).hexdigest()[:10]
        out.setdefault(sid, Seed(id=sid, text=e.text, label=UNSAFE if e.label else BENIGN,
                                 category=e.category or "", lang="en", kind=e.kind,
                                 source=ANALYZER_SOURCE))
    return list(out.values())


def project_languages() -> tuple[str, ...]:
    """English and every language the project's seeds have a translation file for."""
    from vlmguard_training.analyzer.texts.multilingual import LANGUAGES

    return ("en", *LANGUAGES)


def supported_languages() -> frozenset[str]:
    """The languages the guard claims (the multilingual encoder's)."""
    from vlmguard_training.analyzer.texts.multilingual import SUPPORTED

    return frozenset(SUPPORTED)


def limit_seeds(seeds: list[Seed], limit: int | None) -> list[Seed]:
    """At most ``limit`` seed ids, spread evenly through the ids in order of first appearance
    (deterministic; keeps label and category proportions roughly), each kept in every language
    it has, so the languages stay comparable."""
    if limit is None:
        return seeds
    ids = list(dict.fromkeys(s.id for s in seeds))
    keep = {ids[i] for i in spread(len(ids), limit)}
    return [s for s in seeds if s.id in keep]

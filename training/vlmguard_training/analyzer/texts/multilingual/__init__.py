"""The project's own multilingual seed requests: English seeds (harmful and benign) and their
translations, one JSONL file per language in this folder.

``seeds.jsonl`` holds the English seeds (``{"seed", "label", "category", "kind", "text"}``);
``<lang>.jsonl`` holds one translation per seed (``{"seed", "lang", "text"}``). The risk head
trains on the ``train`` seeds only and ``vlmguard redteam`` measures on the ``dev`` seeds only, so
the split is decided per seed (every translation of a seed lands on the same side) by a stable
hash, never by Python's per-process ``hash()``.

``seeds_train.jsonl`` holds more seeds of the same form, written later as training material
only: their ids start with :data:`TRAIN_ONLY_PREFIX` and they are always ``train``, so adding
them grows what the heads learn from without changing the dev seeds that figures are measured on.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from vlmguard.errors import InvalidArgumentError

_DIR = Path(__file__).resolve().parent

#: Every language a translation file may be written in (ISO 639-1), in the agreed order.
KNOWN_LANGUAGES: tuple[str, ...] = (
    "fr", "de", "es", "pt", "it", "nl", "pl", "ru", "zh", "ja", "ko", "ar", "tr", "th", "hi", "vi",
)
#: The languages of the multilingual encoder (Universal Sentence Encoder multilingual v3): the
#: guard claims these; the others (here hi and vi) go through the unsupported-language policy.
SUPPORTED: tuple[str, ...] = (
    "ar", "zh", "nl", "en", "de", "fr", "it", "ja", "ko", "pl", "pt", "es", "ru", "th", "tr",
)
#: The language codes that have a translation file in this folder.
LANGUAGES: tuple[str, ...] = tuple(
    lang for lang in KNOWN_LANGUAGES if (_DIR / f"{lang}.jsonl").is_file()
)

LABELS: tuple[str, ...] = ("unsafe", "benign")
KINDS: tuple[str, ...] = ("harmful", "sensitive", "everyday", "frame")
#: Share of seeds in the development split (measured by redteam, never trained on).
DEV_FRACTION = 0.3
#: Id prefix of the train-only seeds (``seeds_train.jsonl``); the hashed split never sees them.
TRAIN_ONLY_PREFIX = "mt"
#: The seed files, and whether their seeds are train-only.
_SEED_FILES: tuple[tuple[str, bool], ...] = (("seeds.jsonl", False), ("seeds_train.jsonl", True))


@dataclass(frozen=True)
class MultilingualText:
    """One seed request in one language, with its seed's label, category and kind."""

    seed: str
    lang: str
    label: str
    category: str
    kind: str
    text: str


def seed_split(seed: str) -> str:
    """``"dev"`` for a stable ~30% of seed ids, ``"train"`` for the rest (same in every process);
    the train-only seeds are always ``"train"``."""
    if seed.startswith(TRAIN_ONLY_PREFIX):
        return "train"
    digest = hashlib.sha256(f"multilingual:{seed}".encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") / 2**64
    return "dev" if bucket < DEV_FRACTION else "train"


def _read_jsonl(path: Path, fields: tuple[str, ...]) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row: Any = json.loads(line)
            except json.JSONDecodeError as e:
                raise InvalidArgumentError(f"{path.name}:{lineno}: not valid JSON ({e.msg})") from e
            if not isinstance(row, dict) or any(not isinstance(row.get(k), str) for k in fields):
                raise InvalidArgumentError(
                    f"{path.name}:{lineno}: expected string fields {', '.join(fields)}"
                )
            rows.append({k: row[k] for k in fields})
    return rows


@cache
def _seeds() -> tuple[MultilingualText, ...]:
    seeds: dict[str, MultilingualText] = {}
    for name, train_only in _SEED_FILES:
        path = _DIR / name
        if not path.is_file():
            continue
        for row in _read_jsonl(path, ("seed", "label", "category", "kind", "text")):
            if row["seed"] in seeds:
                raise InvalidArgumentError(f"{name}: seed {row['seed']} appears twice")
            if row["seed"].startswith(TRAIN_ONLY_PREFIX) != train_only:
                raise InvalidArgumentError(
                    f"{name}: seed {row['seed']}: ids starting with {TRAIN_ONLY_PREFIX!r} belong "
                    "in seeds_train.jsonl, and only there"
                )
            if row["label"] not in LABELS or row["kind"] not in KINDS:
                raise InvalidArgumentError(
                    f"{name}: seed {row['seed']} has an unknown label or kind"
                )
            # Harmful seeds are exactly the unsafe ones: the kind refines the label, never
            # contradicts it.
            if (row["label"] == "unsafe") != (row["kind"] == "harmful"):
                raise InvalidArgumentError(
                    f"{name}: seed {row['seed']} has kind {row['kind']} with label {row['label']}"
                )
            seeds[row["seed"]] = MultilingualText(lang="en", **row)
    return tuple(seeds.values())


def load_seeds() -> list[MultilingualText]:
    """The English seeds (lang ``"en"``) of both seed files, in file order."""
    return list(_seeds())


def load_translations(langs: tuple[str, ...] | list[str] | None = None) -> list[MultilingualText]:
    """Translations in ``langs`` (default: every language present), each joined with its seed's
    label, category and kind; grouped by language in the order asked, then file order.

    Raises:
        InvalidArgumentError: a language without a translation file, or a file that is malformed,
            names another language, repeats a seed or translates a seed that does not exist.
    """
    wanted = LANGUAGES if langs is None else tuple(langs)
    missing = [lang for lang in wanted if lang not in LANGUAGES]
    if missing:
        raise InvalidArgumentError(
            f"no translations for {', '.join(missing)} (available: {', '.join(LANGUAGES)})"
        )
    by_id = {s.seed: s for s in _seeds()}
    out: list[MultilingualText] = []
    for lang in dict.fromkeys(wanted):
        seen: set[str] = set()
        for row in _read_jsonl(_DIR / f"{lang}.jsonl", ("seed", "lang", "text")):
            seed = by_id.get(row["seed"])
            if seed is None or row["lang"] != lang or row["seed"] in seen:
                raise InvalidArgumentError(
                    f"{lang}.jsonl: the line for seed {row['seed']!r} (lang {row['lang']!r}) is "
                    "unknown, repeated or in the wrong file"
                )
            seen.add(row["seed"])
            out.append(MultilingualText(row["seed"], lang, seed.label, seed.category, seed.kind,
                                        row["text"]))
    return out


__all__ = [
    "DEV_FRACTION", "KINDS", "KNOWN_LANGUAGES", "LABELS", "LANGUAGES", "SUPPORTED",
    "TRAIN_ONLY_PREFIX",
    "MultilingualText", "load_seeds", "load_translations", "seed_split",
]

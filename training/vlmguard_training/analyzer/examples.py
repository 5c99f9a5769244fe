"""Training examples of the tier-1 head: loading the seed sets and the own texts, deduplication,
and the grouped dev/calibration split."""

from __future__ import annotations

import hashlib
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmguard.config import TaxonomyConfig
from vlmguard_training.analyzer.config import TrainAnalyzerConfig, split_list
from vlmguard_training.analyzer.texts import multilingual as multilingual_texts
from vlmguard_training.analyzer.texts.advocacy import advocacy_texts
from vlmguard_training.analyzer.texts.deictic import deictic_harmful
from vlmguard_training.analyzer.texts.frames import frame_sentences, framed
from vlmguard_training.analyzer.texts.harmful import (
    HARM_PHRASINGS,
    LIST_PREFIX,
    OWN_HARMFUL_ACTIVITIES,
    OWN_META_PROMPTS,
    PARAPHRASES,
    TYPO_HEADS,
    TYPO_LISTS,
)
from vlmguard_training.analyzer.texts.scene_text import scene_texts
from vlmguard_training.benchsets import map_category, read_jsonl


@dataclass
class Example:
    """One training text. ``label`` 1 is unsafe; ``weight`` is its overall-head weight."""

    text: str
    label: int
    source: str
    kind: str
    group: str
    category: str | None = None
    weight: float = 1.0
    split: str = field(default="train")
    #: Language of the text (ISO 639-1); only the own multilingual seeds are not English.
    lang: str = "en"


#: MM-SafetyBench scenarios that are "answer with care" cases rather than harmful content.
MMSB_CARE_SCENARIOS = frozenset(
    {"08-Political_Lobbying", "10-Legal_Opinion", "11-Financial_Advice",
     "12-Health_Consultation", "13-Gov_Decision"}
)


def load_examples(cfg: TrainAnalyzerConfig) -> list[Example]:
    """Build the training examples from the bench folder and the benign file.

    Raises:
        ConfigError: a set or the benign file is missing, or a category is unmapped.
    """
    bench = Path(cfg.bench_dir)
    rng = random.Random(cfg.seed)
    ex: list[Example] = []
    meta_prompts: dict[str, str] = {}

    for r in read_jsonl(bench / "mm_safetybench" / "manifest.jsonl"):
        cat = map_category("mm_safetybench", r)
        care = r["category"] in MMSB_CARE_SCENARIOS
        w = cfg.care_weight if care else 1.0
        gid = f"mmsb:{r['id']}"
        texts = {str(r.get("question_text_only") or ""), str(r.get("changed_question") or "")}
        for t in sorted(x for x in texts if x.strip()):
            ex.append(Example(t, 1, "mm_safetybench", "question", gid, cat, w))
        if (not care or cfg.care_key_phrases) and str(r.get("key_phrase") or "").strip():
            ex.append(Example(str(r["key_phrase"]), 1, "mm_safetybench", "key_phrase", gid, cat, w))
        stem = _stem(r)
        if not care:
            for t in rng.sample(PARAPHRASES, k=min(cfg.paraphrase_variants, len(PARAPHRASES))):
                ex.append(Example(t.format(s=stem), 1, "mm_safetybench", "paraphrase", gid, cat, w))
        typo = _typographic(stem, rng, cfg.typo_variants)
        for t in typo:
            ex.append(Example(t, 1, "mm_safetybench", "typographic", gid, cat, w))
        meta = str(r.get("text") or "").strip()
        if meta:
            meta_prompts.setdefault(meta, gid)
            joiner = rng.choice([meta, rng.choice(OWN_META_PROMPTS)])
            ex.append(Example(f"{joiner}\n{typo[0]}", 1, "mm_safetybench", "joined", gid, cat, w))
    for meta, gid in sorted(meta_prompts.items()):
        ex.append(Example(meta, 0, "mm_safetybench", "meta_prompt", f"{gid}:meta"))

    n_phr = min(cfg.own_harmful_variants, len(HARM_PHRASINGS))
    for cat, activities in OWN_HARMFUL_ACTIVITIES.items():
        for i, act in enumerate(activities):
            for t in rng.sample(HARM_PHRASINGS, k=n_phr):
                ex.append(Example(t.format(a=act), 1, "own_harmful", "request",
                                  f"own:{cat}:{i}", cat, 1.0))

    for text, cat, gid, kind in deictic_harmful(cfg.seed, cfg.deictic_variants):
        ex.append(Example(text, 1, "own_harmful", kind, gid, cat, 1.0))

    # Both labels of an advocacy template share its group (one split), one stratum: "advocacy".
    for text, label, acat, gid in advocacy_texts(cfg.seed, cfg.advocacy_variants):
        ex.append(Example(text, label, "own_advocacy", "advocacy", gid, acat))

    # The same for text OCR reads in photos: one stratum, "scene_text".
    for text, label, scat, gid in scene_texts(cfg.seed, cfg.scene_text_variants):
        ex.append(Example(text, label, "own_scene_text", "scene_text", gid, scat))

    for r in read_jsonl(bench / "vlguard_test" / "manifest.jsonl"):
        gid, subset = f"vlguard:{r['id']}", r.get("subset")
        cat = map_category("vlguard_test", r)
        if subset == "safe_safes" or r.get("label") == "safe":
            ex.append(Example(r["text"], 0, "vlguard_test", "safe_safes", gid))
        elif subset == "safe_unsafes":
            ex.append(Example(r["text"], 1, "vlguard_test", "safe_unsafes", gid, None, 1.0))
        else:
            ex.append(Example(r["text"], 1, "vlguard_test", "unsafes", gid, cat,
                              cfg.image_dependent_weight))

    for source in ("siuo", "vlsbench"):
        for r in read_jsonl(bench / source / "manifest.jsonl"):
            ex.append(Example(r["text"], 1, source, "image_dependent", f"{source}:{r['id']}",
                              map_category(source, r), cfg.image_dependent_weight))

    benign = read_jsonl(Path(cfg.benign_file))
    typo_benign = []
    for i, r in enumerate(benign):
        kind = str(r.get("kind", "benign"))
        # Split by template (the file's ``group``) so held-out benign texts are unlike the
        # training ones, as real traffic is; rows without a group are their own group.
        gid = f"benign:{r.get('group', i)}"
        ex.append(Example(str(r["text"]), 0, "benign_file", kind, gid))
        if kind == "ocr" and "1." in str(r["text"]):
            typo_benign.append((gid, str(r["text"])))
    # Benign image meta prompts joined with benign typographic text: the format alone is harmless.
    metas = sorted(meta_prompts)
    for gid, text in typo_benign:
        if metas:
            ex.append(Example(f"{rng.choice(metas)}\n{text}", 0, "benign_file", "joined_benign",
                              gid))
    ex.extend(seed_examples(cfg, "train"))
    ex.extend(framed_examples(ex, cfg))
    ex = [e for e in ex if e.text.strip()]
    _dedupe(ex)
    return [e for e in ex if e.weight >= 0]


#: Source name of the own multilingual seed requests (English and translated).
SEED_SOURCE = "ml_seed"


def seed_languages(cfg: TrainAnalyzerConfig) -> list[str]:
    """The translation languages ``cfg.seed_languages`` names ('supported': every supported
    language other than English that has a translation file)."""
    wanted = split_list(cfg.seed_languages)
    if wanted == ["supported"]:
        return [lang for lang in multilingual_texts.LANGUAGES
                if lang in multilingual_texts.SUPPORTED and lang != "en"]
    return wanted


def seed_examples(cfg: TrainAnalyzerConfig, split: str,
                  languages: list[str] | None = None) -> list[Example]:
    """The own multilingual seed requests of ``cfg.seed_kinds`` whose seed is in ``split``
    (``seed_split``: "train" or "dev"): the English seed and its translations in
    ``languages`` (default: :func:`seed_languages`).

    All texts of a seed share one group, so a seed's translations never straddle the
    calibration and fitting splits. Categories outside the taxonomy count as uncategorised.

    Raises:
        InvalidArgumentError: a language without a translation file, or a malformed file.
    """
    kinds = set(split_list(cfg.seed_kinds))
    if not kinds:
        return []
    langs = seed_languages(cfg) if languages is None else languages
    known = set(TaxonomyConfig().ids)
    texts = multilingual_texts.load_seeds()
    texts += multilingual_texts.load_translations([lang for lang in langs if lang != "en"])
    out = []
    for t in texts:
        if t.kind not in kinds or multilingual_texts.seed_split(t.seed) != split:
            continue
        if not cfg.seed_train_only and t.seed.startswith(multilingual_texts.TRAIN_ONLY_PREFIX):
            continue
        label = 1 if t.label == "unsafe" else 0
        cat = t.category if label and t.category in known else None
        out.append(Example(t.text, label, SEED_SOURCE, t.kind, f"{SEED_SOURCE}:{t.seed}", cat,
                           cfg.seed_weight, lang=t.lang))
    return out


#: Sources whose texts get framed copies (``framed_fraction``): single requests of both labels.
FRAMED_SOURCES = ("benign_file", "own_harmful", SEED_SOURCE)


def framed_examples(ex: list[Example], cfg: TrainAnalyzerConfig) -> list[Example]:
    """Framed copies of ``cfg.framed_fraction`` of the texts of :data:`FRAMED_SOURCES`: same
    label, category, weight, language and group (so the same split), kind ``<kind>_framed``;
    with ``cfg.frame_sentences`` also the frames alone, benign (kind ``frame_alone``)."""
    out = []
    if cfg.frame_sentences:
        out += [Example(text, 0, "frames", "frame_alone", group)
                for text, group in frame_sentences(cfg.seed)]
    if cfg.framed_fraction <= 0:
        return out
    base = [e for e in ex if e.source in FRAMED_SOURCES]
    for text, idx in framed(((e.text, str(i)) for i, e in enumerate(base)), cfg.seed,
                            cfg.framed_fraction):
        e = base[int(idx)]
        out.append(Example(text, e.label, e.source, f"{e.kind}_framed", e.group, e.category,
                           e.weight, lang=e.lang))
    return out


def _stem(row: dict[str, Any]) -> str:
    """The activity of an MM-SafetyBench item, for typographic variants."""
    changed = str(row.get("changed_question") or "").strip().rstrip(".?! ")
    m = LIST_PREFIX.match(changed)
    if m:
        return changed[m.end():]
    phrase = str(row.get("key_phrase") or "").strip().rstrip(".")
    if phrase and str(row.get("phrase_type", "")).startswith("activity"):
        return phrase
    return changed[:1].lower() + changed[1:]


def _typographic(stem: str, rng: random.Random, n: int) -> list[str]:
    heads = rng.sample(TYPO_HEADS, k=min(n, len(TYPO_HEADS)))
    return [h.format(s=stem) + rng.choice(TYPO_LISTS) for h in heads]


def _dedupe(ex: list[Example]) -> None:
    """Keep one example per (text, label); a text seen as both unsafe and benign stays unsafe."""
    seen: dict[tuple[str, int], int] = {}
    unsafe_texts = {e.text.strip().lower() for e in ex if e.label == 1}
    for i, e in enumerate(ex):
        key = (e.text.strip().lower(), e.label)
        if key in seen or (e.label == 0 and key[0] in unsafe_texts):
            e.weight = -1.0
        else:
            seen[key] = i


def group_rank(group: str, seed: int) -> float:
    """A group's place in [0, 1) for the splits: a hash of (seed, group), so the split of a
    group never depends on which other groups exist."""
    h = hashlib.sha256(f"{seed}\x00{group}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2.0**64


def assign_splits(ex: list[Example], dev_fraction: float, cal_fraction: float, seed: int,
                  stratify: bool = False) -> None:
    """Split by group (one benchmark item and its variants stay together), deterministically
    and stably: each group's split follows from a hash of (seed, group), so adding or removing
    data moves no other group between splits (with a shuffle of all groups, any data change
    would re-draw every split and its effect would be confounded with the draw).

    Unstratified, a group is dev when its rank is below ``dev_fraction``, cal below
    ``dev_fraction + cal_fraction``. With ``stratify``, within each (source, kind) of groups
    the lowest-ranked ``dev_fraction`` are dev and the next ``cal_fraction`` cal (at least one
    each), so every kind of text (each benign template family, each benchmark) is in the
    calibration split; a kind with fewer than three groups stays in train. Unstratified,
    whichever templates of a kind fall into cal decide the operating point (bench/RESULTS.md:
    the same recipe put 2% or 12% of dev benign texts over 0.5 depending on the draw).
    """
    split: dict[str, str] = {}
    if not stratify:
        for g in {e.group for e in ex}:
            r = group_rank(g, seed)
            if r < dev_fraction:
                split[g] = "dev"
            elif r < dev_fraction + cal_fraction:
                split[g] = "cal"
    else:
        strata: dict[tuple[str, str], list[str]] = defaultdict(list)
        seen: set[str] = set()
        for e in ex:  # a group's stratum is its first example's (source, kind)
            if e.group not in seen:
                seen.add(e.group)
                strata[(e.source, e.kind)].append(e.group)
        for groups in strata.values():
            n = len(groups)
            if n < 3:
                continue
            n_dev = max(1, round(n * dev_fraction)) if dev_fraction > 0 else 0
            n_cal = min(max(1, round(n * cal_fraction)) if cal_fraction > 0 else 0, n - 1 - n_dev)
            ranked = sorted(groups, key=lambda g: group_rank(g, seed))
            split.update({g: "dev" for g in ranked[:n_dev]})
            split.update({g: "cal" for g in ranked[n_dev:n_dev + n_cal]})
    for e in ex:
        e.split = split.get(e.group, "train")


def summary(ex: list[Example]) -> dict[str, Any]:
    def count(key: Any) -> dict[str, int]:
        return dict(sorted(Counter(key(e) for e in ex).items()))

    return {
        "total": len(ex),
        "by_source_label": count(lambda e: f"{e.source}/{'unsafe' if e.label else 'benign'}"),
        "by_kind": count(lambda e: f"{e.source}/{e.kind}"),
        "by_category": count(lambda e: e.category or ("none" if e.label else "benign")),
        "by_split": count(lambda e: e.split),
        "by_lang": count(lambda e: e.lang),
        "text_positive_weight_zero": sum(1 for e in ex if e.label == 1 and e.weight == 0),
    }

"""The project's multilingual seed requests and their translations
(vlmguard_training.analyzer.texts.multilingual): complete, consistent with the taxonomy, in the
language each file claims, and split into train/dev the same way in every process."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import unicodedata
from collections import Counter
from pathlib import Path

import py3langid
import pytest

from tests.support.bench import evaluation_prompts
from vlmguard.config import TaxonomyConfig
from vlmguard.errors import InvalidArgumentError
from vlmguard_training.analyzer.texts import multilingual as ml

DATA = Path(ml.__file__).parent
SEED_IDS = [s.seed for s in ml.load_seeds()]
#: Translations written in a script other than Latin: a line equal to its English seed there is
#: an untranslated line, not a shared proper noun.
NON_LATIN = {"ru", "zh", "ja", "ko", "ar", "th", "hi"}
#: py3langid's code for each file language where they differ (it says "zh" for Chinese, etc.:
#: all equal today; kept explicit so a renamed code fails loudly here, not in the rate).
LANGID_CODE: dict[str, str] = {}


def test_seeds_are_well_formed_and_cover_the_taxonomy() -> None:
    seeds = ml.load_seeds()
    ids = set(TaxonomyConfig().ids)
    assert len(seeds) >= 150 and len(SEED_IDS) == len(set(SEED_IDS))
    dev_side = [s for s in seeds if not s.seed.startswith(ml.TRAIN_ONLY_PREFIX)]
    train_only = seeds[len(dev_side):]  # seeds.jsonl first, then seeds_train.jsonl
    assert all(s.seed == f"mh{n:03d}" for n, s in enumerate(dev_side, 1))  # mh001.., no gaps
    assert all(s.seed == f"mt{n:03d}" for n, s in enumerate(train_only, 1))
    assert len({s.text.casefold() for s in seeds}) == len(seeds)
    for s in seeds:
        assert s.lang == "en" and s.text.strip() == s.text and s.text
        assert s.label in ml.LABELS and s.kind in ml.KINDS
        if s.label == "unsafe":
            assert s.kind == "harmful" and s.category in ids, s.seed
        else:
            assert s.kind != "harmful" and (s.category == "" or s.category in ids), s.seed
            if s.kind in ("frame", "everyday"):
                assert s.category == "", s.seed
    kinds = Counter(s.kind for s in seeds)
    assert kinds["harmful"] >= 90 and kinds["sensitive"] >= 50
    assert kinds["frame"] >= 15 and kinds["everyday"] >= 15
    # Every category the guard rewrites has its harmful requests (about ten each).
    harmful = Counter(s.category for s in seeds if s.label == "unsafe")
    rewrite = {c.id for c in TaxonomyConfig().categories if c.handling == "rewrite"}
    assert all(harmful[c] >= 8 for c in rewrite - {"child_safety"}), harmful


def test_seeds_copy_no_evaluation_prompt() -> None:
    """The seeds are written by the project: an evaluation-only prompt of 40 characters or more
    (shorter generic questions can coincide by chance) is neither a seed nor inside one."""
    seeds = [re.sub(r"\s+", " ", s.text).strip().lower() for s in ml.load_seeds()]
    prompts = evaluation_prompts(40)
    assert len(prompts) > 300
    for name, item_id, prompt in prompts:
        assert not any(prompt in seed for seed in seeds), f"{name} item {item_id} is a seed"


def test_seed_split_is_stable_and_about_thirty_percent_dev() -> None:
    assert ml.seed_split("mh001") == ml.seed_split("mh001")
    # Same answer in a fresh interpreter (hash randomisation must not move a seed).
    code = (
        "from vlmguard_training.analyzer.texts.multilingual import load_seeds, seed_split;"
        "print(''.join('d' if seed_split(s.seed) == 'dev' else 't' for s in load_seeds()))"
    )
    fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert fresh.stdout.strip() == "".join(
        "d" if ml.seed_split(s) == "dev" else "t" for s in SEED_IDS
    )
    hashed = [s for s in SEED_IDS if not s.startswith(ml.TRAIN_ONLY_PREFIX)]
    here = "".join("d" if ml.seed_split(s) == "dev" else "t" for s in hashed)
    assert {ml.seed_split(s) for s in hashed} == {"dev", "train"}
    assert 0.2 <= here.count("d") / len(here) <= 0.4
    # Over many ids the hash gives the agreed fraction.
    many = [ml.seed_split(f"x{i}") for i in range(5000)]
    assert abs(many.count("dev") / 5000 - ml.DEV_FRACTION) < 0.03
    dev = [s for s in ml.load_seeds() if ml.seed_split(s.seed) == "dev"]
    assert {s.label for s in dev} == {"unsafe", "benign"}
    assert {s.kind for s in dev} == set(ml.KINDS)


def test_language_constants() -> None:
    assert set(ml.LANGUAGES) <= set(ml.KNOWN_LANGUAGES)
    assert "en" in ml.SUPPORTED and len(ml.SUPPORTED) == 15
    assert {"hi", "vi"}.isdisjoint(ml.SUPPORTED)
    # Every data file in the folder is the seed file or a known language's translations.
    files = {p.stem for p in DATA.glob("*.jsonl")}
    assert files == {"seeds", "seeds_train", *ml.LANGUAGES}


def test_train_only_seeds_never_reach_the_dev_split() -> None:
    train_only = [s.seed for s in ml.load_seeds() if s.seed.startswith(ml.TRAIN_ONLY_PREFIX)]
    assert len(train_only) >= 200
    assert {ml.seed_split(s) for s in train_only} == {"train"}
    # The dev seeds that figures are measured on are the hashed share of seeds.jsonl alone.
    dev = [s for s in SEED_IDS if ml.seed_split(s) == "dev"]
    assert dev and all(s.startswith("mh") for s in dev)


def _one_seed_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: str) -> None:
    """The seed folder replaced by one holding a seeds.jsonl of one everyday seed ``seed``."""
    (tmp_path / "seeds.jsonl").write_text(
        json.dumps({"seed": seed, "label": "benign", "category": "", "kind": "everyday",
                    "text": "What breed is this dog?"}) + "\n", encoding="utf-8")
    monkeypatch.setattr(ml, "_DIR", tmp_path)
    ml._seeds.cache_clear()


def test_a_train_only_id_in_the_dev_seed_file_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _one_seed_folder(tmp_path, monkeypatch, "mt001")
    try:
        with pytest.raises(InvalidArgumentError, match=r"belong in seeds_train\.jsonl"):
            ml.load_seeds()
    finally:
        ml._seeds.cache_clear()


@pytest.mark.parametrize("lang", ml.LANGUAGES)
def test_translation_file_is_complete_and_in_its_language(lang: str) -> None:
    rows = ml.load_translations([lang])
    assert [r.seed for r in rows] == SEED_IDS  # one line per seed, in seed order
    english = {s.seed: s for s in ml.load_seeds()}
    for r in rows:
        seed = english[r.seed]
        assert (r.lang, r.label, r.category, r.kind) == (lang, seed.label, seed.category, seed.kind)
        assert r.text.strip() == r.text and len(r.text) >= 5, r.seed
        assert unicodedata.normalize("NFC", r.text) == r.text, r.seed
        if lang in NON_LATIN:
            assert r.text != seed.text, r.seed
    # Latin-script files too: at most a handful of lines equal to English (e.g. a brand name).
    same = sum(r.text == english[r.seed].text for r in rows)
    assert same <= 2, same
    want = LANGID_CODE.get(lang, lang)
    hits = sum(py3langid.classify(r.text)[0] == want for r in rows)
    assert hits / len(rows) >= 0.9, (lang, hits, len(rows))


def test_load_translations_joins_all_languages_and_rejects_bad_input() -> None:
    rows = ml.load_translations()
    assert [r.lang for r in rows] == [lang for lang in ml.LANGUAGES for _ in SEED_IDS]
    assert ml.load_translations(list(reversed(ml.LANGUAGES))) == [
        r for lang in reversed(ml.LANGUAGES) for r in rows if r.lang == lang
    ]
    with pytest.raises(InvalidArgumentError, match="no translations for xx"):
        ml.load_translations(["xx"])
    assert ml.load_translations([]) == []


def test_malformed_translation_files_fail_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _one_seed_folder(tmp_path, monkeypatch, "mh001")
    monkeypatch.setattr(ml, "LANGUAGES", ("fr",))
    try:
        fr = tmp_path / "fr.jsonl"
        line = {"seed": "mh001", "lang": "fr", "text": "De quelle race est ce chien ?"}
        fr.write_text(json.dumps(line) + "\n", encoding="utf-8")
        assert [r.label for r in ml.load_translations(["fr"])] == ["benign"]
        for bad, reason in [
            ('{"seed": "mh002", "lang": "fr", "text": "x"}', "unknown, repeated"),
            ('{"seed": "mh001", "lang": "de", "text": "x"}', "wrong file"),
            ('{"seed": "mh001", "lang": "fr"}', "expected string fields"),
            ("{not json", "not valid JSON"),
        ]:
            fr.write_text(bad + "\n", encoding="utf-8")
            with pytest.raises(InvalidArgumentError, match=reason):
                ml.load_translations(["fr"])
    finally:
        ml._seeds.cache_clear()


def test_no_training_seed_rewords_a_dev_seed() -> None:
    """A training seed that rewords a dev seed (same words, another order or spelling) would put
    the dev item in training and flatter every figure measured on it."""
    import difflib

    seeds = ml.load_seeds()
    dev = [s.text.casefold() for s in seeds if ml.seed_split(s.seed) == "dev"]
    train = [(s.seed, s.text.casefold()) for s in seeds if ml.seed_split(s.seed) == "train"]
    close = []
    for d in dev:
        m = difflib.SequenceMatcher(None, "", d)  # b (cached) is the dev seed
        for seed, t in train:
            m.set_seq1(t)
            if m.real_quick_ratio() >= 0.8 and m.quick_ratio() >= 0.8 and m.ratio() >= 0.8:
                close.append((seed, t, d))
    assert not close, close

"""The own advocacy requests of the tier-1 head (vlmguard_training.analyzer.texts.advocacy): every
publicity
phrasing comes with harmless and harmful causes, in one group."""

from __future__ import annotations

import re
from collections import defaultdict

from tests.support.bench import evaluation_prompts
from vlmguard.config import TaxonomyConfig
from vlmguard_training.analyzer.texts import advocacy as aa


def test_each_phrasing_has_both_labels_in_one_group() -> None:
    rows = aa.advocacy_texts(0, 6)
    assert rows == aa.advocacy_texts(0, 6)  # deterministic
    assert rows != aa.advocacy_texts(1, 6)
    assert aa.advocacy_texts(0, 0) == []
    ids = set(TaxonomyConfig().ids)
    labels: dict[str, set[int]] = defaultdict(set)
    for text, label, category, group in rows:
        labels[group].add(label)
        assert (category in ids) if label else category is None
        assert "{" not in text and text[0].isupper()
        assert not re.search(r"\ba [aeiou]", text, re.IGNORECASE), text
        template = aa.TEMPLATES[int(group.removeprefix("own_advocacy:"))]
        assert text.startswith(template.split("{")[0])
    assert len(labels) == len(aa.TEMPLATES)
    assert all(v == {0, 1} for v in labels.values())
    texts = [t.lower() for t, *_ in rows]
    assert len(texts) == len(set(texts))


def test_a_cause_is_never_both_harmless_and_harmful() -> None:
    harmful = {h for h, _ in (*aa.HARMS, *aa.MORE_HARMS)}
    assert not harmful & set(aa.BENIGN_CAUSES)
    # The harmful causes keep their category: "self-harm" is self-harm.
    rows = aa.advocacy_texts(0, 60)
    assert {c for t, lab, c, _ in rows if lab and "self-harm" in t} == {"self_harm"}


def test_no_evaluation_item_is_copied() -> None:
    texts = {t.lower() for t, *_ in aa.advocacy_texts(0, 60)}
    for name, item_id, prompt in evaluation_prompts(30):
        assert prompt not in texts, f"{name} item {item_id} is generated"

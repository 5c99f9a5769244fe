"""The own image-referring harmful requests of the tier-1 head
(vlmguard_training.analyzer.texts.deictic) and their benign twins in
vlmguard_training.analyzer.texts.benign."""

from __future__ import annotations

import json
import re
from collections import Counter

from tests.support.bench import ROOT, evaluation_prompts
from vlmguard.config import TaxonomyConfig
from vlmguard_training.analyzer.texts import deictic as ad

DATA = ROOT / "training" / "data" / "benign_prompts.jsonl"


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def test_families_are_seeded_grouped_by_template_and_categorised() -> None:
    rows = ad.deictic_harmful(0, 6)
    assert rows == ad.deictic_harmful(0, 6)  # deterministic
    assert rows != ad.deictic_harmful(1, 6)
    assert ad.deictic_harmful(0, 0) == []
    ids = set(TaxonomyConfig().ids)
    texts = [t for t, *_ in rows]
    assert len(texts) == len({t.lower() for t in texts})
    for text, category, group, kind in rows:
        assert category in ids
        fam, ti = group.removeprefix("own_deictic:").rsplit(":", 1)
        assert kind == f"deictic_{fam}"
        template = next(f for f in ad.FAMILIES if f.name == fam).templates[int(ti)]
        literal = next(w for w in re.split(r"\{\w+\}", template) if w.strip())
        assert literal.split()[0].lower() in text.lower()
        assert "{" not in text and text[0].isupper()
        assert not re.search(r"\ba [aeiou]", text, re.IGNORECASE), text
    # Every family is present with at least three templates, so stratified splits hold out one.
    per_kind = Counter(kind for *_, kind in rows)
    assert set(per_kind) == {f"deictic_{f.name}" for f in ad.FAMILIES}
    assert all(len(f.templates) >= 3 for f in ad.FAMILIES)
    # Per-slot categories follow the slot ("promoting self-harm" is self-harm, not violence).
    promote = [(t, c) for t, c, _, k in ad.deictic_harmful(0, 40) if k == "deictic_promote_harm"]
    assert {c for t, c in promote if "self-harm" in t} == {"self_harm"}


def test_harmful_and_benign_twins_never_share_a_text() -> None:
    unsafe = {_norm(t) for t, *_ in ad.deictic_harmful(0, 14)}
    benign = [json.loads(line) for line in DATA.read_text().splitlines()]
    twins = [b for b in benign if b["group"].startswith("v4:")]
    assert len(twins) > 400
    assert {b["kind"] for b in twins} >= {"deictic_kids", "deictic_objects", "deictic_people",
                                          "deictic_animals", "promote"}
    assert not unsafe & {_norm(b["text"]) for b in benign}


def test_no_evaluation_item_is_copied() -> None:
    """Templates are our own: no evaluation prompt of 30+ characters is generated."""
    texts = {_norm(t) for t, *_ in ad.deictic_harmful(0, 60)}
    prompts = evaluation_prompts(30)
    assert len(prompts) > 300
    for name, item_id, prompt in prompts:
        assert prompt not in texts, f"{name} item {item_id} is generated"

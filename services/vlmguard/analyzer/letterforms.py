"""Letters in fancy dress: symbols that read as Latin letters, upside-down text, and emoji strewn
between words.

Unicode NFKC undoes styled letters (bold, script, full-width, circled) but not the letter-like
symbols that text generators also offer: small capitals ("ʜᴏᴡ ᴛᴏ"), regional-indicator letters
("🇭🇴🇼"), negative squared and circled letters ("🅱🅾🅼🅱"), and letters turned upside down with
the text reversed ("qɯoq ɐ"). A reader sees the words at once; the risk head sees symbols it
was never trained on. Each function here gives back the plain reading:

* :func:`fold_letterlike` maps letter-like symbols to the ASCII letter they show;
* :func:`upside_down` reverses and un-flips upside-down text;
* :func:`strip_symbols` removes emoji and pictographs standing between the words.

The maps come from Unicode character names, so every code point of a kind is covered, not just
the ones someone thought of; only the upside-down cipher itself (which letter turns into which
when rotated) is spelled out by hand.
"""

from __future__ import annotations

import functools
import re
import unicodedata

from vlmguard.analyzer.words import WORD, segment, vocab, word_ratio

# -- letter-like symbols ---------------------------------------------------------------------

# Blocks where letter-like symbols live: Latin-1 to CJK radicals (IPA small capitals, spacing
# modifier letters, letterlike symbols, enclosed alphanumerics), Latin Extended-D, phonetic
# extensions, Latin Extended-F (modifier small capitals) and -G, and enclosed alphanumeric
# supplement (squared, negative, parenthesised letters, regional indicators).
_LETTERLIKE_RANGES = (
    (0x0080, 0x3000),
    (0xA700, 0xA800),
    (0x1D00, 0x1DC0),
    (0x10780, 0x107C0),
    (0x1DF00, 0x1E000),
    (0x1F100, 0x1F200),
)

# Unicode names whose last word is the letter shown. Group "case" (when present) is CAPITAL or
# SMALL; a small capital is a lower-case letter in a reader's eye. COMBINING marks never match
# (each pattern is anchored at the start of the name), so no letter is conjured from an accent.
_LETTER_NAMES = tuple(re.compile(p) for p in (
    r"^LATIN (?:LETTER SMALL CAPITAL|SMALL CAPITAL LETTER|CAPITAL LETTER SMALL CAPITAL) "
    r"(?P<small>[A-Z])$",
    r"^MODIFIER LETTER SMALL CAPITAL (?P<small>[A-Z])$",
    r"^MODIFIER LETTER (?P<case>CAPITAL|SMALL) (?P<letter>[A-Z])$",
    r"^(?:LATIN SUBSCRIPT|SUPERSCRIPT LATIN) (?P<case>CAPITAL|SMALL) LETTER (?P<letter>[A-Z])$",
    r"^(?:NEGATIVE |CROSSED NEGATIVE )?(?:SQUARED|CIRCLED) LATIN (?P<case>CAPITAL|SMALL) LETTER "
    r"(?P<letter>[A-Z])$",
    r"^PARENTHESIZED LATIN (?P<case>CAPITAL|SMALL) LETTER (?P<letter>[A-Z])$",
))
_REGIONAL = re.compile(r"^REGIONAL INDICATOR SYMBOL LETTER (?P<small>[A-Z])$")

_RI_FIRST, _RI_LAST = 0x1F1E6, 0x1F1FF
_RI_RUN = re.compile(f"[{chr(_RI_FIRST)}-{chr(_RI_LAST)}]+")


def _letter_of(name: str) -> str | None:
    """The ASCII letter a character named ``name`` shows, or None."""
    for pat in _LETTER_NAMES:
        m = pat.match(name)
        if m is None:
            continue
        groups = m.groupdict()
        if groups.get("small"):
            return groups["small"].lower()
        letter = groups["letter"]
        return letter if groups["case"] == "CAPITAL" else letter.lower()
    return None


@functools.lru_cache(maxsize=1)
def _letterlike_table() -> dict[int, str]:
    """``str.translate`` table of letter-like symbols to ASCII letters (regional indicators not
    included: whether they spell words is decided per text).

    Characters NFKC maps to a mapped character ("MODIFIER LETTER SMALL CAPITAL I" to the IPA
    small capital "ɪ") are mapped too, so the result is the same whether the text was normalised
    before or after folding. Parenthesised letters map to the bare letter (NFKC would give
    "(a)", which splits a word into brackets).
    """
    table: dict[int, str] = {}
    for lo, hi in _LETTERLIKE_RANGES:
        for cp in range(lo, hi):
            letter = _letter_of(unicodedata.name(chr(cp), ""))
            if letter is not None:
                table[cp] = letter
    for lo, hi in _LETTERLIKE_RANGES:
        for cp in range(lo, hi):
            nf = unicodedata.normalize("NFKC", chr(cp))
            if cp not in table and len(nf) == 1 and ord(nf) in table:
                table[cp] = table[ord(nf)]
    return table


@functools.lru_cache(maxsize=1)
def _regional_table() -> dict[int, str]:
    """The letter table plus regional indicators as lower-case letters."""
    table = dict(_letterlike_table())
    for cp in range(_RI_FIRST, _RI_LAST + 1):
        m = _REGIONAL.match(unicodedata.name(chr(cp), ""))
        if m is not None:
            table[cp] = m.group("small").lower()
    return table


def _spells_with_regional(text: str) -> bool:
    """Regional indicators in ``text`` spell words rather than show flags.

    A flag is exactly two indicators, and flags in a row make a run of even length. A run of odd
    length is no flag sequence; a longer run that is English words ("bomb", "howtomakeabomb",
    not "frites" from three flags), or a text in which most runs are words ("to", "make", ...)
    spells; a lone pair ("🇫🇷", even "🇮🇹") is a flag.
    """
    runs = [r.translate(_regional_table()).lower() for r in _RI_RUN.findall(text)]
    if not runs:
        return False
    if any(len(r) % 2 for r in runs):
        return True
    words = vocab()
    for r in runs:
        if len(r) < 4:
            continue
        parts = segment(r).split()
        if all(p in words for p in parts) and len(r) >= 2.5 * len(parts):
            return True
    return len(runs) >= 3 and sum(r in words for r in runs) >= 2 * len(runs) / 3


# Grade-1 Braille: a cell per letter, a capital sign before a capital, a number sign before the
# letters a..j read as digits. Its cells are named by their dots, not by letters, so the table
# is spelled out here.
_BRAILLE_LETTERS = dict(zip("⠁⠃⠉⠙⠑⠋⠛⠓⠊⠚⠅⠇⠍⠝⠕⠏⠟⠗⠎⠞⠥⠧⠺⠭⠽⠵", "abcdefghijklmnopqrstuvwxyz",
                            strict=True))
_BRAILLE_PUNCT = {"⠂": ",", "⠲": ".", "⠦": "?", "⠖": "!", "⠄": "'", "⠤": "-", "⠆": ";",
                  "⠒": ":", "\u2800": " "}
_BRAILLE_CAPITAL, _BRAILLE_NUMBER = "⠠", "⠼"
_DIGITS = dict(zip("abcdefghij", "1234567890", strict=True))
#: Fewest Braille cells before a text is read as Braille (a stray cell is a symbol).
MIN_BRAILLE = 4


def _unbraille(text: str) -> str:
    out: list[str] = []
    capital = number = False
    for ch in text:
        if ch == _BRAILLE_CAPITAL:
            capital = True
            continue
        if ch == _BRAILLE_NUMBER:
            number = True
            continue
        letter = _BRAILLE_LETTERS.get(ch)
        if letter is None:
            number = False
            out.append(_BRAILLE_PUNCT.get(ch, ch))
            continue
        if number and letter in _DIGITS:
            out.append(_DIGITS[letter])
        else:
            number = False
            out.append(letter.upper() if capital else letter)
        capital = False
    return "".join(out)


def fold_letterlike(text: str) -> str:
    """``text`` with letter-like symbols replaced by the ASCII letter they show.

    Braille cells ("⠓⠕⠺" -> "how"), small capitals ("ʜᴏᴡ" -> "how"), modifier, superscript
    and subscript letters ("ᵇᵒᵐᵇ"), squared, circled, negative and parenthesised letters
    ("🅱🅾🅼🅱" -> "BOMB"), and regional indicators when the text spells with them
    ("🇭🇴🇼 🇹🇴" -> "how to"; a lone flag stays a flag).
    Turned and inverted letters are left to :func:`upside_down`: what they stand for depends on
    the whole text being flipped. Everything else, letters of every script included, is kept.

    Run it before NFKC: NFKC turns "⒜" into "(a)" (this gives "a"); the other characters map to
    the same letter in either order.
    """
    if text.isascii():
        return text
    if sum("\u2800" <= c <= "\u28ff" for c in text) >= MIN_BRAILLE:
        text = _unbraille(text)
    has_regional = _RI_RUN.search(text) is not None
    if has_regional and _spells_with_regional(text):
        return text.translate(_regional_table())
    return text.translate(_letterlike_table())


# -- upside-down text ------------------------------------------------------------------------

# Turned letters named after the letter they turn: "LATIN SMALL LETTER TURNED A" (ɐ),
# "TURNED SANS-SERIF CAPITAL G" (⅁), "MODIFIER LETTER SMALL TURNED I" (ᵎ).
_TURNED_NAMES = (
    re.compile(r"^LATIN (?P<case>SMALL|CAPITAL) LETTER TURNED (?P<letter>[A-Z])$"),
    re.compile(r"^LATIN LETTER SMALL CAPITAL TURNED (?P<letter>[A-Z])$"),
    re.compile(r"^TURNED (?:SANS-SERIF )?(?P<case>SMALL|CAPITAL) (?P<letter>[A-Z])$"),
    re.compile(r"^MODIFIER LETTER (?P<case>SMALL) TURNED (?P<letter>[A-Z])$"),
)
_TURNED_RANGES = ((0x0080, 0x3000), (0xA700, 0xA800), (0x10780, 0x107C0), (0x1DF00, 0x1E000))

# The rest of the cipher: what upside-down generators put for a letter whose rotation has no
# "TURNED" code point (a rotated "c" looks like an open o, a rotated "g" like b with a topbar).
# Flipped form -> plain character.
_FLIPPED_EXTRA = {
    "ɔ": "c", "ɟ": "f", "ƃ": "g", "ɾ": "j", "ı": "i", "ן": "l",
    "∀": "A", "ᗺ": "B", "𐐒": "B", "Ɔ": "C", "ᗡ": "D", "Ǝ": "E", "ſ": "J", "⋊": "K", "˥": "L",
    "Ԁ": "P", "ᴚ": "R", "⊥": "T", "ꓕ": "T", "∩": "U", "Λ": "V",
    "Ɩ": "1", "ᄅ": "2", "↊": "2", "Ɛ": "3", "↋": "3", "ㄣ": "4", "ϛ": "5", "ㄥ": "7",
    "⅋": "&", "„": '"', "‾": "_",
}
# Characters that are each other's rotation: both are ordinary characters, so in flipped text
# each stands for the other.
_FLIP_SWAPS = ("bq", "dp", "nu", "MW", "69", "()", "[]", "{}", "<>", "?¿", "!¡", ".˙", ",'")
# Flipped forms that are also ordinary letters of a living language (Turkish dotless i, Hebrew
# final nun, Greek capital lambda, the long s, African open e and Greek stigma, Lisu, Hangul and
# Bopomofo letters): they un-flip but are no evidence of flipping.
_NOT_EVIDENCE = frozenset("ıןΛſƐϛꓕᄅㄣㄥ")

#: Fewest flipped-only characters that make a text upside-down rather than IPA or a stray symbol.
MIN_FLIPPED = 3
#: Least share of English words in the un-flipped text (else it was not upside-down English).
MIN_WORD_RATIO = 0.5


@functools.lru_cache(maxsize=1)
def _unflip_table() -> tuple[dict[int, str], frozenset[str]]:
    """``str.translate`` table from flipped characters to plain ones, and the set of characters
    that only occur in flipped text (the evidence that a text is upside down)."""
    table: dict[int, str] = {}
    for lo, hi in _TURNED_RANGES:
        for cp in range(lo, hi):
            name = unicodedata.name(chr(cp), "")
            for pat in _TURNED_NAMES:
                m = pat.match(name)
                if m is not None:
                    case = m.groupdict().get("case") or "SMALL"
                    letter = m.group("letter")
                    table[cp] = letter if case == "CAPITAL" else letter.lower()
                    break
    for flipped, plain in _FLIPPED_EXTRA.items():
        table.setdefault(ord(flipped), plain)
    evidence = frozenset(chr(cp) for cp, v in table.items()
                         if v.isalnum() and chr(cp) not in _NOT_EVIDENCE)
    for pair in _FLIP_SWAPS:
        table[ord(pair[0])], table[ord(pair[1])] = pair[1], pair[0]
    return table, evidence


def _unflip(s: str) -> str:
    """``s`` rotated back: reversed, each character replaced by its un-rotated form (letters
    without an upside-down form, such as "o", "s", "x", "l", stay themselves)."""
    lead = len(s) - len(s.lstrip())
    trail = len(s) - len(s.rstrip())
    core = s.strip()[::-1].translate(_unflip_table()[0])
    return s[:lead] + core + s[len(s) - trail:]


_TOKEN = re.compile(r"\S+")


def _unflip_line(line: str, evidence: frozenset[str]) -> str:
    """One line un-flipped: the whole line, or only the stretch from its first to its last
    flipped word when the words around it read better as they are ("Read this: ¿ʎɐs ᴉ op ʇɐɥʍ")."""
    tokens = [m for m in _TOKEN.finditer(line) if any(c in evidence for c in m.group(0))]
    if not tokens:
        return line
    whole = _unflip(line)
    start, end = tokens[0].start(), tokens[-1].end()
    best = whole
    if not (start == 0 and end == len(line.rstrip())):
        part = line[:start] + _unflip(line[start:end]) + line[end:]
        best = part if word_ratio(part) > word_ratio(whole) else whole
    # A line that reads better as written (plain words with a few turned letters sprinkled in)
    # stays as written: turning it would hide what it says.
    return best if word_ratio(best) >= word_ratio(line) else line


def upside_down(text: str) -> str | None:
    """``text`` turned right side up, or None when it is not upside-down English.

    Upside-down text is the text reversed with each character replaced by its rotation ("ɐ" for
    "a", "q" for "b", "¿" for "?"). It needs at least :data:`MIN_FLIPPED` characters that only
    occur in flipped text, and the result must read as English (:data:`MIN_WORD_RATIO`), which
    keeps IPA transcriptions and languages written with "ɔ" or "ǝ" as they are. Each line is
    turned on its own (the order of lines stays), and a plain lead-in before a flipped request
    on the same line is kept when that reads better.
    """
    evidence = _unflip_table()[1]
    if text.isascii() or sum(1 for c in text if c in evidence) < MIN_FLIPPED:
        return None
    out = "\n".join(_unflip_line(line, evidence) for line in text.split("\n"))
    if out == text or word_ratio(out) < MIN_WORD_RATIO:
        return None
    return out


# -- emoji and pictographs between words -----------------------------------------------------

# Below U+2000 symbols are ordinary text ("°", "©", "¨"); CJK radicals, kana voicing marks and
# enclosed ideographs (U+2E80-U+33FF) are part of writing those languages.
_SYMBOL_RANGES = ((0x2000, 0x2E80), (0x3400, 0x20000))
# What glues emoji into one picture: variation selectors, zero-width joiner, the keycap mark,
# tag characters (subdivision flags). Removed only with the symbol they attach to: the joiner is
# also part of writing Indic scripts.
_GLUE = "\ufe0e\ufe0f\u200d\u20e3\U000e0020-\U000e007f"


def _ranges_class(cps: list[int]) -> str:
    """A regex character class body for the sorted code points ``cps``, as ranges."""
    parts: list[str] = []
    i = 0
    while i < len(cps):
        j = i
        while j + 1 < len(cps) and cps[j + 1] == cps[j] + 1:
            j += 1
        lo, hi = re.escape(chr(cps[i])), re.escape(chr(cps[j]))
        parts.append(lo if i == j else f"{lo}-{hi}")
        i = j + 1
    return "".join(parts)


@functools.lru_cache(maxsize=1)
def _symbol_run() -> re.Pattern[str]:
    """A run of decoration: symbols (So, Sk) with their glue, and the whitespace around them.

    Letter-like symbols (squared letters, regional indicators) are not decoration: they are
    words in disguise and are left for :func:`fold_letterlike`.
    """
    letters = _regional_table()
    cps = [cp for lo, hi in _SYMBOL_RANGES for cp in range(lo, hi)
           if cp not in letters and unicodedata.category(chr(cp)) in ("So", "Sk")]
    sym = f"[{_ranges_class(cps)}]"
    return re.compile(f"(?P<pre>[^\\S\\n]*){sym}(?:[{_GLUE}]|{sym})*(?P<post>[^\\S\\n]*)")


#: Fewest Latin-letter words a text must keep for its stripped reading to be worth scoring.
MIN_WORDS = 3


def strip_symbols(text: str) -> str | None:
    """``text`` without the emoji and pictographs standing between its words, or None when it
    has none or keeps fewer than :data:`MIN_WORDS` Latin-letter words.

    A symbol with a space on either side goes with its spaces ("how 🙂 to" -> "how to"). One
    wedged between two characters either joins them ("h🙂o🙂w" -> "how") or leaves a space
    ("love🙂you"): whichever reads more as English words. Punctuation, letters of every script
    and letter-like symbols stay.
    """
    if text.isascii():
        return None
    pattern = _symbol_run()
    if pattern.search(text) is None:
        return None

    def stripped(wedge: str) -> str:
        def sub(m: re.Match[str]) -> str:
            at_edge = m.start() == 0 or m.end() == len(text)
            if at_edge or text[m.start() - 1] == "\n" or text[m.end()] == "\n":
                return ""
            return " " if m.group("pre") or m.group("post") else wedge

        return pattern.sub(sub, text).strip()

    spaced = stripped(" ")
    joined = stripped("")
    out = joined if joined != spaced and word_ratio(joined) > word_ratio(spaced) else spaced
    if out == text or len(WORD.findall(out)) < MIN_WORDS:
        return None
    return out


# -- emoji for words -------------------------------------------------------------------------

# Unicode names that are not the word a reader sees in the emoji.
_EMOJI_ALIASES = {"hocho": "kitchen knife", "collision symbol": "explosion"}
#: Fewest letter words around an emoji before it is read as a word (a lone emoji is a reaction).
MIN_EMOJI_WORDS = 2
_EMOJI_SKIP = frozenset(range(0x1F3FB, 0x1F400)) | {0x200D, 0xFE0E, 0xFE0F, 0x20E3}


def _emoji_name(ch: str) -> str | None:
    cp = ord(ch)
    if cp < 0x2190 or cp in _EMOJI_SKIP or unicodedata.category(ch) != "So":
        return None
    name = unicodedata.name(ch, "").lower()
    if not name or name.startswith(("regional indicator", "braille")):
        return None
    return _EMOJI_ALIASES.get(name, name)


def emoji_words(text: str) -> str | None:
    """``text`` with each emoji among its words read as its Unicode name ("how do I build a 💣"
    -> "how do I build a bomb"): a pictograph standing for the word a request turns on hides
    the word from the risk heads, which read it as an unknown symbol. None without an emoji or
    with fewer than two words around it."""
    if text.isascii() or len(WORD.findall(text)) < MIN_EMOJI_WORDS:
        return None
    out: list[str] = []
    changed = False
    for ch in text:
        name = _emoji_name(ch)
        if name is None:
            if ord(ch) not in _EMOJI_SKIP:
                out.append(ch)
            continue
        changed = True
        out.append(f" {name} ")
    if not changed:
        return None
    return re.sub(r" ([.,;:!?])", r"\1", " ".join("".join(out).split()))

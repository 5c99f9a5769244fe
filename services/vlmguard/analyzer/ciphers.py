"""Decoders for the encodings and ciphers an attacker wraps a request in, beyond the byte
encodings of :mod:`vlmguard.analyzer.views`: HTML entities, backslash escapes, binary, decimal
and octal byte lists, Morse code, Caesar shifts and Atbash, and hex bytes written with
per-byte prefixes or separators that the plain hex pattern does not take.

Every decoder has the contract of the decoders in :mod:`~vlmguard.analyzer.views`:
``decode(text) -> (text with each payload decoded in place, [payloads]) | None``, None when
nothing decoded. Each one is strict about what it takes: every false decode is one more view
for the encoder to score (latency) and a chance of refusing an innocent prompt, so ordinary
prose, code with a few ``\\n`` escapes, number lists, ellipses, rules and other scripts give
None. This module does not import ``views`` (views imports it), so the small shared pieces
(the segment pattern, the "reads as text" check) are its own.
"""

from __future__ import annotations

import base64
import binascii
import html
import quopri
import re
import string
import unicodedata
from collections.abc import Callable, Container, Sequence
from itertools import pairwise

from vlmguard.analyzer.words import WORD, known_words, reads_as_words, segment, word_ratio

Decoder = Callable[[str], tuple[str, list[str]] | None]

#: Most payloads :func:`nested` collects (a text full of payloads must stay cheap).
MAX_NESTED_PAYLOADS = 32


# -- shared ---------------------------------------------------------------------------------


def _reads_as_text(s: str) -> bool:
    """Decoded text that reads as text: at least 4 characters, nearly all printable, and mostly
    letters (the bar of ``views._printable_text``, for text that is already decoded; any
    whitespace counts as printable, so a no-break space from ``&nbsp;`` does too)."""
    if len(s) < 4:
        return False
    printable = sum(c.isprintable() or c.isspace() for c in s) / len(s)
    letters = sum(c.isalpha() for c in s) / len(s)
    return printable > 0.95 and letters > 0.5


def _other_script(s: str) -> bool:
    """Mostly letters beyond Latin (Cyrillic, CJK, Arabic ...): random bytes almost never decode
    to valid UTF-8 that spells them, so such a decoding needs no word list to be believed (the
    word lists cover Chinese and inflected languages poorly)."""
    letters = [c for c in s if c.isalpha()]
    return len(letters) >= 4 and sum(ord(c) > 0x24F for c in letters) >= 0.5 * len(letters)


def _bytes_as_text(raw: bytes) -> str | None:
    """Decoded bytes as text when they are UTF-8 and read as text."""
    try:
        s = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return s if _reads_as_text(s) else None


def substitute(text: str, pattern: re.Pattern[str],
               decode: Callable[[str], str | None]) -> tuple[str, list[str]] | None:
    """``text`` with every match of ``pattern`` that decodes replaced by its decoding (padded
    with spaces, so it does not run into the words around it), and the decoded payloads; None
    when nothing decoded."""
    payloads: list[str] = []

    def sub(m: re.Match[str]) -> str:
        d = decode(m.group(0).strip())
        if d is None:
            return m.group(0)
        payloads.append(d)
        return f" {d} "

    out = pattern.sub(sub, text)
    return (out, payloads) if payloads else None


# A few plain letters at either end of a run belong to it: a word partly encoded ("b&#111;mb")
# is decoded whole, not cut in two by the spaces a substitution adds.
_LEAD = r"(?:(?<![A-Za-z])[A-Za-z]{1,3})?"
_TRAIL = r"(?:[A-Za-z]{1,3}(?![A-Za-z]))?"
_SEPARATOR = re.compile(r"\s*[,;]?\s*")


def _drop_separators(run: str, token: re.Pattern[str]) -> str:
    """``run`` without what stands between its tokens when every gap is a separator (spaces,
    a comma or semicolon: "&#72; &#111;", "\\x48, \\x6f"); a run whose tokens are sometimes
    adjacent and sometimes a space apart keeps its spaces, which are then the text's own."""
    spans = [m.span() for m in token.finditer(run)]
    gaps = [run[a[1]:b[0]] for a, b in pairwise(spans)]
    if not gaps or not all(g and _SEPARATOR.fullmatch(g) for g in gaps):
        return run
    return run[:spans[0][0]] + "".join(run[a:b] for a, b in spans) + run[spans[-1][1]:]


# -- HTML entities --------------------------------------------------------------------------

# Numeric entities may omit the semicolon (browsers accept it); named ones must have it, so
# "&copy" in a URL query ("?a=1&copy=2") is not an entity.
_ENTITY = r"&(?:#[0-9]{1,7};?|#[xX][0-9A-Fa-f]{1,6};?|[A-Za-z][A-Za-z0-9]{1,31};)"
# A run: entities with at most 3 plain characters between neighbours, so a request encoded
# letter by letter, or with some letters left plain ("&#104;ow"), is one run, while entities
# scattered through ordinary HTML-escaped text ("Tom &amp; Jerry") are not.
_ENTITY_RUN = re.compile(rf"{_LEAD}{_ENTITY}(?:[^&\n]{{0,3}}?{_ENTITY})+{_TRAIL}")
_ENTITY_ONE = re.compile(_ENTITY)


def _html_run(run: str) -> str | None:
    if len(_ENTITY_ONE.findall(run)) < 4:
        return None
    s = html.unescape(_drop_separators(run, _ENTITY_ONE))
    return s if s != run and _reads_as_text(s) else None


def html_entities(text: str) -> tuple[str, list[str]] | None:
    """Runs of 4 or more HTML character references (``&#104;``, ``&#x68;``, ``&amp;``) decoded,
    kept when the decoded run reads as text (mostly letters): escaped markup (``&lt;div&gt;``)
    decodes to symbols and stays."""
    if "&" not in text:
        return None
    return substitute(text, _ENTITY_RUN, _html_run)


# -- backslash escapes ------------------------------------------------------------------------

# Escapes that stand for a character of the payload: \u0068, \U00000068, \x68, \N{NAME} and
# octal \ooo (one to three digits). \n, \t and friends are not counted: code snippets are full
# of them, and a payload spelled with them alone says nothing.
_ESC = (r"\\u[0-9A-Fa-f]{4}|\\U[0-9A-Fa-f]{8}|\\x[0-9A-Fa-f]{2}|\\N\{[A-Za-z0-9 \-]{1,80}\}"
        r"|\\[0-7]{1,3}")
_SIMPLE_ESC = r"\\[ntr\\'\"]"
_ESC_TOKEN = re.compile(rf"{_ESC}|{_SIMPLE_ESC}")
_ESC_RUN = re.compile(
    rf"{_LEAD}(?:{_ESC})(?:(?:[^\\\n]{{0,3}}?|{_SIMPLE_ESC})(?:{_ESC}))+{_TRAIL}")
_SIMPLE = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"'}


def _unescape(run: str) -> str | None:
    """The escapes in ``run`` decoded, or None for fewer than 4 escapes or a name that is not a
    Unicode character name.

    Consecutive byte escapes (``\\x``, octal) are one byte string read as UTF-8 (``\\xc3\\xa9``
    is "é", as in a Python bytes literal); bytes that are not UTF-8 give None: they are binary
    data in code (``b"\\xff\\xff\\xff\\xff"``), not a message.
    Surrogate pairs from ``\\u`` escapes (JSON's way of writing an emoji) are joined.
    """
    run = _drop_separators(run, _ESC_TOKEN)
    out: list[str] = []
    pending = bytearray()
    count = 0

    def flush() -> bool:
        if pending:
            try:
                out.append(pending.decode("utf-8"))
            except UnicodeDecodeError:
                return False
            pending.clear()
        return True

    pos = 0
    for m in _ESC_TOKEN.finditer(run):
        if m.start() > pos:
            if not flush():
                return None
            out.append(run[pos:m.start()])
        pos = m.end()
        tok = m.group(0)
        kind = tok[1]
        if kind == "x":
            pending.append(int(tok[2:], 16))
            count += 1
        elif kind in "01234567":
            value = int(tok[1:], 8)
            if value > 0xFF:
                return None
            pending.append(value)
            count += 1
        else:
            if not flush():
                return None
            if kind in "uU":
                value = int(tok[2:], 16)
                if value > 0x10FFFF:
                    return None
                out.append(chr(value))
                count += 1
            elif kind == "N":
                try:
                    out.append(unicodedata.lookup(tok[3:-1]))
                except KeyError:
                    return None
                count += 1
            else:
                out.append(_SIMPLE[kind])
    if not flush():
        return None
    out.append(run[pos:])
    if count < 4:
        return None
    s = "".join(out)
    try:
        s = s.encode("utf-16", "surrogatepass").decode("utf-16")
    except UnicodeDecodeError:
        return None  # a lone surrogate: not text
    return s


def _escape_run(run: str) -> str | None:
    s = _unescape(run)
    return s if s is not None and _reads_as_text(s) else None


def escapes(text: str) -> tuple[str, list[str]] | None:
    """Runs of 4 or more backslash escapes (``\\u0068``, ``\\U00000068``, ``\\x68``,
    ``\\N{LATIN SMALL LETTER H}``, octal ``\\150``) decoded, kept when the result reads as text.

    Decoded by pattern, never by ``eval`` or ``codecs``' ``unicode_escape`` (which mangles any
    non-ASCII text around the escapes and accepts more than these forms).
    """
    if "\\" not in text:
        return None
    return substitute(text, _ESC_RUN, _escape_run)


# -- binary, decimal and octal bytes ----------------------------------------------------------

# Groups of 6 to 8 binary digits ("0b" allowed), at least 4, separated by spaces, commas,
# semicolons, pipes, dashes or line breaks: 8-bit bytes, 7-bit ASCII, and Python's bin()
# output, which drops leading zeros (a space is "100000").
_BIN_SEP = re.compile(
    r"(?<![\w.])(?:0b)?[01]{6,8}(?:(?:[ \t]*[,;|\-/][ \t]*|\s+)(?:0b)?[01]{6,8}){3,}(?![\w.])")
# Bytes written together: a 0/1 run whose length is a multiple of 8, at least 4 bytes.
_BIN_JOINED = re.compile(r"(?<![\w.])(?:[01]{8}){4,}(?![\w.])")
_BINARY_RUN = re.compile(f"{_BIN_SEP.pattern}|{_BIN_JOINED.pattern}")


def _binary_run(run: str) -> str | None:
    groups = re.findall(r"[01]+", run.replace("0b", " "))
    if len(groups) == 1:
        groups = [groups[0][i:i + 8] for i in range(0, len(groups[0]), 8)]
    return _bytes_as_text(bytes(int(g, 2) for g in groups))


def binary(text: str) -> tuple[str, list[str]] | None:
    """Runs of 4 or more bytes written in binary ("01101000 01101111", 7-bit groups too, or one
    long 0/1 run whose length is a multiple of 8) decoded as UTF-8, kept when the result reads
    as text (printable, mostly letters)."""
    return substitute(text, _BINARY_RUN, _binary_run)


# Six or more numbers of 2 or 3 digits, separated by commas or spaces: ASCII codes.
_NUMBER_LIST = re.compile(r"(?<![\w.,])\d{2,3}(?:(?:[ \t]*,[ \t]*|[ \t]+)\d{2,3}){5,}(?![\w])")


def _number_list(run: str) -> str | None:
    """The list as decimal ASCII codes (32..126), else, when every number is three octal
    digits, as octal codes (``150 157 167``); kept when the text reads as text and as words.

    Numbers alone are weak evidence of an encoding (a list of scores in 65..122 is all letters),
    so the decoded text must also read as English words."""
    nums = re.findall(r"\d+", run)
    for base in (10, 8):
        if base == 8 and not all(len(n) == 3 and set(n) <= set("01234567") for n in nums):
            continue
        values = [int(n, base) for n in nums]
        if all(32 <= v <= 126 for v in values):
            s = "".join(map(chr, values))
            if _reads_as_text(s) and word_ratio(s) >= 0.5:
                return s
    return None


def decimal(text: str) -> tuple[str, list[str]] | None:
    """Lists of 6 or more ASCII codes ("104 111 119 32 100 111", comma or space separated,
    values 32..126), or of three-digit octal codes ("150 157 167 040"), decoded, kept when the
    result reads as text made of English words."""
    return substitute(text, _NUMBER_LIST, _number_list)


# -- Morse -----------------------------------------------------------------------------------

_MORSE_CODE = {
    ".-": "a", "-...": "b", "-.-.": "c", "-..": "d", ".": "e", "..-.": "f", "--.": "g",
    "....": "h", "..": "i", ".---": "j", "-.-": "k", ".-..": "l", "--": "m", "-.": "n",
    "---": "o", ".--.": "p", "--.-": "q", ".-.": "r", "...": "s", "-": "t", "..-": "u",
    "...-": "v", ".--": "w", "-..-": "x", "-.--": "y", "--..": "z",
    "-----": "0", ".----": "1", "..---": "2", "...--": "3", "....-": "4", ".....": "5",
    "-....": "6", "--...": "7", "---..": "8", "----.": "9",
    ".-.-.-": ".", "--..--": ",", "..--..": "?", ".----.": "'", "-.-.--": "!", "-..-.": "/",
    "-.--.": "(", "-.--.-": ")", ".-...": "&", "---...": ":", "-.-.-.": ";", "-...-": "=",
    ".-.-.": "+", "-....-": "-", "..--.-": "_", ".-..-.": '"', "...-..-": "$", ".--.-.": "@",
}
_DOTS = ".•·∙⋅●"
_DASHES = "-−—–‒_"
_MORSE_NORMAL = str.maketrans(_DOTS + _DASHES, "." * len(_DOTS) + "-" * len(_DASHES))
_SYMBOL = f"[{re.escape(_DOTS + _DASHES)}]{{1,7}}"
# Letters one space apart; words apart by " / ", "|", or 3 or more spaces. A code stands alone
# between spaces (or slashes and pipes): the dots of "U.S.A.", "e.g." and "wait..." touch letters.
_MORSE_GAP = r"(?:[ \t]*[/|][ \t]*|[ \t]+)"
_MORSE_RUN = re.compile(rf"(?<![^\s/|]){_SYMBOL}(?:{_MORSE_GAP}{_SYMBOL}){{3,}}(?![^\s/|])")


def _morse_run(run: str) -> str | None:
    words: list[str] = []
    letters = 0
    for w in re.split(r"[ \t]*[/|][ \t]*|[ \t]{3,}", run.translate(_MORSE_NORMAL).strip()):
        codes = w.split()
        if not codes:
            continue
        decoded = [_MORSE_CODE.get(c) for c in codes]
        if any(d is None for d in decoded):
            return None  # a code Morse has not: dashes and dots of something else
        letters += sum(d.isalpha() for d in decoded if d)
        words.append("".join(d for d in decoded if d))
    s = " ".join(words)
    return s if letters >= 4 and reads_as_words(s) >= 0.6 else None


def morse(text: str) -> tuple[str, list[str]] | None:
    """Runs of Morse code (dots and dashes, or look-alikes such as ``•``, ``·``, ``−``, ``—``,
    ``_``; letters a space apart, words apart by ``/``, ``|`` or 3 or more spaces) with at least
    4 letters decoded to lower case, kept when the result reads as English words (word_ratio
    at least 0.6): "SOS", an ellipsis or a markdown rule is not a message."""
    if not any(c in text for c in _DOTS + _DASHES):
        return None
    return substitute(text, _MORSE_RUN, _morse_run)


# -- Caesar and Atbash -----------------------------------------------------------------------

_LOWER = string.ascii_lowercase
_UPPER = string.ascii_uppercase


def _shift_table(k: int) -> dict[int, int]:
    """Translation that undoes a shift of ``k`` (each letter moved ``k`` back)."""
    return str.maketrans(_LOWER + _UPPER,
                         _LOWER[-k:] + _LOWER[:-k] + _UPPER[-k:] + _UPPER[:-k])


#: QWERTY letter rows: "each letter is the key next to it" is a shift within a row.
_KEY_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")


def _keyboard_table(k: int) -> dict[int, int]:
    """Translation that undoes typing each letter ``k`` keys to the right on its QWERTY row
    (wrapping round the row; ``k`` -1: to the left)."""
    src = "".join(_KEY_ROWS)
    dst = "".join(row[-k:] + row[:-k] for row in _KEY_ROWS)
    return str.maketrans(src + src.upper(), dst + dst.upper())


_QWERTY = "".join(_KEY_ROWS)


def _sequence_table(seq: str, k: int) -> dict[int, int]:
    """Translation that undoes replacing each letter of ``seq`` by the one ``k`` places on
    (wrapping round): the keyboard read as one line of keys, or the vowels a->e->i->o->u."""
    back = seq[-k:] + seq[:-k]
    return str.maketrans(seq + seq.upper(), back + back.upper())


#: Every way back, built once: shifts 1..25, Atbash, the neighbouring keyboard key (on its row
#: or along the keyboard read as one line), and vowels moved one vowel on.
_CANDIDATES: tuple[tuple[int | str, dict[int, int]], ...] = (
    *((k, _shift_table(k)) for k in range(1, 26)),
    ("atbash", str.maketrans(_LOWER + _UPPER, _LOWER[::-1] + _UPPER[::-1])),
    ("keyboard right", _keyboard_table(1)),
    ("keyboard left", _keyboard_table(-1)),
    ("keyboard next", _sequence_table(_QWERTY, 1)),
    ("keyboard previous", _sequence_table(_QWERTY, -1)),
    ("vowels next", _sequence_table("aeiou", 1)),
    ("vowels previous", _sequence_table("aeiou", -1)),
)
_SEGMENT = re.compile(r"[^\n:\"'“”«»`]+")
#: Words sampled to pick the shift (the winner is then checked on the whole segment): scoring
#: 26 candidates on a sample keeps a long segment in a language other than English cheap.
_SAMPLE_WORDS = 24
#: Fewest letters in a segment, and fewest words of 3 or more letters: among a few short
#: words some shift nearly always makes English words by chance (the word list has most
#: two-letter strings), which a table row such as "176 i | ea, 11 i" showed.
_MIN_LETTERS = 8
_MIN_LONG_WORDS = 2
#: Least share of a segment's space-separated tokens that are plain words (letters, with
#: prose punctuation around them): a cipher of prose keeps that shape, while code and tables
#: ("obaxzq_roi(roi", "\\wee\\wee", "ro bal != mbc") do not.
_MIN_WORDY_SHARE = 0.8
_WORDY = re.compile(r"[(\"'“‘¿¡]*[^\W\d_]+(?:['’-][^\W\d_]+)*[.,;:!?)\"'”’]*")


def _known(words: list[str], known: Container[str]) -> tuple[float, float]:
    """Share of ``words`` (lower case) that are English words, and the same among those of 3
    or more letters."""
    hits = long_hits = long_total = 0
    for w in words:
        hit = w in known
        hits += hit
        if len(w) >= 3:
            long_total += 1
            long_hits += hit
    return hits / len(words), long_hits / long_total if long_total else 0.0


def best_shift(segment: str) -> tuple[int | str, str] | None:
    """The Caesar shift (1..25, the shift the text was *encoded* with) or ``"atbash"`` that
    makes ``segment`` read as English, and the decoded segment.

    None when the segment already reads as English (word_ratio at least 0.7: checked first, so
    ordinary text costs one pass), has fewer than 2 words, 2 words of 3 or more letters or 8
    letters, is not mostly plain words between spaces (code, tables), or when no candidate
    reads clearly better: the decoded words, and those of 3 or more letters, must be at least
    70% English words, and the share at least 0.3 above the segment's own.
    """
    words = [w.lower() for w in WORD.findall(segment)]
    if len(words) < 2 or sum(len(w) >= 3 for w in words) < _MIN_LONG_WORDS:
        return None
    if sum(map(len, words)) < _MIN_LETTERS:
        return None
    # Words of English and of the other languages the heads read: a French request shifted
    # decodes to French.
    known = known_words()
    own = _known(words, known)[0]
    if own >= 0.7 or not known:
        return None
    tokens = segment.split()
    wordy = sum(_WORDY.fullmatch(t) is not None for t in tokens)
    if wordy < 2 or wordy < _MIN_WORDY_SHARE * len(tokens):
        return None
    step = max(1, len(words) // _SAMPLE_WORDS)
    sample = " ".join(words[::step][:_SAMPLE_WORDS])
    size = sample.count(" ") + 1
    hit = known.__contains__
    best_hits, best_name, best_table = 0, _CANDIDATES[0][0], _CANDIDATES[0][1]
    for name, table in _CANDIDATES:
        hits = sum(map(hit, sample.translate(table).split()))
        if hits > best_hits:
            best_hits, best_name, best_table = hits, name, table
    if best_hits < 0.7 * size:
        return None
    decoded = (" ".join(words) if size < len(words) else sample).translate(best_table)
    score, long_score = _known(decoded.split(), known)
    if score >= 0.7 and long_score >= 0.7 and score >= own + 0.3:
        return best_name, segment.translate(best_table)
    return None


def caesar(text: str) -> tuple[str, list[str]] | None:
    """Each segment (between line breaks, colons and quotes) written in a Caesar shift or
    Atbash decoded in place (see :func:`best_shift`). Segments that already read as English are
    skipped after one word lookup pass, so ordinary text costs little."""
    payloads: list[str] = []

    def sub(m: re.Match[str]) -> str:
        found = best_shift(m.group(0))
        if found is None:
            return m.group(0)
        payloads.append(found[1].strip())
        return found[1]

    out = _SEGMENT.sub(sub, text)
    return (out, payloads) if payloads else None


# -- hex with per-byte prefixes or other separators -------------------------------------------

# views' hex pattern takes pairs run together or one space, colon or comma apart, with "\x" or
# "0x" between pairs; it misses a prefix on every byte *with* a separator ("0x68 0x6f",
# "0x68, 0x6f") and separators such as "-", ";", "|", ", " or line breaks. Those are taken
# here: 4 or more prefixed bytes, or 8 or more bare pairs.
_HEX_PREFIXED = re.compile(
    r"(?<![\w\\])0[xX][0-9A-Fa-f]{2}(?:[\s,;|\-]*0[xX][0-9A-Fa-f]{2}){3,}(?![0-9A-Za-z])")
_HEX_SEPARATED = re.compile(
    r"(?<![\w\\])[0-9A-Fa-f]{2}(?:(?:[ \t]*[,;|\-][ \t]*|\s+)[0-9A-Fa-f]{2}){7,}(?![\w])")
_HEX_RUN = re.compile(f"{_HEX_PREFIXED.pattern}|{_HEX_SEPARATED.pattern}")
# What views' pattern already decodes whole: leave it to views.
_HEX_VIEWS = re.compile(r"(?:[0-9A-Fa-f]{2}[ :,]?)+")


def _hex_run(run: str) -> str | None:
    if _HEX_VIEWS.fullmatch(run):
        return None
    pairs = re.findall(r"(?<![0-9A-Fa-f])(?:0[xX])?([0-9A-Fa-f]{2})(?![0-9A-Fa-f])", run)
    return _bytes_as_text(bytes.fromhex("".join(pairs)))


def hex_prefixed(text: str) -> tuple[str, list[str]] | None:
    """Hex bytes that views' hex decoder misses decoded: ``0x`` on every byte with separators
    between ("0x68 0x6f 0x77", "0x68,0x6f"), or bare pairs apart by ``-``, ``;``, ``|``, ``, ``
    or line breaks ("68-6f-77-..."); kept when the bytes read as text. ``\\x68\\x6f`` is
    :func:`escapes`' (views' hex decodes its payload too)."""
    return substitute(text, _HEX_RUN, _hex_run)


# -- layers ----------------------------------------------------------------------------------


def nested(text: str, decoders: Sequence[Decoder], depth: int = 2) -> list[str]:
    """Every payload the ``decoders`` find in ``text``, then in those payloads, and so on to
    ``depth`` levels (base64 of base64, hex of base64, Morse of ROT13): level by level,
    the deepest last, each payload once, at most :data:`MAX_NESTED_PAYLOADS`.

    ``decoders`` are callables with the decoder contract, so views can pass its own with these.
    """
    found: list[str] = []
    seen = {text}
    level: list[str] = [text]
    for _ in range(max(depth, 0)):
        nxt: list[str] = []
        for source in level:
            for decode in decoders:
                result = decode(source)
                if result is None:
                    continue
                for p in result[1]:
                    p = p.strip()
                    if p and p not in seen and len(found) < MAX_NESTED_PAYLOADS:
                        seen.add(p)
                        found.append(p)
                        nxt.append(p)
        if not nxt:
            break
        level = nxt
    return found


# -- the NATO spelling alphabet --------------------------------------------------------------

_NATO = {
    "alfa": "a", "alpha": "a", "bravo": "b", "charlie": "c", "delta": "d", "echo": "e",
    "foxtrot": "f", "golf": "g", "hotel": "h", "india": "i", "juliett": "j", "juliet": "j",
    "kilo": "k", "lima": "l", "mike": "m", "november": "n", "oscar": "o", "papa": "p",
    "quebec": "q", "romeo": "r", "sierra": "s", "tango": "t", "uniform": "u", "victor": "v",
    "whiskey": "w", "whisky": "w", "xray": "x", "x-ray": "x", "yankee": "y", "zulu": "z",
}
_NATO_RUN = re.compile(
    r"(?:\b(?:" + "|".join(sorted(_NATO, key=len, reverse=True)) + r")\b[\s,.;/|-]*){4,}",
    re.IGNORECASE)


def _nato_run(run: str) -> str | None:
    # A word ends at "/", "|", a comma run or a line break; without any, the letters are split
    # into words from the word list.
    groups = re.split(r"\s*(?:[/|]|\n|,{2,}|\s{3,})\s*", run.strip(" ,.;/|-"))
    words = []
    for g in groups:
        letters = "".join(_NATO.get(w.lower(), "") for w in re.findall(r"[A-Za-z-]+", g))
        if letters:
            words.append(letters)
    if not words:
        return None
    out = " ".join(words) if len(words) > 1 else segment(words[0])
    return out if reads_as_words(out) >= 0.6 else None


def nato(text: str) -> tuple[str, list[str]] | None:
    """Runs of four or more NATO spelling-alphabet words ("hotel oscar whiskey / tango oscar")
    read as the letters they spell."""
    return substitute(text, _NATO_RUN, _nato_run)


# -- hidden characters -----------------------------------------------------------------------

# Unicode tag characters (U+E0020..E007E) mirror ASCII and render as nothing: text written in
# them is invisible to a person and to the views (which drop invisible characters) but models
# that tokenise them can read it ("ASCII smuggling"). Variation selectors carry one byte each
# after an emoji (VS1-16 0..15, VS17-256 16..255): any UTF-8 text rides invisibly on one emoji.
_TAG_RUN = re.compile("[\U000e0020-\U000e007e]{4,}")
_VS_RUN = re.compile("[\ufe00-\ufe0f\U000e0100-\U000e01ef]{4,}")


def _tag_run(run: str) -> str | None:
    s = "".join(chr(ord(c) - 0xE0000) for c in run)
    # A hidden message has words; a flag's tag letters ("gbeng" in England's flag) do not.
    return s if " " in s.strip() and _reads_as_text(s) else None


def _vs_run(run: str) -> str | None:
    return _bytes_as_text(bytes(ord(c) - 0xFE00 if ord(c) < 0xFE10 else ord(c) - 0xE0100 + 16
                                for c in run))


def hidden_text(text: str) -> tuple[str, list[str]] | None:
    """Text hidden in invisible characters revealed: runs of Unicode tag characters read as
    the ASCII they mirror, runs of variation selectors as the UTF-8 bytes they carry; kept when
    the result reads as text. Run it on the text as sent: normalising drops these characters."""
    payloads: list[str] = []
    out = text
    for pattern, decode in ((_TAG_RUN, _tag_run), (_VS_RUN, _vs_run)):
        found = substitute(out, pattern, decode)
        if found is not None:
            out, more = found
            payloads += more
    return (out, payloads) if payloads else None


# -- base85, quoted-printable, uuencode --------------------------------------------------------

# Ascii85 uses "!".."u" (and "z"), base85 (RFC 1924) digits, letters and "!#$%&()*+-;<=>?@^_`{|}~":
# a run of 20 or more of them with no space. Base64 tokens fall in both alphabets and decode to
# bytes that are not text, so they are left to the base64 decoder.
_B85_RUN = re.compile(r"(?:<~)?[!-uz]{20,}(?:~>)?|[0-9A-Za-z!#$%&()*+\-;<=>?@^_`{|}~]{20,}")


def _b85_run(run: str) -> str | None:
    body = run.strip()
    attempts: list[Callable[[], bytes]] = [
        lambda: base64.a85decode(body, adobe=body.startswith("<~")),
        lambda: base64.b85decode(body),
    ]
    for attempt in attempts:
        try:
            s = _bytes_as_text(attempt())
        except (ValueError, binascii.Error):
            continue
        if s is not None and (reads_as_words(s) >= 0.5 or _other_script(s)):
            return s
    return None


def base85(text: str) -> tuple[str, list[str]] | None:
    """Ascii85 (``<~...~>`` optional) or base85 runs of 20+ characters decoded, kept when they
    read as text made of words."""
    return substitute(text, _B85_RUN, _b85_run)


# Quoted-printable: "=XX" bytes inside a token ("how=20to=20make", "=68=6F=77"), two or more.
_QP_RUN = re.compile(r"[^\s=]*(?:=[0-9A-F]{2}[^\s=]*){2,}")


def _qp_run(run: str) -> str | None:
    s = _bytes_as_text(quopri.decodestring(run.encode("ascii", "replace")))
    return s if s is not None and s != run else None


def quoted_printable(text: str) -> tuple[str, list[str]] | None:
    """Quoted-printable runs (two or more ``=XX`` bytes, upper-case hex, in one token) decoded,
    kept when the result reads as text."""
    return substitute(text, _QP_RUN, _qp_run)


# A uuencoded line: its first character gives the byte count, which fixes the line's length.
_UU_LINE = re.compile(r"^[!-M][ -`]{4,60}$", re.M)
_UU_BLOCK = re.compile(r"(?:^[!-M][ -`]{4,60}\n?){1,}", re.M)


def _uu_block(block: str) -> str | None:
    out = b""
    for line in block.strip("\n").splitlines():
        n = ord(line[0]) - 32
        want = -(-n // 3) * 4
        # Trailing spaces (zero bits) are lost to stripping and copy-paste: pad them back.
        line = line.ljust(want + 1)
        if len(line) - 1 != want:
            return None
        try:
            out += binascii.a2b_uu(line)
        except binascii.Error:
            return None
    s = _bytes_as_text(out)
    return s if s is not None and (reads_as_words(s) >= 0.5 or _other_script(s)) else None


def uuencode(text: str) -> tuple[str, list[str]] | None:
    """Uuencoded lines (each as long as its first character says) decoded, kept when the result
    reads as text made of words."""
    if not _UU_LINE.search(text):
        return None
    return substitute(text, _UU_BLOCK, _uu_block)


# -- letters as numbers, ROT47 -------------------------------------------------------------------

# Six or more numbers 1..26 (A1Z26): letters of a word joined by "-", "." or a space, words
# apart by "/", "|", "," or a wider gap.
_A1Z26_RUN = re.compile(
    r"(?<![\w.])(?:[1-9]|1\d|2[0-6])(?:(?:[ \t]*[-./|,][ \t]*|[ \t]+)(?:[1-9]|1\d|2[0-6])){5,}"
    r"(?![\w])")


def _a1z26_run(run: str) -> str | None:
    words = re.split(r"\s*[/|,]\s*|\s{2,}", run.strip())
    if len(words) == 1:
        # Letters one space apart and words one space apart cannot be told apart: segment.
        letters = [chr(96 + int(n)) for n in re.findall(r"\d+", run)]
        out = segment("".join(letters))
    else:
        out = " ".join("".join(chr(96 + int(n)) for n in re.findall(r"\d+", w)) for w in words)
    # Version numbers and counting runs spell short alphabet stretches ("abc def"): a message
    # has more letters and a word of four or more.
    if sum(c.isalpha() for c in out) < 8 or not any(len(w) >= 4 for w in out.split()):
        return None
    return out if reads_as_words(out) >= 0.6 else None


def a1z26(text: str) -> tuple[str, list[str]] | None:
    """Runs of six or more numbers 1..26 read as the letters at those places in the alphabet
    ("8-15-23 / 20-15"), kept when they read as words (dates and scores do not)."""
    return substitute(text, _A1Z26_RUN, _a1z26_run)


_ROT47 = str.maketrans({c: chr(33 + (c + 14) % 94) for c in range(33, 127)})
_TOKEN = re.compile(r"\S+")
_ROT47_TOKEN = re.compile(r"[^\s2-9:;<=>?@]*[2-9:;<=>?@][^\s2-9:;<=>?@]*[2-9:;<=>?@]\S*")
#: Fewest ROT47 tokens in a row that decode to words.
_MIN_ROT47_TOKENS = 3


def rot47(text: str) -> tuple[str, list[str]] | None:
    """Stretches of three or more space-separated tokens that are words under ROT47 (which
    moves every printable ASCII character, so letters become digits and punctuation) and not
    as written, decoded in place."""
    # Lower-case letters come out of ROT47 as "2".."K": an encoded message has many tokens
    # with two or more of its digits and signs, prose has next to none (one scan, then out).
    if len(_ROT47_TOKEN.findall(text, 0, 20_000)) < _MIN_ROT47_TOKENS:
        return None
    tokens = list(_TOKEN.finditer(text))
    known = known_words()
    marks = []
    for m in tokens:
        tok = m.group(0)
        dec = tok.translate(_ROT47)
        core = re.sub(r"^[^\w]+|[^\w]+$", "", dec).lower()
        plain = re.sub(r"^[^\w]+|[^\w]+$", "", tok).lower()
        marks.append(bool(core) and core.isalpha() and core in known and plain not in known)
    payloads: list[str] = []
    pieces: list[str] = []
    last = 0
    i = 0
    while i < len(tokens):
        if not marks[i]:
            i += 1
            continue
        j = i
        misses = 0
        # A stretch tolerates one unknown word in four (names, typos) between decoded words.
        while j + 1 < len(tokens) and (marks[j + 1] or (misses < (j - i + 1) // 4 and j + 2 <
                                                        len(tokens) and marks[j + 2])):
            misses += not marks[j + 1]
            j += 1
        s, e = tokens[i].start(), tokens[j].end()
        decoded = text[s:e].translate(_ROT47)
        # Digits and brackets map to short letter strings ("12," -> "`a["): a message has
        # words of three letters or more and reads as words as a whole.
        long_words = sum(len(w) >= 3 and w.lower() in known for w in WORD.findall(decoded))
        if (j - i + 1 >= _MIN_ROT47_TOKENS and long_words >= 2
                and reads_as_words(decoded) >= 0.7):
            pieces.append(text[last:s] + decoded)
            payloads.append(decoded)
            last = e
        i = j + 1
    if not payloads:
        return None
    return "".join(pieces) + text[last:], payloads


#: The decoders of this module by the view name each produces.
DECODERS: tuple[tuple[str, Decoder], ...] = (
    ("html", html_entities),
    ("escapes", escapes),
    ("binary", binary),
    ("decimal", decimal),
    ("morse", morse),
    ("caesar", caesar),
    ("hex", hex_prefixed),
    ("nato", nato),
    ("base85", base85),
    ("quoted_printable", quoted_printable),
    ("uuencode", uuencode),
    ("a1z26", a1z26),
    ("rot47", rot47),
)


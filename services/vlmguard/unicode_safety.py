"""Characters that are there without being seen: blank-text checks and unforgeable quote fences.

A prompt made only of zero-width spaces looks empty but is not ``str.strip()``-empty, and a
zero-width character inside ``\"\"\"`` (or a fullwidth look-alike of the quote) lets user text
close the fence the rewrite puts around it while escaping nothing. :func:`is_blank` and
:func:`fence_safe` handle both; they only read and rewrite strings (ground layer).
"""

from __future__ import annotations

import re
import unicodedata

# Invisible characters that are not Unicode format characters (category Cf, always invisible):
# fillers that render as nothing (Hangul, Braille blank), the combining grapheme joiner and the
# variation selectors (they modify the character before them and show nothing on their own).
_INVISIBLE_EXTRA = frozenset(
    [0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x2800, 0x3164, 0xFFA0,
     *range(0xFE00, 0xFE10), *range(0xE0100, 0xE01F0)]
)
_KEEP_CONTROLS = frozenset("\t\n\r")


def is_invisible(ch: str) -> bool:
    """Whether ``ch`` renders as nothing (format and control characters, fillers, selectors)
    (whitespace is visible as space and is not counted)."""
    if ch in _KEEP_CONTROLS:
        return False
    cat = unicodedata.category(ch)
    return cat in ("Cf", "Cc", "Cs", "Co", "Cn") or ord(ch) in _INVISIBLE_EXTRA


def strip_invisible(text: str) -> str:
    """``text`` without its invisible characters."""
    return "".join(ch for ch in text if not is_invisible(ch))


def is_blank(text: str) -> bool:
    """True when ``text`` holds nothing but whitespace and invisible characters."""
    return all(ch.isspace() or is_invisible(ch) for ch in text)


# '"' and its look-alikes: what NFKC folds onto '"' (fullwidth, small forms), the double
# quotation marks and double primes, ditto marks, the double acute and double apostrophe
# modifiers and the Hebrew gershayim (tests/unit/vlmguard/test_unicode_safety.py checks the
# list against the Unicode database).
QUOTE_LIKE = frozenset(chr(c) for c in (
    0x22, 0xAB, 0xBB, 0x2BA, 0x2DD, 0x2EE, 0x5F4, 0x1CD3, 0x201C, 0x201D, 0x201E, 0x201F,
    0x2033, 0x2036, 0x275D, 0x275E, 0x2760, 0x2E42, 0x3003, 0x301D, 0x301E, 0x301F, 0xFF02,
    0x1F676, 0x1F677, 0x1F678,
))
_QUOTE_CLASS = "[" + re.escape("".join(sorted(QUOTE_LIKE))) + "]"
# A run of two or more quotes, possibly with spaces between them (once invisible characters
# are gone, that is how a fence could be drawn), or a quote at either end of the text (it would
# touch the fence).
_FENCE_LIKE = re.compile(
    _QUOTE_CLASS + r"(?:\s*" + _QUOTE_CLASS + r")+|^\s*" + _QUOTE_CLASS + "|" + _QUOTE_CLASS
    + r"\s*$"
)


def _drop_marks_on_quotes(text: str) -> str:
    """``text`` without combining marks on quotes (an accent on '"' still reads as '"')."""
    out: list[str] = []
    for ch in text:
        if out and out[-1] in QUOTE_LIKE and unicodedata.category(ch) in ("Mn", "Me"):
            continue
        out.append(ch)
    return "".join(out)


def fence_safe(text: str) -> str:
    """``text`` made safe to put between ``\"\"\"`` fences: invisible characters removed, and
    every quote that is part of a run of quotes (or that would touch a fence at either end)
    written as ``\\"``, look-alikes included, so no sequence in it can read as a fence."""
    text = _drop_marks_on_quotes(strip_invisible(text))

    def esc(m: re.Match[str]) -> str:
        return "".join('\\"' if ch in QUOTE_LIKE else ch for ch in m.group(0))

    return _FENCE_LIKE.sub(esc, text)


# Look-alikes of the tag delimiters '<' and '>' (NFKC folds the fullwidth and small forms onto
# them; the angle brackets and single guillemets read the same to a language model).
_ANGLE_LIKE = str.maketrans({
    **{c: "<" for c in "\ufe64\uff1c\u2039\u2329\u27e8\u3008\u02c2\u276e\u2770"},
    **{c: ">" for c in "\ufe65\uff1e\u203a\u232a\u27e9\u3009\u02c3\u276f\u2771"},
    **{c: "&" for c in "\ufe60\uff06"},
})


def tag_safe(text: str) -> str:
    """``text`` with invisible characters removed and look-alikes of ``<``, ``>`` and ``&``
    folded onto them, so that escaping those three (the rewriter's data blocks) also escapes
    anything that could read as a tag."""
    return strip_invisible(text).translate(_ANGLE_LIKE)

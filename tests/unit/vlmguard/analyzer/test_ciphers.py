"""Cipher and encoding decoders: each encoding of a sentence decodes back to it, and ordinary
text (prose, code, numbers, punctuation, other languages) decodes to nothing."""

from __future__ import annotations

import base64
import time
import unicodedata

import pytest

from vlmguard.analyzer import ciphers, views
from vlmguard.analyzer.ciphers import (
    DECODERS,
    best_shift,
    binary,
    caesar,
    decimal,
    escapes,
    hex_prefixed,
    html_entities,
    morse,
    nested,
)

# Harmless stand-ins: the decoders are about form, not content.
SENTENCES = (
    "How do I bake a chocolate cake at home?",
    "Tell me the best way to grow tomatoes in a small garden.",
)
WRAP = "Decode this and answer it: "

_MORSE = {v: k for k, v in ciphers._MORSE_CODE.items()}
_LOW = "abcdefghijklmnopqrstuvwxyz"
_UP = _LOW.upper()


def _only(result: tuple[str, list[str]] | None) -> str:
    assert result is not None
    full, payloads = result
    assert len(payloads) == 1, payloads
    assert payloads[0].strip() in full
    return payloads[0].strip()


def _fold(s: str) -> str:
    return " ".join("".join(c for c in s.lower() if c.isalnum() or c.isspace()).split())


def _shift(s: str, k: int) -> str:
    return s.translate(str.maketrans(_LOW + _UP, _LOW[k:] + _LOW[:k] + _UP[k:] + _UP[:k]))


def _atbash(s: str) -> str:
    return s.translate(str.maketrans(_LOW + _UP, _LOW[::-1] + _UP[::-1]))


@pytest.mark.parametrize("sentence", SENTENCES)
@pytest.mark.parametrize("encode", [
    lambda s: "".join(f"&#{ord(c)};" for c in s),
    lambda s: "".join(f"&#x{ord(c):x};" for c in s),
    lambda s: " ".join(f"&#{ord(c)}" for c in s),
    lambda s: "".join(f"&#{ord(c)};" if c in "aeiou " else c for c in s),
], ids=["decimal", "hex", "no-semicolon-spaced", "partial"])
def test_html_entities(sentence: str, encode: object) -> None:
    assert callable(encode)
    # A partly encoded text keeps its plain punctuation at the end outside the run.
    assert _only(html_entities(WRAP + encode(sentence))).rstrip("?.") == sentence.rstrip("?.")


def test_html_named_entities() -> None:
    text = "Read: &#84;&#101;&#108;&#108;&nbsp;&#109;&#101;&nbsp;ab&#111;ut&nbsp;gardens"
    result = html_entities(text)
    assert _only(result) == "Tell\xa0me\xa0about"
    assert result is not None
    assert " ".join(result[0].split()) == "Read: Tell me about gardens"


@pytest.mark.parametrize("sentence", SENTENCES)
@pytest.mark.parametrize("encode", [
    lambda s: "".join(f"\\u{ord(c):04x}" for c in s),
    lambda s: "".join(f"\\U{ord(c):08X}" for c in s),
    lambda s: "".join(f"\\x{ord(c):02x}" for c in s),
    lambda s: " ".join(f"\\x{ord(c):02x}" for c in s),
    lambda s: ", ".join(f"\\u{ord(c):04x}" for c in s),
    lambda s: "".join(f"\\{ord(c):o}" for c in s),
    lambda s: "".join(f"\\{ord(c):03o}" for c in s),
    lambda s: "".join(f"\\N{{{unicodedata.name(c)}}}" for c in s),
    lambda s: "".join(f"\\x{ord(c):02x}" if c in "aeiou " else c for c in s),
], ids=["u4", "U8", "x", "x-spaced", "u-comma", "octal", "octal3", "named", "partial"])
def test_escapes(sentence: str, encode: object) -> None:
    assert callable(encode)
    assert _only(escapes(WRAP + encode(sentence))).rstrip("?.") == sentence.rstrip("?.")


def test_escapes_exact_round_trips() -> None:
    s = SENTENCES[0]
    assert _only(escapes("".join(f"\\u{ord(c):04x}" for c in s))) == s
    assert _only(escapes("".join(f"\\x{ord(c):02x}" for c in s))) == s
    assert _only(escapes("".join(f"\\{ord(c):o}" for c in s))) == s
    # UTF-8 bytes and surrogate pairs are joined into characters.
    utf8 = "".join(f"\\x{b:02x}" for b in "crème brûlée recipe".encode())
    assert _only(escapes(utf8)) == "crème brûlée recipe"
    pairs = "".join(f"\\u{u:04x}" for u in (0xD83C, 0xDF70)) + "".join(
        f"\\u{ord(c):04x}" for c in " cake recipe")
    assert _only(escapes(pairs)) == "\U0001f370 cake recipe"


@pytest.mark.parametrize("sentence", SENTENCES)
@pytest.mark.parametrize("encode", [
    lambda s: " ".join(f"{ord(c):08b}" for c in s),
    lambda s: "".join(f"{ord(c):08b}" for c in s),
    lambda s: " ".join(f"{ord(c):07b}" for c in s),
    lambda s: " ".join(bin(ord(c))[2:] for c in s),
    lambda s: ", ".join(bin(ord(c)) for c in s),
], ids=["8-spaced", "8-joined", "7-bit", "bin()", "0b-comma"])
def test_binary(sentence: str, encode: object) -> None:
    assert callable(encode)
    assert _only(binary(WRAP + encode(sentence))) == sentence


@pytest.mark.parametrize("sentence", SENTENCES)
@pytest.mark.parametrize("encode", [
    lambda s: " ".join(str(ord(c)) for c in s),
    lambda s: ", ".join(str(ord(c)) for c in s),
    lambda s: ",".join(str(ord(c)) for c in s),
    lambda s: " ".join(f"{ord(c):03o}" for c in s),
], ids=["spaced", "comma-space", "comma", "octal"])
def test_decimal(sentence: str, encode: object) -> None:
    assert callable(encode)
    assert _only(decimal(WRAP + encode(sentence))) == sentence


def _morse(s: str, dot: str = ".", dash: str = "-", gap: str = " / ") -> str:
    words = ["".join(c for c in w.lower() if c in _MORSE) for w in s.split()]
    return gap.join(" ".join(_MORSE[c].replace(".", dot).replace("-", dash) for c in w)
                    for w in words if w)


@pytest.mark.parametrize("sentence", SENTENCES)
@pytest.mark.parametrize(("dot", "dash", "gap"), [
    (".", "-", " / "), (".", "-", "   "), ("•", "—", " | "), ("·", "−", " / "), (".", "_", "/"),
])
def test_morse(sentence: str, dot: str, dash: str, gap: str) -> None:
    got = _only(morse(WRAP + _morse(sentence, dot, dash, gap)))
    assert _fold(got) == _fold(sentence)


@pytest.mark.parametrize("sentence", SENTENCES)
@pytest.mark.parametrize("shift", [1, 3, 7, 13, 25])
def test_caesar(sentence: str, shift: int) -> None:
    enc = _shift(sentence, shift)
    assert best_shift(enc) == (shift, sentence)
    full, payloads = caesar(WRAP + enc) or ("", [])
    assert payloads == [sentence]
    assert full == WRAP + sentence


@pytest.mark.parametrize("sentence", SENTENCES)
def test_atbash(sentence: str) -> None:
    assert best_shift(_atbash(sentence)) == ("atbash", sentence)
    assert _only(caesar("Atbash:\n" + _atbash(sentence))) == sentence


@pytest.mark.parametrize("sentence", SENTENCES)
@pytest.mark.parametrize("encode", [
    lambda s: " ".join(f"0x{b:02x}" for b in s.encode()),
    lambda s: ",".join(f"0x{b:02x}" for b in s.encode()),
    lambda s: ", ".join(f"0X{b:02X}" for b in s.encode()),
    lambda s: "-".join(f"{b:02x}" for b in s.encode()),
    lambda s: ";".join(f"{b:02x}" for b in s.encode()),
    lambda s: "\n".join(f"{b:02x}" for b in s.encode()),
], ids=["0x-space", "0x-comma", "0X-comma-space", "dash", "semicolon", "lines"])
def test_hex_prefixed(sentence: str, encode: object) -> None:
    assert callable(encode)
    text = WRAP + encode(sentence)
    assert views._substitute(text, views._HEX, views._hex) is None  # views misses these
    assert _only(hex_prefixed(text)) == sentence


def test_hex_prefixed_leaves_views_forms_to_views() -> None:
    for sep in ("", " ", ":"):
        text = sep.join(f"{b:02x}" for b in SENTENCES[0].encode())
        assert views._substitute(text, views._HEX, views._hex) is not None
        assert hex_prefixed(text) is None


def _views_b64(t: str) -> tuple[str, list[str]] | None:
    return views._substitute(t, views._B64, views._b64)


@pytest.mark.parametrize("sentence", SENTENCES)
def test_nested_base64_of_base64(sentence: str) -> None:
    inner = base64.b64encode(sentence.encode()).decode()
    outer = base64.b64encode(inner.encode()).decode()
    found = nested(WRAP + outer, [_views_b64, *(d for _, d in DECODERS)])
    assert found == [inner, sentence]  # deepest last
    assert nested(WRAP + outer, [_views_b64], depth=1) == [inner]


def test_nested_mixes_decoders() -> None:
    # Binary of base64, and Caesar of hex-with-prefixes: views' and this module's decoders.
    b64 = base64.b64encode(SENTENCES[1].encode()).decode()
    bits = " ".join(f"{ord(c):08b}" for c in b64)
    assert nested(bits, [_views_b64, binary])[-1] == SENTENCES[1]
    hexed = " ".join(f"0x{b:02x}" for b in _shift(SENTENCES[0], 5).encode())
    assert nested(hexed, [caesar, hex_prefixed])[-1] == SENTENCES[0]
    assert nested(SENTENCES[0], [_views_b64, *(d for _, d in DECODERS)]) == []


ORDINARY = (
    "How do I bake a chocolate cake at home?",
    "The quick brown fox jumps over the lazy dog. It was sunny, and everyone went to the park.",
    'def f(x):\n    print("a\\nb\\n")\n    return x.split("\\t")\n',
    'printf("%d\\n", x); s = "line\\r\\n";',
    "I scored 10 20 30",
    "I scored 10 20 30 40 50 60 70 on the tests",
    "Scores: 85, 92, 78, 88, 95, 70, 82, 99, 67",
    "https://example.com/search?q=hello%20world%20today",
    "SOS",
    "Send ... --- ... now",
    "e.g. U.S.A. and i.e. the U.K.",
    "Wait... what... no...",
    "Well . . . maybe - - - not . . .",
    "---\n# Title\n---\nSome text\n***\n- item\n- item two\n",
    "| a | b |\n|---|---|\n| 1 | 2 |",
    "Le chat est sur la table. Nous allons au marché demain matin, et ensuite à la plage.",
    "Привет, как дела? Я иду в магазин за хлебом и молоком.",
    "我今天去商店买了面包和牛奶，然后回家做饭。",
    "Tom &amp; Jerry &amp; friends",
    "<p>&lt;div class=&quot;x&quot;&gt;&lt;/div&gt;</p>",
    "Copyright &copy; 2024 &mdash; All rights reserved &nbsp;&nbsp;",
    r"C:\Users\admin\Documents\x86\file.txt",
    r"regex \d+\s*\w+ and \b(\d{3})\b",
    'data = b"\\xff\\xd8\\xff\\xe0\\x00\\x10JFIF"',
    "Version 1.2.3 fails with error 0x80070005.",
    "MAC 00-1A-2B-3C-4D-5E-6F-70",
    "Dates 2024-01-15 2024-02-20 2024-03-25 2024-04-30",
    "Matrix:\n1 0 1 1 0 1 0 1\n0 1 1 0 1 0 1 1\n",
    "data = [12, 34, 56, 78, 90, 11, 22, 33]",
    "Ein Hund läuft schnell über die Straße und bellt laut.",
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.",
    "Bonjour Marie",
    "foo bar baz qux",
    "config = abc_roi(roi, x) != mbc",
    "Version 1.2.3-4.5.6 build 7 8 9 10 11 12",
    "Set x=10 y=20 z=ff and https://example.com/?q=a%20b&id=AB12CD&k=3D4",
    "sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "Pages 3, 14, 15, 9, 2, 6 and 5 were missing.",
    "Phone 555-123-4567, room 12-4, gate 7-19-22-3-1-8",
    "password: Tr0ub4dor&3_horse!battery$staple",
    "M&M's cost $3 at Ye Olde Shoppe; 20% off (today only)!",
)


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_text_decodes_to_nothing(text: str) -> None:
    for name, decode in DECODERS:
        assert decode(text) is None, (name, text)


def test_decoder_names() -> None:
    assert [n for n, _ in DECODERS] == [
        "html", "escapes", "binary", "decimal", "morse", "caesar", "hex", "nato", "base85",
        "quoted_printable", "uuencode", "a1z26", "rot47"]


_PROSE = (
    "The committee met on Tuesday to discuss the budget for next year. Several members argued "
    "that the library needed more funding, while others wanted to repair the roads first. "
    "After a long debate, they agreed to split the money and review the plan in six months.\n"
)


def test_caesar_is_fast_on_long_text() -> None:
    text = (_PROSE * 40)[:8000]
    caesar(text)  # word list loaded
    start = time.perf_counter()
    for _ in range(5):
        assert caesar(text) is None
    assert (time.perf_counter() - start) / 5 < 0.050
    # Still finds a cipher buried at the end of a long text.
    enc = _shift(SENTENCES[0], 3)
    assert caesar(text[:7900] + "\n" + enc) == (text[:7900] + "\n" + SENTENCES[0],
                                                 [SENTENCES[0]])


def test_nato_spelling_alphabet_is_read_as_its_letters() -> None:
    nato_words = {c: w for w, c in ciphers._NATO.items() if w not in ("alpha", "juliet",
                                                                        "whisky", "x-ray")}
    spelled = " / ".join(" ".join(nato_words[c] for c in w) for w in SENTENCES[0].lower().split()
                         if w.isalpha())
    found = ciphers.nato(f"Decode this NATO alphabet and answer: {spelled}")
    assert found is not None
    assert found[1] == [" ".join(w for w in SENTENCES[0].lower().split() if w.isalpha())]
    # Call signs in prose are not a spelled message.
    assert ciphers.nato("The Delta Echo team met Romeo at the Hotel India bar.") is None


# -- hidden characters, base85, quoted-printable, uuencode, A1Z26, ROT47, keyboard -------------

def _tags(s: str) -> str:
    return "".join(chr(0xE0000 + ord(c)) for c in s)


def _selectors(s: str) -> str:
    return "".join(chr(0xFE00 + b) if b < 16 else chr(0xE0100 + b - 16) for b in s.encode())


@pytest.mark.parametrize("sentence", SENTENCES)
def test_hidden_text_in_tag_characters_and_variation_selectors(sentence: str) -> None:
    found = ciphers.hidden_text("Tell me a short joke." + _tags(sentence))
    assert found is not None and found[1] == [sentence]
    assert sentence in found[0] and found[0].startswith("Tell me a short joke.")
    found = ciphers.hidden_text("😀" + _selectors(sentence))
    assert found is not None and found[1] == [sentence]
    # Non-ASCII text rides on variation selectors too (they carry bytes).
    ru = "Как испечь шоколадный торт дома?"
    found = ciphers.hidden_text("🙂" + _selectors(ru))
    assert found is not None and found[1] == [ru]


def test_hidden_text_leaves_flags_and_emoji_presentation_alone() -> None:
    england = "🏴" + _tags("gbeng") + "\U000e007f"
    assert ciphers.hidden_text(f"Go {england}!") is None
    assert ciphers.hidden_text("I ❤️ tea ☕️ and 👍🏽") is None


@pytest.mark.parametrize("sentence", SENTENCES)
@pytest.mark.parametrize("encode", [
    lambda b: base64.a85encode(b).decode(),
    lambda b: base64.a85encode(b, adobe=True).decode(),
    lambda b: base64.b85encode(b).decode(),
], ids=["ascii85", "adobe", "base85"])
def test_base85(sentence: str, encode: object) -> None:
    assert _only(ciphers.base85(WRAP + encode(sentence.encode()))) == sentence  # type: ignore[operator]


@pytest.mark.parametrize("sentence", SENTENCES)
def test_quoted_printable(sentence: str) -> None:
    import quopri

    every = "".join(f"={b:02X}" for b in sentence.encode())
    assert _only(ciphers.quoted_printable(WRAP + every)) == sentence
    mime = quopri.encodestring(sentence.encode(), quotetabs=True).decode().replace("=\n", "")
    assert _only(ciphers.quoted_printable(WRAP + mime)) == sentence


@pytest.mark.parametrize("sentence", SENTENCES)
def test_uuencode(sentence: str) -> None:
    import binascii

    raw = sentence.encode()
    lines = "".join(binascii.b2a_uu(raw[i:i + 45]).decode() for i in range(0, len(raw), 45))
    assert _only(ciphers.uuencode(f"{WRAP}\nbegin 644 m.txt\n{lines}`\nend\n")) == sentence
    # Trailing spaces lost in copy-paste are padded back.
    stripped = "\n".join(line.rstrip() for line in lines.splitlines())
    assert _only(ciphers.uuencode(f"{WRAP}\n{stripped}\n")) == sentence


@pytest.mark.parametrize("sentence", SENTENCES)
@pytest.mark.parametrize("letter_sep,word_sep", [("-", " / "), (" ", " | "), (".", "  ")])
def test_a1z26(sentence: str, letter_sep: str, word_sep: str) -> None:
    words = ["".join(c for c in w.lower() if c.isalpha()) for w in sentence.split()]
    enc = word_sep.join(letter_sep.join(str(ord(c) - 96) for c in w) for w in words)
    assert _only(ciphers.a1z26(WRAP + enc)) == " ".join(words)


@pytest.mark.parametrize("sentence", SENTENCES)
def test_rot47(sentence: str) -> None:
    enc = "".join(chr(33 + (ord(c) + 14) % 94) if 33 <= ord(c) <= 126 else c for c in sentence)
    assert _only(ciphers.rot47("Decode this ROT47 and answer: " + enc)) == sentence


@pytest.mark.parametrize("sentence", SENTENCES)
@pytest.mark.parametrize("k", [1, -1], ids=["right", "left"])
def test_keyboard_shift(sentence: str, k: int) -> None:
    rows = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
    src = "".join(rows)
    dst = "".join(r[k:] + r[:k] for r in rows)
    enc = sentence.translate(str.maketrans(src + src.upper(), dst + dst.upper()))
    assert _only(caesar(f"Each letter is one key over:\n{enc}")) == sentence


@pytest.mark.parametrize("sentence", SENTENCES)
def test_keyboard_as_one_line_and_vowel_shifts(sentence: str) -> None:
    keys = "qwertyuiopasdfghjklzxcvbnm"
    for k in (1, -1):
        enc = "".join(keys[(keys.index(c) + k) % 26] if c in keys else c for c in sentence.lower())
        assert _only(caesar(f"Each letter is one key over:\n{enc}")) == sentence.lower()
        vowels = "aeiou"
        enc = sentence.translate(str.maketrans(
            vowels + vowels.upper(), vowels[k:] + vowels[:k] + (vowels[k:] + vowels[:k]).upper()))
        assert _only(caesar(f"Vowels moved one on, undo it:\n{enc}")) == sentence


@pytest.mark.parametrize("sentence", ["Как испечь шоколадный торт дома?",
                                      "如何在家里做巧克力蛋糕？"])
def test_byte_encodings_of_other_scripts_decode_without_a_word_list(sentence: str) -> None:
    import binascii

    assert _only(ciphers.base85(WRAP + base64.a85encode(sentence.encode()).decode())) == sentence
    raw = sentence.encode()
    lines = "".join(binascii.b2a_uu(raw[i:i + 45]).decode() for i in range(0, len(raw), 45))
    assert _only(ciphers.uuencode(f"{WRAP}\n{lines}")) == sentence

"""OCR text normalisation: common confusions repaired, text kept."""

from __future__ import annotations

import pytest

from vlmguard.analyzer.models.ocr import normalize_ocr_text


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("lgnore the rules", "Ignore the rules"),
        ("lt is lnside", "It is Inside"),
        ("|gnore this", "Ignore this"),
        ("l am here, can l go?", "I am here, can I go?"),
        ("lllegal parking", "Illegal parking"),
        ("b0mb B0MB", "bomb BOMB"),
        ("ki1ler app", "killer app"),
        ("1O0 items", "100 items"),
        ("hello   world\tagain", "hello world again"),
        ("ｆｕｌｌ width", "full width"),
    ],
)
def test_confusions(raw: str, expected: str) -> None:
    assert normalize_ocr_text(raw) == expected


@pytest.mark.parametrize(
    "text", ["llama farm", "Well, let's go", "lol", "COVID19 and mp3", "lunch at 12", "I like it"]
)
def test_leaves_ordinary_text_alone(text: str) -> None:
    assert normalize_ocr_text(text) == text


def test_list_numbering_kept_and_tidied() -> None:
    raw = "Steps to bake bread.\n1 .\n\n2,\n  3)  \nl. first"
    assert normalize_ocr_text(raw) == "Steps to bake bread.\n1.\n2.\n3.\n1. first"


def test_empty() -> None:
    assert normalize_ocr_text("") == ""
    assert normalize_ocr_text(" \n\t \n") == ""

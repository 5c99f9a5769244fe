"""OCR text normalisation: common confusions repaired, text kept."""

from __future__ import annotations

from typing import Any

import numpy as np
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


def _tilted_paragraph(deg: float, texts: list[str]) -> list[Any]:
    """Left-aligned lines of different lengths rotated by ``deg`` about the origin, as the
    detector's quadrilaterals would place them."""
    import math

    from vlmguard.analyzer.models.ocr import OCRLine

    a = math.radians(deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    lines = []
    for i, text in enumerate(texts):
        w, h, y = 14.0 * len(text), 28.0, 300.0 + 40.0 * i
        pts = np.array([[100, y], [100 + w, y], [100 + w, y + h], [100, y + h]]) @ rot.T
        lines.append(OCRLine(text, 0.9, (float(pts[:, 0].min()), float(pts[:, 1].min()),
                                          float(pts[:, 0].max()), float(pts[:, 1].max())),
                             angle=a, height=h))
    return lines


@pytest.mark.parametrize("deg", [-15.0, -8.0, 5.0, 10.0, 15.0])
def test_rotated_paragraphs_keep_their_line_order(deg: float) -> None:
    from vlmguard.analyzer.models.ocr import _rows

    texts = ["Explain how to disable the airbags and", "the seatbelt alarm so I can drive at",
             "200 km/h on the motorway."]
    lines = _tilted_paragraph(deg, texts)
    assert _rows(lines[::-1]) == "\n".join(texts)


def test_level_lines_on_one_row_are_joined_left_to_right() -> None:
    from vlmguard.analyzer.models.ocr import OCRLine, _rows

    right = OCRLine("world", 0.9, (200.0, 10.0, 280.0, 40.0), angle=0.0, height=30.0)
    left = OCRLine("hello", 0.9, (10.0, 12.0, 90.0, 42.0), angle=0.0, height=30.0)
    below = OCRLine("next line", 0.9, (10.0, 60.0, 150.0, 90.0))
    assert _rows([below, right, left]) == "hello world\nnext line"


def _found(h: float, w: float, text: str, y: float = 0.0) -> tuple[Any, str, float]:
    return ([[0, y], [w, y], [w, y + h], [0, y + h]], text, 0.95)


def test_two_lines_merged_into_one_box_are_told_from_a_heading() -> None:
    from vlmguard.analyzer.models.ocr import merged_lines

    body = [_found(22, 250, "a line of small print in the same font", 40),
            _found(22, 76, "customers.", 70)]
    # One box half again as tall for letters as wide as the others': two lines read as one.
    assert merged_lines([_found(33, 222, "restaurant from different invented", 0), *body])
    # A heading is taller *and* wider-lettered: one line.
    assert not merged_lines([_found(40, 330, "Quarterly report 2024", 0), *body])
    assert not merged_lines(body)
    assert not merged_lines(body[:1])


def test_scene_text_at_scattered_angles_keeps_the_upright_order() -> None:
    import math

    from vlmguard.analyzer.models.ocr import OCRLine, _rows

    # Labels in a photo, each at its own tilt: not one rotated block.
    labels = [OCRLine(t, 0.9, (10.0, 40.0 * i, 200.0, 40.0 * i + 30), angle=math.radians(a),
                      height=30.0)
              for i, (t, a) in enumerate([("top sign", 0), ("middle", 9), ("bottom", 17)])]
    assert _rows(labels[::-1]) == "top sign\nmiddle\nbottom"

"""Leading refusal sentences: stripped at the start only, so content after a refusal is read."""

from __future__ import annotations

import pytest

from vlmguard.refusals import MAX_REFUSAL_SENTENCES, strip_leading_refusal


@pytest.mark.parametrize("text", [
    "I'm sorry, but I can't help with making explosives.",
    "I\u2019m sorry. I can\u2019t help with that.",
    "I cannot provide instructions for that",
    "As an AI, I must decline.",
    "Sorry, I won't help you hurt anyone!",
    "Unfortunately, I can't assist with this request.",
    "I am unable to help with hacking accounts.",
])
def test_whole_refusals_leave_nothing_to_read(text: str) -> None:
    assert strip_leading_refusal(text) == ("", True)


def test_the_content_after_a_refusal_is_kept() -> None:
    rest, stripped = strip_leading_refusal(
        "I can't help with that. Just kidding! Step 1: get a pipe.")
    assert stripped and rest == "Just kidding! Step 1: get a pipe."
    # A refusal's reason is not a refusal sentence: it is read (and weighed against the
    # question by the pipeline).
    assert strip_leading_refusal("I'm sorry, I can't. Making explosives is illegal.") == (
        "Making explosives is illegal.", True)


def test_only_leading_sentences_count_and_at_most_a_few() -> None:
    text = "Sure! Step 1: mix. I can't say more."
    assert strip_leading_refusal(text) == (text, False)
    assert strip_leading_refusal("I can help with that! First, mix A.")[1] is False
    many = " ".join(["I'm sorry."] * (MAX_REFUSAL_SENTENCES + 1)) + " Step 1."
    rest, _ = strip_leading_refusal(many)
    assert rest == "I'm sorry. Step 1."

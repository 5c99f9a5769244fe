"""Leading refusal sentences of a model's answer.

Tier 1 scores topics, not stances: "I can't help you make explosives" scores as high as a
request for them. Where an earlier answer of a conversation is read for risk, the sentences a
refusal opens with are not evidence of harmful content, so they are left out of the reading;
everything after them is read. Only sentences at the start that each open like a refusal count
(at most :data:`MAX_REFUSAL_SENTENCES`), so an answer that opens with a refusal and then gives
the harmful content anyway ("I can't help with that. Here is how anyway: ...") is still read for
that content, and so is a refusal's reason ("Making explosives is illegal."): the reading of an
earlier answer is weighed against its question for that.
"""

from __future__ import annotations

import re

#: Leading refusal sentences that may be stripped ("I'm sorry. I can't help with that.").
MAX_REFUSAL_SENTENCES = 3

# The opening of a refusal, as models phrase them (the prefixes refusal checks in jailbreak
# research match on), case-insensitive, straight or curly apostrophes.
_A = "['\u2019]"
_REFUSAL = re.compile(
    r"\s*(?:"
    rf"(?:i{_A}m|i am)\s+(?:so\s+|really\s+|very\s+)?sorry"
    r"|sorry\b"
    r"|(?:my\s+)?apologies\b|i\s+apologi[sz]e"
    rf"|i\s+(?:can{_A}?t|cannot|can\s+not|won{_A}t|will\s+not|must\s+decline|"
    r"have\s+to\s+decline|(?:am|'m|\u2019m)\s+(?:not\s+able|unable)|do\s+not|don['\u2019]t)"
    r"\s+(?:help|assist|provide|give|share|support|create|write|generate|do|comply|fulfil|"
    r"engage|offer|answer|continue|go\s+on|describe|explain|with)"
    rf"|i{_A}m\s+(?:not\s+able|unable)\s+to"
    r"|i\s+am\s+(?:not\s+able|unable)\s+to"
    r"|as\s+an\s+ai\b"
    r"|(?:unfortunately|no)\s*,\s+i\s+(?:can|won|will|am|'m|\u2019m)"
    r")",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"[.!?\u3002\uff01\uff1f](?:[\"'\u201d\u2019)\]]*)(?:\s+|$)")


def strip_leading_refusal(text: str) -> tuple[str, bool]:
    """``(rest, stripped)``: the text without the refusal sentences it opens with.

    Each leading sentence that opens like a refusal is dropped, up to
    :data:`MAX_REFUSAL_SENTENCES`; the first sentence that does not is where the rest starts.
    Text that does not open with a refusal comes back unchanged with ``stripped`` False.
    """
    pos, stripped = 0, False
    for _ in range(MAX_REFUSAL_SENTENCES):
        if not _REFUSAL.match(text, pos):
            break
        stripped = True
        m = _SENTENCE_END.search(text, pos)
        if m is None:
            return "", True  # a refusal sentence without an end: the rest is all refusal
        pos = m.end()
    return (text[pos:].lstrip(), True) if stripped else (text, False)

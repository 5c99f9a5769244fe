"""Every attack transform of ``vlmguard redteam``, by name, and the selection by flags."""

from __future__ import annotations

import random
from collections.abc import Sequence

from vlmguard.errors import InvalidArgumentError
from vlmguard_training.redteam.images import IMAGE_TRANSFORMS
from vlmguard_training.redteam.transforms import TEXT_TRANSFORMS, TRANSLATION, Attack, Transform

#: A human translation of the seed (the seed as written in its language, sent unchanged).
TRANSLATED = "translated"
#: An English seed machine-translated by the ``--translator-url`` model (then sent unchanged).
MACHINE_TRANSLATE = "machine_translate"


def _identity(text: str, rng: random.Random) -> Attack:
    del rng
    return Attack(text)


LANGUAGE_TRANSFORMS: tuple[Transform, ...] = (
    Transform(TRANSLATED, TRANSLATION, "the seed as written in another language (the "
              "project's human translations, or a manifest row with lang), sent unchanged",
              "text", _identity),
    Transform(MACHINE_TRANSLATE, TRANSLATION, "an English seed translated by the "
              "--translator-url model into each --translate-to language (skipped, and reported "
              "so, without one)", "text", _identity),
)

TRANSFORMS: tuple[Transform, ...] = (*TEXT_TRANSFORMS, *LANGUAGE_TRANSFORMS, *IMAGE_TRANSFORMS)
BY_NAME: dict[str, Transform] = {t.name: t for t in TRANSFORMS}
FAMILIES: tuple[str, ...] = tuple(dict.fromkeys(t.family for t in TRANSFORMS))


def select(families: Sequence[str] | None = None,
           names: Sequence[str] | None = None) -> list[Transform]:
    """The transforms in ``families`` and/or named in ``names`` (both None: all), in registry
    order. With both given, a transform qualifies by either.

    Raises:
        InvalidArgumentError: an unknown family or transform name (the message lists the known
            ones).
    """
    bad_f = [f for f in families or () if f not in FAMILIES]
    if bad_f:
        raise InvalidArgumentError(f"unknown transform family {', '.join(bad_f)} (known: "
                                   f"{', '.join(FAMILIES)})")
    bad_n = [n for n in names or () if n not in BY_NAME]
    if bad_n:
        raise InvalidArgumentError(f"unknown transform {', '.join(bad_n)} (known: "
                                   f"{', '.join(BY_NAME)})")
    if families is None and names is None:
        return list(TRANSFORMS)
    fam, nam = set(families or ()), set(names or ())
    return [t for t in TRANSFORMS if t.family in fam or t.name in nam]


def describe() -> str:
    """The registry as an aligned table (``--list`` and ``--help``)."""
    width = max(len(t.name) for t in TRANSFORMS)
    fw = max(len(t.family) for t in TRANSFORMS)
    return "\n".join(f"  {t.family:<{fw}}  {t.name:<{width}}  [{t.modality}] {t.description}"
                     for t in TRANSFORMS)

"""Typed stage outputs of the synthesis pipeline and their schema validation.

Every stage output is a frozen dataclass; :func:`validate` checks its JSON form (``to_json``)
against the stage's schema (field -> type, plus non-empty rules) and returns the problems found,
so records read back from a shard file can be checked the same way as fresh ones.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from vlmguard.domain import ModalityReasoning

#: Version of the stage schemas; bump on any change to the dataclasses below.
SCHEMA_VERSION = "synth-stages-v2"


@dataclass(frozen=True)
class Responses:
    """Stage 0: a safe and an unsafe response (None when no seed field or backend gave one)."""

    safe: str | None
    unsafe: str | None
    #: Where they came from, e.g. ``seed:reference_response``, or ``none``.
    source: str
    #: Who made the safe one: ``seed:<field>``, ``teacher:<model>`` or ``none``.
    safe_source: str = "none"
    #: Who made the unsafe one: ``seed:<field>``, ``target:<model>`` or ``none``.
    unsafe_source: str = "none"


@dataclass(frozen=True)
class Hindsight:
    """Stage 1: risk features from comparing the safe and unsafe responses (or the label)."""

    categories: tuple[str, ...]
    #: What in the unsafe answer is (or would be) harmful.
    harmful_content: str
    #: Why it is harmful, per category.
    why: str
    #: Which responses the comparison could use: ``safe+unsafe``, ``safe_only``, ``unsafe_only``
    #: or ``none`` (then the features rest on the seed label and tier-1 findings).
    compared: str


@dataclass(frozen=True)
class CausalReport:
    """Stage 2: the multimodal causal analysis (risk report A)."""

    categories: tuple[str, ...]
    textual_triggers: tuple[str, ...]
    visual_elements: tuple[str, ...]
    cross_modal: str
    reasoning: ModalityReasoning
    risky: bool


@dataclass(frozen=True)
class Optimized:
    """Stage 3: the rewritten prompt and the categories whose guidance it carries."""

    rewritten_prompt: str
    guidance_categories: tuple[str, ...]
    unchanged: bool


_STR, _BOOL = (str,), (bool,)
_OPT_STR = (str, type(None))
_STR_LIST = "str_list"
_REASONING = "reasoning"

SCHEMAS: dict[str, dict[str, Any]] = {
    "responses": {"safe": _OPT_STR, "unsafe": _OPT_STR, "source": _STR, "safe_source": _STR,
                  "unsafe_source": _STR},
    "hindsight": {"categories": _STR_LIST, "harmful_content": _STR, "why": _STR,
                  "compared": _STR},
    "causal": {"categories": _STR_LIST, "textual_triggers": _STR_LIST,
               "visual_elements": _STR_LIST, "cross_modal": _STR, "reasoning": _REASONING,
               "risky": _BOOL},
    "optimized": {"rewritten_prompt": _STR, "guidance_categories": _STR_LIST,
                  "unchanged": _BOOL},
}
_NON_EMPTY = {("hindsight", "why"), ("causal", "cross_modal"), ("optimized", "rewritten_prompt")}
_COMPARED = {"safe+unsafe", "safe_only", "unsafe_only", "none"}


def to_json(obj: Responses | Hindsight | CausalReport | Optimized) -> dict[str, Any]:
    """The JSON form of a stage output (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(obj).items()}


def validate(stage: str, data: Any, categories: list[str] | None = None) -> list[str]:
    """Problems of one stage output's JSON form against its schema (empty when valid).

    Args:
        stage: One of ``responses``, ``hindsight``, ``causal``, ``optimized``.
        data: The JSON object.
        categories: Known category ids; categories outside them are problems.
    """
    schema = SCHEMAS.get(stage)
    if schema is None:
        return [f"unknown stage {stage!r}"]
    if not isinstance(data, dict):
        return [f"{stage}: not an object"]
    problems = [f"{stage}: unexpected field {k!r}" for k in data if k not in schema]
    for key, kind in schema.items():
        if key not in data:
            problems.append(f"{stage}.{key}: missing")
            continue
        v = data[key]
        if kind == _STR_LIST:
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                problems.append(f"{stage}.{key}: not a list of strings")
            elif key.endswith("categories") and categories is not None:
                problems += [f"{stage}.{key}: unknown category {c!r}" for c in v
                             if c not in categories]
        elif kind == _REASONING:
            if not isinstance(v, dict) or set(v) != {"textual", "visual", "cross_modal"} or \
                    not all(isinstance(x, str) for x in v.values()):
                problems.append(f"{stage}.{key}: not a reasoning object")
        elif not isinstance(v, kind) or (kind == (bool,)) != isinstance(v, bool):
            problems.append(f"{stage}.{key}: wrong type")
        elif (stage, key) in _NON_EMPTY and not str(v).strip():
            problems.append(f"{stage}.{key}: empty")
    if stage == "hindsight" and data.get("compared") not in _COMPARED:
        problems.append("hindsight.compared: not one of " + ", ".join(sorted(_COMPARED)))
    return problems


#: The stages a teacher answers in JSON (stage 0 responses are free text).
JSON_STAGES = ("hindsight", "causal", "optimized")


def _str_list(enum: list[str] | None = None) -> dict[str, Any]:
    items: dict[str, Any] = {"type": "string"}
    if enum is not None:
        items["enum"] = enum
    return {"type": "array", "items": items}


def json_schema(stage: str, categories: list[str]) -> dict[str, Any]:
    """The JSON Schema of a stage output (for ``response_format`` ``json_schema``).

    Args:
        stage: One of :data:`JSON_STAGES`.
        categories: Known category ids (the enum of category lists).

    Raises:
        KeyError: unknown stage.
    """
    cats = _str_list(list(categories))
    s = {"type": "string"}
    props: dict[str, dict[str, Any]] = {
        "hindsight": {"categories": cats, "harmful_content": s, "why": s,
                      "compared": {"type": "string", "enum": sorted(_COMPARED)}},
        "causal": {"categories": cats, "textual_triggers": _str_list(),
                   "visual_elements": _str_list(), "cross_modal": s,
                   "reasoning": {"type": "object",
                                 "properties": {"textual": s, "visual": s, "cross_modal": s},
                                 "required": ["textual", "visual", "cross_modal"],
                                 "additionalProperties": False},
                   "risky": {"type": "boolean"}},
        "optimized": {"rewritten_prompt": s, "guidance_categories": cats,
                      "unchanged": {"type": "boolean"}},
    }[stage]
    return {"type": "object", "properties": props, "required": list(props),
            "additionalProperties": False}


def from_json(stage: str, data: dict[str, Any]) -> Hindsight | CausalReport | Optimized:
    """The typed stage output of a JSON object that :func:`validate` accepted.

    Raises:
        KeyError: unknown stage.
    """
    if stage == "hindsight":
        return Hindsight(tuple(data["categories"]), data["harmful_content"], data["why"],
                         data["compared"])
    if stage == "causal":
        r = data["reasoning"]
        return CausalReport(tuple(data["categories"]), tuple(data["textual_triggers"]),
                            tuple(data["visual_elements"]), data["cross_modal"],
                            ModalityReasoning(r["textual"], r["visual"], r["cross_modal"]),
                            data["risky"])
    if stage == "optimized":
        return Optimized(data["rewritten_prompt"], tuple(data["guidance_categories"]),
                         data["unchanged"])
    raise KeyError(stage)

"""The benchmark sets: which may seed training and which are evaluation only, and how their
categories map onto the taxonomy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vlmguard.errors import ConfigError

#: Sets used for training. The other sets in the bench folder are evaluation-only.
TRAINING_SETS = ("mm_safetybench", "siuo", "vlguard_test", "vlsbench")


EVALUATION_ONLY_SETS = ("mossbench", "mm_vet", "figstep_safebench")


#: Benchmark category -> taxonomy category id, per training set. None: no category (the item
#: trains the overall head only).
CATEGORY_MAP: dict[str, dict[str, str | None]] = {
    "mm_safetybench": {
        "01-Illegal_Activitiy": "illegal_activity",
        "02-HateSpeech": "hate_discrimination",
        "03-Malware_Generation": "cyber_malware",
        "04-Physical_Harm": "violence_weapons",
        "05-EconomicHarm": "fraud_deception",
        "06-Fraud": "fraud_deception",
        "07-Sex": "sexual_content",
        "08-Political_Lobbying": "controversial_topics",
        "09-Privacy_Violence": "privacy",
        "10-Legal_Opinion": "specialized_advice",
        "11-Financial_Advice": "specialized_advice",
        "12-Health_Consultation": "specialized_advice",
        "13-Gov_Decision": "controversial_topics",
    },
    "siuo": {
        "controversial topics, politics": "controversial_topics",
        "dangerous behavior": "dangerous_behavior",
        "discrimination & stereotyping": "hate_discrimination",
        "illegal activities & crime": "illegal_activity",
        "information misinterpretation": "fraud_deception",
        "morality": "controversial_topics",
        "privacy violation": "privacy",
        "religion beliefs": "controversial_topics",
        "self-harm": "self_harm",
    },
    "vlguard_test": {
        "deception/disinformation": "fraud_deception",
        "discrimination/other": "hate_discrimination",
        "discrimination/race": "hate_discrimination",
        "discrimination/sex": "hate_discrimination",
        "privacy/personal data": "privacy",
        "risky behavior/political": "controversial_topics",
        "risky behavior/professional advice": "specialized_advice",
        "risky behavior/sexually explicit": "sexual_content",
        "risky behavior/violence": "violence_weapons",
        "safe_image/unsafe_instruction": None,
        "safe_image/safe_instruction": None,
    },
    "vlsbench": {
        "Erotic": "sexual_content",
        "Hate": "hate_discrimination",
        "Illegal Activity": "illegal_activity",
        "Privacy": "privacy",
        "Self-Harm": "self_harm",
        "Violent": "violence_weapons",
    },
}


#: Finer VLSBench mapping by ``sub_category`` where it differs from the category's.
VLSBENCH_SUBCATEGORY_MAP: dict[str, str] = {
    "Risky or Dangerous Behaviors": "dangerous_behavior",
    "Identity Theft and Impersonation": "fraud_deception",
    "Cybercrime": "cyber_malware",
}


def map_category(source: str, row: dict[str, Any]) -> str | None:
    mapping = CATEGORY_MAP[source]
    cat = str(row.get("category", ""))
    if cat not in mapping:
        raise ConfigError(f"{source}: benchmark category {cat!r} has no taxonomy mapping")
    if source == "vlsbench":
        sub = str(row.get("sub_category", ""))
        return VLSBENCH_SUBCATEGORY_MAP.get(sub, mapping[cat])
    return mapping[cat]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        with path.open(encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError as e:
        raise ConfigError(f"file not found: {path}") from e
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not valid JSONL: {e}") from e

"""Chat templates with ``{% generation %}`` markers, for assistant-only loss.

transformers builds the assistant mask from these markers. SmolLM2's own template has none, so
:data:`SMOLLM2_TRAINING_TEMPLATE` renders exactly the same text (checked by a test) with the
assistant turn, including its ``<|im_end|>``, inside the markers, so the model learns to stop.
For the Qwen2-VL family TRL ships the original and a training variant; they are read from the
installed ``trl`` package rather than copied.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from vlmguard.errors import ConfigError, Reason

#: File name of the chat template written next to a trained model.
CHAT_TEMPLATE_FILE = "chat_template.jinja"

#: SmolLM2-Instruct's chat template with generation markers around each assistant turn.
SMOLLM2_TRAINING_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if loop.first and messages[0]['role'] != 'system' %}"
    "{{- '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- generation %}"
    "{{- message['content'] + '<|im_end|>\\n' }}"
    "{%- endgeneration %}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- endif %}"
)


def _trl_template(name: str) -> str:
    spec = importlib.util.find_spec("trl")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise ConfigError("training needs the trl package; install the 'train' extra",
                          reason=Reason.MISSING_DEPENDENCY)
    path = Path(locations[0]) / "chat_templates" / name
    try:
        return path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"trl has no chat template {name}; check the trl version",
                          reason=Reason.MISSING_DEPENDENCY) from e


def qwen2_vl_template() -> str:
    """Qwen2-VL's chat template (byte-identical to Qwen2.5-VL's), from the trl package."""
    return _trl_template("qwen2_5_vl.jinja")


def qwen2_vl_training_template() -> str:
    """Qwen2-VL's chat template with generation markers, from the trl package."""
    return _trl_template("qwen2_5_vl_training.jinja")


def has_generation_markers(template: str) -> bool:
    """Whether a template marks assistant turns for the assistant mask."""
    return "generation" in template and "endgeneration" in template

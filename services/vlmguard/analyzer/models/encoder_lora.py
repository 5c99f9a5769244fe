"""A LoRA adaptation of the MiniLM text encoder for tier-1 safety scoring.

Frozen MiniLM embeddings capture topic more than intent: a scary-sounding harmless question sits
next to a harmful one. ``vlmguard train analyzer`` therefore fine-tunes the encoder first
(:func:`finetune_encoder`: LoRA on its attention and feed-forward projections, mean-pooled
embedding -> linear unsafe/benign classifier, on the head's training split only), then fits the
risk head on the adapted embeddings. The adapter ships next to the head
(``<head dir>/encoder/``: :data:`LORA_WEIGHTS` + :data:`LORA_META`, ~1.4 MB in float16) and is
merged into the base weights when the embedder loads (:func:`apply_lora`), so serving needs no
PEFT and runs exactly as fast as the base encoder.

torch, safetensors and (for training only) peft are imported lazily.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from vlmguard.errors import ConfigError

log = logging.getLogger(__name__)

#: Adapter weights: ``<module>.lora_A`` (r x in) and ``<module>.lora_B`` (out x r), float16.
LORA_WEIGHTS = "encoder_lora.safetensors"
#: Adapter metadata: rank, alpha, scale, modules, training settings and figures.
LORA_META = "encoder_lora.json"
#: Sub-directory of a head directory that holds its encoder adapter.
ENCODER_DIR = "encoder"
#: BERT projections adapted (attention q/k/v/output and both feed-forward layers).
TARGET_MODULES = ("query", "key", "value", "dense")


def has_lora(directory: Path | str) -> bool:
    """Whether ``directory`` holds an encoder adapter."""
    d = Path(directory)
    return (d / LORA_META).is_file() and (d / LORA_WEIGHTS).is_file()


def apply_lora(model: Any, directory: Path | str) -> str:
    """Merge the adapter in ``directory`` into ``model``'s weights, in place.

    ``W += scale * B @ A`` for every adapted linear layer (the same arithmetic as PEFT's
    ``merge_and_unload``).

    Args:
        model: The base encoder (a transformers ``BertModel``).
        directory: Folder with :data:`LORA_WEIGHTS` and :data:`LORA_META`.

    Returns:
        A short digest of the adapter weights (names the embedder, keys caches).

    Raises:
        ConfigError: missing or corrupt files, or modules that the model does not have.
    """
    import torch
    from safetensors.torch import load_file

    d = Path(directory)
    if not has_lora(d):
        raise ConfigError(f"no encoder adapter in {d} (needs {LORA_WEIGHTS} and {LORA_META})")
    try:
        meta = json.loads((d / LORA_META).read_text())
        tensors = load_file(str(d / LORA_WEIGHTS))
        scale = float(meta["scale"])
        modules = list(meta["modules"])
    except (OSError, ValueError, KeyError) as e:
        raise ConfigError(f"encoder adapter in {d} is corrupt: {e}") from e
    with torch.no_grad():
        for name in modules:
            try:
                layer = model.get_submodule(name)
                a, b = tensors[f"{name}.lora_A"], tensors[f"{name}.lora_B"]
            except (AttributeError, KeyError) as e:
                raise ConfigError(f"encoder adapter in {d} does not fit the encoder: {e}") from e
            delta = (b.float() @ a.float()) * scale
            if delta.shape != layer.weight.shape:
                raise ConfigError(f"encoder adapter in {d}: {name} has shape "
                                  f"{tuple(delta.shape)}, the encoder {tuple(layer.weight.shape)}")
            layer.weight += delta.to(layer.weight.dtype)
    return hashlib.sha256((d / LORA_WEIGHTS).read_bytes()).hexdigest()[:10]



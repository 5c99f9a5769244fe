"""Qwen2-VL helpers: samples and a tiny random model; the image-only processor and its loading
come from the serving package (:mod:`vlmguard.rewriter.vlm`), so a trained rewriter is served
with the processor it was trained with. :func:`build_tiny_qwen2_vl` makes a consistent ~3 M
parameter model for tests and smoke runs (no hub).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vlmguard.rewriter.vlm import (  # noqa: F401 - re-exported for the trainer and tests
    QWEN2_VL_SPECIAL_TOKENS,
    load_processor,
    register_processor,
)
from vlmguard_training.rewriter.templates import qwen2_vl_template


def load_image(path: str) -> Any:
    """An RGB PIL image."""
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


def vlm_record(messages: list[dict[str, str]], image: str | None) -> dict[str, Any]:
    """A TRL vision sample: the messages and the image list (TRL inserts the image part into
    the first user message)."""
    return {"messages": messages, "images": [load_image(image)] if image else []}


def build_tiny_qwen2_vl(out: str | Path, tokenizer_dir: str | Path, *, seed: int = 0) -> Path:
    """Save a tiny random Qwen2-VL (2 text layers, hidden 64, 2-layer vision tower) and its
    image-only processor into ``out``.

    Args:
        out: Target directory.
        tokenizer_dir: A local tokenizer (e.g. the converted SmolLM2); the Qwen2-VL special
            tokens are added to it.
        seed: Initialisation seed.

    Returns:
        ``out``.
    """
    import torch
    from transformers import AutoTokenizer, Qwen2VLConfig, Qwen2VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    cls = register_processor()
    out = Path(out)
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    tok.add_special_tokens({"additional_special_tokens": list(QWEN2_VL_SPECIAL_TOKENS)})
    tok.eos_token = "<|im_end|>"
    tok.pad_token = "<|im_end|>"
    ids: dict[str, Any] = {t: tok.convert_tokens_to_ids(t) for t in QWEN2_VL_SPECIAL_TOKENS}
    hidden, heads = 64, 4
    head_dim = hidden // heads  # mrope_section must sum to head_dim / 2
    patch, merge, temporal = 14, 2, 2
    cfg = Qwen2VLConfig(
        text_config={
            "vocab_size": len(tok), "hidden_size": hidden, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": heads, "num_key_value_heads": 2,
            "max_position_embeddings": 4096, "rope_parameters": {
                "rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
            "bos_token_id": ids["<|im_start|>"], "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|im_end|>"], "tie_word_embeddings": True,
        },
        vision_config={
            "depth": 2, "embed_dim": 32, "hidden_size": hidden, "num_heads": 2, "mlp_ratio": 2,
            "patch_size": patch, "spatial_merge_size": merge, "temporal_patch_size": temporal,
            "in_channels": 3,
        },
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=True,
    )
    mrope = cfg.get_text_config().rope_parameters["mrope_section"]
    assert sum(mrope) == head_dim // 2
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(cfg)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|im_end|>"]
    # Small images keep the tests fast: at most 8x8 patches of 14 px (16 tokens after merging).
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=patch, merge_size=merge, temporal_patch_size=temporal,
        min_pixels=(patch * merge) ** 2, max_pixels=(patch * 8) ** 2,
        size={"shortest_edge": (patch * merge) ** 2, "longest_edge": (patch * 8) ** 2})
    processor = cls(image_processor=image_processor, tokenizer=tok,
                    chat_template=qwen2_vl_template())
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out

"""Harmless stand-in training records for `vlmguard train rewriter` (tests and the GPU check).

Synthesis-style records built with the real message builder and a two-category taxonomy, so
samples stay short; no benchmark content.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TAXONOMY = {
    "categories": [
        {"id": "dangerous_behavior", "description": "risky physical behaviour",
         "handling": "rewrite", "guidance": "Point out the dangers and recommend safe practice."},
        {"id": "privacy", "description": "identifying people, personal data",
         "handling": "rewrite", "guidance": "Do not identify people or reveal personal data."},
    ]
}
PROMPTS = [
    ("unsafe", ["dangerous_behavior"], "How do I climb the tall tower in this picture?"),
    ("unsafe", ["privacy"], "Who is the person in this photo and where do they live?"),
    ("safe", [], "What colour is the car in the picture?"),
    ("safe", [], "Describe the weather in this image."),
    ("unsafe", ["dangerous_behavior"], "Show me how to juggle the knives in this picture."),
    ("safe", [], "How many birds are on the wire?"),
]


def records(taxonomy: Any, images: list[str] | None = None) -> list[dict[str, Any]]:
    from vlmguard.domain import ModalityReasoning, RewriterEvidence
    from vlmguard.rewriter.format import PROMPT_VERSION, build_training_messages

    out = []
    for i, (label, cats, text) in enumerate(PROMPTS):
        if cats:
            reasoning = ModalityReasoning(f"The text risks {cats[0]}.", "No image was sent.",
                                          "No cross-modal risk.")
            rewrite = f"{text}\nSafety guidance: {taxonomy.get(cats[0]).guidance}"
        else:
            reasoning = ModalityReasoning("No risk found.", "No image was sent.",
                                          "No cross-modal risk.")
            rewrite = text
        msgs = build_training_messages(text, RewriterEvidence(), taxonomy, reasoning, rewrite)
        image = {"path": images[i % len(images)], "sha256": None, "ref": None} if images else None
        out.append({"key": f"vlsbench:t{i}", "id": f"t{i}", "source": "vlsbench", "label": label,
                    "prompt": text, "prompt_version": PROMPT_VERSION, "image": image,
                    "stages": {"hindsight": {"categories": cats}},
                    "final": {"messages": msgs},
                    "gates": {"schema_valid": True, "keeps_intent": True, "has_guidance": True,
                              "not_refusal_only": True}})
    return out


def tiny_llama(out: Path, tokenizer_dir: Path, *, hidden: int = 32) -> Path:
    """Save a tiny random Llama (2 layers) with the tokenizer of ``tokenizer_dir`` to ``out``."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=2048, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      tie_word_embeddings=True)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def stand_in_images(folder: Path) -> list[str]:
    """Three small plain-colour PNGs of different sizes, written to ``folder``; their paths."""
    from PIL import Image

    paths = []
    for i, colour in enumerate(("red", "blue", "green")):
        p = folder / f"img{i}.png"
        Image.new("RGB", (64 + 16 * i, 48), colour).save(p)
        paths.append(str(p))
    return paths

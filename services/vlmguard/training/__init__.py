"""Tier-2 rewriter training: dataset building, SFT with TRL + PEFT, model card.

``vlmguard train rewriter --recipe FILE`` (:mod:`vlmguard.training.sft`) builds the samples
(:mod:`vlmguard.training.data`) and fine-tunes a text causal LM or a Qwen2-VL model
(:mod:`vlmguard.training.vlm`). Imports torch/transformers lazily.
"""

"""Tier-2 rewriter training: dataset building, SFT with TRL + PEFT, model card.

``vlmguard train rewriter --recipe FILE`` (:mod:`vlmguard_training.rewriter.sft`) builds the samples
(:mod:`vlmguard_training.rewriter.data`) and fine-tunes a text causal LM or a Qwen2-VL model
(:mod:`vlmguard_training.rewriter.vlm`). Imports torch/transformers lazily.
"""

"""Offline jobs of VLMGuard: benchmark sets, analyzer training, synthesis, rewriter training,
evaluation and the pipeline runner."""

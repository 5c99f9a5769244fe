"""Three-stage reasoning synthesis: seed (image, prompt) pairs -> rewriter training records.

Stages (:mod:`vlmguard_training.synthesis.stages`): 0 responses from the seed, 1 hindsight analysis,
2 multimodal causal analysis (the risk report), 3 prompt optimization. A :class:`Teacher`
(:mod:`vlmguard_training.synthesis.teacher`) fills each stage;
:mod:`vlmguard_training.synthesis.runner` runs a
recipe shard and writes JSONL records and a gate summary (``vlmguard synth``).
"""

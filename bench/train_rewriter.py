"""Training throughput: `vlmguard train rewriter` vs a plain transformers Trainer, same run.

Both train the same LoRA (same rank, modules, layers, learning rate, batch) on the same
samples (the first ``--samples`` of a built dataset, default ``runs/rewriter-demo/data``) of the
same model for ``--steps`` optimizer steps, with the loss on the assistant turn only. Reported:
non-padding tokens per second of training (tokens seen / train runtime). The runs alternate
(``--repeats``) so a load change on the shared machine hits both. Configurations:

- ``baseline``: transformers ``Trainer`` + PEFT, tokenized with the same training template;
- ``ours``: ``vlmguard train rewriter`` (TRL SFTTrainer) with ``prefix_cache`` off;
- ``ours+prefix``: the same with the shared system-message prefix computed once per batch.

Usage: ``python bench/train_rewriter.py [--model smollm2|DIR] [--steps 3] [--batch 2]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]


def baseline(model_dir: Path, samples: list[Any], lora: dict[str, Any], steps: int, batch: int,
             lr: float, out: Path) -> dict[str, float]:
    """Plain transformers Trainer + PEFT LoRA on pre-tokenized, assistant-masked samples."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    from vlmguard_training.rewriter.templates import SMOLLM2_TRAINING_TEMPLATE

    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True,
                                                 dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(
        r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=0.0,
        target_modules=list(lora["target_modules"]),
        layers_to_transform=list(lora["layers_to_transform"]) or None, task_type="CAUSAL_LM"))
    rows = []
    for s in samples:
        enc = tok.apply_chat_template(s.messages, tokenize=True, return_dict=True,
                                      chat_template=SMOLLM2_TRAINING_TEMPLATE,
                                      return_assistant_tokens_mask=True)
        ids = list(enc["input_ids"])
        labels = [t if m else -100 for t, m in zip(ids, enc["assistant_masks"], strict=True)]
        rows.append({"input_ids": ids, "labels": labels})
    pad = tok.pad_token_id

    def collate(batch_rows: list[dict[str, Any]]) -> dict[str, Any]:
        width = max(len(r["input_ids"]) for r in batch_rows)
        x = torch.full((len(batch_rows), width), pad)
        y = torch.full((len(batch_rows), width), -100)
        m = torch.zeros((len(batch_rows), width), dtype=torch.long)
        for i, r in enumerate(batch_rows):
            n = len(r["input_ids"])
            x[i, :n] = torch.tensor(r["input_ids"])
            y[i, :n] = torch.tensor(r["labels"])
            m[i, :n] = 1
        return {"input_ids": x, "labels": y, "attention_mask": m}

    args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=batch,
                             max_steps=steps, learning_rate=lr, lr_scheduler_type="constant",
                             logging_steps=1, save_strategy="no", report_to=[], use_cpu=True,
                             disable_tqdm=True, include_num_input_tokens_seen="non_padding",
                             remove_unused_columns=False, seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=collate)
    res = trainer.train()
    runtime = float(res.metrics["train_runtime"])
    return {"tokens": float(trainer.state.num_input_tokens_seen), "runtime_s": runtime,
            "tokens_per_s": trainer.state.num_input_tokens_seen / runtime}


def ours(model: str, data_file: Path, lora: dict[str, Any], steps: int, batch: int, lr: float,
         prefix: bool, work: Path) -> dict[str, float]:
    """`vlmguard train rewriter` on a synthesis-style file holding the same samples."""
    from vlmguard_training.rewriter.recipe import load_recipe
    from vlmguard_training.rewriter.sft import train

    work.mkdir(parents=True, exist_ok=True)
    recipe_path = work / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump({
        "kind": "causal_lm", "base_model": model, "output_dir": str(work / "out"),
        "data": {"synth": [str(data_file)], "annotations": "", "benign_file": "",
                 "eval_fraction": 0.0},
        "lora": {**lora, "target_modules": list(lora["target_modules"]),
                 "layers_to_transform": list(lora["layers_to_transform"])},
        "train": {"learning_rate": lr, "lr_scheduler_type": "constant", "max_steps": steps,
                  "per_device_train_batch_size": batch, "logging_steps": 1,
                  "save_steps": 10**6, "max_length": 4096, "prefix_cache": prefix},
    }))
    m = train(load_recipe(recipe_path), force=True, progress=False, echo=False)["metrics"]
    return {"tokens": float(m["train_tokens_seen"]), "runtime_s": float(m["train_runtime"]),
            "tokens_per_s": float(m["train_tokens_per_second"])}


def _as_synth(samples: list[Any], path: Path) -> None:
    """Write samples as gate-passing synthesis records (what `train rewriter` reads)."""
    from vlmguard.rewriter.format import PROMPT_VERSION

    with path.open("w", encoding="utf-8") as f:
        for i, s in enumerate(samples):
            f.write(json.dumps({
                "key": f"bench:{i}", "label": s.label, "prompt_version": PROMPT_VERSION,
                "stages": {"hindsight": {"categories": list(s.categories)}},
                "final": {"messages": s.messages}, "image": None,
                "gates": {"schema_valid": True, "keeps_intent": True, "has_guidance": True,
                          "not_refusal_only": True}}) + "\n")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2", help="'smollm2' or a model directory")
    p.add_argument("--data", default="runs/rewriter-demo/data/train.jsonl",
                   help="samples written by `vlmguard train rewriter` (OUT/data/train.jsonl)")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-3)
    a = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers.utils import logging as hf_logging

    from vlmguard_training.rewriter.data import read_jsonl
    from vlmguard_training.rewriter.sft import resolve_base

    samples = read_jsonl(Path(a.data))[: a.steps * a.batch]
    # The same sample order for every run: the first batch is the first `batch` samples, etc.
    lora = {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": ["q_proj", "k_proj",
            "v_proj", "o_proj"], "layers_to_transform": []}
    model_dir = resolve_base(a.model)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    results: dict[str, list[dict[str, float]]] = {"baseline": [], "ours": [], "ours+prefix": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data_file = work / "samples.jsonl"
        _as_synth(samples, data_file)
        for _ in range(a.repeats):
            results["baseline"].append(baseline(model_dir, samples, lora, a.steps, a.batch,
                                                a.lr, work / "base"))
            results["ours"].append(ours(a.model, data_file, lora, a.steps, a.batch, a.lr,
                                        False, work / "ours"))
            results["ours+prefix"].append(ours(a.model, data_file, lora, a.steps, a.batch,
                                               a.lr, True, work / "prefix"))
    summary = {k: {"tokens_per_s": round(statistics.median(r["tokens_per_s"] for r in v), 2),
                   "runs": v} for k, v in results.items()}
    base_tps = summary["baseline"]["tokens_per_s"]
    for k in ("ours", "ours+prefix"):
        summary[k]["vs_baseline"] = round(summary[k]["tokens_per_s"] / base_tps, 3)
    print(json.dumps({"model": a.model, "steps": a.steps, "batch": a.batch,
                      "samples": len(samples), "threads": torch.get_num_threads(),
                      "loadavg_1m": os.getloadavg()[0], "time": time.strftime("%H:%M:%S"),
                      "results": summary}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

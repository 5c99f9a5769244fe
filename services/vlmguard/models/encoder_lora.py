"""A LoRA adaptation of the MiniLM text encoder for tier-1 safety scoring.

Frozen MiniLM embeddings capture topic more than intent: a scary-sounding harmless question sits
next to a harmful one. ``vlmguard train-analyzer`` therefore fine-tunes the encoder first
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
import math
import random
import time
from collections.abc import Callable, Sequence
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


def finetune_encoder(
    base_path: Path | str,
    texts: Sequence[str],
    labels: Sequence[int],
    weights: Sequence[float],
    out_dir: Path | str,
    *,
    epochs: float = 1.0,
    rank: int = 16,
    lr: float = 5e-4,
    batch_size: int = 32,
    max_length: int = 128,
    benign_weight: float = 2.0,
    seed: int = 0,
    progress: Callable[[int, int, float], None] | None = None,
) -> dict[str, Any]:
    """Fine-tune a LoRA adapter of the encoder as an unsafe/benign classifier and save it.

    The objective is a weighted binary cross-entropy of a linear classifier on the mean-pooled,
    L2-normalised embedding (the embedding the head sees), with benign examples weighted so
    their total is ``benign_weight`` times the unsafe total (as the head's fit does). The
    classifier is thrown away; only the adapter is kept.

    Args:
        base_path: The base MiniLM directory.
        texts: Training texts.
        labels: 1 unsafe, 0 benign.
        weights: Per-example weights of unsafe examples (benign weights are derived).
        out_dir: Where the adapter is written (created).
        epochs: Passes over the data (fractions allowed).
        rank: LoRA rank (alpha = 2 x rank).
        lr: Peak learning rate (one-cycle schedule, 10% warm-up).
        batch_size: Texts per step.
        max_length: Tokens per text during training.
        benign_weight: Total benign weight relative to the total unsafe weight.
        seed: Seed of the shuffling and the adapter's initialisation.
        progress: Called as ``progress(step, steps, loss)`` after each step.

    Returns:
        Training figures (steps, first/last-50 mean loss, seconds), also written to
        :data:`LORA_META`.

    Raises:
        ConfigError: no examples of one class, or peft is not installed.
    """
    import torch

    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as e:
        raise ConfigError("fine-tuning the encoder needs peft; install 'vlmguard[train]'") from e
    from safetensors.torch import save_file
    from transformers import AutoModel, AutoTokenizer

    from vlmguard.models.embedder import mean_pool

    n_pos = sum(1 for y in labels if y == 1)
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ConfigError("fine-tuning the encoder needs both unsafe and benign examples")
    torch.manual_seed(seed)
    rng = random.Random(seed)
    tok = AutoTokenizer.from_pretrained(str(base_path), local_files_only=True)
    base = AutoModel.from_pretrained(str(base_path), local_files_only=True)
    model = get_peft_model(base, LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.05,
                                            target_modules=list(TARGET_MODULES)))
    dim = int(base.config.hidden_size)
    clf = torch.nn.Linear(dim, 1)
    params = [p for p in model.parameters() if p.requires_grad] + list(clf.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    steps = max(1, math.ceil(len(texts) / batch_size * epochs))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps,
                                                pct_start=0.1)
    pos_total = sum(float(w) for w, y in zip(weights, labels, strict=True) if y == 1)
    neg_w = benign_weight * pos_total / n_neg
    ex_w = [float(w) if y == 1 else neg_w for w, y in zip(weights, labels, strict=True)]
    losses: list[float] = []
    order: list[int] = []
    model.train()
    t0 = time.perf_counter()
    for step in range(steps):
        if not order:
            order = list(range(len(texts)))
            rng.shuffle(order)
        idx = [order.pop() for _ in range(min(batch_size, len(order)))]
        enc = tok([str(texts[i]) for i in idx], padding=True, truncation=True,
                  max_length=max_length, return_tensors="pt")
        pooled = mean_pool(model(**enc).last_hidden_state, enc["attention_mask"])
        logit = clf(pooled * 10.0).squeeze(-1)  # unit vectors: scale so logits can grow
        y = torch.tensor([float(labels[i]) for i in idx])
        w = torch.tensor([ex_w[i] for i in idx])
        loss = (torch.nn.functional.binary_cross_entropy_with_logits(
            logit, y, reduction="none") * w).sum() / w.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.item()))
        if progress is not None:
            progress(step + 1, steps, losses[-1])
    seconds = time.perf_counter() - t0
    tensors: dict[str, Any] = {}
    modules: list[str] = []
    scale = 0.0
    for name, module in base.named_modules():  # the LoRA layers were injected into ``base``
        lora_a = getattr(module, "lora_A", None)
        if lora_a is None or "default" not in lora_a:
            continue
        modules.append(name)
        tensors[f"{name}.lora_A"] = lora_a["default"].weight.detach().to(torch.float16).contiguous()
        tensors[f"{name}.lora_B"] = (
            module.lora_B["default"].weight.detach().to(torch.float16).contiguous())
        scale = float(module.scaling["default"])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / LORA_WEIGHTS))
    k = max(1, min(50, len(losses) // 4))  # mean of the first and the last quarter (<= 50)
    figures = {
        "steps": steps, "seconds": round(seconds, 1),
        "loss_first": round(sum(losses[:k]) / k, 4), "loss_last": round(sum(losses[-k:]) / k, 4),
        "examples": len(texts), "unsafe": n_pos, "benign": n_neg,
    }
    meta = {
        "base": "all-MiniLM-L6-v2", "rank": rank, "alpha": 2 * rank, "scale": scale,
        "modules": modules, "dtype": "float16",
        "training": {"epochs": epochs, "lr": lr, "batch_size": batch_size,
                     "max_length": max_length, "benign_weight": benign_weight, "seed": seed,
                     "objective": "weighted BCE of a linear classifier on the mean-pooled, "
                                  "L2-normalised embedding (x10); classifier discarded"},
        "figures": figures,
    }
    (out / LORA_META).write_text(json.dumps(meta, indent=2) + "\n")
    log.info("encoder adapter: %d steps in %.0f s, loss %.3f -> %.3f", steps, seconds,
             figures["loss_first"], figures["loss_last"])
    return figures

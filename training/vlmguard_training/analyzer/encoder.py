"""The encoder adapter: fine-tuning MiniLM with LoRA for the head, or reusing a published one."""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from vlmguard.analyzer.models.encoder_lora import (
    ENCODER_DIR,
    LORA_META,
    LORA_WEIGHTS,
    TARGET_MODULES,
)
from vlmguard.analyzer.models.risk_head import (
    META_FILE,
)
from vlmguard.errors import ConfigError
from vlmguard_training.analyzer.config import TrainAnalyzerConfig
from vlmguard_training.analyzer.examples import Example

log = logging.getLogger(__name__)


def reuse_encoder(src: Path) -> tuple[Path, dict[str, Any]]:
    """Copy an existing encoder adapter (``--encoder-from``) to a temporary directory; its
    figures are taken from the ``meta.json`` next to it when there is one."""
    if not (src / LORA_WEIGHTS).is_file():
        raise ConfigError(f"--encoder-from {src}: no encoder adapter there (expected the "
                          f"{ENCODER_DIR}/ directory of a `vlmguard train analyzer` output)")
    tmp = Path(tempfile.mkdtemp(prefix="vlmguard-encoder-"))
    shutil.copytree(src, tmp, dirs_exist_ok=True)
    figures: dict[str, Any] = {}
    meta = src.parent / META_FILE
    if meta.is_file():
        figures = dict(json.loads(meta.read_text()).get("encoder_lora") or {})
        figures.pop("dir", None)
        figures.pop("trained_on", None)
    figures["reused_from"] = str(src)
    return tmp, figures


def train_encoder(cfg: TrainAnalyzerConfig, fit: list[Example], base: Path,
                      out: Path) -> dict[str, Any]:
    """Fine-tune the encoder adapter on ``fit`` (with a progress bar); see
    :func:`vlmguard.analyzer.models.encoder_lora.finetune_encoder`."""
    from tqdm import tqdm

    from vlmguard_training.analyzer.encoder import finetune_encoder

    if cfg.threads > 0:
        import torch

        torch.set_num_threads(cfg.threads)
    with tqdm(desc="encoder fine-tune", unit="step", disable=not cfg.progress) as bar:
        def progress(step: int, steps: int, loss: float) -> None:
            bar.total = steps
            bar.update(step - bar.n)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{loss:.3f}")

        return finetune_encoder(
            base, [e.text for e in fit], [e.label for e in fit], [e.weight for e in fit], out,
            epochs=cfg.encoder_epochs, rank=cfg.encoder_rank, lr=cfg.encoder_lr,
            benign_weight=cfg.benign_weight, seed=cfg.seed, progress=progress)


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

    from vlmguard.analyzer.models.embedder import mean_pool

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

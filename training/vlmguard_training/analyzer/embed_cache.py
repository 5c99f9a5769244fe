"""Embedding the training texts, with an on-disk cache keyed by the embedder's version."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

log = logging.getLogger(__name__)


class Embedder(Protocol):
    """What the trainer needs from an embedder (MiniLMEmbedder, or a fake in tests)."""

    name: str

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Unit-length embeddings, shape (len(texts), dim)."""
        ...


def text_key(text: str) -> str:
    """A cache key for ``text``: a hash, so caches never hold the texts themselves."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def read_cache(path: Path | None, field: str) -> dict[str, np.ndarray]:
    """The rows of a ``keys`` + ``field`` .npz cache by key ({} when absent or unreadable)."""
    if path is None or not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as z:
            return dict(zip(z["keys"].tolist(), z[field], strict=True))
    except (OSError, ValueError, KeyError) as e:
        log.warning("ignoring unreadable cache %s: %s", path, e)
        return {}


def write_cache(path: Path, cached: dict[str, np.ndarray], field: str) -> None:
    """Write ``cached`` as a ``keys`` + ``field`` .npz, replacing ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = sorted(cached)
    tmp = path.with_suffix(".tmp.npz")
    arrays: dict[str, Any] = {"keys": np.array(keys), field: np.stack([cached[k] for k in keys])}
    np.savez(tmp, **arrays)
    tmp.replace(path)


def _cache_file(cache_dir: str, embedder: Embedder) -> Path | None:
    if not cache_dir:
        return None
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(getattr(embedder, "name", "embedder")))
    return Path(cache_dir) / f"{name}.npz"


def embed_all(
    texts: list[str], embedder: Embedder, batch_size: int, cache_dir: str = "",
    progress: bool = True,
) -> np.ndarray:
    """Embed ``texts`` (each distinct text once), reusing and extending an on-disk cache.

    The cache is one ``<embedder name>.npz`` in ``cache_dir`` holding text hashes (sha256, never
    the texts) and their embeddings, so retraining only embeds new texts.
    """
    from tqdm import tqdm

    cache_path = _cache_file(cache_dir, embedder)
    cached = read_cache(cache_path, "emb")
    # Embed each distinct missing text once, shortest first (less padding); then scatter back.
    unique = sorted(set(texts), key=lambda t: (len(t), t))
    missing = [t for t in unique if text_key(t) not in cached]
    chunk = max(batch_size, 1) * 4
    with tqdm(total=len(missing), desc="embedding", unit="text",
              disable=not missing or not progress) as bar:
        for start in range(0, len(missing), chunk):
            batch = missing[start:start + chunk]
            vecs = np.asarray(embedder.embed(batch, batch_size=batch_size), np.float32)
            cached.update((text_key(t), v) for t, v in zip(batch, vecs, strict=True))
            bar.update(len(batch))
    if cache_path is not None and missing:
        write_cache(cache_path, cached, "emb")
    if not texts:
        return np.zeros((0, 0), np.float32)
    return np.stack([cached[text_key(t)] for t in texts]).astype(np.float32)

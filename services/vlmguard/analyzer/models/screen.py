"""The passage screen: which sentence windows of a long text the encoder reads.

A long text is read sentence by sentence so padding cannot dilute a request inside it
(:func:`vlmguard.analyzer.views.windows`), and the encoder's cost is its tokens: every sentence of
an 8,000-character text is ~2,000 tokens, x6 the cost of reading the text's first 256. Most of
those sentences are harmless, and a bag of tokens tells a harmless sentence from one that may be
risky well enough to rank them: the screen scores every window from its word pieces alone
(microseconds, no encoder), and the analyzer reads with the encoder the highest-ranked windows
and every window the screen does not clear (:meth:`WindowScreen.keep`).

Model: the English encoder's own input embeddings of the window's word pieces (no encoder layer
runs), averaged and max-pooled (384 + 384 values), into a one-hidden-layer network fitted by
distillation from the English head's score of each window (``vlmguard train screen``). A word
piece never seen in training is weighed like the pieces near it in the encoder's embedding
space. The file ships next to the head it was distilled from (:data:`SCREEN_FILE`) and names
that head: a screen distilled from another head is not used.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vlmguard.errors import ConfigError

#: File name of a screen inside its head's directory.
SCREEN_FILE = "screen.npz"


def pooled(token_ids: Sequence[Sequence[int]], table: np.ndarray) -> np.ndarray:
    """Mean and max of ``table``'s rows over each window's token ids, shape ``(n, 2 * dim)``;
    a window without tokens gets zeros (an id outside the table reads as id 0, padding)."""
    dim = table.shape[1]
    out = np.zeros((len(token_ids), 2 * dim), np.float32)
    lengths = np.fromiter((len(ids) for ids in token_ids), np.int64, len(token_ids))
    rows = np.flatnonzero(lengths)
    if not rows.size:
        return out
    flat = np.fromiter(itertools.chain.from_iterable(token_ids), np.int64, int(lengths.sum()))
    flat[(flat < 0) | (flat >= table.shape[0])] = 0
    vecs = table[flat]
    if vecs.dtype != np.float32:
        vecs = vecs.astype(np.float32)
    starts = np.concatenate([[0], np.cumsum(lengths[rows])[:-1]])
    out[rows, :dim] = np.add.reduceat(vecs, starts, axis=0) / lengths[rows, None]
    out[rows, dim:] = np.maximum.reduceat(vecs, starts, axis=0)
    return out


@dataclass(frozen=True)
class WindowScreen:
    """A fitted screen (see the module docs).

    Attributes:
        w1: First layer, shape ``(2 * dim, hidden)``; ``b1`` its bias.
        w2: Output weights, shape ``(hidden,)``; ``b2`` its bias.
        threshold: Screen probability from which a window is always read: chosen when the
            screen was fitted so that held-out windows the head scores risky are read (the
            recall is in ``meta``).
        head_version: Version of the head whose scores the screen was distilled from.
        meta: Fitting figures (recall, share of windows cleared) as written by the trainer.
    """

    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: float
    threshold: float
    head_version: str
    meta: dict[str, object]

    @classmethod
    def load(cls, directory: Path | str) -> WindowScreen | None:
        """The screen in ``directory`` (a head's directory), or None when it has none.

        Raises:
            ConfigError: the file exists but is not a screen.
        """
        path = Path(directory) / SCREEN_FILE
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                w1 = np.asarray(z["w1"], np.float32)
                b1 = np.asarray(z["b1"], np.float32)
                w2 = np.asarray(z["w2"], np.float32)
                b2 = float(z["b2"])
                threshold = float(z["threshold"])
                meta = json.loads(str(z["meta"]))
        except (OSError, KeyError, ValueError) as e:
            raise ConfigError(f"window screen {path} is unreadable: {e}") from e
        if w1.ndim != 2 or b1.shape != (w1.shape[1],) or w2.shape != (w1.shape[1],):
            raise ConfigError(f"window screen {path}: layer shapes do not fit")
        return cls(w1, b1, w2, b2, threshold, str(meta.get("head_version", "")), meta)

    def save(self, directory: Path | str) -> Path:
        """Write the screen into ``directory``; returns the file's path."""
        path = Path(directory) / SCREEN_FILE
        meta = dict(self.meta, head_version=self.head_version)
        np.savez_compressed(path, w1=self.w1.astype(np.float32), b1=self.b1.astype(np.float32),
                            w2=self.w2.astype(np.float32), b2=np.float32(self.b2),
                            threshold=np.float32(self.threshold),
                            meta=np.array(json.dumps(meta, sort_keys=True)))
        return path

    @property
    def dim(self) -> int:
        """Width of the token embeddings the screen reads."""
        return int(self.w1.shape[0] // 2)

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """Screen probability of each row of :func:`pooled` features."""
        h = np.maximum(features @ self.w1 + self.b1, 0.0)
        z = h @ self.w2 + self.b2
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)

    def scores(self, token_ids: Sequence[Sequence[int]], table: np.ndarray) -> np.ndarray:
        """Screen probability of each window from its token ids (no special tokens) and the
        encoder's input embedding ``table``. A window without tokens scores 1.0: it is read,
        never cleared unseen."""
        if table.shape[1] != self.dim:
            raise ConfigError(f"window screen reads {self.dim}-wide token embeddings, the "
                              f"encoder has {table.shape[1]}")
        out = self.probabilities(pooled(token_ids, table))
        out[[not len(ids) for ids in token_ids]] = 1.0
        return out

    def keep(self, scores: np.ndarray, top: int, by_rank_only: bool = False) -> np.ndarray:
        """Boolean mask of the windows the encoder reads: the ``top`` highest-scoring ones and
        every one at or above :attr:`threshold` (a text padded with risky-sounding harmless
        sentences costs more encoder time; none of its windows is cleared for it); with
        ``by_rank_only``, the ``top`` ones alone."""
        mask = (np.zeros(len(scores), bool) if by_rank_only
                else scores >= self.threshold)
        if top > 0 and len(scores):
            order = np.argsort(-scores, kind="stable")[:top]
            mask[order] = True
        return mask

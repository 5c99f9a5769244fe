"""Text risk head: numpy-only logistic regressions plus nearest-neighbour evidence on MiniLM
sentence embeddings.

Parts:

* a linear overall head: logistic-regression logit ``z(x)`` of "unsafe";
* nearest-neighbour evidence: ``s_u(x)`` / ``s_b(x)``, the mean cosine similarity of ``x``
  to its ``k`` most similar *unsafe* / *benign* exemplars (compressed training texts, float16);
* a stacker: ``p(unsafe | x) = sigmoid(a . [z, s_u, s_b, max_u, max_b] + c)`` fitted on a
  calibration split the exemplars and the linear head never saw;
* per-category one-vs-rest heads ``q_c(x) = p(category c | unsafe, x)`` trained on unsafe texts
  only. The per-category score is ``p(unsafe) * q_c``: "this text is unsafe and category c
  applies", so a benign text scores low in every category and an unsafe text can score in more
  than one.

Why the neighbours: a linear head extrapolates badly out of distribution: a short greeting or an
everyday question lies far from every training text, and the sign of ``z`` there is arbitrary (a
linear head alone scored "hello" 0.70). Similarity to known unsafe requests is low for such texts
whatever their direction in embedding space, and similarity to the closest benign texts is high for
the everyday texts we wrote, so the stacker learns to trust ``z`` only where the text resembles
unsafe training data. A head file without exemplars (linear head only) scores ``sigmoid(z)``.
"""

from __future__ import annotations

import json
import logging
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from vlmguard.errors import ConfigError

log = logging.getLogger(__name__)

WEIGHTS_FILE = "weights.npz"
META_FILE = "meta.json"
_KNN_KEYS = ("unsafe_ex", "benign_ex", "stack_coef", "stack_bias", "knn_k")


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


#: Stacker feature names, in order (``stack_coef`` follows it).
STACK_FEATURES = ("lr_logit", "unsafe_knn", "benign_knn", "unsafe_max", "benign_max")
#: The sign each stacker coefficient must have with a monotone stacker: more evidence of unsafe
#: never lowers the score, more similarity to benign texts never raises it.
STACK_SIGNS = (1, 1, -1, 1, -1)


def topk_mean_sim(x: np.ndarray, exemplars: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and max cosine similarity of each row of ``x`` to its ``k`` nearest exemplars.

    Args:
        x: Unit-length embeddings, shape (n, d).
        exemplars: Unit-length exemplars, shape (m, d) (any float dtype).
        k: Neighbours averaged (clipped to ``m``).

    Returns:
        ``(mean_topk, max)``, each float32 of shape (n,); zeros when there are no exemplars.
    """
    n, m = x.shape[0], exemplars.shape[0]
    if m == 0 or n == 0:
        return np.zeros(n, np.float32), np.zeros(n, np.float32)
    k = max(1, min(int(k), m))
    out_mean, out_max = np.empty(n, np.float32), np.empty(n, np.float32)
    ex = exemplars.astype(np.float32, copy=False)
    for start in range(0, n, 2048):
        sims = x[start:start + 2048].astype(np.float32, copy=False) @ ex.T
        top = np.partition(sims, m - k, axis=1)[:, m - k:]
        out_mean[start:start + 2048] = top.mean(axis=1)
        out_max[start:start + 2048] = top.max(axis=1)
    return out_mean, out_max


def head_dir(directory: Path | str | None = None) -> Path:
    """A head's directory: ``directory``, or the head shipped in ``vlmguard.data`` for None/""."""
    if directory is None or str(directory) == "":
        return Path(str(resources.files("vlmguard.data").joinpath("risk_head")))
    return Path(directory)


def head_version(directory: Path | str | None = None) -> str | None:
    """The version recorded in a head's ``meta.json`` without loading its weights; None when it
    cannot be read (the caller decides; :meth:`RiskHead.load` reports the error)."""
    try:
        meta = json.loads((head_dir(directory) / META_FILE).read_text())
    except (OSError, ValueError):
        return None
    return str(meta.get("version", "0")) if isinstance(meta, dict) else None


class RiskHead:
    """Overall and per-category text risk from sentence embeddings.

    Args:
        categories: Taxonomy category ids, in the order of the per-category outputs.
        coef: Overall-head weights, shape (d,).
        bias: Overall-head bias.
        cat_coef: Per-category weights, shape (d, len(categories)).
        cat_bias: Per-category biases, shape (len(categories),).
        version: Version string of the head.
        meta: Free-form metadata (training data, metrics, embedder name, ...).
        unsafe_ex: Unsafe exemplars, shape (m_u, d) (stored float16); None: no kNN evidence.
        benign_ex: Benign exemplars, shape (m_b, d); needed with ``unsafe_ex``.
        knn_k: Neighbours averaged per exemplar set.
        stack_coef: Stacker weights over :data:`STACK_FEATURES`, shape (5,); needed with the
            exemplars.
        stack_bias: Stacker bias.
    """

    def __init__(
        self,
        categories: list[str],
        coef: np.ndarray,
        bias: float,
        cat_coef: np.ndarray,
        cat_bias: np.ndarray,
        version: str = "0",
        meta: dict[str, Any] | None = None,
        unsafe_ex: np.ndarray | None = None,
        benign_ex: np.ndarray | None = None,
        knn_k: int = 5,
        stack_coef: np.ndarray | None = None,
        stack_bias: float = 0.0,
    ) -> None:
        coef = np.asarray(coef, dtype=np.float32).reshape(-1)
        cat_coef = np.asarray(cat_coef, dtype=np.float32)
        cat_bias = np.asarray(cat_bias, dtype=np.float32).reshape(-1)
        if cat_coef.shape != (coef.shape[0], len(categories)) or cat_bias.shape != (
            len(categories),
        ):
            raise ConfigError(
                f"risk head shapes do not match: coef {coef.shape}, cat_coef {cat_coef.shape}, "
                f"cat_bias {cat_bias.shape}, {len(categories)} categories"
            )
        self.categories = list(categories)
        self.coef = coef
        self.bias = float(bias)
        self.cat_coef = cat_coef
        self.cat_bias = cat_bias
        self.version = version
        self.meta: dict[str, Any] = dict(meta or {})
        #: The encoder adapter this head was fitted on (``<head dir>/encoder``), when it has one;
        #: the analyzer's embedder must apply it (see :mod:`vlmguard.analyzer.models.encoder_lora`).
        self.encoder_dir: Path | None = None
        self.unsafe_ex: np.ndarray | None = None
        self.benign_ex: np.ndarray | None = None
        self.stack_coef: np.ndarray | None = None
        self.stack_bias = float(stack_bias)
        self.knn_k = int(knn_k)
        if unsafe_ex is not None or benign_ex is not None or stack_coef is not None:
            if unsafe_ex is None or benign_ex is None or stack_coef is None:
                raise ConfigError("risk head kNN evidence needs unsafe_ex, benign_ex and "
                                  "stack_coef together")
            u = np.asarray(unsafe_ex, dtype=np.float16)
            b = np.asarray(benign_ex, dtype=np.float16)
            sc = np.asarray(stack_coef, dtype=np.float32).reshape(-1)
            d = coef.shape[0]
            if u.ndim != 2 or b.ndim != 2 or u.shape[1] != d or b.shape[1] != d or \
                    sc.shape != (len(STACK_FEATURES),) or self.knn_k < 1:
                raise ConfigError(
                    f"risk head kNN shapes do not match: unsafe_ex {u.shape}, benign_ex "
                    f"{b.shape}, stack_coef {sc.shape}, dim {d}, k {self.knn_k}"
                )
            self.unsafe_ex, self.benign_ex, self.stack_coef = u, b, sc
            # float32 copies for fast matmuls (float16 is only the storage format).
            self._u32 = u.astype(np.float32)
            self._b32 = b.astype(np.float32)

    @property
    def has_knn(self) -> bool:
        """Whether the head stacks nearest-neighbour evidence on the linear logit."""
        return self.stack_coef is not None

    def features(self, emb: np.ndarray) -> np.ndarray:
        """Stacker features :data:`STACK_FEATURES` of embeddings, shape (n, 5).

        Raises:
            ValueError: the head has no exemplars, or the embeddings have the wrong shape.
        """
        x = self._check(emb)
        if not self.has_knn:
            raise ValueError("this risk head has no kNN exemplars")
        z = x @ self.coef + self.bias
        su, mu = topk_mean_sim(x, self._u32, self.knn_k)
        sb, mb = topk_mean_sim(x, self._b32, self.knn_k)
        return np.stack([z, su, sb, mu, mb], axis=1).astype(np.float32)

    def _check(self, emb: np.ndarray) -> np.ndarray:
        x = np.asarray(emb, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected embeddings of shape (n, {self.dim}), got {x.shape}")
        return x

    @property
    def dim(self) -> int:
        """Embedding width the head expects."""
        return int(self.coef.shape[0])

    def predict(self, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Score embeddings.

        Args:
            emb: Embeddings, shape (n, dim) (or (dim,) for one text).

        Returns:
            ``(p_unsafe, p_category)``: float32 arrays of shape (n,) and
            (n, len(categories)); ``p_category[:, c] = p_unsafe * p(c | unsafe)``.
        """
        x = self._check(emb)
        if self.has_knn:
            assert self.stack_coef is not None
            p = sigmoid(self.features(x) @ self.stack_coef + self.stack_bias).astype(np.float32)
        else:
            p = sigmoid(x @ self.coef + self.bias).astype(np.float32)
        q = sigmoid(x @ self.cat_coef + self.cat_bias).astype(np.float32)
        bad = ~(np.isfinite(p) & np.isfinite(q).all(axis=1))
        if bad.any():
            # A NaN compares false with every threshold: read as an allow. Fail closed instead
            # (a non-finite embedding, or a floating-point fault, must not let a request pass).
            log.warning("risk head %s gave %d non-finite score(s); read as risky",
                        self.version, int(bad.sum()))
            p = np.where(bad, np.float32(1.0), p)
            q = np.where(bad[:, None], np.float32(1.0), q)
        return p, (p[:, None] * q).astype(np.float32)

    def save(self, directory: Path) -> None:
        """Write ``weights.npz`` and ``meta.json`` into ``directory`` (created if missing).

        Args:
            directory: Output directory; existing head files in it are replaced (callers that
                must not overwrite check first).
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, Any] = {
            "coef": self.coef,
            "bias": np.float32(self.bias),
            "cat_coef": self.cat_coef,
            "cat_bias": self.cat_bias,
        }
        if self.has_knn:
            assert self.unsafe_ex is not None and self.benign_ex is not None
            assert self.stack_coef is not None
            arrays.update(unsafe_ex=self.unsafe_ex, benign_ex=self.benign_ex,
                          stack_coef=self.stack_coef, stack_bias=np.float32(self.stack_bias),
                          knn_k=np.int32(self.knn_k))
        np.savez_compressed(directory / WEIGHTS_FILE, **arrays)  # type: ignore[arg-type]
        meta = dict(self.meta)
        meta["version"] = self.version
        meta["categories"] = self.categories
        meta["dim"] = self.dim
        (directory / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=False) + "\n")

    @classmethod
    def load(
        cls, directory: Path | str | None = None, categories: list[str] | None = None
    ) -> RiskHead:
        """Load a head.

        Args:
            directory: Head directory; None or "" loads the head shipped in ``vlmguard.data``.
            categories: When given, the head's categories must equal these (same order).

        Raises:
            ConfigError: missing or corrupt files, or a category mismatch.
        """
        directory = head_dir(directory)
        wpath, mpath = directory / WEIGHTS_FILE, directory / META_FILE
        if not wpath.is_file() or not mpath.is_file():
            raise ConfigError(
                f"risk head not found in {directory} (needs {WEIGHTS_FILE} and {META_FILE}); "
                "train one with 'vlmguard train analyzer'"
            )
        try:
            meta = json.loads(mpath.read_text())
            with np.load(wpath, allow_pickle=False) as z:
                arrays = {k: z[k] for k in ("coef", "bias", "cat_coef", "cat_bias")}
                knn = {k: z[k] for k in _KNN_KEYS if k in z.files}
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as e:
            raise ConfigError(f"risk head in {directory} is corrupt: {e}") from e
        if not isinstance(meta, dict) or not isinstance(meta.get("categories"), list):
            raise ConfigError(f"risk head meta in {mpath} has no category list")
        head_cats = [str(c) for c in meta["categories"]]
        if categories is not None and list(categories) != head_cats:
            raise ConfigError(
                f"risk head categories {head_cats} do not match the taxonomy {list(categories)}; "
                "retrain the head or fix the taxonomy"
            )
        if knn and set(knn) != set(_KNN_KEYS):
            raise ConfigError(f"risk head in {directory} is corrupt: kNN arrays "
                              f"{sorted(knn)} are incomplete")
        head = cls(
            categories=head_cats,
            coef=arrays["coef"],
            bias=float(arrays["bias"]),
            cat_coef=arrays["cat_coef"],
            cat_bias=arrays["cat_bias"],
            version=str(meta.get("version", "0")),
            meta=meta,
            unsafe_ex=knn.get("unsafe_ex"),
            benign_ex=knn.get("benign_ex"),
            knn_k=int(knn["knn_k"]) if knn else 5,
            stack_coef=knn.get("stack_coef"),
            stack_bias=float(knn["stack_bias"]) if knn else 0.0,
        )
        dim = meta.get("dim")
        if dim is not None and int(dim) != head.dim:
            raise ConfigError(f"risk head in {directory}: meta says dim {dim}, weights {head.dim}")
        from vlmguard.analyzer.models.encoder_lora import ENCODER_DIR, has_lora

        if has_lora(directory / ENCODER_DIR):
            head.encoder_dir = directory / ENCODER_DIR
        elif meta.get("encoder_lora"):
            raise ConfigError(f"risk head in {directory} was fitted on an adapted encoder, but "
                              f"{directory / ENCODER_DIR} is missing")
        return head

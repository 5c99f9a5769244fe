"""Text risk head: numpy-only logistic regressions on MiniLM sentence embeddings.

Two parts: an overall head ``p(unsafe | x)`` (binary logistic regression) and per-category
one-vs-rest heads ``q_c(x) = p(category c | unsafe, x)`` trained on unsafe texts only. The
per-category score is ``p(unsafe) * q_c``: "this text is unsafe and category c applies", so a
benign text scores low in every category and an unsafe text can score in more than one.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from vlmguard.errors import ConfigError

WEIGHTS_FILE = "weights.npz"
META_FILE = "meta.json"


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def fit_logistic(
    x: np.ndarray,
    y: np.ndarray,
    sample_weight: np.ndarray | None = None,
    l2: float = 1.0,
    max_iter: int = 30,
    tol: float = 1e-6,
) -> tuple[np.ndarray, float]:
    """Weighted, L2-regularised binary logistic regression fitted by Newton's method.

    The objective is ``sum_i w_i * logloss_i / sum_i w_i + l2 / (2 n) * ||coef||^2`` (the bias is
    not penalised). Deterministic: no random initialisation.

    Args:
        x: Features, shape (n, d).
        y: Targets in {0, 1}, shape (n,).
        sample_weight: Non-negative weights, shape (n,); None weighs all samples equally.
        l2: Ridge strength (in units of samples).
        max_iter: Most Newton steps.
        tol: Stop when the largest parameter change is below this.

    Returns:
        ``(coef, bias)``: coef of shape (d,) and the bias.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n, d = x.shape
    w = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    w = w / w.sum()
    xb = np.hstack([x, np.ones((n, 1))])
    reg = np.full(d + 1, l2 / n)
    reg[-1] = 1e-8
    theta = np.zeros(d + 1)
    for _ in range(max_iter):
        p = _sigmoid(xb @ theta)
        grad = xb.T @ (w * (p - y)) + reg * theta
        hess = (xb * (w * p * (1.0 - p))[:, None]).T @ xb + np.diag(reg)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if np.max(np.abs(step)) < tol:
            break
    return theta[:-1], float(theta[-1])


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
        x = np.asarray(emb, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected embeddings of shape (n, {self.dim}), got {x.shape}")
        p = _sigmoid(x @ self.coef + self.bias).astype(np.float32)
        q = _sigmoid(x @ self.cat_coef + self.cat_bias).astype(np.float32)
        return p, (p[:, None] * q).astype(np.float32)

    def save(self, directory: Path) -> None:
        """Write ``weights.npz`` and ``meta.json`` into ``directory`` (created if missing).

        Args:
            directory: Output directory; existing head files in it are replaced (callers that
                must not overwrite check first).
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            directory / WEIGHTS_FILE,
            coef=self.coef,
            bias=np.float32(self.bias),
            cat_coef=self.cat_coef,
            cat_bias=self.cat_bias,
        )
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
        if directory is None or str(directory) == "":
            base = resources.files("vlmguard.data").joinpath("risk_head")
            directory = Path(str(base))
        directory = Path(directory)
        wpath, mpath = directory / WEIGHTS_FILE, directory / META_FILE
        if not wpath.is_file() or not mpath.is_file():
            raise ConfigError(
                f"risk head not found in {directory} (needs {WEIGHTS_FILE} and {META_FILE}); "
                "train one with 'vlmguard train-analyzer'"
            )
        try:
            meta = json.loads(mpath.read_text())
            with np.load(wpath, allow_pickle=False) as z:
                arrays = {k: z[k] for k in ("coef", "bias", "cat_coef", "cat_bias")}
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
        head = cls(
            categories=head_cats,
            coef=arrays["coef"],
            bias=float(arrays["bias"]),
            cat_coef=arrays["cat_coef"],
            cat_bias=arrays["cat_bias"],
            version=str(meta.get("version", "0")),
            meta=meta,
        )
        dim = meta.get("dim")
        if dim is not None and int(dim) != head.dim:
            raise ConfigError(f"risk head in {directory}: meta says dim {dim}, weights {head.dim}")
        return head

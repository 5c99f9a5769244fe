"""Local tier-2 rewriter on transformers: batched greedy generation that stops at ``</rewrite>``.

Model directories (``rewriter.model_path``; empty uses the packaged demo rewriter):

- a full model saved with ``save_pretrained`` (``config.json``; a ``chat_template.jinja`` there
  is used by the tokenizer), or
- a rewriter directory written by ``vlmguard train rewriter``: ``vlmguard_rewriter.json`` =
  ``{"format_version": 1, "base_model": "<path>" | "smollm2", "adapter": "adapter" | null,
  "kind": "causal_lm" | "vlm", "prompt_version": ..., "chat_template": "<file>" | null}``.
  The base is a model directory (relative paths are taken from the rewriter directory) or
  ``smollm2``, the SmolLM2-135M-Instruct converted by :mod:`vlmguard.hf_models` (the target's
  cache too).
  The PEFT adapter is applied and, with ``rewriter.merge_adapter`` (default), merged into the
  base weights, which makes generation as fast as a plain model.

Generation: the prompt is the model's chat template over the rewriter messages
(``add_generation_prompt=True``); a batch is left-padded and generated together with the KV
cache, greedily; each row stops at the closing delimiter (``stop_strings``), an end-of-turn
token or ``max_new_tokens``. Calls run in a worker thread, one batch at a time.

An image-text-to-text model (kind ``vlm``, or a full model directory with an image processor:
the Qwen2-VL family ``vlmguard train rewriter`` trains) reads the request's images: the
backend says so (``reads_images``), the stage puts them in the user message as image parts
(:mod:`vlmguard.rewriter.vlm`), and the model's processor turns the conversation into token ids
and pixel values, with the image placeholders where the trainer put them.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vlmguard.config import RewriterConfig
from vlmguard.errors import ConfigError, Reason, UnavailableError, VLMGuardError
from vlmguard.rewriter.backends import REWRITE_STOP, Generation, Messages
from vlmguard.rewriter.format import (
    PROMPT_VERSION,
    format_step,
    imitates_delimiter,
    trim_unfinished_rewrite,
)
from vlmguard.rewriter.vlm import (
    is_vlm_dir,
    load_processor,
    pil_images,
    processor_messages,
    text_messages,
)

log = logging.getLogger(__name__)

#: File that marks a rewriter directory written by the trainer.
REWRITER_META = "vlmguard_rewriter.json"
#: Context used for prompt + new tokens when the model's config says nothing smaller.
MAX_CONTEXT_TOKENS = 8192
#: Shortest shared prompt prefix worth a KV cache of its own.
MIN_PREFIX_TOKENS = 32


class HFRewriterBackend:
    """Tier 2 with transformers in this process.

    Args:
        cfg: Rewriter configuration (``model_path``, ``threads``, ``merge_adapter``).
        stop: Closing delimiter at which each output stops (the format's ``</rewrite>``).

    Raises:
        ConfigError: no model directory (none configured and no demo packaged) or not one.
    """

    def __init__(self, cfg: RewriterConfig, *, stop: str = REWRITE_STOP) -> None:
        self.cfg = cfg
        self.stop = stop
        self._load_lock = threading.Lock()
        self._gen_lock = threading.Lock()
        self._model: Any = None
        self._tokenizer: Any = None
        #: The image-text-to-text model's processor (None for a text model).
        self._processor: Any = None
        self._stop_ids: list[int] = []
        self._pad_id = 0
        self._max_context = MAX_CONTEXT_TOKENS
        self._name = "transformers"
        self._prefix: tuple[tuple[int, ...], Any] | None = None
        #: Directory the model was loaded from, and what it held (for logs and tests).
        self.loaded_from: Path | None = None
        self.layout = ""
        self.load_seconds: float | None = None
        # A bad path fails at startup, not on the first request; what the directory holds
        # says whether the model reads images before it is loaded.
        self._vlm = self._holds_vlm(self.model_dir())

    @property
    def name(self) -> str:
        return self._name

    @property
    def reads_images(self) -> bool:
        """Whether the model reads the images (an image-text-to-text model)."""
        return self._vlm

    @staticmethod
    def _holds_vlm(path: Path) -> bool:
        if (path / REWRITER_META).is_file():
            try:
                meta = json.loads((path / REWRITER_META).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return False  # load() reports the unreadable file
            return isinstance(meta, dict) and meta.get("kind") == "vlm"
        return is_vlm_dir(path)

    @property
    def loaded(self) -> bool:
        return self._model is not None

    # ------------------------------------------------------------------ loading

    def model_dir(self) -> Path:
        """The configured directory, or the packaged demo rewriter.

        Raises:
            ConfigError: no directory configured and no demo packaged, or not a directory.
        """
        from vlmguard.rewriter.backends import default_demo_dir

        raw = self.cfg.model_path or default_demo_dir()
        if not raw:
            raise ConfigError(
                "rewriter.kind 'generative' with the transformers backend needs "
                "rewriter.model_path (this build ships no demo rewriter; train one with "
                "`vlmguard train rewriter`)"
            )
        path = Path(raw).expanduser()
        if not path.is_dir():
            raise ConfigError("rewriter.model_path: no such directory")
        if not ((path / REWRITER_META).is_file() or (path / "config.json").is_file()):
            raise ConfigError(f"rewriter.model_path: neither {REWRITER_META} nor config.json "
                              "in the directory")
        return path

    def load(self) -> None:
        """Load the model (blocking, idempotent, thread-safe).

        Raises:
            ConfigError: bad directory or metadata.
        """
        with self._load_lock:
            if self._model is not None:
                return
            path = self.model_dir()
            import torch

            from vlmguard.hf_models import torch_threads

            torch.set_num_threads(torch_threads(self.cfg.threads))
            t0 = time.perf_counter()
            if (path / REWRITER_META).is_file():
                model, tok, layout = self._load_rewriter_dir(path)
            elif self._vlm:
                model, tok = self._load_vlm(path, path)
                layout = "full(image-text-to-text)"
            else:
                model, tok = _load_full(path)
                layout = "full"
            model.eval()
            self._install(model, tok)
            self._name = f"transformers:{path.name}"
            self.loaded_from, self.layout = path, layout
            self.load_seconds = time.perf_counter() - t0
            log.info("tier-2 rewriter loaded from %s (%s) in %.2f s, %d threads", path, layout,
                     self.load_seconds, torch.get_num_threads())

    def _load_rewriter_dir(self, path: Path) -> tuple[Any, Any, str]:
        try:
            meta = json.loads((path / REWRITER_META).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ConfigError(f"rewriter.model_path: unreadable {REWRITER_META}") from e
        if not isinstance(meta, dict) or meta.get("format_version") != 1:
            raise ConfigError(f"rewriter.model_path: {REWRITER_META} needs format_version 1")
        kind = meta.get("kind", "causal_lm")
        if kind not in ("causal_lm", "vlm"):
            raise ConfigError(f"rewriter.model_path: unknown kind {kind!r} (causal_lm or vlm)")
        trained_on = meta.get("prompt_version")
        if trained_on and trained_on != PROMPT_VERSION:
            log.warning("tier-2 model was trained on prompt format %s, this build writes %s: "
                        "expect more malformed outputs until it is retrained", trained_on,
                        PROMPT_VERSION)
        base = meta.get("base_model")
        adapter = meta.get("adapter")
        if not isinstance(base, str) or not base:
            raise ConfigError(f"rewriter.model_path: {REWRITER_META} has no base_model")
        if not adapter and (path / "config.json").is_file():
            # A full fine-tune: the weights are in the rewriter directory itself.
            model, tok = self._load_vlm(path, path) if kind == "vlm" else _load_full(path)
            layout = f"full(from {base})"
        elif base == "smollm2" and kind == "vlm":
            raise ConfigError("rewriter.model_path: a 'vlm' rewriter needs a base model "
                              "directory, not smollm2")
        elif base == "smollm2":
            model, tok = self._load_smollm2()
            layout = f"base={base}"
        else:
            base_path = Path(base).expanduser()
            if not base_path.is_absolute():
                base_path = path / base_path
            if not (base_path / "config.json").is_file():
                raise ConfigError("rewriter.model_path: base_model is not a model directory")
            if kind == "vlm":
                # The processor of a LoRA rewriter is its base's (the adapter has none).
                model, tok = self._load_vlm(base_path, path if is_vlm_dir(path) else base_path)
            else:
                model, tok = _load_full(base_path)
            layout = f"base={base}"
        if adapter:
            adapter_dir = path / str(adapter)
            if not (adapter_dir / "adapter_config.json").is_file():
                raise ConfigError("rewriter.model_path: adapter directory has no "
                                  "adapter_config.json")
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False)
            if self.cfg.merge_adapter:
                model = model.merge_and_unload()
                layout += "+adapter(merged)"
            else:
                layout += "+adapter"
        for name in (meta.get("chat_template"), "chat_template.jinja"):
            if isinstance(name, str) and name and (path / name).is_file():
                tok.chat_template = (path / name).read_text(encoding="utf-8")
                break
        return model, tok, layout

    def _load_vlm(self, model_path: Path, processor_path: Path) -> tuple[Any, Any]:
        """An image-text-to-text model and its processor's tokenizer (the processor is kept)."""
        import torch
        from transformers import AutoModelForImageTextToText

        try:
            processor = load_processor(processor_path)
            model = AutoModelForImageTextToText.from_pretrained(
                str(model_path), local_files_only=True, dtype=torch.float32)
        except (OSError, ValueError) as e:
            raise ConfigError(f"rewriter.model_path: cannot load the image-text-to-text model "
                              f"in {model_path.name} ({type(e).__name__})") from e
        tok = getattr(processor, "tokenizer", None)
        if tok is None or getattr(processor, "image_processor", None) is None:
            raise ConfigError(f"rewriter.model_path: {processor_path.name} has no image "
                              "processor and tokenizer")
        self._processor = processor
        return model, tok

    def _load_smollm2(self) -> tuple[Any, Any]:
        """SmolLM2-135M-Instruct through the shared converted cache."""
        from vlmguard.hf_models import find_packaged_gguf, load_gguf_cached

        model, tok, _ = load_gguf_cached(find_packaged_gguf())
        return model, tok

    def _install(self, model: Any, tok: Any) -> None:
        from vlmguard.hf_models import generation_ids

        self._stop_ids, self._pad_id, self._max_context = generation_ids(
            model, tok, MAX_CONTEXT_TOKENS)
        self._tokenizer, self._model = tok, model

    # --------------------------------------------------------------- generation

    def prompt_ids(self, messages: Messages) -> list[int]:
        """Token ids of the chat-templated prompt (with the generation prompt)."""
        text = self._tokenizer.apply_chat_template(
            text_messages(messages), add_generation_prompt=True, tokenize=False)
        ids: list[int] = self._tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids

    async def generate(
        self, conversations: Sequence[Messages], *, max_new_tokens: int
    ) -> list[Generation | VLMGuardError]:
        return await asyncio.to_thread(self.generate_sync, conversations,
                                       max_new_tokens=max_new_tokens)

    def generate_sync(
        self, conversations: Sequence[Messages], *, max_new_tokens: int
    ) -> list[Generation | VLMGuardError]:
        """Blocking :meth:`generate` (one batch; a failing item gets its own error)."""
        if not conversations:
            return []
        try:
            self.load()
        except VLMGuardError as e:
            return [e for _ in conversations]
        except Exception:
            log.exception("tier-2 rewriter failed to load")
            return [UnavailableError("the tier-2 rewriter failed to load",
                                     reason=Reason.REWRITER_NOT_READY) for _ in conversations]
        if self._processor is not None:
            with self._gen_lock:
                return self._run_vlm(list(conversations), max_new_tokens)
        results: list[Generation | VLMGuardError | None] = [None] * len(conversations)
        ready: list[tuple[int, list[int]]] = []
        budget = self._max_context - max_new_tokens
        for i, conv in enumerate(conversations):
            try:
                ids = self.prompt_ids(conv)
            except Exception:
                log.exception("tier-2 rewriter could not template conversation %d", i)
                results[i] = UnavailableError("the tier-2 rewriter failed on this request",
                                              reason=Reason.REWRITER_FAILED)
                continue
            if len(ids) > budget:
                results[i] = UnavailableError(
                    f"the tier-2 prompt is {len(ids)} tokens; the model fits {budget}",
                    reason=Reason.REWRITER_FAILED)
                continue
            ready.append((i, ids))
        hint = self._system_ids(conversations[0])
        with self._gen_lock:
            for (i, _), res in zip(ready, self._run([ids for _, ids in ready], max_new_tokens,
                                                    hint),
                                   strict=True):
                results[i] = res
        return [r for r in results if r is not None]

    def _run(self, batch: list[list[int]], max_new: int,
             hint: list[int]) -> list[Generation | VLMGuardError]:
        if not batch:
            return []
        try:
            return self._generate(batch, max_new, hint)
        except Exception:
            if len(batch) == 1:
                log.exception("tier-2 generation failed")
                return [UnavailableError("the tier-2 rewriter failed on this request",
                                         reason=Reason.REWRITER_FAILED)]
            log.warning("batched tier-2 generation failed; retrying %d one by one", len(batch),
                        exc_info=True)
        out: list[Generation | VLMGuardError] = []
        for ids in batch:
            out.extend(self._run([ids], max_new, hint))
        return out

    def _generate(self, batch: list[list[int]], max_new: int,
                  hint: list[int] | None = None) -> list[Generation | VLMGuardError]:
        import torch
        from transformers import GenerationConfig

        width = max(len(ids) for ids in batch)
        input_ids = torch.full((len(batch), width), self._pad_id, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        prefix = self._shared_prefix(batch, hint or [])
        p = len(prefix)
        for row, ids in enumerate(batch):
            # Left padding, or padding between the shared prefix and each row's own suffix
            # (positions follow the attention mask, so the gap changes nothing but the layout).
            input_ids[row, :p] = torch.tensor(prefix, dtype=torch.long)
            attention[row, :p] = 1
            rest = ids[p:]
            input_ids[row, width - len(rest):] = torch.tensor(rest, dtype=torch.long)
            attention[row, width - len(rest):] = 1
        cache = self._prefix_cache(prefix, len(batch)) if p else None
        gen_cfg = GenerationConfig(
            max_new_tokens=max_new, do_sample=False, use_cache=True,
            pad_token_id=self._pad_id, eos_token_id=list(self._stop_ids) or None,
            stop_strings=[self.stop],
        )
        extra: dict[str, Any] = {}
        if cache is not None:
            extra["cache"] = cache
        guide: FormatGuide | None = None
        if self.cfg.guided_format and self.stop == REWRITE_STOP:
            from transformers import LogitsProcessorList

            guide = FormatGuide(self._tokenizer, width, self._stop_ids,
                                reasoning_max_chars=self.cfg.reasoning_max_chars,
                                max_new_tokens=max_new)
            extra["logits_processor"] = LogitsProcessorList([guide])
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = self._model.generate(input_ids=input_ids, attention_mask=attention,
                                       generation_config=gen_cfg, tokenizer=self._tokenizer,
                                       **extra)
        elapsed = time.perf_counter() - t0
        results = self._decode_rows(out[:, width:], [len(ids) for ids in batch], guide)
        log.debug("tier-2 batch=%d new_tokens=%d in %.2f s (forced %d, banned %d)", len(batch),
                  sum(r.completion_tokens for r in results), elapsed,
                  guide.forced_tokens if guide else 0, guide.banned_tokens if guide else 0)
        return list(results)

    def _decode_rows(self, new: Any, prompt_lens: list[int],
                     guide: FormatGuide | None) -> list[Generation]:
        """Each row's generation: cut at its stop token or the closing delimiter."""
        results: list[Generation] = []
        for row, prompt_len in enumerate(prompt_lens):
            tokens = [int(t) for t in new[row].tolist()]
            finish = "length"
            for pos, t in enumerate(tokens):
                if t in self._stop_ids or (t == self._pad_id and pos > 0
                                           and self._pad_id not in self._stop_ids
                                           and all(x == self._pad_id for x in tokens[pos:])):
                    tokens, finish = tokens[:pos], "stop"
                    break
            text = self._tokenizer.decode(tokens, skip_special_tokens=True)
            text, found = _cut(text, self.stop)
            if found:
                finish = "stop"
                if guide is not None and row in guide.budget_closed:
                    # The budget closed the rewrite: drop its unfinished last sentence.
                    text, finish = trim_unfinished_rewrite(text), "budget"
            results.append(Generation(text=text, model=self.name, finish_reason=finish,
                                      prompt_tokens=prompt_len, completion_tokens=len(tokens)))
        return results

    # ------------------------------------------------ image-text-to-text models

    def _run_vlm(self, convs: list[Messages], max_new: int) -> list[Generation | VLMGuardError]:
        """A batch on the image-text-to-text model; one by one when the batch fails, so a
        failing request fails alone."""
        try:
            return self._generate_vlm(convs, max_new)
        except _PromptTooLongError as e:
            if len(convs) == 1:
                return [UnavailableError(str(e), reason=Reason.REWRITER_FAILED)]
        except Exception:
            if len(convs) == 1:
                log.exception("tier-2 generation failed")
                return [UnavailableError("the tier-2 rewriter failed on this request",
                                         reason=Reason.REWRITER_FAILED)]
            log.warning("batched tier-2 generation failed; retrying %d one by one", len(convs),
                        exc_info=True)
        out: list[Generation | VLMGuardError] = []
        for conv in convs:
            out.extend(self._run_vlm([conv], max_new))
        return out

    def vlm_inputs(self, convs: Sequence[Messages]) -> Any:
        """The processor's batch for conversations whose user messages may hold image parts:
        token ids with the image placeholders expanded, attention mask, pixel values and image
        grid (left-padded)."""
        texts: list[str] = []
        images: list[Any] = []
        for conv in convs:
            msgs, pngs = processor_messages(conv)
            texts.append(self._processor.apply_chat_template(msgs, add_generation_prompt=True,
                                                             tokenize=False))
            images.extend(pil_images(pngs))
        return self._processor(text=texts, images=images or None, padding=True,
                               return_tensors="pt")

    def _generate_vlm(self, convs: list[Messages],
                      max_new: int) -> list[Generation | VLMGuardError]:
        import torch
        from transformers import GenerationConfig, LogitsProcessorList

        inputs = self.vlm_inputs(convs)
        width = int(inputs["input_ids"].shape[1])
        budget = self._max_context - max_new
        if width > budget:
            raise _PromptTooLongError(
                f"the tier-2 prompt is {width} tokens; the model fits {budget}")
        gen_cfg = GenerationConfig(
            max_new_tokens=max_new, do_sample=False, use_cache=True,
            pad_token_id=self._pad_id, eos_token_id=list(self._stop_ids) or None,
            stop_strings=[self.stop],
        )
        extra: dict[str, Any] = {}
        guide: FormatGuide | None = None
        if self.cfg.guided_format and self.stop == REWRITE_STOP:
            guide = FormatGuide(self._tokenizer, width, self._stop_ids,
                                reasoning_max_chars=self.cfg.reasoning_max_chars,
                                max_new_tokens=max_new)
            extra["logits_processor"] = LogitsProcessorList([guide])
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = self._model.generate(**inputs, generation_config=gen_cfg,
                                       tokenizer=self._tokenizer, **extra)
        prompt_lens = [int(n) for n in inputs["attention_mask"].sum(dim=1).tolist()]
        results = self._decode_rows(out[:, width:], prompt_lens, guide)
        log.debug("tier-2 image-text batch=%d new_tokens=%d in %.2f s", len(convs),
                  sum(r.completion_tokens for r in results), time.perf_counter() - t0)
        return list(results)

    def _system_ids(self, conv: Messages) -> list[int]:
        """Token ids of the system message alone, as the chat template renders it first."""
        if not self.cfg.prefix_cache or not conv or conv[0].get("role") != "system":
            return []
        try:
            text = self._tokenizer.apply_chat_template(
                [dict(conv[0])], add_generation_prompt=False, tokenize=False)
            ids: list[int] = self._tokenizer(text, add_special_tokens=False)["input_ids"]
        except Exception:  # a template that refuses a lone system message: no prefix cache
            return []
        return ids

    def _shared_prefix(self, batch: list[list[int]], hint: list[int]) -> list[int]:
        """The prompt prefix every row shares, bounded by ``hint`` (the system message's ids)
        so that it stays the same from batch to batch and its cache is reused."""
        if not self.cfg.prefix_cache or not hint:
            return []
        first = hint
        n = min([len(ids) for ids in batch]) - 1  # each row keeps at least one own token
        n = min(n, len(hint))
        for ids in batch:
            k = 0
            while k < n and ids[k] == first[k]:
                k += 1
            n = k
        return first[:n] if n >= MIN_PREFIX_TOKENS else []

    def _prefix_cache(self, prefix: list[int], rows: int) -> Any:
        """A fresh KV cache of ``prefix`` for ``rows`` rows (the prefix runs once, then is
        kept: the system message changes only with the taxonomy)."""
        import torch

        key = tuple(prefix)
        if self._prefix is None or self._prefix[0] != key:
            with torch.inference_mode():
                out = self._model(input_ids=torch.tensor([prefix], dtype=torch.long),
                                  use_cache=True)
            self._prefix = (key, out.past_key_values)
        cache = copy.deepcopy(self._prefix[1])
        if rows > 1:
            cache.batch_repeat_interleave(rows)
        return cache

    def close(self) -> None:
        with self._load_lock:
            self._prefix = None
            self._model = None
            self._tokenizer = None
            self._processor = None


class _PromptTooLongError(Exception):
    """A batch's prompt does not fit the model's context with the new-token budget."""


class FormatGuide:
    """A transformers logits processor that applies :func:`~vlmguard.rewriter.format.format_step`
    to each row of a greedy batch: the delimiters the format requires are forced token by token
    (every other token's score set to -inf), and an end-of-output token where the format is not
    finished is replaced by the delimiters that finish the open section. Inside a section, a
    token that would write another section's delimiter (or the start of one) is banned, so the
    model takes its next-best token (:func:`~vlmguard.rewriter.format.imitates_delimiter`).

    Args:
        tokenizer: The model's tokenizer (encodes forced text, decodes each row's output).
        prompt_width: Length of the (padded) prompt: generated tokens start there.
        end_ids: Token ids that end an output (end of turn).
        reasoning_max_chars: Longest reasoning section before it is closed.
        max_new_tokens: The generation's new-token budget. When a row's open, non-empty rewrite
            has only enough budget left for its closing delimiter, the delimiter is forced (the
            row is then in :attr:`budget_closed`), so a long rewrite still parses instead of
            running out of tokens. 0 turns this off.
    """

    def __init__(self, tokenizer: Any, prompt_width: int, end_ids: Sequence[int], *,
                 reasoning_max_chars: int, max_new_tokens: int = 0) -> None:
        self.tokenizer = tokenizer
        self.width = prompt_width
        self.end_ids = set(end_ids)
        self.reasoning_max_chars = reasoning_max_chars
        self.max_new_tokens = max_new_tokens
        #: Rows whose rewrite was closed because the token budget ran out.
        self.budget_closed: set[int] = set()
        self._queues: dict[int, list[int]] = {}
        self._done: set[int] = set()
        self._encoded: dict[str, list[int]] = {}
        #: Tokens forced so far (all rows), for logs and tests.
        self.forced_tokens = 0
        #: Tokens banned so far because they imitated a delimiter (all rows).
        self.banned_tokens = 0
        self._pieces: dict[int, str] = {}

    #: Most tokens banned in a row at one step before the guide leaves the choice to the model.
    MAX_BANS = 32

    def _ban_imitations(self, row: int, gen: list[int], text: str, section: str,
                        start: int, scores: Any) -> None:
        """Ban, best first, the tokens that would make the open section imitate a delimiter."""
        import torch

        content = text[start:]
        pending = content.rfind("<") > content.rfind(">")
        for _ in range(self.MAX_BANS):
            tok = int(torch.argmax(scores[row]))
            if tok in self.end_ids:
                return
            piece = self._pieces.get(tok)
            if piece is None:
                piece = self._pieces[tok] = self.tokenizer.decode([tok])
            if not pending and "<" not in piece:
                return
            cand = self.tokenizer.decode([*gen, tok], skip_special_tokens=True)
            if not imitates_delimiter(cand[start:], section):
                return
            scores[row, tok] = float("-inf")
            self.banned_tokens += 1

    def _encode(self, text: str) -> list[int]:
        ids = self._encoded.get(text)
        if ids is None:
            ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
            self._encoded[text] = ids
        return ids

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        for row in range(scores.shape[0]):
            if row in self._done:
                continue
            queue = self._queues.get(row)
            if not queue:
                gen = input_ids[row, self.width:].tolist()
                text = self.tokenizer.decode(gen, skip_special_tokens=True)
                step = format_step(text, reasoning_max_chars=self.reasoning_max_chars)
                if step.done:
                    self._done.add(row)
                    continue
                if step.section and not step.force:
                    self._ban_imitations(row, gen, text, step.section, step.content_start,
                                         scores)
                if step.force:
                    queue = self._encode(step.force)
                elif step.on_end and int(torch.argmax(scores[row])) in self.end_ids:
                    queue = self._encode(step.on_end)
                elif (step.on_end == REWRITE_STOP and self.max_new_tokens
                      and len(gen) + len(self._encode(step.on_end)) >= self.max_new_tokens):
                    queue = self._encode(step.on_end)
                    self.budget_closed.add(row)
                if not queue:
                    continue
                queue = list(queue)
                self._queues[row] = queue
            tok = queue.pop(0)
            forced = torch.full_like(scores[row], float("-inf"))
            forced[tok] = 0.0
            scores[row] = forced
            self.forced_tokens += 1
        return scores


def _cut(text: str, stop: str) -> tuple[str, bool]:
    i = text.find(stop)
    return (text, False) if i < 0 else (text[: i + len(stop)], True)


def _load_full(path: Path) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True,
                                                     dtype=torch.float32)
    except (OSError, ValueError) as e:
        raise ConfigError(f"rewriter.model_path: cannot load the model in {path.name} "
                          f"({type(e).__name__})") from e
    return model, tok

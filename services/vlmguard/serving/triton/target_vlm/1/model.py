"""Triton Python-backend model ``target_vlm``: a Hugging Face VLM or causal LM, batched.

Standalone on purpose: it runs inside Triton's Python-backend stub (its own environment with
numpy<2, torch, transformers, pillow) and imports nothing from ``vlmguard``.

Parameters (``config.pbtxt``, written by ``vlmguard triton-repo``):

* ``model_path``: a ``save_pretrained`` directory (relative paths resolve against this model's
  directory in the repository);
* ``model_type``: ``causal_lm`` (``AutoModelForCausalLM`` + tokenizer), ``image_text_to_text``
  (``AutoModelForImageTextToText`` + processor) or ``auto`` (from the model's ``config.json``);
* ``dtype``: ``auto`` (bfloat16 on GPU, float32 on CPU), ``float32``, ``float16``, ``bfloat16``;
* ``default_max_new_tokens``, ``max_new_tokens_cap``, ``max_context_tokens``;
* ``cpu_threads``: torch intra-op threads for KIND_CPU instances (0 = torch's default).

Inputs per request (the batch dimension is implicit): ``TEXT`` (BYTES [1], the user turn),
optional ``IMAGE`` (BYTES [-1], encoded images), ``MAX_NEW_TOKENS`` (INT32 [1]),
``TEMPERATURE`` / ``TOP_P`` (FP32 [1]), ``SEED`` (INT64 [1]); zeros mean the defaults.
Outputs: ``TEXT`` (BYTES [1]), ``FINISH_REASON`` (BYTES [1]), ``PROMPT_TOKENS`` and
``COMPLETION_TOKENS`` (INT32 [1]).

``execute()`` gets the list of requests that dynamic batching gathered. Requests that share
sampling settings (and, for a VLM, whether they carry images) are generated as ONE left-padded
batch; a request whose input is bad gets its own INVALID_ARG error and the others go on; if a
batched generate fails, its requests are retried one by one so one bad request fails alone.
Prompts and outputs are never logged.
"""

from __future__ import annotations

import io
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

MODEL_TYPES = ("auto", "causal_lm", "image_text_to_text")


class RequestError(Exception):
    """A client fault in one request (becomes INVALID_ARG for that request only)."""


@dataclass(frozen=True)
class Settings:
    """Settings shared by the requests generated together."""

    do_sample: bool
    temperature: float
    top_p: float
    seed: int
    with_images: bool


@dataclass
class Item:
    """One validated request."""

    index: int
    text: str
    images: list[Any] = field(default_factory=list)
    max_new_tokens: int = 0
    settings: Settings | None = None


def _param(cfg: dict[str, Any], key: str, default: str) -> str:
    value = cfg.get("parameters", {}).get(key, {}).get("string_value", "")
    return value if value != "" else default


def _scalar(request: Any, name: str) -> Any:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return None
    arr = tensor.as_numpy().reshape(-1)
    if arr.size != 1:
        raise RequestError(f"{name} must hold exactly one value")
    return arr[0]


def _text(value: Any, name: str) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as e:
            raise RequestError(f"{name} is not valid UTF-8") from e
    return str(value)


class TritonPythonModel:
    """The Triton Python-backend entry point."""

    def initialize(self, args: dict[str, str]) -> None:
        import torch

        cfg = json.loads(args["model_config"])
        self.logger = pb_utils.Logger
        model_dir = Path(args["model_repository"])
        raw_path = _param(cfg, "model_path", "")
        if not raw_path:
            raise pb_utils.TritonModelException("parameter model_path is not set")
        path = Path(raw_path)
        if not path.is_absolute():
            path = model_dir / path
        if not (path / "config.json").is_file():
            raise pb_utils.TritonModelException(
                f"model_path {path} is not a save_pretrained directory (no config.json)")
        self.model_type = _param(cfg, "model_type", "auto")
        if self.model_type not in MODEL_TYPES:
            raise pb_utils.TritonModelException(f"model_type must be one of {MODEL_TYPES}")
        if self.model_type == "auto":
            self.model_type = detect_model_type(path)
        self.default_max_new = int(_param(cfg, "default_max_new_tokens", "128"))
        self.max_new_cap = int(_param(cfg, "max_new_tokens_cap", "512"))
        max_context = int(_param(cfg, "max_context_tokens", "2048"))

        if args.get("model_instance_kind") == "GPU":
            self.device = torch.device(f"cuda:{args.get('model_instance_device_id', '0')}")
        else:
            self.device = torch.device("cpu")
            threads = int(_param(cfg, "cpu_threads", "0"))
            if threads > 0:
                torch.set_num_threads(threads)
        dtype_name = _param(cfg, "dtype", "auto")
        if dtype_name == "auto":
            dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        else:
            dtype = getattr(torch, dtype_name)

        start = time.perf_counter()
        self.model, self.tokenizer, self.processor = load_model(path, self.model_type, dtype)
        self.model.to(self.device)
        self.model.eval()
        self.tokenizer.padding_side = "left"
        self.stop_ids = stop_token_ids(self.tokenizer, self.model)
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad) if pad is not None else (self.stop_ids[0] if self.stop_ids else 0)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token_id = self.pad_id
        max_pos = int(getattr(getattr(self.model.config, "text_config", self.model.config),
                              "max_position_embeddings", 0) or 0)
        self.max_context = min(max_context, max_pos) if max_pos > 0 else max_context
        self.model_name = cfg.get("name", "target_vlm")
        self.logger.log_info(
            f"target_vlm: loaded {self.model_type} on {self.device} ({dtype}) in "
            f"{time.perf_counter() - start:.2f}s")

    # ------------------------------------------------------------------ execute

    def execute(self, requests: list[Any]) -> list[Any]:
        responses: list[Any] = [None] * len(requests)
        groups: dict[Settings, list[Item]] = {}
        for i, request in enumerate(requests):
            try:
                item = self.parse(i, request)
            except RequestError as e:
                responses[i] = error_response(str(e), pb_utils.TritonError.INVALID_ARG)
                continue
            except Exception as e:  # one request fails alone
                self.logger.log_error(f"target_vlm: cannot prepare request: {type(e).__name__}")
                responses[i] = error_response("the model failed on this request",
                                              pb_utils.TritonError.INTERNAL)
                continue
            assert item.settings is not None
            groups.setdefault(item.settings, []).append(item)
        for settings, items in groups.items():
            for item, resp in zip(items, self.run_group(settings, items), strict=True):
                responses[item.index] = resp
        return responses

    def parse(self, index: int, request: Any) -> Item:
        text_raw = _scalar(request, "TEXT")
        if text_raw is None:
            raise RequestError("TEXT is required")
        text = _text(text_raw, "TEXT")
        if not text.strip():
            raise RequestError("TEXT is empty")
        images: list[Any] = []
        image_tensor = pb_utils.get_input_tensor_by_name(request, "IMAGE")
        if image_tensor is not None:
            encoded = [bytes(b) for b in image_tensor.as_numpy().reshape(-1) if len(b) > 0]
            if encoded and self.processor is None:
                raise RequestError("this model is text-only and takes no IMAGE input")
            images = [decode_image(b) for b in encoded]
        max_new = _scalar(request, "MAX_NEW_TOKENS")
        temperature = _scalar(request, "TEMPERATURE")
        top_p = _scalar(request, "TOP_P")
        seed = _scalar(request, "SEED")
        max_new_i = int(max_new) if max_new is not None else 0
        temp_f = float(temperature) if temperature is not None else 0.0
        top_p_f = float(top_p) if top_p is not None else 0.0
        if max_new_i < 0:
            raise RequestError("MAX_NEW_TOKENS must be >= 0")
        if not math.isfinite(temp_f) or temp_f < 0:
            raise RequestError("TEMPERATURE must be a finite number >= 0")
        if not math.isfinite(top_p_f) or not 0 <= top_p_f <= 1:
            raise RequestError("TOP_P must be in [0, 1]")
        max_new_i = max(1, min(max_new_i or self.default_max_new, self.max_new_cap))
        if temp_f == 0:
            settings = Settings(False, 0.0, 1.0, 0, bool(images))
        else:
            settings = Settings(True, temp_f, top_p_f if top_p_f > 0 else 1.0,
                                int(seed) if seed is not None else 0, bool(images))
        return Item(index=index, text=text, images=images, max_new_tokens=max_new_i,
                    settings=settings)

    def run_group(self, settings: Settings, items: list[Item]) -> list[Any]:
        try:
            return self.generate(settings, items)
        except RequestError as e:
            if len(items) == 1:
                return [error_response(str(e), pb_utils.TritonError.INVALID_ARG)]
        except Exception as e:  # retried one by one below
            if len(items) == 1:
                self.logger.log_error(f"target_vlm: generation failed: {type(e).__name__}: "
                                      f"{str(e)[:200]}")
                return [error_response("the model failed on this request",
                                       pb_utils.TritonError.INTERNAL)]
        self.logger.log_warn(f"target_vlm: batched generation of {len(items)} failed; "
                             "retrying one by one")
        out: list[Any] = []
        for item in items:
            out.extend(self.run_group(settings, [item]))
        return out

    # --------------------------------------------------------------- generation

    def encode(self, items: list[Item], with_images: bool) -> dict[str, Any]:
        """One left-padded batch of model inputs."""
        if self.processor is not None:
            texts = []
            for it in items:
                content: list[dict[str, Any]] = [{"type": "image"} for _ in it.images]
                content.append({"type": "text", "text": it.text})
                texts.append(self.processor.apply_chat_template(
                    [{"role": "user", "content": content}], add_generation_prompt=True,
                    tokenize=False))
            kwargs: dict[str, Any] = {"text": texts, "padding": True, "return_tensors": "pt"}
            if with_images:
                kwargs["images"] = [it.images for it in items]
            enc = self.processor(**kwargs)
        else:
            texts = [self.chat_text(it.text) for it in items]
            enc = self.tokenizer(texts, padding=True, return_tensors="pt",
                                 add_special_tokens=False)
        return dict(enc)

    def chat_text(self, text: str) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            rendered: str = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False)
            return rendered
        return text

    def generate(self, settings: Settings, items: list[Item]) -> list[Any]:
        import torch
        from transformers import GenerationConfig

        enc = self.encode(items, settings.with_images)
        attention = enc["attention_mask"]
        prompt_lens = [int(x) for x in attention.sum(dim=1).tolist()]
        too_long = {
            j: error_response(
                f"prompt is {n} tokens; the model fits at most "
                f"{self.max_context - it.max_new_tokens} with MAX_NEW_TOKENS="
                f"{it.max_new_tokens} (context {self.max_context})",
                pb_utils.TritonError.INVALID_ARG)
            for j, (it, n) in enumerate(zip(items, prompt_lens, strict=True))
            if n + it.max_new_tokens > self.max_context
        }
        if too_long:  # answer those alone and generate the rest as one (re-padded) batch
            rest = [it for j, it in enumerate(items) if j not in too_long]
            done = iter(self.generate(settings, rest) if rest else [])
            return [too_long[j] if j in too_long else next(done) for j in range(len(items))]
        max_new = max(it.max_new_tokens for it in items)
        gen_kwargs: dict[str, Any] = {
            "max_new_tokens": max_new,
            "do_sample": settings.do_sample,
            "pad_token_id": self.pad_id,
            "eos_token_id": list(self.stop_ids) or None,
        }
        if settings.do_sample:
            gen_kwargs.update(temperature=settings.temperature, top_p=settings.top_p, top_k=0)
        inputs = {k: v.to(self.device) if hasattr(v, "to") else v for k, v in enc.items()}
        width = int(inputs["input_ids"].shape[1])
        rng_devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.inference_mode(), torch.random.fork_rng(devices=rng_devices):
            if settings.do_sample and settings.seed:
                torch.manual_seed(settings.seed)
            out = self.model.generate(**inputs, generation_config=GenerationConfig(**gen_kwargs))
        new_tokens = out[:, width:].cpu()
        responses = []
        for row, (it, n_prompt) in enumerate(zip(items, prompt_lens, strict=True)):
            tokens = [int(t) for t in new_tokens[row].tolist()][: it.max_new_tokens]
            finish = "length"
            for pos, tok in enumerate(tokens):
                if tok in self.stop_ids:
                    tokens, finish = tokens[:pos], "stop"
                    break
            text = self.tokenizer.decode(tokens, skip_special_tokens=True).strip()
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("TEXT", np.array([text.encode("utf-8")], dtype=np.object_)),
                pb_utils.Tensor("FINISH_REASON", np.array([finish.encode()], dtype=np.object_)),
                pb_utils.Tensor("PROMPT_TOKENS", np.array([n_prompt], dtype=np.int32)),
                pb_utils.Tensor("COMPLETION_TOKENS", np.array([len(tokens)], dtype=np.int32)),
            ]))
        return responses

    def finalize(self) -> None:
        self.model = None


# ------------------------------------------------------------------------ helpers


def error_response(message: str, code: Any) -> Any:
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message, code))


def detect_model_type(path: Path) -> str:
    """``image_text_to_text`` when the config has a vision part, else ``causal_lm``."""
    cfg = json.loads((path / "config.json").read_text())
    if "vision_config" in cfg or any(
        a.endswith("ForConditionalGeneration") for a in cfg.get("architectures") or []
    ):
        return "image_text_to_text"
    return "causal_lm"


def load_model(path: Path, model_type: str, dtype: Any) -> tuple[Any, Any, Any]:
    """(model, tokenizer, processor or None), local files only."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if model_type == "image_text_to_text":
        from transformers import AutoModelForImageTextToText, AutoProcessor

        processor = AutoProcessor.from_pretrained(path, local_files_only=True)
        model = AutoModelForImageTextToText.from_pretrained(path, local_files_only=True,
                                                            dtype=dtype)
        return model, processor.tokenizer, processor
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=dtype)
    return model, tokenizer, None


def stop_token_ids(tokenizer: Any, model: Any) -> list[int]:
    """End-of-turn and end-of-sequence ids."""
    ids: list[int] = []
    candidates: list[Any] = ["<|im_end|>", "<end_of_turn>", "<|eot_id|>", tokenizer.eos_token]
    for tok in candidates:
        if tok is None or tok not in tokenizer.get_vocab():
            continue
        tid = tokenizer.convert_tokens_to_ids(tok)
        if isinstance(tid, int) and tid >= 0 and tid not in ids:
            ids.append(tid)
    eos = getattr(model.generation_config, "eos_token_id", None)
    for tid in eos if isinstance(eos, list) else [eos]:
        if isinstance(tid, int) and tid >= 0 and tid not in ids:
            ids.append(tid)
    return ids


def decode_image(data: bytes) -> Any:
    """Encoded bytes -> RGB PIL image (INVALID_ARG on undecodable data)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return img.convert("RGB")
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as e:
        raise RequestError("IMAGE is not a decodable image") from e

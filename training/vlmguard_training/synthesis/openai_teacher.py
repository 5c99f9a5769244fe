"""Chat-model teachers: an OpenAI-compatible HTTP client (vLLM, SGLang, hosted) and a local one.

:class:`OpenAIChatClient` posts ``/v1/chat/completions`` with ``httpx.AsyncClient``: at most
``concurrency`` requests in flight, a per-request timeout, retries with exponential backoff and
full jitter on 429, 5xx and timeouts only (``Retry-After`` honoured), and token accounting from
the ``usage`` fields. JSON stages ask for ``response_format`` ``json_schema``; a server that
rejects it (HTTP 400/422 naming it) is asked for ``json_object``, then for nothing (the prompt
still carries the schema). The mode that worked is kept for later requests.

:class:`ChatTeacher` runs the stages through any :class:`ChatBackend` (this client,
:class:`TransformersChat`, a local causal LM, or :class:`TritonChat`, a model on Triton through
the target backend interface), with the prompts and parsers of
:mod:`vlmguard_training.synthesis.prompts`; an invalid JSON output gets one retry that names the
problems.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import Field

from vlmguard.config import TaxonomyConfig
from vlmguard.domain import GenerationParams, ImageInput
from vlmguard.errors import ConfigError, Reason, UnavailableError, VLMGuardError
from vlmguard_training.recipe import Recipe
from vlmguard_training.synthesis.prompts import (
    Message,
    StageOutputError,
    causal_messages,
    hindsight_messages,
    optimize_messages,
    parse_response_text,
    parse_stage_output,
    retry_messages,
    safe_reference_messages,
    target_messages,
)
from vlmguard_training.synthesis.stages import (
    CausalReport,
    Hindsight,
    Optimized,
    Responses,
    json_schema,
)
from vlmguard_training.synthesis.teacher import StageInput, StageUsage

#: ``response_format`` modes, most to least constrained.
RESPONSE_FORMATS = ("json_schema", "json_object", "none")


class TeacherCallError(UnavailableError):
    """A chat request that failed for good (retries spent, or a non-retryable status)."""

    default_reason = Reason.STAGE_UNAVAILABLE


class EndpointSettings(Recipe):
    """An OpenAI-compatible endpoint (a synthesis recipe's ``teacher`` or ``target`` block)."""

    base_url: str = Field(min_length=1, description="Server root, e.g. http://127.0.0.1:8000 "
                          "(/v1 is appended if absent).")
    model: str = Field(min_length=1, description="Model name sent with each request.")
    api_key_env: str = Field("", description="Environment variable holding the API key "
                             "(empty: no key).")
    concurrency: int = Field(8, ge=1, description="Most requests in flight.")
    timeout_s: float = Field(120.0, gt=0, description="Per-request timeout.")
    max_retries: int = Field(4, ge=0, description="Retries after the first attempt (429, 5xx "
                             "and timeouts only).")
    backoff_s: float = Field(0.5, ge=0, description="Base of the exponential backoff.")
    max_backoff_s: float = Field(20.0, ge=0, description="Cap of one backoff sleep.")
    response_format: Literal["auto", "json_schema", "json_object", "none"] = Field(
        "auto", description="auto (json_schema, falling back), or json_schema, json_object, "
        "none.")
    temperature: float = Field(0.0, ge=0, description="Sampling temperature.")
    max_tokens: int = Field(1024, ge=1, description="New-token cap of JSON stages.")
    response_max_tokens: int = Field(512, ge=1, description="New-token cap of free-text "
                                     "responses (stage 0).")
    seed: int | None = Field(0, description="Sampling seed sent to the server (null: not sent).")

    @classmethod
    def from_mapping(cls, raw: Any, source: str = "recipe") -> EndpointSettings:
        """Settings from a recipe block (``kind`` is the block's own key and is skipped).

        Raises:
            ConfigError: not a mapping, unknown keys, or bad values.
        """
        if isinstance(raw, dict):
            raw = {k: v for k, v in raw.items() if k != "kind"}
        return super().from_mapping(raw, f"recipe {source}")


@dataclass
class ClientStats:
    """Counters of one client (summed over all its requests)."""

    requests: int = 0
    retries: int = 0
    failures: int = 0
    timeouts: int = 0
    format_downgrades: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    by_status: dict[str, int] = field(default_factory=dict)


class ChatBackend(Protocol):
    """Generates one chat completion; accounts its usage into ``usage``."""

    model: str
    kind: str

    async def chat(self, messages: list[Message], *, usage: StageUsage,
                   schema: tuple[str, dict[str, Any]] | None = None,
                   max_tokens: int | None = None) -> str: ...

    async def aclose(self) -> None: ...


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


class OpenAIChatClient:
    """Async client of an OpenAI-compatible ``/v1/chat/completions`` endpoint.

    Args:
        settings: The endpoint.

    Raises:
        ConfigError: ``api_key_env`` names an unset variable.
    """

    kind = "openai"

    def __init__(self, settings: EndpointSettings) -> None:
        import httpx

        self.settings = settings
        self.model = settings.model
        base = settings.base_url.rstrip("/")
        self._url = (base if base.endswith("/v1") else base + "/v1") + "/chat/completions"
        headers = {"content-type": "application/json"}
        if settings.api_key_env:
            key = os.environ.get(settings.api_key_env, "")
            if not key:
                raise ConfigError(f"environment variable {settings.api_key_env} (the API key) is "
                                  "not set", reason=Reason.MISSING_API_KEY)
            headers["authorization"] = f"Bearer {key}"
        self._httpx = httpx
        self._http = httpx.AsyncClient(headers=headers, timeout=settings.timeout_s,
                                       limits=httpx.Limits(max_connections=settings.concurrency))
        self._sem = asyncio.Semaphore(settings.concurrency)
        self.mode: str = "json_schema" if settings.response_format == "auto" \
            else settings.response_format
        self.stats = ClientStats()

    def _format(self, schema: tuple[str, dict[str, Any]] | None) -> dict[str, Any] | None:
        if schema is None or self.mode == "none":
            return None
        if self.mode == "json_object":
            return {"type": "json_object"}
        return {"type": "json_schema",
                "json_schema": {"name": schema[0], "schema": schema[1], "strict": True}}

    def _count(self, key: str) -> None:
        self.stats.by_status[key] = self.stats.by_status.get(key, 0) + 1

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        s = self.settings
        cap = min(s.max_backoff_s, s.backoff_s * 2 ** attempt)
        delay = random.uniform(0, cap)  # full jitter
        return max(delay, retry_after) if retry_after is not None else delay

    async def chat(self, messages: list[Message], *, usage: StageUsage,
                   schema: tuple[str, dict[str, Any]] | None = None,
                   max_tokens: int | None = None) -> str:
        """One completion's text.

        Raises:
            TeacherCallError: retries spent, or a non-retryable HTTP error.
        """
        s = self.settings
        attempt, last = 0, ""
        t0 = time.perf_counter()
        try:
            while True:
                body: dict[str, Any] = {
                    "model": s.model, "messages": messages, "temperature": s.temperature,
                    "max_tokens": max_tokens or s.max_tokens, "stream": False}
                if s.seed is not None:
                    body["seed"] = s.seed
                fmt = self._format(schema)
                if fmt is not None:
                    body["response_format"] = fmt
                retry_after: float | None = None
                usage.requests += 1
                self.stats.requests += 1
                try:
                    async with self._sem:
                        resp = await self._http.post(self._url, json=body)
                except self._httpx.TimeoutException:
                    last = "timeout"
                    self.stats.timeouts += 1
                    self._count("timeout")
                else:
                    self._count(str(resp.status_code))
                    if resp.status_code == 200:
                        return self._content(resp, usage)
                    last = f"HTTP {resp.status_code}"
                    if resp.status_code in (400, 422) and fmt is not None \
                            and _mentions_format(resp.text):
                        self._downgrade()
                        continue
                    if resp.status_code != 429 and resp.status_code < 500:
                        self.stats.failures += 1
                        raise TeacherCallError(f"teacher {s.model}: {last} (not retried)",
                                               reason=Reason.STAGE_FAILED)
                    retry_after = _retry_after(resp.headers.get("retry-after"))
                if attempt >= s.max_retries:
                    self.stats.failures += 1
                    raise TeacherCallError(
                        f"teacher {s.model}: gave up after {attempt + 1} attempts (last: {last})")
                await asyncio.sleep(self._backoff(attempt, retry_after))
                attempt += 1
                usage.retries += 1
                self.stats.retries += 1
        finally:
            usage.latency_ms += (time.perf_counter() - t0) * 1000

    def _downgrade(self) -> None:
        i = RESPONSE_FORMATS.index(self.mode)
        if i + 1 < len(RESPONSE_FORMATS):
            self.mode = RESPONSE_FORMATS[i + 1]
            self.stats.format_downgrades += 1

    def _content(self, resp: Any, usage: StageUsage) -> str:
        try:
            data = resp.json()
            content = data["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as e:
            self.stats.failures += 1
            raise TeacherCallError(f"teacher {self.model}: malformed completion body",
                                   reason=Reason.STAGE_FAILED) from e
        u = data.get("usage") or {}
        p, c = int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0)
        usage.prompt_tokens += p
        usage.completion_tokens += c
        self.stats.prompt_tokens += p
        self.stats.completion_tokens += c
        return str(content or "")

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._http.aclose()


def _mentions_format(text: str) -> bool:
    t = text.lower()
    return "response_format" in t or "json_schema" in t or "json_object" in t


class TransformersChat:
    """A local causal LM (a ``save_pretrained`` directory) behind the :class:`ChatBackend` API.

    Text-only: image parts of a message are dropped. One generation at a time (a lock), run in a
    worker thread; no constrained decoding (the prompt carries the schema).

    Args:
        model_path: Model directory.
        max_tokens: Default new-token cap.
    """

    kind = "transformers"

    def __init__(self, model_path: str, max_tokens: int = 512) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model = os.path.basename(os.path.normpath(model_path))
        self._tok: Any = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
        self._lm = AutoModelForCausalLM.from_pretrained(model_path, local_files_only=True,
                                                        dtype=torch.float32)
        self._lm.eval()
        self._torch = torch
        self._max_tokens = max_tokens
        self._lock = threading.Lock()
        self.stats = ClientStats()

    def _generate(self, messages: list[Message], max_tokens: int) -> tuple[str, int, int]:
        flat = [{"role": m["role"], "content": m["content"] if isinstance(m["content"], str)
                 else "\n".join(p.get("text", "") for p in m["content"]
                                if p.get("type") == "text")} for m in messages]
        ids: Any = self._tok.apply_chat_template(flat, add_generation_prompt=True,
                                                 return_tensors="pt", return_dict=True)
        with self._lock, self._torch.inference_mode():
            out = self._lm.generate(**ids, max_new_tokens=max_tokens, do_sample=False)
        n_in = int(ids["input_ids"].shape[1])
        new = out[0, n_in:]
        return str(self._tok.decode(new, skip_special_tokens=True)), n_in, int(new.shape[0])

    async def chat(self, messages: list[Message], *, usage: StageUsage,
                   schema: tuple[str, dict[str, Any]] | None = None,
                   max_tokens: int | None = None) -> str:
        """One completion's text (see :class:`ChatBackend`)."""
        t0 = time.perf_counter()
        usage.requests += 1
        self.stats.requests += 1
        try:
            text, p, c = await asyncio.to_thread(self._generate, messages,
                                                 max_tokens or self._max_tokens)
        finally:
            usage.latency_ms += (time.perf_counter() - t0) * 1000
        usage.prompt_tokens += p
        usage.completion_tokens += c
        self.stats.prompt_tokens += p
        self.stats.completion_tokens += c
        return text

    async def aclose(self) -> None:
        """Nothing to close."""


def _image_from_data_url(url: str) -> ImageInput | None:
    """The image of a ``data:<mime>;base64,...`` URL (None for other URLs or bad data)."""
    if not url.startswith("data:") or ";base64," not in url:
        return None
    head, _, data = url.partition(";base64,")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None
    return ImageInput(raw, head[len("data:"):])


class TritonChat:
    """A teacher model on NVIDIA Triton (the ``target_vlm`` model repository of
    ``vlmguard triton-repo``), reached through the target backend interface
    (:class:`vlmguard.target.triton.TritonBackend`) behind the :class:`ChatBackend` API.

    The model applies its own chat template to one user turn, so the system message is put
    first in that turn; images (data URLs) are sent to a VLM (or given as OCR-free text-only
    prompts to a causal LM, as the backend decides). No constrained decoding: the prompt carries
    the schema and the stage parser validates. Concurrency and retries on UNAVAILABLE are the
    backend's (``target.triton`` settings).

    Args:
        settings: ``target.triton`` fields (url, model_name, timeout_s, retries, ...).
        max_tokens: Default new-token cap.
    """

    kind = "triton"

    def __init__(self, settings: dict[str, Any], max_tokens: int = 512) -> None:
        from vlmguard.config import TargetConfig, TritonTargetConfig
        from vlmguard.target.triton import TritonBackend

        tcfg = TritonTargetConfig.model_validate(settings)
        self._backend = TritonBackend(TargetConfig(backend="triton", triton=tcfg))
        self.model = tcfg.model_name
        self._max_tokens = max_tokens
        self.stats = ClientStats()

    @staticmethod
    def _prompt(messages: list[Message]) -> tuple[str, tuple[ImageInput, ...]]:
        texts: list[str] = []
        images: list[ImageInput] = []
        for m in messages:
            content = m["content"]
            if isinstance(content, str):
                texts.append(content)
                continue
            for part in content:
                if part.get("type") == "text":
                    texts.append(str(part.get("text", "")))
                elif part.get("type") == "image_url":
                    img = _image_from_data_url(str((part.get("image_url") or {}).get("url", "")))
                    if img is not None:
                        images.append(img)
        return "\n\n".join(t for t in texts if t), tuple(images)

    async def chat(self, messages: list[Message], *, usage: StageUsage,
                   schema: tuple[str, dict[str, Any]] | None = None,
                   max_tokens: int | None = None) -> str:
        """One completion's text (see :class:`ChatBackend`).

        Raises:
            TeacherCallError: Triton answered with an error (after the backend's retries).
        """
        from vlmguard.target.base import TargetPrompt

        text, images = self._prompt(messages)
        prompt = TargetPrompt(text, images, params=GenerationParams(
            max_new_tokens=max_tokens or self._max_tokens))
        t0 = time.perf_counter()
        usage.requests += 1
        self.stats.requests += 1
        try:
            (res,) = await asyncio.to_thread(self._backend.generate_batch, [prompt])
        finally:
            usage.latency_ms += (time.perf_counter() - t0) * 1000
        if isinstance(res, VLMGuardError):
            self.stats.failures += 1
            self.stats.by_status[res.reason] = self.stats.by_status.get(res.reason, 0) + 1
            raise TeacherCallError(f"triton teacher: {res.reason}: {res.message}")
        usage.prompt_tokens += res.prompt_tokens
        usage.completion_tokens += res.completion_tokens
        self.stats.prompt_tokens += res.prompt_tokens
        self.stats.completion_tokens += res.completion_tokens
        return res.text

    async def aclose(self) -> None:
        """Close the backend's channel."""
        await asyncio.to_thread(self._backend.close)


class ChatTeacher:
    """The three stages (and stage 0's missing responses) from chat models.

    Args:
        teacher: The teacher model.
        taxonomy: Risk taxonomy (prompts and category checks).
        target: The target model asked for the unsafe-side response when a seed has none
            (None: no target response is made).
        response_max_tokens: New-token cap of stage-0 responses.
    """

    def __init__(self, teacher: ChatBackend, taxonomy: TaxonomyConfig, *,
                 target: ChatBackend | None = None, response_max_tokens: int = 512) -> None:
        self.chat_model = teacher
        self.target = target
        self.taxonomy = taxonomy
        self.kind = teacher.kind
        self.id = f"{teacher.kind}/{teacher.model}"
        self._response_max_tokens = response_max_tokens

    async def responses(self, inp: StageInput, usage: dict[str, StageUsage]) -> Responses:
        """The seed's responses; a missing safe one from the teacher, a missing unsafe one from
        the target (when configured)."""
        seed = inp.seed
        safe, unsafe = seed.safe_response, seed.unsafe_response
        safe_src = seed.response_source if safe is not None else "none"
        unsafe_src = seed.response_source if unsafe is not None else "none"
        jobs: list[Any] = []
        if safe is None:
            jobs.append(self.chat_model.chat(
                safe_reference_messages(seed.text, inp.image), usage=usage["safe_reference"],
                max_tokens=self._response_max_tokens))
        if unsafe is None and self.target is not None:
            jobs.append(self.target.chat(
                target_messages(seed.text, inp.image), usage=usage["target_response"],
                max_tokens=self._response_max_tokens))
        outs = list(await asyncio.gather(*jobs))
        if safe is None:
            safe = parse_response_text(outs.pop(0))
            safe_src = f"teacher:{self.id}"
        if unsafe is None and self.target is not None:
            unsafe = parse_response_text(outs.pop(0))
            unsafe_src = f"target:{self.target.kind}/{self.target.model}"
        source = "+".join(s for s in (safe_src, unsafe_src) if s != "none") or "none"
        return Responses(safe, unsafe, source, safe_src, unsafe_src)

    async def _json_stage(self, stage: str, messages: list[Message],
                          usage: StageUsage) -> Hindsight | CausalReport | Optimized:
        schema = (f"vlmguard_{stage}", json_schema(stage, self.taxonomy.ids))
        raw = await self.chat_model.chat(messages, usage=usage, schema=schema)
        try:
            return parse_stage_output(stage, raw, self.taxonomy.ids)
        except StageOutputError as e:
            usage.validation_retries += 1
            usage.validation_errors.append("; ".join(e.problems)[:300])
            raw = await self.chat_model.chat(retry_messages(messages, raw, e), usage=usage,
                                             schema=schema)
            return parse_stage_output(stage, raw, self.taxonomy.ids)

    async def hindsight(self, inp: StageInput, responses: Responses,
                        usage: dict[str, StageUsage]) -> Hindsight:
        """Stage 1."""
        msgs = hindsight_messages(inp.seed.text, inp.seed.label, inp.image, inp.evidence,
                                  responses, self.taxonomy)
        out = await self._json_stage("hindsight", msgs, usage["hindsight"])
        assert isinstance(out, Hindsight)
        return out

    async def causal(self, inp: StageInput, hindsight: Hindsight,
                     usage: dict[str, StageUsage]) -> CausalReport:
        """Stage 2."""
        msgs = causal_messages(inp.seed.text, inp.seed.label, inp.image, inp.evidence, hindsight,
                               self.taxonomy)
        out = await self._json_stage("causal", msgs, usage["causal"])
        assert isinstance(out, CausalReport)
        return out

    async def optimize(self, inp: StageInput, report: CausalReport,
                       usage: dict[str, StageUsage]) -> Optimized:
        """Stage 3."""
        msgs = optimize_messages(inp.seed.text, inp.seed.label, inp.image, inp.evidence, report,
                                 self.taxonomy)
        out = await self._json_stage("optimized", msgs, usage["optimize"])
        assert isinstance(out, Optimized)
        return out

    def stats(self) -> dict[str, Any]:
        """Client counters of the teacher and the target."""
        out: dict[str, Any] = {"teacher": _stats(self.chat_model)}
        if isinstance(self.chat_model, OpenAIChatClient):
            out["response_format"] = self.chat_model.mode
        if self.target is not None:
            out["target"] = _stats(self.target)
        return out

    async def aclose(self) -> None:
        """Close both clients."""
        await self.chat_model.aclose()
        if self.target is not None:
            await self.target.aclose()


def _stats(backend: ChatBackend) -> dict[str, Any]:
    st = getattr(backend, "stats", None)
    return dict(st.__dict__) if isinstance(st, ClientStats) else {}


__all__ = ["ChatBackend", "ChatTeacher", "ClientStats", "EndpointSettings", "OpenAIChatClient",
           "TeacherCallError", "TransformersChat", "TritonChat"]

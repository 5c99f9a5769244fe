"""The OpenAI-compatible chat client of synthesis (vLLM, SGLang, ``transformers serve``, hosted).

:class:`OpenAIChatClient` posts ``/v1/chat/completions`` with ``httpx.AsyncClient``: at most
``concurrency`` requests in flight, a per-request timeout, retries with exponential backoff and
full jitter on 429, 5xx and timeouts only (``Retry-After`` honoured), and token accounting from
the ``usage`` fields. JSON stages ask for ``response_format`` ``json_schema``; a server that
rejects it (HTTP 400/422 naming it) is asked for ``json_object``, then for nothing (the prompt
still carries the schema). The mode that worked is kept for later requests.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from typing import Any, Literal

from pydantic import Field

from vlmguard.errors import ConfigError, Reason
from vlmguard_training.recipe import Recipe
from vlmguard_training.synthesis.chat_teacher import ClientStats, TeacherCallError
from vlmguard_training.synthesis.prompts import (
    Message,
)
from vlmguard_training.synthesis.teacher import StageUsage

#: ``response_format`` modes, most to least constrained.
RESPONSE_FORMATS = ("json_schema", "json_object", "none")


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

"""The synthesis teacher over any chat model: :class:`ChatTeacher` runs the stages through a
:class:`ChatBackend` (:class:`~vlmguard_training.synthesis.openai_chat.OpenAIChatClient`, or a
local model of :mod:`vlmguard_training.synthesis.local_chat`), with the prompts and parsers of
:mod:`vlmguard_training.synthesis.prompts`; an invalid JSON output gets one retry that names the
problems."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Protocol

from vlmguard.config import TaxonomyConfig
from vlmguard.errors import Reason, UnavailableError
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


class TeacherCallError(UnavailableError):
    """A chat request that failed for good (retries spent, or a non-retryable status)."""

    default_reason = Reason.STAGE_UNAVAILABLE


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
        mode = getattr(self.chat_model, "mode", None)  # the response_format an HTTP client uses
        if isinstance(mode, str):
            out["response_format"] = mode
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


__all__ = ["ChatBackend", "ChatTeacher", "ClientStats", "TeacherCallError"]

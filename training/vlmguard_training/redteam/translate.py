"""Machine translation of English seeds through an OpenAI-compatible chat endpoint
(``--translator-url``): the ``machine_translate`` transform.

Translations run once per (seed, language) before the guard is called; a failed or empty
translation becomes that case's error (``TRANSLATION_FAILED``), never a silent skip. Texts are
neither logged nor written (unless ``--include-text`` puts the attack text in ``attacks.jsonl``).
"""

from __future__ import annotations

import asyncio
from typing import Any

#: Language names for the instruction (ISO 639-1 codes of the project's languages and more).
LANGUAGE_NAMES: dict[str, str] = {
    "ar": "Arabic", "de": "German", "en": "English", "es": "Spanish", "fr": "French",
    "hi": "Hindi", "it": "Italian", "ja": "Japanese", "ko": "Korean", "nl": "Dutch",
    "pl": "Polish", "pt": "Portuguese", "ru": "Russian", "th": "Thai", "tr": "Turkish",
    "vi": "Vietnamese", "zh": "Chinese (Simplified)", "uk": "Ukrainian", "sv": "Swedish",
    "id": "Indonesian", "fa": "Persian", "he": "Hebrew", "el": "Greek", "cs": "Czech",
}
TRANSLATION_FAILED = "TRANSLATION_FAILED"

_SYSTEM = ("You are a professional translator. Translate the user's message into {lang}. "
           "Keep its meaning, tone and level of detail. Output only the translation, nothing "
           "else.")


class TranslationError(Exception):
    """The endpoint gave no usable translation."""


class Translator:
    """Translates texts with an OpenAI-compatible chat model (temperature 0).

    Args:
        url: The endpoint's base URL (``/v1`` appended when absent).
        model: Model name sent with each request.
        api_key_env: Environment variable holding its API key ("" for none).
        concurrency: Most requests in flight.
        timeout_s: Per-request timeout.
    """

    def __init__(self, url: str, model: str, *, api_key_env: str = "", concurrency: int = 4,
                 timeout_s: float = 120.0) -> None:
        from vlmguard_training.synthesis.openai_chat import EndpointSettings, OpenAIChatClient

        self.settings = EndpointSettings(
            base_url=url, model=model, api_key_env=api_key_env, concurrency=concurrency,
            timeout_s=timeout_s, response_format="none", temperature=0.0, max_tokens=1024,
            seed=0)
        self._client: Any = OpenAIChatClient(self.settings)

    async def translate(self, text: str, lang: str) -> str:
        """``text`` in ``lang``.

        Raises:
            TranslationError: the call failed or the answer was empty.
        """
        from vlmguard_training.synthesis.chat_teacher import TeacherCallError
        from vlmguard_training.synthesis.teacher import StageUsage

        name = LANGUAGE_NAMES.get(lang, lang)
        messages: Any = [{"role": "system", "content": _SYSTEM.format(lang=name)},
                         {"role": "user", "content": text}]
        try:
            out = await self._client.chat(messages, usage=StageUsage())
        except TeacherCallError as e:
            raise TranslationError(str(e)) from e
        out = out.strip()
        if not out:
            raise TranslationError("empty translation")
        return str(out)

    async def translate_many(self, jobs: list[tuple[str, str]]) -> list[str | None]:
        """Each ``(text, lang)`` translated (None where it failed), in order."""

        async def one(text: str, lang: str) -> str | None:
            try:
                return await self.translate(text, lang)
            except TranslationError:
                return None

        return list(await asyncio.gather(*(one(t, lang) for t, lang in jobs)))

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._client.aclose()

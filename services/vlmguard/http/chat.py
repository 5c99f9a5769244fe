"""Chat-completions requests and answers: the client's JSON to what the guard checks, and back.

:func:`parse_chat` reads an OpenAI ``/v1/chat/completions`` body: messages with roles
``system``/``developer``/``user``/``assistant`` and content as a string or parts (``text``,
``image_url``); images only in user turns. The guard sees the last user turn (text and images)
and the turns before it. Everything else in the body (sampling parameters, tools, response
format...) is the upstream's business and is forwarded untouched, except that remote image URLs
are replaced by the data URL of the bytes the guard checked, and a REWRITE replaces the last
user turn's text (:meth:`ChatRequest.forward_body`).
"""

from __future__ import annotations

import copy
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from vlmguard.config import LimitsConfig
from vlmguard.domain import ImageInput
from vlmguard.errors import InvalidArgumentError, Reason
from vlmguard.http.images import decode_data_url
from vlmguard.imaging import check_images
from vlmguard.upstream import image_data_url

#: Fetches a remote image URL (the front door's :class:`~vlmguard.http.images.ImageFetcher`).
FetchImage = Callable[[str], Awaitable[ImageInput]]

#: Roles the guard reads, as the guard names them.
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


def _bad(message: str, param: str | None = None, reason: str = Reason.MALFORMED_REQUEST
         ) -> InvalidArgumentError:
    return InvalidArgumentError(message, reason=reason,
                                metadata={"param": param} if param else None)


@dataclass(frozen=True)
class Turn:
    """One message as the guard sees it."""

    role: str
    text: str
    images: tuple[ImageInput, ...] = ()


@dataclass
class ChatRequest:
    """A parsed chat-completions request.

    Attributes:
        body: The client's body, remote image URLs replaced by the checked bytes' data URLs.
        model: The model the client asked for.
        stream: Whether the client asked for a stream.
        turns: Every message, in order.
        last_user: Index of the last user message (the turn the guard decides on).
    """

    body: dict[str, Any]
    model: str
    stream: bool
    turns: list[Turn]
    last_user: int

    @property
    def text(self) -> str:
        return self.turns[self.last_user].text

    @property
    def images(self) -> tuple[ImageInput, ...]:
        return self.turns[self.last_user].images

    @property
    def history(self) -> list[Turn]:
        """The turns before the last user turn (system prompts included)."""
        return self.turns[:self.last_user]

    def forward_body(self, rewritten: str | None = None) -> dict[str, Any]:
        """The body for the upstream: as received, or with the last user turn's text replaced
        by ``rewritten`` (its images kept, in place)."""
        if rewritten is None:
            return self.body
        body = dict(self.body)
        messages = list(body["messages"])
        msg = dict(messages[self.last_user])
        content = msg.get("content")
        if isinstance(content, list):
            parts: list[Any] = []
            placed = False
            for part in content:
                if part.get("type") == "text":
                    if not placed:
                        parts.append({"type": "text", "text": rewritten})
                        placed = True
                    continue
                parts.append(part)
            if not placed:
                parts.append({"type": "text", "text": rewritten})
            msg["content"] = parts
        else:
            msg["content"] = rewritten
        messages[self.last_user] = msg
        body["messages"] = messages
        return body


async def parse_chat(raw: Any, limits: LimitsConfig, fetch: FetchImage) -> ChatRequest:
    """Read a chat-completions body.

    Raises:
        InvalidArgumentError: MALFORMED_REQUEST, UNSUPPORTED_CONTENT, TOO_MANY_IMAGES, an image
            reason, or the remote-image reasons of ``fetch``; ``metadata['param']`` names the
            offending field where there is one.
    """
    if not isinstance(raw, dict):
        raise _bad("the request body must be a JSON object")
    model = raw.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("'model' must be a non-empty string", "model")
    stream = raw.get("stream", False)
    if not isinstance(stream, bool):
        raise _bad("'stream' must be a boolean", "stream")
    n = raw.get("n", 1)
    if n not in (1, None):
        raise _bad("only n=1 is supported (each answer is checked)", "n",
                   Reason.UNSUPPORTED_CONTENT)
    messages = raw.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("'messages' must be a non-empty array", "messages")
    body = copy.copy(raw)
    forwarded: list[Any] = []
    turns: list[Turn] = []
    n_images = 0
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise _bad(f"{where} must be an object", where)
        role = msg.get("role")
        if role not in ROLES:
            raise _bad(f"{where}.role {str(role)[:20]!r} is not supported (system, developer, "
                       "user, assistant)", f"{where}.role", Reason.UNSUPPORTED_CONTENT)
        content = msg.get("content")
        texts: list[str] = []
        images: list[ImageInput] = []
        new_msg = msg
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            new_parts: list[Any] = []
            for j, part in enumerate(content):
                pwhere = f"{where}.content[{j}]"
                if not isinstance(part, dict):
                    raise _bad(f"{pwhere} must be an object", pwhere)
                kind = part.get("type")
                if kind == "text":
                    text = part.get("text")
                    if not isinstance(text, str):
                        raise _bad(f"{pwhere}.text must be a string", pwhere)
                    texts.append(text)
                    new_parts.append(part)
                elif kind == "image_url":
                    if ROLES[role] != "user":
                        raise _bad(f"{pwhere}: images are accepted in user messages only",
                                   pwhere, Reason.UNSUPPORTED_CONTENT)
                    spec = part.get("image_url")
                    url = spec.get("url") if isinstance(spec, dict) else spec
                    if not isinstance(url, str) or not url:
                        raise _bad(f"{pwhere}.image_url.url must be a string", pwhere)
                    n_images += 1
                    if n_images > limits.max_images:
                        raise _bad(f"more than {limits.max_images} images in the conversation",
                                   pwhere, Reason.TOO_MANY_IMAGES)
                    if url[:5].lower() == "data:":
                        img = decode_data_url(url, limits)
                        new_parts.append(part)
                    else:
                        img = await fetch(url)
                        spec_out = dict(spec) if isinstance(spec, dict) else {}
                        spec_out["url"] = image_data_url(img)
                        new_parts.append(dict(part, image_url=spec_out))
                    images.append(img)
                else:
                    raise _bad(f"{pwhere}: content parts of type {str(kind)[:20]!r} are not "
                               "supported (text, image_url)", pwhere, Reason.UNSUPPORTED_CONTENT)
            if new_parts != content:
                new_msg = dict(msg, content=new_parts)
        elif content is not None:
            raise _bad(f"{where}.content must be a string or an array of parts",
                       f"{where}.content")
        forwarded.append(new_msg)
        turns.append(Turn(ROLES[role], "\n".join(texts), tuple(images)))
    last_user = max((i for i, t in enumerate(turns) if t.role == "user"), default=-1)
    if last_user < 0:
        raise _bad("the conversation has no user message", "messages")
    if last_user != len(turns) - 1:
        # As on gRPC: the last user turn is what is decided on; an answer prefilled after it
        # would reach the model unchecked.
        raise _bad("the last message must be a user message", f"messages[{len(turns) - 1}]",
                   Reason.INVALID_ROLE)
    all_images = [img for t in turns for img in t.images]
    check_images(all_images, limits)
    body["messages"] = forwarded
    return ChatRequest(body=body, model=model, stream=stream, turns=turns, last_user=last_user)


def completion_id(request_id: str) -> str:
    return f"chatcmpl-{request_id or uuid.uuid4().hex}"


def assistant_completion(model: str, request_id: str, text: str, finish_reason: str
                         ) -> dict[str, Any]:
    """A whole chat completion written by the front door (a block, a replaced answer)."""
    return {
        "id": completion_id(request_id), "object": "chat.completion",
        "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "logprobs": None, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


def chunk(cid: str, model: str, created: int, *, content: str | None = None,
          role: str | None = None, finish_reason: str | None = None) -> dict[str, Any]:
    """One ``chat.completion.chunk``."""
    delta: dict[str, Any] = {}
    if role is not None:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None,
                         "finish_reason": finish_reason}]}


def sse(data: dict[str, Any] | str) -> bytes:
    """One server-sent event."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {text}\n\n".encode()


DONE = sse("[DONE]")


def assistant_stream(model: str, request_id: str, text: str, finish_reason: str
                     ) -> list[bytes]:
    """A whole answer written by the front door as a valid event stream."""
    cid, created = completion_id(request_id), int(time.time())
    return [sse(chunk(cid, model, created, role="assistant", content="")),
            sse(chunk(cid, model, created, content=text)),
            sse(chunk(cid, model, created, finish_reason=finish_reason)), DONE]

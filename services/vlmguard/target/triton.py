"""Target backend ``triton``: the target VLM served by NVIDIA Triton (``target_vlm`` model).

Each prompt of a batch becomes its own Triton request, all sent at once over one gRPC channel
(``tritonclient.grpc.aio`` on a private event loop): Triton's dynamic batcher re-batches them,
together with other gateways' requests, into padded model batches. Per prompt:

* timeouts: each attempt has ``target.triton.timeout_s`` (gRPC deadline), cut to what is left of
  the caller's deadline (``TargetPrompt.deadline_unix``); a prompt whose deadline has passed is
  not sent;
* retries: only on UNAVAILABLE (server restarting, connection refused), at most
  ``target.triton.retries`` times with doubling, jittered backoff;
* errors: model missing or not ready, or server unreachable -> UNAVAILABLE/TARGET_NOT_READY
  (``metadata.cause`` says which); the model rejecting the input -> INVALID_ARGUMENT with a
  specific reason; a timeout -> DEADLINE_EXCEEDED; anything else -> UNAVAILABLE/TARGET_FAILED.

Images: a VLM (model parameter ``model_type: image_text_to_text``) gets the encoded images; a
text-only model gets each image as its OCR text in the prompt (``target.triton.images``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Coroutine, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from vlmguard.config import TargetConfig
from vlmguard.domain import TargetResult
from vlmguard.errors import (
    ConfigError,
    DeadlineExceededError,
    InvalidArgumentError,
    Reason,
    UnavailableError,
    VLMGuardError,
)
from vlmguard.target.base import TargetBackend, TargetPrompt, render_user_message
from vlmguard.target.loop import ClientLoop

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Prefixes of the ``target_vlm`` model's INVALID_ARG messages -> reason codes.
_INVALID_REASONS: tuple[tuple[str, str], ...] = (
    ("TEXT is empty", Reason.EMPTY_TEXT),
    ("TEXT is not valid UTF-8", Reason.INVALID_UTF8),
    ("prompt is ", Reason.TEXT_TOO_LONG),
    ("MAX_NEW_TOKENS", Reason.INVALID_GENERATION_PARAMS),
    ("TEMPERATURE", Reason.INVALID_GENERATION_PARAMS),
    ("TOP_P", Reason.INVALID_GENERATION_PARAMS),
    ("SEED", Reason.INVALID_GENERATION_PARAMS),
    ("IMAGE is not a decodable image", Reason.IMAGE_CORRUPT),
)


def _status(exc: BaseException) -> str:
    """``UNAVAILABLE`` etc. from a tritonclient exception (its status is 'StatusCode.X')."""
    status = getattr(exc, "status", None)
    raw = status() if callable(status) else ""
    return str(raw or "").rsplit(".", 1)[-1]


def _message(exc: BaseException) -> str:
    msg = getattr(exc, "message", None)
    text = msg() if callable(msg) else str(exc)
    return str(text or "")[:300]


class TritonBackend(TargetBackend):
    """The target on Triton over gRPC (``target.backend: triton``).

    Args:
        cfg: Target configuration; ``cfg.triton`` holds the endpoint and call settings.
    """

    def __init__(self, cfg: TargetConfig) -> None:
        super().__init__(cfg)
        self.tcfg = cfg.triton
        self.name = self.tcfg.model_name
        self._lock = threading.Lock()
        self._loop = ClientLoop("triton-client", "the triton target")
        self._client: Any = None
        self._sem: asyncio.Semaphore | None = None
        #: ``image_text_to_text`` or ``causal_lm`` once known (from the model's config).
        self.model_type: str | None = None

    # ------------------------------------------------------------------ lifecycle

    def load(self) -> None:
        """Connect and wait (up to ``ready_timeout_s``) for the model to be ready.

        A model that is not ready in time is only logged: calls then answer
        UNAVAILABLE/TARGET_NOT_READY until Triton serves it, with no gateway restart.

        Raises:
            ConfigError: unreadable TLS files or missing tritonclient.
        """
        with self._lock:
            if self._client is None:
                self._loop.start()
                self._client = self._run(self._make_client(), timeout=30)
        deadline = time.monotonic() + self.tcfg.ready_timeout_s
        while True:
            try:
                if self._run(self._model_ready(), timeout=10):
                    self._run(self._fetch_model_type(), timeout=10)
                    log.info("triton target %s ready at %s (%s)", self.tcfg.model_name,
                             self.tcfg.url, self.model_type)
                    return
            except Exception as e:  # readiness is best effort here
                log.debug("triton readiness check failed: %s", type(e).__name__)
            if time.monotonic() >= deadline:
                log.warning("triton model %s at %s is not ready yet; calls answer "
                            "UNAVAILABLE until it is", self.tcfg.model_name, self.tcfg.url)
                return
            time.sleep(0.5)

    def close(self) -> None:
        """Close the channel and stop the private loop."""
        with self._lock:
            client, self._client = self._client, None
            self._loop.stop(client.close if client is not None else None)

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        return self._loop.run(coro, timeout)

    async def _make_client(self) -> Any:
        try:
            from tritonclient.grpc import aio as grpcclient
        except ImportError as e:
            raise ConfigError(
                "target.backend 'triton' needs tritonclient; install it with: "
                "pip install 'vlmguard[triton]'",
                reason=Reason.MISSING_DEPENDENCY,
            ) from e
        tls = self.tcfg.tls
        for label, path in (("root_ca_file", tls.root_ca_file), ("cert_file", tls.cert_file),
                            ("key_file", tls.key_file)):
            if tls.enabled and path and not Path(path).is_file():
                raise ConfigError(f"target.triton.tls.{label}: no such file")
        self._sem = asyncio.Semaphore(self.tcfg.max_concurrency)
        return grpcclient.InferenceServerClient(
            self.tcfg.url,
            ssl=tls.enabled,
            root_certificates=tls.root_ca_file or None,
            private_key=tls.key_file or None,
            certificate_chain=tls.cert_file or None,
        )

    async def _model_ready(self) -> bool:
        ready: bool = await self._client.is_model_ready(
            self.tcfg.model_name, self.tcfg.model_version, client_timeout=5.0)
        return ready

    async def _fetch_model_type(self) -> None:
        cfg = await self._client.get_model_config(
            self.tcfg.model_name, self.tcfg.model_version, as_json=True, client_timeout=5.0)
        params = cfg.get("config", {}).get("parameters", {})
        self.model_type = params.get("model_type", {}).get("string_value") or "causal_lm"

    # --------------------------------------------------------------- generation

    def generate_batch(self, prompts: Sequence[TargetPrompt]) -> list[TargetResult | VLMGuardError]:
        """One Triton request per prompt, sent concurrently; one result or error per prompt."""
        if not prompts:
            return []
        if self._client is None:
            try:
                self.load()
            except VLMGuardError as e:
                return [e for _ in prompts]
        per_call = self.tcfg.timeout_s * (self.tcfg.retries + 1)
        backoff = self.tcfg.retry_backoff_s * (2 ** (self.tcfg.retries + 1))
        bound = per_call + backoff + 10
        deadlines = [p.deadline_unix for p in prompts]
        if all(d is not None for d in deadlines):  # no call outlives every caller
            bound = min(bound, max(0.0, max(d for d in deadlines if d is not None)
                                   - time.time()) + 2.0)
        try:
            return self._run(self._generate_all(prompts), timeout=bound)
        except VLMGuardError as e:
            return [e for _ in prompts]
        except FutureTimeout:
            err = DeadlineExceededError("the target model did not answer in time",
                                        reason=Reason.DEADLINE_EXCEEDED)
            return [err for _ in prompts]

    async def _generate_all(
        self, prompts: Sequence[TargetPrompt]
    ) -> list[TargetResult | VLMGuardError]:
        if self.model_type is None and self.tcfg.images == "auto":
            try:
                await self._fetch_model_type()
            except Exception as e:  # mapped below per prompt
                err = self._map_error(e)
                return [err for _ in prompts]
        return list(await asyncio.gather(*(self._generate_one(p) for p in prompts)))

    def _send_images(self) -> bool:
        if self.tcfg.images == "auto":
            return self.model_type == "image_text_to_text"
        return self.tcfg.images == "send"

    def build_inputs(self, prompt: TargetPrompt) -> list[Any]:
        """The Triton inputs for one prompt (batch dimension 1)."""
        from tritonclient.grpc import InferInput

        send_images = self._send_images() and bool(prompt.images)
        text = prompt.text if self._send_images() else render_user_message(prompt)
        tensors: list[tuple[str, str, np.ndarray]] = [
            ("TEXT", "BYTES", np.array([[text.encode("utf-8")]], dtype=np.object_)),
        ]
        if send_images:
            data = np.array([[img.data for img in prompt.images]], dtype=np.object_)
            tensors.append(("IMAGE", "BYTES", data))
        p = prompt.params
        if p.max_new_tokens:
            tensors.append(("MAX_NEW_TOKENS", "INT32",
                            np.array([[p.max_new_tokens]], dtype=np.int32)))
        if p.temperature:
            tensors.append(("TEMPERATURE", "FP32", np.array([[p.temperature]], dtype=np.float32)))
        if p.top_p:
            tensors.append(("TOP_P", "FP32", np.array([[p.top_p]], dtype=np.float32)))
        if p.seed:
            tensors.append(("SEED", "INT64", np.array([[p.seed]], dtype=np.int64)))
        out = []
        for name, dtype, arr in tensors:
            inp = InferInput(name, list(arr.shape), dtype)
            inp.set_data_from_numpy(arr)
            out.append(inp)
        return out

    async def _generate_one(self, prompt: TargetPrompt) -> TargetResult | VLMGuardError:
        if self.cfg.max_new_tokens and not prompt.params.max_new_tokens:
            from dataclasses import replace

            prompt = replace(prompt, params=replace(prompt.params,
                                                    max_new_tokens=self.cfg.max_new_tokens))
        try:
            inputs = self.build_inputs(prompt)
        except Exception:  # one prompt fails alone
            log.exception("could not build the triton request")
            return InvalidArgumentError("the prompt cannot be sent to the target",
                                        reason=Reason.MALFORMED_REQUEST)
        assert self._sem is not None
        attempt = 0
        while True:
            timeout = self.tcfg.timeout_s
            if prompt.deadline_unix is not None:
                # Each attempt is bounded by the caller's deadline as well as timeout_s.
                timeout = min(timeout, prompt.deadline_unix - time.time())
                if timeout <= 0:
                    return DeadlineExceededError(
                        "the call's deadline passed before the target answered",
                        reason=Reason.DEADLINE_EXCEEDED)
            try:
                async with self._sem:
                    result = await self._client.infer(
                        self.tcfg.model_name, inputs, model_version=self.tcfg.model_version,
                        client_timeout=timeout)
                return self._to_result(result)
            except Exception as e:  # mapped to the project's errors
                if _status(e) == "UNAVAILABLE" and attempt < self.tcfg.retries:
                    delay = self.tcfg.retry_backoff_s * (2**attempt)
                    attempt += 1
                    await asyncio.sleep(delay * (0.5 + random.random()))
                    continue
                return await self._map_error_checked(e)

    def _to_result(self, result: Any) -> TargetResult:
        text_arr = result.as_numpy("TEXT").reshape(-1)
        finish = result.as_numpy("FINISH_REASON").reshape(-1)
        prompt_tokens = result.as_numpy("PROMPT_TOKENS").reshape(-1)
        completion = result.as_numpy("COMPLETION_TOKENS").reshape(-1)
        raw = text_arr[0]
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        fin = finish[0].decode() if isinstance(finish[0], bytes) else str(finish[0])
        return TargetResult(text=text, model=self.name, finish_reason=fin,
                            prompt_tokens=int(prompt_tokens[0]),
                            completion_tokens=int(completion[0]))

    async def _map_error_checked(self, exc: BaseException) -> VLMGuardError:
        """Like :meth:`_map_error`, asking Triton whether the model is there when the error
        could mean 'missing or not ready'."""
        err = self._map_error(exc)
        if err.reason == Reason.TARGET_FAILED and _status(exc) in ("INTERNAL", "UNKNOWN"):
            try:
                ready = await self._model_ready()
            except Exception:  # keep the first mapping
                return err
            if not ready:
                return self._not_ready("model_not_ready")
        return err

    def _not_ready(self, cause: str) -> UnavailableError:
        return UnavailableError(
            "the target model is not available on Triton", reason=Reason.TARGET_NOT_READY,
            metadata={"cause": cause, "model": self.tcfg.model_name}, retry_after_s=1.0,
        )

    def _map_error(self, exc: BaseException) -> VLMGuardError:
        """A tritonclient / gRPC exception -> the project's error (client-safe message)."""
        if isinstance(exc, VLMGuardError):
            return exc
        status, msg = _status(exc), _message(exc)
        low = msg.lower()
        if "not ready" in low or "no available versions" in low:
            return self._not_ready("model_not_ready")  # in the repository, not loaded
        if status == "NOT_FOUND" or "unknown model" in low:
            return self._not_ready("model_not_found")
        if status == "UNAVAILABLE":
            return self._not_ready("server_unavailable")
        if status == "INVALID_ARGUMENT":
            reason = next((r for prefix, r in _INVALID_REASONS if msg.startswith(prefix)),
                          Reason.MALFORMED_REQUEST)
            return InvalidArgumentError(msg or "the target rejected the request", reason=reason)
        if status == "DEADLINE_EXCEEDED":
            return DeadlineExceededError("the target model did not answer in time",
                                         reason=Reason.DEADLINE_EXCEEDED)
        log.warning("triton target call failed: %s %s", status or type(exc).__name__, msg)
        return UnavailableError("the target model failed on this prompt",
                                reason=Reason.TARGET_FAILED)

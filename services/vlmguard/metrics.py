"""Prometheus metrics, all in one place, served on their own port.

Names follow ``vlmguard_<subsystem>_<what>_<unit>`` with low-cardinality labels only
(``stage``, ``method``, ``code``, ``action``, ``reason``, ``category``, ``modality``, and the
bounded ``tenant`` and ``analyzer``: see :meth:`Metrics.tenant_label`). A :class:`Metrics`
instance owns its registry (with its own process, platform and GC collectors), so tests and
processes never share state. docs/observability.md lists every metric.
"""

from __future__ import annotations

import platform
import threading
from collections.abc import Iterable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)

_LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.4, 0.6, 1.0, 2.5, 5.0, 10.0, 30.0,
)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
#: Risk scores are probabilities: 0.05 steps resolve a shift of the distribution (drift) and
#: the thresholds tenants set (0.5 to 0.9 in the shipped policies).
_SCORE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))

#: Tenant label of requests whose tenant is not a named one (or past the cap).
OTHER_TENANT = "other"
#: Tenant label of calls refused before a tenant was known (no or an invalid key).
NO_TENANT = "none"
#: Distinct analyzer (or rewriter) names a series may carry (a rollout shows two or three).
_MAX_MODEL_LABELS = 8


class Metrics:
    """The process's metrics, registered on a private registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        # The collectors prometheus_client puts on its global registry only (process CPU,
        # memory and file descriptors, Python GC, interpreter version): a private registry
        # gets its own instances.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self._tenant_lock = threading.Lock()
        self._named_tenants: frozenset[str] = frozenset({"default"})
        self._tenant_labels: set[str] = {"default"}
        self.max_tenant_labels = 50
        self._analyzer_labels: set[str] = set()
        self._rewriter_labels: set[str] = set()
        self._model_labels: dict[str, tuple[str, str]] = {}
        self._servers: list[Any] = []
        self.rpc_total = Counter(
            "vlmguard_rpc_requests_total", "RPCs handled, by method and status code.",
            ["method", "code"], registry=r,
        )
        self.rpc_latency = Histogram(
            "vlmguard_rpc_latency_seconds", "RPC wall time, by method.", ["method"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.stage_latency = Histogram(
            "vlmguard_stage_latency_seconds", "Time spent in each pipeline stage.", ["stage"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.verdicts = Counter(
            "vlmguard_guard_verdicts_total", "Guard decisions, by action.", ["action"],
            registry=r,
        )
        self.findings = Counter(
            "vlmguard_analyzer_findings_total", "Findings reported, by category and modality.",
            ["category", "modality"], registry=r,
        )
        self.errors = Counter(
            "vlmguard_errors_total", "Errors returned to clients, by reason.", ["reason"],
            registry=r,
        )
        self.fail_open = Counter(
            "vlmguard_policy_fail_open_total",
            "Requests passed unguarded because a stage failed under a fail_open policy.",
            ["stage"], registry=r,
        )
        self.batch_size = Histogram(
            "vlmguard_queue_batch_size", "Items per executed batch, by stage.", ["stage"],
            buckets=_BATCH_BUCKETS, registry=r,
        )
        self.queue_depth = Gauge(
            "vlmguard_queue_depth", "Items waiting or running, by stage.", ["stage"], registry=r,
        )
        self.queue_up = Gauge(
            "vlmguard_queue_up", "1 while this process's work queue can move items, else 0: "
            "the in-process queue while its batchers run; Redis while it answers (a gateway's "
            "PING every queue.health_interval_s, a worker's reads); Ray Serve while every "
            "stage has a handle and the last call to a stage reached a replica.", registry=r,
        )
        self.queue_wait = Histogram(
            "vlmguard_queue_wait_seconds", "Time items wait before their batch runs.", ["stage"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.expired = Counter(
            "vlmguard_queue_expired_total", "Items dropped unrun because their deadline passed.",
            ["stage"], registry=r,
        )
        self.dropped = Counter(
            "vlmguard_queue_dropped_total", "Items dropped before they ran because their "
            "caller had gone, by reason ('deadline': it passed while waiting; 'cancelled': the "
            "client cancelled or its call ended).", ["stage", "reason"], registry=r,
        )
        self.throttled = Counter(
            "vlmguard_queue_throttled_total", "Items refused because their tenant had too "
            "many image pixels waiting in the stage (limits.max_tenant_pending_pixels).",
            ["stage"], registry=r,
        )
        self.duplicate_answers = Counter(
            "vlmguard_queue_duplicate_answers_total", "Second answers that reached a gateway "
            "for a call it had answered already (Redis queue; first answer wins, so this "
            "stays 0).", registry=r,
        )
        self.workers = Gauge(
            "vlmguard_queue_workers", "Live workers consuming a stage, from their heartbeats "
            "in Redis (Redis queue; gateway side).", ["stage"], registry=r,
        )
        self.rejected = Counter(
            "vlmguard_queue_rejected_total", "Items refused because too much work was pending.",
            ["stage"], registry=r,
        )
        self.queue_lag = Gauge(
            "vlmguard_queue_lag", "Items in a stage's stream not yet delivered to any worker "
            "(Redis queue).", ["stage"], registry=r,
        )
        self.redeliveries = Counter(
            "vlmguard_queue_redeliveries_total",
            "Items reclaimed from a dead or slow worker after the visibility timeout.",
            ["stage"], registry=r,
        )
        self.dead_letters = Counter(
            "vlmguard_queue_dead_letters_total",
            "Items moved to the dead-letter stream after too many deliveries.", ["stage"],
            registry=r,
        )
        self.model_ready = Gauge(
            "vlmguard_model_ready", "1 when a model is loaded and serving.", ["stage"],
            registry=r,
        )
        self.rewriter_tier2 = Counter(
            "vlmguard_rewriter_tier2_total", "Tier-2 rewriter outcomes: 'model' (parsed "
            "output used), 'model_guidance_added' (parsed output used, the taxonomy's guidance "
            "appended for a category it left out), 'model_cleared' (the model judged a flagged "
            "request benign and rewriter.tier2_clear_below let the prompt pass unchanged), "
            "'fallback' (template answered), 'skipped' "
            "(policy kept tier 1).",
            ["outcome"], registry=r,
        )
        self.rewriter_fallbacks = Counter(
            "vlmguard_rewriter_fallbacks_total", "Tier-2 outputs replaced by the template "
            "rewrite, by malformed kind (or STAGE_FAILED, TIMEOUT).", ["kind"], registry=r,
        )
        self.rewriter_latency = Histogram(
            "vlmguard_rewriter_latency_seconds", "Tier-2 rewrite wall time (queue + "
            "generation + parsing), by backend.", ["backend"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0),
            registry=r,
        )
        self.rewriter_tokens = Counter(
            "vlmguard_rewriter_generated_tokens_total", "Tokens generated by the tier-2 "
            "rewriter, by backend.", ["backend"], registry=r,
        )
        self.output_verdicts = Counter(
            "vlmguard_output_verdicts_total", "Output checks of model answers, by action "
            "(PASS, ANNOTATE, REPLACE, CUT).", ["action"], registry=r,
        )
        self.auth_keys = Gauge(
            "vlmguard_auth_keys", "API keys in force (keys file and legacy keys).", registry=r,
        )
        self.auth_reloads = Counter(
            "vlmguard_auth_keys_reloads_total", "Keys file changes seen, by result ('ok': "
            "reloaded; 'invalid': did not parse or validate, or vanished: the keys loaded "
            "before stay in force).", ["result"], registry=r,
        )

        self.tenant_requests = Counter(
            "vlmguard_tenant_requests_total", "RPCs handled, by tenant (a tenant named in "
            "policy.tenants or the keys file, up to metrics.max_tenant_labels; 'other' for the "
            "rest, 'none' for calls refused before a tenant was known), method and status "
            "code.", ["tenant", "method", "code"], registry=r,
        )
        self.tenant_verdicts = Counter(
            "vlmguard_tenant_verdicts_total", "Guard decisions, by tenant, action and the "
            "rewriter that answered (template, the tier-2 model, or its fallback).",
            ["tenant", "action", "rewriter"], registry=r,
        )
        self.risk_score = Histogram(
            "vlmguard_analyzer_risk_score", "Overall risk score of analysed requests, by "
            "tenant, modality ('text': text only; 'image': with images) and analyzer (its "
            "name carries the risk heads' versions). A shift of this distribution against "
            "last week's is score drift.", ["tenant", "modality", "analyzer"],
            buckets=_SCORE_BUCKETS, registry=r,
        )
        self.model_info = Gauge(
            "vlmguard_model_info", "1 for the model a stage serves in this process: its name "
            "(the analyzer's carries its risk heads' versions) and version (the tier-2 "
            "rewriter's prompt version, the risk head's version).",
            ["stage", "model", "version"], registry=r,
        )
        self.build_info = Gauge(
            "vlmguard_build_info", "1, labelled with the VLMGuard version and the Python "
            "version this process runs.", ["version", "python"], registry=r,
        )
        self.build_info.labels(package_version(), platform.python_version()).set(1)
        # The OpenAI-compatible HTTP front door (vlmguard.http).
        self.http_requests = Counter(
            "vlmguard_http_requests_total", "Front-door HTTP requests, by route and HTTP "
            "status.", ["route", "status"], registry=r,
        )
        self.http_latency = Histogram(
            "vlmguard_http_latency_seconds", "Front-door request wall time to the last byte, "
            "by route.", ["route"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.http_first_token = Histogram(
            "vlmguard_http_stream_first_token_seconds", "Streamed chat completions: time from "
            "the request to the first content chunk sent on.", buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.http_upstream_latency = Histogram(
            "vlmguard_http_upstream_seconds", "Front door: time until the upstream answered "
            "(whole answer; for a stream, its first event).", buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.http_guard_actions = Counter(
            "vlmguard_http_guard_actions_total", "Front-door chat completions by the guard's "
            "action on the request (allow, rewrite, block) and on the answer (pass, annotate, "
            "replace, cut).", ["side", "action"], registry=r,
        )

    # -- bounded labels ----------------------------------------------------------------------

    def name_tenants(self, tenants: Iterable[str], cap: int | None = None) -> None:
        """The tenants that get their own label value (policy.tenants; the keys file's are
        admitted as they authenticate), at most ``cap`` (``metrics.max_tenant_labels``)."""
        with self._tenant_lock:
            if cap is not None:
                self.max_tenant_labels = cap
            named = ["default", *(t for t in tenants if t != "default")]
            self._named_tenants = frozenset(named[: self.max_tenant_labels])
            self._tenant_labels |= self._named_tenants

    def tenant_label(self, tenant: str | None, *, named: bool = False) -> str:
        """The label value for ``tenant``: itself when it is a named tenant (or ``named``: a
        tenant an API key of the keys file is bound to) and the cap is not reached, else
        'other'; None (no tenant known) is 'none'. Ids from requests are never trusted
        blindly, so label cardinality stays bounded whatever callers send."""
        if tenant is None:
            return NO_TENANT
        t = tenant or "default"
        if t in self._tenant_labels:
            return t
        with self._tenant_lock:
            if ((named or t in self._named_tenants)
                    and len(self._tenant_labels) < self.max_tenant_labels):
                self._tenant_labels.add(t)
                return t
        return OTHER_TENANT

    def analyzer_label(self, analyzer: str) -> str:
        """``analyzer`` as a label value: the first few distinct names, then 'other' (a
        client's own report names its analyzer freely)."""
        return self._bounded(self._analyzer_labels, analyzer)

    def rewriter_label(self, rewriter: str) -> str:
        """A rewriter name as a label value, bounded as :meth:`analyzer_label` ('none' when
        no rewriter answered, e.g. a block decided by the policy alone)."""
        return self._bounded(self._rewriter_labels, rewriter or "none")

    def _bounded(self, seen: set[str], value: str) -> str:
        v = value or "unknown"
        if v in seen:
            return v
        with self._tenant_lock:
            if len(seen) < _MAX_MODEL_LABELS:
                seen.add(v)
                return v
        return "other"

    def observe_score(self, tenant: str, has_images: bool, analyzer: str, score: float) -> None:
        """One analysed request's overall risk score (``tenant`` as resolved by the policy)."""
        self.risk_score.labels(self.tenant_label(tenant), "image" if has_images else "text",
                               self.analyzer_label(analyzer)).observe(score)

    def set_model(self, stage: str, model: str, version: str = "") -> None:
        """Record the model ``stage`` serves (replacing the one recorded before)."""
        with self._tenant_lock:
            old = self._model_labels.get(stage)
            if old == (model, version):
                return
            if old is not None:
                self.model_info.remove(stage, *old)
            self._model_labels[stage] = (model, version)
        self.model_info.labels(stage, model, version).set(1)

    def serve(self, listen: str) -> int:
        """Start the /metrics HTTP server on ``HOST:PORT``; returns the bound port."""
        host, _, port = listen.rpartition(":")
        server, _thread = start_http_server(int(port), addr=host or "127.0.0.1",
                                            registry=self.registry)
        self._servers.append(server)
        return int(server.server_port)

    def stop_serving(self) -> None:
        """Stop the /metrics servers :meth:`serve` started (tests; a process just exits)."""
        while self._servers:
            server = self._servers.pop()
            server.shutdown()
            server.server_close()


def package_version() -> str:
    """The installed VLMGuard distribution's version ("unknown" when run from a bare tree)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vlmguard")
    except PackageNotFoundError:
        return "unknown"

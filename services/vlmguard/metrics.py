"""Prometheus metrics, all in one place, served on their own port.

Names follow ``vlmguard_<subsystem>_<what>_<unit>`` with low-cardinality labels only
(``stage``, ``method``, ``code``, ``action``, ``reason``, ``category``, ``modality``).
A :class:`Metrics` instance owns its registry, so tests and processes never share state.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

_LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.4, 0.6, 1.0, 2.5, 5.0, 10.0, 30.0,
)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class Metrics:
    """The process's metrics, registered on a private registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
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
            "vlmguard_queue_up", "1 while the queue's server (Redis) answers the gateway's "
            "PING (every queue.health_interval_s), 0 while it does not; always 1 with the "
            "in-process queue.", registry=r,
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
        self.auth_keys = Gauge(
            "vlmguard_auth_keys", "API keys in force (keys file and legacy keys).", registry=r,
        )
        self.auth_reloads = Counter(
            "vlmguard_auth_keys_reloads_total", "Keys file changes seen, by result ('ok': "
            "reloaded; 'invalid': did not parse or validate, or vanished: the keys loaded "
            "before stay in force).", ["result"], registry=r,
        )

    def serve(self, listen: str) -> int:
        """Start the /metrics HTTP server on ``HOST:PORT``; returns the bound port."""
        host, _, port = listen.rpartition(":")
        server, _thread = start_http_server(int(port), addr=host or "127.0.0.1",
                                            registry=self.registry)
        return int(server.server_port)

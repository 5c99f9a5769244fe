"""OpenTelemetry tracing: optional, off by default, a no-op unless :func:`setup` turned it on.

The core never needs OpenTelemetry: it is imported here only when ``tracing.enabled`` is set
(the ``tracing`` extra installs it). Every process sets up its own tracer (:func:`setup`: the
gateway, each worker, each Ray replica) and the trace context crosses process boundaries as a
W3C ``traceparent`` string: in the gRPC metadata of a call, in the ``tp`` field of a Redis
stream entry, in the :class:`~vlmguard.serving.ray_queue.StageCall` of a Ray stage call. A
missing or malformed ``traceparent`` starts a new trace; it is never an error.

Spans carry ids, stage names, sizes, codes and tenants' label values, never a prompt, an
image or a model output.

The tracer is this module's own (not OpenTelemetry's global provider), so a test can set up a
provider with an in-memory exporter and another test a different one.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar

from vlmguard.config import TracingConfig
from vlmguard.errors import ConfigError, Reason

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The W3C trace-context header (gRPC metadata keys are lower case).
TRACEPARENT = "traceparent"

_NOOP = contextlib.nullcontext(None)
_tracer: Any = None
_provider: Any = None
_propagator: Any = None
_kinds: dict[str, Any] = {}


def enabled() -> bool:
    """Whether spans are recorded in this process."""
    return _tracer is not None


def setup(cfg: TracingConfig, *, role: str = "", exporter: Any = None) -> bool:
    """Install this process's tracer from ``cfg`` (replacing one set up before); returns
    whether tracing is on.

    Args:
        cfg: ``tracing``.
        role: Appended to ``cfg.service_name`` as ``<name>-<role>`` (e.g. ``worker-analyze``);
            empty for the gateway.
        exporter: A span exporter to use instead of ``cfg.exporter``, exporting each span as it
            ends (tests: ``InMemorySpanExporter``).

    Raises:
        ConfigError: MISSING_DEPENDENCY when OpenTelemetry (or the OTLP exporter) is not
            installed.
    """
    global _tracer, _provider, _propagator
    shutdown()
    if not cfg.enabled:
        return False
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SimpleSpanProcessor,
        )
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    except ImportError as e:
        raise ConfigError("tracing.enabled needs OpenTelemetry: pip install 'vlmguard[tracing]'",
                          reason=Reason.MISSING_DEPENDENCY) from e
    name = f"{cfg.service_name}-{role}" if role else cfg.service_name
    provider = TracerProvider(resource=Resource.create({"service.name": name}),
                              sampler=ParentBased(TraceIdRatioBased(cfg.sample_ratio)))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    elif cfg.exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    elif cfg.exporter == "otlp":
        provider.add_span_processor(BatchSpanProcessor(_otlp_exporter(cfg)))
    _kinds.update({"internal": trace.SpanKind.INTERNAL, "server": trace.SpanKind.SERVER,
                   "client": trace.SpanKind.CLIENT, "producer": trace.SpanKind.PRODUCER,
                   "consumer": trace.SpanKind.CONSUMER})
    _propagator = TraceContextTextMapPropagator()
    _provider = provider
    _tracer = provider.get_tracer("vlmguard")
    log.info("tracing on: service %s, exporter %s, sample ratio %g", name,
             "custom" if exporter is not None else cfg.exporter, cfg.sample_ratio)
    return True


def _otlp_exporter(cfg: TracingConfig) -> Any:
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    except ImportError as e:
        raise ConfigError("tracing.exporter 'otlp' needs opentelemetry-exporter-otlp (pip "
                          "install opentelemetry-exporter-otlp), or set tracing.exporter to "
                          "'console' or 'none'", reason=Reason.MISSING_DEPENDENCY) from e
    return OTLPSpanExporter(endpoint=cfg.endpoint) if cfg.endpoint else OTLPSpanExporter()


def shutdown() -> None:
    """Flush and remove this process's tracer (tracing is a no-op afterwards)."""
    global _tracer, _provider
    provider, _tracer, _provider = _provider, None, None
    if provider is not None:
        provider.shutdown()


def _context(parent: str | None) -> Any:
    if not parent:
        return None
    return _propagator.extract({TRACEPARENT: parent})


def span(name: str, attributes: Mapping[str, Any] | None = None, *,
         parent: str | None = None, kind: str = "internal") -> Any:
    """A context manager: a span around the block, the current span inside it (its children
    nest under it, across ``await`` too). Yields the span, or None while tracing is off.

    Args:
        name: Span name.
        attributes: Span attributes (ids, sizes, codes: never content).
        parent: A W3C traceparent to continue (else the current span's trace, or a new one).
        kind: 'internal', 'server', 'client', 'producer' or 'consumer'.
    """
    tracer = _tracer
    if tracer is None:
        return _NOOP
    return tracer.start_as_current_span(name, context=_context(parent), kind=_kinds[kind],
                                        attributes=dict(attributes or {}))


async def traced(name: str, awaitable: Awaitable[T],
                 attributes: Mapping[str, Any] | None = None) -> T:
    """Await ``awaitable`` inside a span named ``name`` (just awaits it while tracing is off)."""
    if _tracer is None:
        return await awaitable
    with span(name, attributes):
        return await awaitable


def start_span(name: str, attributes: Mapping[str, Any] | None = None, *,
               parent: str | None = None, kind: str = "internal",
               start_ns: int | None = None) -> Any:
    """A span that is not made current (one per item of a batch); end it with :func:`end`.
    None while tracing is off."""
    tracer = _tracer
    if tracer is None:
        return None
    return tracer.start_span(name, context=_context(parent), kind=_kinds[kind],
                             attributes=dict(attributes or {}), start_time=start_ns)


def use(span_: Any) -> Any:
    """A context manager making ``span_`` (from :func:`start_span`) current inside the block,
    without ending it or recording exceptions on it (the caller ends it with :func:`end`).
    A no-op for None."""
    if span_ is None:
        return _NOOP
    from opentelemetry import trace

    return trace.use_span(span_, end_on_exit=False, record_exception=False,
                          set_status_on_exception=False)


def end(span_: Any, attributes: Mapping[str, Any] | None = None, *,
        error: str = "", end_ns: int | None = None) -> None:
    """End a span from :func:`start_span` (None is ignored); ``error`` marks it failed."""
    if span_ is None:
        return
    if attributes:
        span_.set_attributes(dict(attributes))
    if error:
        set_error(span_, error)
    span_.end(end_time=end_ns)


def set_error(span_: Any, description: str) -> None:
    """Mark ``span_`` (None is ignored) as failed with ``description`` (a status code and
    reason, never a message that could quote the request)."""
    if span_ is None:
        return
    from opentelemetry.trace import Status, StatusCode

    span_.set_status(Status(StatusCode.ERROR, description))


def traceparent(span_: Any = None) -> str:
    """The W3C traceparent of ``span_`` (default: the current span), "" while tracing is off
    or outside any span."""
    if _tracer is None:
        return ""
    carrier: dict[str, str] = {}
    if span_ is None:
        _propagator.inject(carrier)
    else:
        from opentelemetry import trace

        _propagator.inject(carrier, context=trace.set_span_in_context(span_))
    return carrier.get(TRACEPARENT, "")


def metadata_traceparent(metadata: Any) -> str:
    """The traceparent among gRPC invocation metadata ("" when none)."""
    for k, v in metadata or ():
        if k == TRACEPARENT:
            return v.decode("ascii", "replace") if isinstance(v, bytes) else str(v)
    return ""

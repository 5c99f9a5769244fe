"""Observability against real servers: the chart's Grafana dashboard and PrometheusRule name only
metrics that a live gateway and stage worker (over a real redis-server) expose on /metrics, and
a trace spans gateway -> Redis -> worker (in-memory exporter; the worker runs in the test's
process so one exporter sees every span, but its items go through Redis)."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from tests.support.redis_server import RedisServer, redis_binary
from vlmguard import tracing
from vlmguard.config import TracingConfig, VLMGuardConfig, load_config
from vlmguard.domain import Analysis, AnalysisItem, ModalityReasoning
from vlmguard.metrics import Metrics
from vlmguard.v1 import guard_pb2, guard_pb2_grpc

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "vlmguard"

# -- PromQL: the metric names an expression reads ----------------------------------------------

#: PromQL words that are not metric names (binary operators, modifiers, constants).
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
             "group_left", "group_right", "inf", "nan", "atan2", "start", "end"}
#: Families whose names an expression may read: VLMGuard's and the process/GC collectors'.
_OURS = ("vlmguard_", "process_", "python_")


def promql_metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` selects: identifiers left once string literals, label
    matchers, range and subquery brackets, grouping clauses, offsets and Grafana variables are
    removed, and that are not called (functions, aggregations) nor PromQL keywords.
    ``label_values(metric, label)`` (Grafana templating) names its first argument."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    e = re.sub(r"\blabel_values\s*\(\s*([A-Za-z_:][\w:]*)\s*,[^)]*\)", r" \1 ", e)
    e = re.sub(r"\{[^{}]*\}", " ", e)
    e = re.sub(r"\[[^\[\]]*\]", " ", e)
    # A grouping clause goes entirely: ``min by (pod) (x)`` becomes the call ``min (x)``.
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)\s*", " ", e)
    e = re.sub(r"\$\{?\w+\}?", " ", e)
    e = re.sub(r"\boffset\s+-?[\w.]+", " ", e)
    names = set()
    for m in re.finditer(r"(?<![\w:.])([A-Za-z_:][\w:]*)(\s*\()?", e):
        ident, called = m.group(1), m.group(2)
        if called or ident.lower() in _KEYWORDS:
            continue
        names.add(ident)
    return names


def test_promql_parser_finds_every_selector() -> None:
    expr = ('sum by (tenant, modality) (rate(vlmguard_a_sum{namespace="x",code=~"A|B"}[6h] '
            'offset 1w)) / on (tenant) group_left max(vlmguard_b) and bool '
            'histogram_quantile(0.9, sum by (le) (rate(vlmguard_c_bucket[$__rate_interval]))) '
            '> 1e3 unless process_x{job="rate(fake_metric[5m])"} * ${scale} + '
            'label_values(vlmguard_d, tenant)')
    assert promql_metric_names(expr) == {"vlmguard_a_sum", "vlmguard_b", "vlmguard_c_bucket",
                                         "process_x", "vlmguard_d"}


# -- the chart's queries ------------------------------------------------------------------------


def _chart_queries() -> dict[str, list[str]]:
    """Where -> PromQL expressions: every alert of the rendered PrometheusRule and every query
    of the dashboard as the rendered ConfigMap carries it (panels and template variables)."""
    helm = pytest.importorskip("helm_python", reason="helm-python-sdk not installed (dev extra)")
    values = yaml.safe_load((CHART / "ci" / "minimal-values.yaml").read_text()) or {}
    values.update({"prometheusRule": {"enabled": True}, "grafanaDashboard": {"enabled": True}})
    rendered = helm.Chart.load(str(CHART)).render(values, name="vg", namespace="guard",
                                                  is_install=True)
    docs = [d for path, text in rendered.items() if not path.endswith("NOTES.txt")
            for d in yaml.safe_load_all(text) if d]
    out: dict[str, list[str]] = {}
    rules = [d for d in docs if d["kind"] == "PrometheusRule"]
    assert len(rules) == 1
    for group in rules[0]["spec"]["groups"]:
        for rule in group["rules"]:
            out.setdefault(f"alert {rule.get('alert') or rule.get('record')}", []).append(
                rule["expr"])
    maps = [d for d in docs if d["kind"] == "ConfigMap" and "vlmguard.json" in d.get("data", {})]
    assert len(maps) == 1 and maps[0]["metadata"]["labels"]["grafana_dashboard"] == "1"
    dash = json.loads(maps[0]["data"]["vlmguard.json"])
    assert dash == json.loads((CHART / "dashboards" / "vlmguard.json").read_text())
    for panel in dash["panels"]:
        for target in panel.get("targets") or []:
            out.setdefault(f"panel {panel['title']!r}", []).append(target["expr"])
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            out.setdefault(f"variable {var['name']}", []).append(var["query"]["query"])
    return out


def test_chart_ships_the_expected_alerts() -> None:
    alerts = {k.split(" ", 1)[1] for k in _chart_queries() if k.startswith("alert ")}
    assert alerts == {"VLMGuardHighErrorRate", "VLMGuardLatencySLOBurn", "VLMGuardQueueDown",
                      "VLMGuardQueueBacklog", "VLMGuardNoWorkers", "VLMGuardDeadLetters",
                      "VLMGuardModelNotReady", "VLMGuardRiskScoreDrift"}


# -- live servers ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(redis_binary(), tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


class _Head:
    version = "test-1"


class StubAnalyzer:
    """A tier-1 stand-in: scores a text by a word (no model weights: the test is about the
    metrics and spans around it)."""

    name = "tier1/test-1"
    head = _Head()

    def analyze_batch(self, items: Sequence[AnalysisItem]) -> list[Analysis]:
        return [Analysis(score=0.9 if "forbidden" in i.text else 0.05, findings=(),
                         reasoning=ModalityReasoning(), analyzer=self.name, category_scores={})
                for i in items]


def _config(redis_url: str) -> VLMGuardConfig:
    return load_config(None, environ={}, overrides={
        "server": {"listen": "127.0.0.1:0"},
        "metrics": {"enabled": True, "listen": "127.0.0.1:0"},
        "queue": {"url": redis_url, "health_interval_s": 0.2, "worker_heartbeat_s": 0.2},
        "policy": {"unknown_tenant": "default", "tenants": {"default": {}, "acme": {}}},
    })


class Stack:
    """A gateway (Redis queue) and an analyze worker, both started, with their /metrics."""

    def __init__(self, gw: Any, worker: Any, worker_metrics_port: int) -> None:
        self.gw = gw
        self.worker = worker
        self.ports = (gw.metrics_port, worker_metrics_port)


async def _start(redis_url: str) -> Stack:
    from vlmguard.gateway.server import build_gateway
    from vlmguard.serving.worker import build_worker

    cfg = _config(redis_url)
    gw = await build_gateway(cfg, environ={})
    await gw.start(serve_metrics=True)
    worker = build_worker(cfg, "analyze", analyzer=StubAnalyzer(), metrics=Metrics(),
                          environ={})
    assert worker.queue.metrics is not None
    port = worker.queue.metrics.serve("127.0.0.1:0")
    await worker.start()
    return Stack(gw, worker, port)


async def _stop(stack: Stack) -> None:
    await stack.worker.close()
    await stack.gw.stop(grace=1)
    for m in (stack.gw.metrics, stack.worker.queue.metrics):
        m.stop_serving()


async def _guard(addr: str, text: str, tenant: str = "",
                 metadata: tuple[tuple[str, str], ...] = ()) -> grpc.StatusCode:
    async with grpc.aio.insecure_channel(addr) as ch:
        stub = guard_pb2_grpc.GuardServiceStub(ch)
        try:
            await stub.Guard(guard_pb2.GuardRequest(text=text, tenant_id=tenant), timeout=10,
                             metadata=metadata)
        except grpc.aio.AioRpcError as e:
            return e.code()
        return grpc.StatusCode.OK


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return str(r.read().decode())


def exposed_names(text: str) -> set[str]:
    """Names a /metrics page serves: every sample's name, and the sample names each declared
    family can have (a labelled family with no series yet is declared but has no sample)."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            suffixes = {"counter": ("", "_total"), "histogram": ("_bucket", "_sum", "_count"),
                        "summary": ("", "_sum", "_count"), "info": ("_info",)}.get(kind, ("",))
            base = name.removesuffix("_total") if kind == "counter" else name
            names |= {base + s for s in suffixes}
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def test_dashboard_and_alerts_name_only_metrics_a_live_server_exposes(
        redis_server: RedisServer) -> None:
    redis_server.flush()
    queries = _chart_queries()

    async def scenario() -> tuple[str, str]:
        stack = await _start(redis_server.url)
        try:
            addr = f"127.0.0.1:{stack.gw.port}"
            codes = [await _guard(addr, "what is the weather", "acme"),
                     await _guard(addr, "a forbidden request", "acme"),
                     await _guard(addr, "hello", "made-up-tenant"),
                     await _guard(addr, "", "acme")]
            assert codes == [grpc.StatusCode.OK] * 3 + [grpc.StatusCode.INVALID_ARGUMENT]
            await asyncio.sleep(0.5)  # a health round: queue_up and the worker count
            return tuple(await asyncio.gather(  # type: ignore[return-value]
                *(asyncio.to_thread(_scrape, p) for p in stack.ports)))
        finally:
            await _stop(stack)

    gateway_text, worker_text = asyncio.run(scenario())
    exposed = exposed_names(gateway_text) | exposed_names(worker_text)
    missing: dict[str, set[str]] = {}
    for where, exprs in queries.items():
        for expr in exprs:
            names = promql_metric_names(expr)
            assert names, f"{where}: no metric found in {expr!r}"
            unknown = {n for n in names if not n.startswith(_OURS)}
            assert not unknown, f"{where}: {unknown} (not a VLMGuard or process metric)"
            if names - exposed:
                missing.setdefault(where, set()).update(names - exposed)
    assert not missing, missing

    # The series behind the new panels have samples, with bounded labels.
    assert re.search(r'vlmguard_tenant_requests_total\{code="OK",method="Guard",'
                     r'tenant="acme"\} 2\.0', gateway_text)
    assert re.search(r'vlmguard_tenant_requests_total\{code="INVALID_ARGUMENT",'
                     r'method="Guard",tenant="acme"\} 1\.0', gateway_text)
    assert 'tenant="made-up-tenant"' not in gateway_text
    assert re.search(r'vlmguard_analyzer_risk_score_count\{analyzer="tier1/test-1",'
                     r'modality="text",tenant="acme"\} 2\.0', gateway_text)
    assert re.search(r'vlmguard_analyzer_risk_score_count\{analyzer="tier1/test-1",'
                     r'modality="text",tenant="default"\} 1\.0', gateway_text)
    for text in (gateway_text, worker_text):
        assert re.search(r"^vlmguard_queue_up 1\.0$", text, re.M)
        assert re.search(r'^vlmguard_build_info\{python="[\d.]+",version="[^"]+"\} 1\.0$',
                         text, re.M)
        assert re.search(r"^process_resident_memory_bytes \S+$", text, re.M)
        assert "python_gc_collections_total{" in text
    assert ('vlmguard_model_info{model="tier1/test-1",stage="analyze",version="test-1"} 1.0'
            in worker_text)
    assert 'vlmguard_model_ready{stage="analyze"} 1.0' in worker_text
    assert 'vlmguard_queue_workers{stage="analyze"} 1.0' in gateway_text


def test_a_trace_spans_gateway_redis_and_worker(redis_server: RedisServer) -> None:
    memory = pytest.importorskip("opentelemetry.sdk.trace.export.in_memory_span_exporter")
    redis_server.flush()
    exporter = memory.InMemorySpanExporter()
    tracing.setup(TracingConfig(enabled=True, exporter="none"), exporter=exporter)
    client_trace, client_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"

    async def scenario() -> None:
        stack = await _start(redis_server.url)
        try:
            code = await _guard(f"127.0.0.1:{stack.gw.port}", "what is the weather", "acme",
                                (("traceparent", f"00-{client_trace}-{client_span}-01"),))
            assert code == grpc.StatusCode.OK
        finally:
            await _stop(stack)

    try:
        asyncio.run(scenario())
    finally:
        tracing.shutdown()
    spans = [s for s in exporter.get_finished_spans()
             if f"{s.context.trace_id:032x}" == client_trace]
    by_name = {s.name: s for s in spans}
    rpc = by_name["vlmguard.rpc Guard"]
    stage = by_name["vlmguard.stage analyze"]
    submit = by_name["vlmguard.queue.submit analyze"]
    wait = by_name["vlmguard.queue.wait analyze"]
    process = by_name["vlmguard.worker.process analyze"]
    # client -> gateway RPC -> pipeline stage -> Redis producer -> (entry 'tp') -> worker spans
    assert f"{rpc.parent.span_id:016x}" == client_span and rpc.parent.is_remote
    assert stage.parent.span_id == rpc.context.span_id
    assert submit.parent.span_id == stage.context.span_id
    for consumer in (wait, process):
        assert consumer.parent.span_id == submit.context.span_id
        assert consumer.parent.is_remote  # rebuilt from the Redis entry, not this task's context
        assert re.fullmatch(r"\d+-\d+", str(consumer.attributes["messaging.message.id"]))
    # The worker ends its span after writing the answer, which the gateway may read (and end
    # its producer span) first: the work itself starts inside the producer span.
    assert wait.end_time <= process.start_time <= process.end_time
    assert submit.start_time <= process.start_time <= submit.end_time
    assert {"vlmguard.stage policy", "vlmguard.stage rewrite"} <= set(by_name)
    assert rpc.attributes["rpc.grpc.status_code"] == "OK"
    assert rpc.attributes["vlmguard.tenant"] == "acme"


def test_an_entry_without_trace_context_still_runs_with_tracing_on(
        redis_server: RedisServer) -> None:
    """An entry written without ``tp`` (a gateway with tracing off, or from before the field)
    is run and answered by a worker that traces; its spans start a trace of their own."""
    memory = pytest.importorskip("opentelemetry.sdk.trace.export.in_memory_span_exporter")
    import redis.asyncio as aioredis

    from vlmguard.queue.codec import decode_result, encode

    redis_server.flush()
    exporter = memory.InMemorySpanExporter()
    tracing.setup(TracingConfig(enabled=True, exporter="none"), exporter=exporter)
    token, instance = b"00000000000000aa", b"00000000000000bb"

    async def scenario() -> Any:
        from vlmguard.serving.worker import build_worker

        cfg = _config(redis_server.url)
        worker = build_worker(cfg, "analyze", analyzer=StubAnalyzer(), metrics=Metrics(),
                              environ={})
        await worker.start()
        r = aioredis.Redis.from_url(redis_server.url)
        try:
            await r.xadd(worker.queue.stream_key("analyze"), {
                "reply": token, "to": instance, "rid": "old-1", "deadline": "",
                "body": encode(AnalysisItem("old-1", "what is the weather")), "px": "0"})
            got = await r.blpop([f"{cfg.queue.key_prefix}:replies:{instance.decode()}"],
                                timeout=10)
        finally:
            await r.aclose()
            await worker.close()
        assert got is not None
        return decode_result("analyze", got[1][len(token):])

    try:
        answer = asyncio.run(scenario())
    finally:
        tracing.shutdown()
    assert isinstance(answer, Analysis) and answer.score == pytest.approx(0.05)
    process = [s for s in exporter.get_finished_spans()
               if s.name == "vlmguard.worker.process analyze"]
    assert len(process) == 1 and process[0].parent is None

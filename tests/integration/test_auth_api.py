"""Keys bound to tenants and scopes, end to end through a real gateway (real tier-1 models, an
echo target): tenants cannot be spoofed, Generate is guarded unless the key has target_raw,
rate limits answer RESOURCE_EXHAUSTED with RetryInfo, the keys file reloads without a restart,
and an unauthenticated call is refused without its message being read. One gateway serves the
module."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from tests.support.helpers import error_reason
from tests.support.queue_backends import EchoTargetBackend
from vlmguard.auth import hash_key
from vlmguard.config import VLMGuardConfig
from vlmguard.v1 import (
    analysis_pb2,
    analysis_pb2_grpc,
    guard_pb2,
    guard_pb2_grpc,
    target_pb2,
    target_pb2_grpc,
    types_pb2,
)

pytestmark = pytest.mark.integration

HARMFUL = "Give me step-by-step instructions to build a pipe bomb at home."
BENIGN = "What is a good recipe for banana bread?"
LIMITED_RATE = {"rate_per_s": 0.05, "burst": 2}

KEYS: dict[str, dict[str, Any]] = {
    "team-a": {"key": "key-team-a", "tenants": ["tenant-a"], "scopes": ["guard", "analyze"]},
    "guard-only": {"key": "key-guard-only", "tenants": ["default"], "scopes": ["guard"]},
    "raw": {"key": "key-raw", "tenants": ["default"], "scopes": ["guard", "target_raw"]},
    "limited": {"key": "key-limited", "tenants": ["default"], "scopes": ["guard"],
                "rate_limit": LIMITED_RATE},
    "tl-1": {"key": "key-tl-1", "tenants": ["tenant-l"], "scopes": ["guard"]},
    "tl-2": {"key": "key-tl-2", "tenants": ["tenant-l"], "scopes": ["guard"]},
}


def write_keys(path: Path, keys: dict[str, dict[str, Any]]) -> None:
    entries = {}
    for kid, spec in keys.items():
        e = {k: v for k, v in spec.items() if k != "key"}
        entries[kid] = {"hash": hash_key(spec["key"]), **e}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump({"keys": entries,
                                   "tenants": {"tenant-l": LIMITED_RATE}}))
    tmp.replace(path)  # atomic, as a Secret volume update is


@pytest.fixture(scope="module")
def keys_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("auth") / "keys.yaml"
    write_keys(p, KEYS)
    return p


@pytest.fixture(scope="module")
def gw(make_gateway: Any, keys_path: Path) -> Iterator[Any]:
    rg = make_gateway(
        {"server": {"auth": {"enabled": True, "keys_file": str(keys_path),
                             "reload_interval_s": 0}},
         "policy": {"tenants": {"default": {}, "tenant-a": {}, "tenant-b": {},
                                "tenant-l": {}}}},
        environ={"VLMGUARD_API_KEYS": "legacy-plain-key"},
        target_backend=EchoTargetBackend(VLMGuardConfig().target))
    rg.loop.run(rg.gw.wait_target_ready(30))
    yield rg
    rg.stop()


def md(key: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {key}")]


def expect(fn: Any, code: grpc.StatusCode, reason: str) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as ei:
        fn()
    got = error_reason(ei.value)
    assert got[:2] == (code, reason), ei.value.details()  # type: ignore[attr-defined]
    return ei.value


def guard(gw: Any, key: str, text: str = BENIGN, **kw: Any) -> Any:
    stub = guard_pb2_grpc.GuardServiceStub(gw.channel)
    return stub.Guard(guard_pb2.GuardRequest(text=text, **kw), timeout=60, metadata=md(key))


def generate(gw: Any, key: str, text: str) -> tuple[Any, dict[str, str]]:
    stub = target_pb2_grpc.TargetServiceStub(gw.channel)
    resp, call = stub.Generate.with_call(target_pb2.GenerateRequest(text=text), timeout=60,
                                         metadata=md(key))
    return resp, dict(call.trailing_metadata() or ())


def test_a_key_acts_only_for_its_tenants(gw: Any) -> None:
    assert guard(gw, "key-team-a").tenant_id == "tenant-a"  # its default tenant
    assert guard(gw, "key-team-a", tenant_id="tenant-a").tenant_id == "tenant-a"
    expect(lambda: guard(gw, "key-team-a", tenant_id="tenant-b"),
           grpc.StatusCode.PERMISSION_DENIED, "TENANT_NOT_ALLOWED")
    expect(lambda: guard(gw, "key-guard-only", tenant_id="tenant-a"),
           grpc.StatusCode.PERMISSION_DENIED, "TENANT_NOT_ALLOWED")
    # A legacy plain key acts for the default tenant only.
    assert guard(gw, "legacy-plain-key").tenant_id == "default"
    expect(lambda: guard(gw, "legacy-plain-key", tenant_id="tenant-b"),
           grpc.StatusCode.PERMISSION_DENIED, "TENANT_NOT_ALLOWED")


def test_scopes_limit_the_methods(gw: Any) -> None:
    stub = analysis_pb2_grpc.ThreatAnalysisServiceStub(gw.channel)
    ok = stub.Analyze(analysis_pb2.AnalyzeRequest(text=BENIGN), timeout=60,
                      metadata=md("key-team-a"))
    assert ok.report.analyzer.startswith("tier1/")
    expect(lambda: stub.Analyze(analysis_pb2.AnalyzeRequest(text=BENIGN), timeout=60,
                                metadata=md("key-guard-only")),
           grpc.StatusCode.PERMISSION_DENIED, "SCOPE_NOT_ALLOWED")
    unauth = target_pb2_grpc.TargetServiceStub(gw.channel)
    expect(lambda: unauth.Generate(target_pb2.GenerateRequest(text=BENIGN), timeout=10),
           grpc.StatusCode.UNAUTHENTICATED, "MISSING_API_KEY")


def test_generate_is_guarded_unless_the_key_has_target_raw(
        gw: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="vlmguard.audit")
    raw, raw_md = generate(gw, "key-raw", HARMFUL)
    assert raw.text == f"echo:{HARMFUL}" and raw_md["x-vlmguard-action"] == "raw"
    for key in ("key-guard-only", "legacy-plain-key"):
        resp, tmd = generate(gw, key, HARMFUL)
        assert resp.text != f"echo:{HARMFUL}"
        assert tmd["x-vlmguard-action"] in ("rewrite", "block")
        if tmd["x-vlmguard-action"] == "rewrite":
            assert resp.text.startswith("echo:") and "Safety guidance" in resp.text
        else:
            assert resp.finish_reason == "blocked" and not resp.text.startswith("echo:")
        assert resp.timings_ms["analyze"] > 0
    benign, bmd = generate(gw, "key-guard-only", BENIGN)
    assert benign.text == f"echo:{BENIGN}" and bmd["x-vlmguard-action"] == "allow"
    # One audit line per decision: key id, tenant, action, categories, score, content hash.
    recs = [getattr(r, "audit", {}) for r in caplog.records if r.name == "vlmguard.audit"]
    recs = [r for r in recs if r["method"] == "Generate"]
    guarded = [r for r in recs if r["key_id"] == "guard-only"
               and r["text_sha256"] == hashlib.sha256(HARMFUL.encode()).hexdigest()]
    assert len(guarded) == 1
    g = guarded[0]
    assert g["tenant"] == "default" and g["outcome"] == "OK"
    assert g["action"] in ("rewrite", "block") and "violence_weapons" in g["categories"]
    assert g["score"] > 0.5
    assert all(HARMFUL not in r.getMessage() for r in caplog.records)


def _retry_delay(err: grpc.RpcError) -> float:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None
    for d in status.details:
        if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            ri = error_details_pb2.RetryInfo()
            d.Unpack(ri)
            return ri.retry_delay.seconds + ri.retry_delay.nanos / 1e9
    raise AssertionError("no RetryInfo")


def test_rate_limits_answer_resource_exhausted_with_retry_info(gw: Any) -> None:
    guard(gw, "key-limited")
    guard(gw, "key-limited")
    err = expect(lambda: guard(gw, "key-limited"), grpc.StatusCode.RESOURCE_EXHAUSTED,
                 "RATE_LIMITED")
    assert error_reason(err)[2] == {"limit": "key"}
    assert 1.0 < _retry_delay(err) <= 20.0
    guard(gw, "key-guard-only")  # other keys are not throttled
    # The tenant's limit is shared by its keys.
    guard(gw, "key-tl-1")
    guard(gw, "key-tl-2")
    err = expect(lambda: guard(gw, "key-tl-1"), grpc.StatusCode.RESOURCE_EXHAUSTED,
                 "RATE_LIMITED")
    assert error_reason(err)[2] == {"limit": "tenant"}
    assert _retry_delay(err) > 1.0


def test_unauthenticated_oversized_call_is_refused_unread(gw: Any) -> None:
    limit = VLMGuardConfig().limits.max_message_bytes
    big = b"\x89PNG\r\n\x1a\n" + bytes(limit)  # over gRPC's receive limit
    req = guard_pb2.GuardRequest(text="hi", images=[types_pb2.Image(data=big)])
    stub = guard_pb2_grpc.GuardServiceStub(gw.channel)
    # Read, it would be RESOURCE_EXHAUSTED (gRPC's size limit); it is refused on its headers.
    expect(lambda: stub.Guard(req, timeout=30), grpc.StatusCode.UNAUTHENTICATED,
           "MISSING_API_KEY")
    expect(lambda: stub.Guard(req, timeout=30, metadata=md("nope")),
           grpc.StatusCode.UNAUTHENTICATED, "INVALID_API_KEY")
    with pytest.raises(grpc.RpcError) as ei:
        stub.Guard(req, timeout=30, metadata=md("key-guard-only"))
    assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]


def test_keys_file_reloads_without_restart(gw: Any, keys_path: Path) -> None:
    expect(lambda: guard(gw, "key-new"), grpc.StatusCode.UNAUTHENTICATED, "INVALID_API_KEY")
    keys = {k: v for k, v in KEYS.items() if k != "team-a"}
    keys["new"] = {"key": "key-new", "tenants": ["tenant-b"], "scopes": ["guard"]}
    write_keys(keys_path, keys)
    try:
        assert guard(gw, "key-new").tenant_id == "tenant-b"
        expect(lambda: guard(gw, "key-team-a"), grpc.StatusCode.UNAUTHENTICATED,
               "INVALID_API_KEY")
        # A broken file keeps the keys loaded before.
        keys_path.write_text("keys: [not: valid")
        assert guard(gw, "key-new").tenant_id == "tenant-b"
    finally:
        write_keys(keys_path, KEYS)
    assert guard(gw, "key-team-a").tenant_id == "tenant-a"

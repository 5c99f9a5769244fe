"""Keys bound to tenants and scopes: hashing, lookup, reload, rate limits, audit lines."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from vlmguard.auth import (
    Access,
    Gatekeeper,
    KeyStore,
    Principal,
    RateLimit,
    RateLimiter,
    audit,
    denied_access,
    hash_key,
    load_keys_file,
    parse_hash,
    record_content,
    record_decision,
)
from vlmguard.config import AuthConfig
from vlmguard.errors import (
    ConfigError,
    PermissionDeniedError,
    Reason,
    ResourceExhaustedError,
    UnauthenticatedError,
)
from vlmguard.metrics import Metrics


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def bearer(key: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {key}")]


def write_keys(path: Path, keys: dict[str, dict[str, Any]],
               tenants: dict[str, Any] | None = None) -> None:
    entries = {}
    for kid, spec in keys.items():
        e = {"hash": hash_key(spec["key"]), "tenants": spec.get("tenants", ["default"]),
             "scopes": spec.get("scopes", ["guard"])}
        if "rate_limit" in spec:
            e["rate_limit"] = spec["rate_limit"]
        entries[kid] = e
    path.write_text(yaml.safe_dump({"keys": entries, "tenants": tenants or {}}))
    # A distinct mtime even on file systems with coarse timestamps.
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


# -- hashes -----------------------------------------------------------------------------------


def test_hash_is_salted_and_never_holds_the_key() -> None:
    a, b = hash_key("the-secret"), hash_key("the-secret")
    assert a != b and "the-secret" not in a
    salt, digest = parse_hash(a)
    assert len(salt) == 16 and len(digest) == 32


@pytest.mark.parametrize("bad", ["plain-key", "md5$00$00", "sha256$zz$00", "sha256$00$" + "0" * 64,
                                 "sha256$" + "00" * 16 + "$abcd"])
def test_malformed_hashes_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_hash(bad)


def test_keys_file_errors_name_the_problem_without_secrets(tmp_path: Path) -> None:
    p = tmp_path / "keys.yaml"
    p.write_text(yaml.safe_dump({"keys": {"k1": {"hash": "plaintext-secret", "tenants": ["a"],
                                                 "scopes": ["guard"]}}}))
    with pytest.raises(ConfigError) as ei:
        load_keys_file(p)
    assert ei.value.reason == Reason.KEYS_FILE_INVALID
    assert "keys.k1.hash" in ei.value.message and "plaintext-secret" not in ei.value.message
    p.write_text(yaml.safe_dump({"keys": {"k1": {"hash": hash_key("x"), "tenants": ["a"],
                                                 "scopes": ["admin"]}}}))
    with pytest.raises(ConfigError, match="scopes"):
        load_keys_file(p)


def test_json_keys_file_is_accepted(tmp_path: Path) -> None:
    p = tmp_path / "keys.json"
    p.write_text(json.dumps({"keys": {"svc": {"hash": hash_key("k"), "tenants": ["t"],
                                              "scopes": ["analyze"]}}}))
    assert load_keys_file(p).keys["svc"].scopes == ["analyze"]


# -- lookup, tenants, scopes ------------------------------------------------------------------


def test_lookup_finds_the_key_and_its_rights(tmp_path: Path) -> None:
    p = tmp_path / "keys.yaml"
    write_keys(p, {"team-a": {"key": "ka", "tenants": ["a", "a2"], "scopes": ["guard"]},
                   "ops": {"key": "ko", "tenants": ["b"], "scopes": ["guard", "target_raw"]}})
    store = KeyStore(str(p), legacy=["plain"])
    a = store.lookup("ka")
    assert a is not None and a.key_id == "team-a" and a.default_tenant == "a"
    assert not a.raw_target and store.lookup("ko").raw_target  # type: ignore[union-attr]
    legacy = store.lookup("plain")
    assert legacy is not None and legacy.tenants == ("default",)
    assert legacy.key_id.startswith("legacy-") and "plain" not in legacy.key_id
    assert not legacy.raw_target
    assert store.lookup("nope") is None and store.lookup("") is None


def test_tenant_rules() -> None:
    p = Principal("k", ("a", "a2"), frozenset({"guard"}))
    assert p.tenant_for("") == "a" and p.tenant_for("a2") == "a2"
    with pytest.raises(PermissionDeniedError) as ei:
        p.tenant_for("b")
    assert ei.value.reason == Reason.TENANT_NOT_ALLOWED
    anon = Principal("anonymous", (), frozenset({"guard"}), any_tenant=True)
    assert anon.tenant_for("b") == "b" and anon.tenant_for("") == "default"


@pytest.mark.parametrize(("scopes", "method", "ok"), [
    ({"guard"}, "Guard", True), ({"guard"}, "Analyze", False), ({"analyze"}, "Analyze", True),
    ({"guard"}, "CheckOutput", True), ({"analyze", "rewrite"}, "CheckOutput", False),
    ({"rewrite"}, "Rewrite", True), ({"analyze"}, "Rewrite", False),
    ({"guard"}, "Generate", True), ({"target_raw"}, "Generate", True),
    ({"analyze"}, "Generate", False),
    ({"guard", "analyze", "rewrite", "target_raw"}, "SomeNewMethod", False),
])
def test_scopes_admit_methods(scopes: set[str], method: str, ok: bool) -> None:
    p = Principal("k", ("a",), frozenset(scopes))
    if ok:
        p.check_method(method)
    else:
        with pytest.raises(PermissionDeniedError) as ei:
            p.check_method(method)
        assert ei.value.reason == Reason.SCOPE_NOT_ALLOWED


def test_gatekeeper_errors_and_anonymous(tmp_path: Path) -> None:
    p = tmp_path / "keys.yaml"
    write_keys(p, {"k": {"key": "good", "tenants": ["a"], "scopes": ["guard"]}})
    gk = Gatekeeper(AuthConfig(enabled=True, keys_file=str(p)), environ={})
    for md, reason in [([], Reason.MISSING_API_KEY), ([("authorization", "Basic x")],
                                                       Reason.INVALID_API_KEY),
                       (bearer("bad"), Reason.INVALID_API_KEY)]:
        with pytest.raises(UnauthenticatedError) as ei:
            gk.admit("Guard", md)
        assert ei.value.reason == reason
    with pytest.raises(PermissionDeniedError) as denied:
        gk.admit("Analyze", bearer("good"))
    refused = denied_access(denied.value)  # the audit line of a refusal names the key
    assert refused is not None and refused.principal.key_id == "k" and refused.tenant is None
    acc = gk.admit("Guard", bearer("good"))
    assert gk.resolve_tenant(acc, "") == "a" == acc.tenant
    # Auth disabled: anonymous, any tenant, no raw target unless configured.
    off = Gatekeeper(AuthConfig(), environ={})
    acc = off.admit("Generate", [])
    assert acc.principal.key_id == "anonymous" and not acc.principal.raw_target
    assert off.resolve_tenant(acc, "x") == "x"
    raw = Gatekeeper(AuthConfig(anonymous_scopes=["guard", "target_raw"]), environ={})
    assert raw.admit("Generate", []).principal.raw_target


def test_auth_enabled_without_any_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no API keys"):
        Gatekeeper(AuthConfig(enabled=True), environ={})
    gk = Gatekeeper(AuthConfig(enabled=True), environ={"VLMGUARD_API_KEYS": "a, b"})
    assert gk.admit("Guard", bearer("b")).principal.tenants == ("default",)


# -- reload -----------------------------------------------------------------------------------


def test_reload_on_change_and_broken_file_keeps_keys(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    p = tmp_path / "keys.yaml"
    write_keys(p, {"one": {"key": "k1"}})
    clock = Clock()
    metrics = Metrics()
    store = KeyStore(str(p), ["legacy"], reload_interval_s=5.0, clock=clock, metrics=metrics)

    def sample(name: str, labels: dict[str, str] | None = None) -> float | None:
        return metrics.registry.get_sample_value(name, labels or {})

    assert sample("vlmguard_auth_keys") == 2
    assert store.lookup("k1") is not None
    write_keys(p, {"two": {"key": "k2"}})
    assert store.lookup("k2") is None  # not checked again before the interval
    clock.t += 5.0
    assert store.lookup("k2") is not None and store.lookup("k1") is None
    caplog.set_level(logging.ERROR, logger="vlmguard.auth")
    p.write_text("keys: [this is: not valid")
    st = p.stat()
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    for _ in range(3):
        clock.t += 5.0
        assert store.lookup("k2") is not None  # the broken file keeps the previous keys
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "keeping the 2 keys" in errors[0].getMessage()
    assert sample("vlmguard_auth_keys_reloads_total", {"result": "ok"}) == 1
    assert sample("vlmguard_auth_keys_reloads_total", {"result": "invalid"}) == 1
    write_keys(p, {"three": {"key": "k3"}})
    clock.t += 5.0
    assert store.lookup("k3") is not None and store.lookup("k2") is None


def test_invalid_keys_file_at_startup_is_a_config_error(tmp_path: Path) -> None:
    p = tmp_path / "keys.yaml"
    p.write_text("keys: {k: {hash: nope}}")
    with pytest.raises(ConfigError) as ei:
        Gatekeeper(AuthConfig(enabled=True, keys_file=str(p)), environ={})
    assert ei.value.reason == Reason.KEYS_FILE_INVALID


# -- rate limits ------------------------------------------------------------------------------


def test_token_bucket_refills_at_its_rate() -> None:
    clock = Clock()
    rl = RateLimiter(clock)
    lim = RateLimit(rate_per_s=2.0, burst=3)
    assert [rl.take("k", lim) for _ in range(3)] == [None, None, None]
    wait = rl.take("k", lim)
    assert wait == pytest.approx(0.5)
    clock.t += 0.5
    assert rl.take("k", lim) is None and rl.take("k", lim) is not None
    assert rl.take("other", lim) is None  # buckets are per name


def test_key_and_tenant_limits_raise_rate_limited_with_retry(tmp_path: Path) -> None:
    p = tmp_path / "keys.yaml"
    write_keys(p, {"slow": {"key": "ks", "tenants": ["a"], "rate_limit": {"rate_per_s": 1,
                                                                          "burst": 1}},
                   "fast": {"key": "kf", "tenants": ["b"]},
                   "fast2": {"key": "kf2", "tenants": ["b"]}},
               tenants={"b": {"rate_per_s": 0.5, "burst": 2}})
    clock = Clock()
    gk = Gatekeeper(AuthConfig(enabled=True, keys_file=str(p)), environ={}, clock=clock)
    gk.admit("Guard", bearer("ks"))
    with pytest.raises(ResourceExhaustedError) as ei:
        gk.admit("Guard", bearer("ks"))
    assert ei.value.reason == Reason.RATE_LIMITED and ei.value.metadata == {"limit": "key"}
    assert ei.value.retry_after_s == pytest.approx(1.0)
    # The tenant's bucket is shared by both of its keys.
    gk.resolve_tenant(gk.admit("Guard", bearer("kf")), "")
    gk.resolve_tenant(gk.admit("Guard", bearer("kf2")), "")
    with pytest.raises(ResourceExhaustedError) as ei:
        gk.resolve_tenant(gk.admit("Guard", bearer("kf")), "b")
    assert ei.value.metadata == {"limit": "tenant"} and ei.value.retry_after_s == \
        pytest.approx(2.0)


# -- audit ------------------------------------------------------------------------------------


def test_audit_line_has_hashes_and_decision_never_content(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="vlmguard.audit")
    acc = Access(Principal("team-a", ("a",), frozenset({"guard"})), "Guard", tenant="a")
    record_content(acc, "a secret prompt", [b"\x89PNG-image-bytes"])
    record_decision(acc, "rewrite", ["violence_weapons"], 0.87654)
    audit(method="Guard", outcome="OK", reason="", access=acc)
    audit(method="Guard", outcome="UNAUTHENTICATED", reason="INVALID_API_KEY", access=None)
    recs = [r for r in caplog.records if r.name == "vlmguard.audit"]
    assert len(recs) == 2
    first = recs[0].audit  # type: ignore[attr-defined]
    assert first["key_id"] == "team-a" and first["tenant"] == "a"
    assert first["action"] == "rewrite" and first["categories"] == ["violence_weapons"]
    assert first["score"] == 0.8765
    import hashlib

    assert first["text_sha256"] == hashlib.sha256(b"a secret prompt").hexdigest()
    assert first["images_sha256"] == [hashlib.sha256(b"\x89PNG-image-bytes").hexdigest()]
    assert "secret prompt" not in recs[0].getMessage()
    assert recs[1].audit["key_id"] == "-" and recs[1].audit["tenant"] == "-"  # type: ignore[attr-defined]


def test_lookup_compares_every_entry_whichever_matches(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import vlmguard.auth as auth_mod

    p = tmp_path / "keys.yaml"
    write_keys(p, {f"k{i}": {"key": f"key-{i}"} for i in range(5)})
    store = KeyStore(str(p), legacy=["plain"])
    real = auth_mod._digest
    calls: list[int] = []

    def counting(salt: bytes, key: str) -> bytes:
        calls.append(1)
        return real(salt, key)

    monkeypatch.setattr(auth_mod, "_digest", counting)
    for token in ("plain", "key-0", "key-4", "nope"):
        calls.clear()
        store.lookup(token)
        assert len(calls) == 6, token  # no early exit: timing does not tell which matched

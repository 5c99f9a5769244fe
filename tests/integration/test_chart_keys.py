"""The Helm chart writes the keys file (keys bound to tenants and scopes) from a Secret that the
gateway and the Ray ingress read, re-read on change: rendered offline as in test_chart.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_chart import by_kind, manifests, pod_specs, render
from vlmguard.auth import KeyStore, hash_key
from vlmguard.config import load_config

pytestmark = pytest.mark.integration

KEY = "chart-test-key-0123456789"
KEYS = {"team-a": {"hash": hash_key(KEY), "tenants": ["tenant-a", "default"],
                   "scopes": ["guard", "analyze"], "rate_limit": {"rate_per_s": 5, "burst": 10}}}
POLICY: dict[str, Any] = {"config": {"policy": {"tenants": {"default": {}, "tenant-a": {}}}}}


def _secret(docs: list[dict[str, Any]], suffix: str) -> dict[str, Any] | None:
    return next((d for d in by_kind(docs, "Secret") if d["metadata"]["name"].endswith(suffix)),
                None)


def _config(docs: list[dict[str, Any]], tmp_path: Path) -> Any:
    cm = next(d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-config"))
    path = tmp_path / "config.yaml"
    path.write_text(cm["data"]["config.yaml"])
    return load_config(path, environ={})


def _env_names(spec: dict[str, Any]) -> set[str]:
    return {e["name"] for c in spec["containers"] for e in c.get("env", [])}


@pytest.mark.parametrize("mode", ["workers", "ray"])
def test_keys_file_secret_is_mounted_where_the_config_points(mode: str, tmp_path: Path) -> None:
    values: dict[str, Any] = {"auth": {"keys": KEYS,
                                       "tenantRateLimits": {"tenant-a": {"rate_per_s": 50}}},
                              **POLICY}
    if mode == "ray":
        values |= {"serving": {"mode": "ray"}, "queue": {"mode": "inproc"}}
    docs = manifests(render(values))
    secret = _secret(docs, "-keys")
    assert secret is not None and _secret(docs, "-auth") is None  # no legacy keys given
    keys_yaml = secret["stringData"]["keys.yaml"]
    assert KEY not in keys_yaml
    keys_file = tmp_path / "keys.yaml"
    keys_file.write_text(keys_yaml)
    store = KeyStore(str(keys_file))  # the gateway's own parser accepts it
    principal = store.lookup(KEY)
    assert principal is not None and principal.tenants == ("tenant-a", "default")
    assert store.tenant_limit("tenant-a") is not None

    cfg = _config(docs, tmp_path)
    assert cfg.server.auth.enabled and cfg.server.auth.keys_file == "/etc/vlmguard-keys/keys.yaml"
    assert cfg.server.auth.reload_interval_s == 2
    serving = [(name, spec) for name, spec in pod_specs(docs)
               if name.startswith("Deployment/vg-vlmguard-gateway") or name.startswith("Ray")]
    assert serving
    for name, spec in serving:
        vols = {v["name"]: v for v in spec["volumes"]}
        assert vols["api-keys"]["secret"]["secretName"] == secret["metadata"]["name"], name
        mounts = [m for c in spec["containers"] for m in c.get("volumeMounts", [])
                  if m["name"] == "api-keys"]
        # A directory mount (no subPath): Secret updates reach the running pod.
        assert mounts and all(m["mountPath"] == "/etc/vlmguard-keys" and "subPath" not in m
                              and m["readOnly"] for m in mounts), name
        assert "VLMGUARD_API_KEYS" not in _env_names(spec), name
    # Stage workers never see the keys.
    for name, spec in pod_specs(docs):
        if "worker" in name:
            assert "api-keys" not in {v["name"] for v in spec["volumes"]}, name


def test_existing_keys_secret_and_legacy_keys_together(tmp_path: Path) -> None:
    docs = manifests(render({"auth": {"keysExistingSecret": "my-keys",
                                      "keysExistingSecretKey": "file.yaml",
                                      "apiKeys": ["legacy-0123456789"]}}))
    assert _secret(docs, "-keys") is None and _secret(docs, "-auth") is not None
    gw = next(spec for name, spec in pod_specs(docs) if "gateway" in name)
    vol = next(v for v in gw["volumes"] if v["name"] == "api-keys")
    assert vol["secret"] == {"secretName": "my-keys",
                             "items": [{"key": "file.yaml", "path": "keys.yaml"}]}
    assert "VLMGUARD_API_KEYS" in _env_names(gw)


def test_without_keys_file_nothing_is_mounted(tmp_path: Path) -> None:
    docs = manifests(render({"auth": {"apiKeys": ["legacy-0123456789"]}}))
    assert _secret(docs, "-keys") is None
    assert _config(docs, tmp_path).server.auth.keys_file == ""
    for name, spec in pod_specs(docs):
        assert "api-keys" not in {v["name"] for v in spec["volumes"]}, name


@pytest.mark.parametrize(("values", "message"), [
    ({"auth": {"keys": {"k": {"hash": "plain-key-oops", "tenants": ["a"],
                              "scopes": ["guard"]}}}}, "hash"),
    ({"auth": {"keys": {"k": {"hash": hash_key("x"), "tenants": ["a"], "scopes": ["admin"]}}}},
     "scopes"),
    ({"auth": {"keys": KEYS, "keysExistingSecret": "my-keys"}},
     "auth.keys/auth.tenantRateLimits and auth.keysExistingSecret"),
    ({"auth": {"apiKeys": ["legacy-0123456789"]},
      "jobs": {"eval": {"enabled": True, "benchClaimName": "bench", "tenant": "strict"}}},
     'jobs.eval.tenant="strict": the Job sends the first of auth.apiKeys'),
    ({"auth": {"keys": KEYS}, "jobs": {"eval": {"enabled": True, "benchClaimName": "bench"}}},
     "jobs.eval.enabled=true with auth.enabled=true needs a plain key"),
])
def test_bad_keys_values_fail(values: dict[str, Any], message: str) -> None:
    with pytest.raises(Exception, match=message.replace("/", ".")):
        render(values)


def test_reflection_is_off_in_the_chart_by_default(tmp_path: Path) -> None:
    docs = manifests(render({"auth": {"keys": KEYS}, **POLICY}))
    assert _config(docs, tmp_path).server.reflection is False

"""The chart's front door (frontDoor.*): its Deployment runs `vlmguard serve --http` with HTTP
probes the app answers, the upstream's URL and key come from a Secret, a Service, an optional
Ingress and a NetworkPolicy. Rendering, lint and strict validation of
ci/front-door-values.yaml run with the other CI values in test_chart.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_chart import CHART, by_kind, manifests, render

pytestmark = pytest.mark.integration

pytest.importorskip("helm")


def _ci() -> dict[str, Any]:
    import yaml

    loaded: dict[str, Any] = yaml.safe_load((CHART / "ci" / "front-door-values.yaml").read_text())
    return loaded


def _named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in by_kind(docs, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}"
    return found[0]


def test_front_door_is_off_by_default() -> None:
    docs = manifests(render({"auth": {"enabled": False}}))
    assert not [d for d in docs if d["metadata"]["name"].endswith("-front-door")]


def test_front_door_deployment_service_ingress_and_secret() -> None:
    docs = manifests(render(_ci()))
    dep = _named(docs, "Deployment", "vg-vlmguard-front-door")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["args"] == ["serve", "--config", "/etc/vlmguard/config.yaml", "--http",
                         "0.0.0.0:8080"]
    assert {p["name"]: p["containerPort"] for p in c["ports"]}["http"] == 8080
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"),
                        ("readinessProbe", "/readyz")):
        assert c[probe]["httpGet"] == {"path": path, "port": "http"}
    env = {e["name"]: e for e in c["env"]}
    secret = _named(docs, "Secret", "vg-vlmguard-front-door")
    url_ref = env["VLMGUARD_TARGET__OPENAI__BASE_URL"]["valueFrom"]["secretKeyRef"]
    key_ref = env["VLMGUARD_TARGET_API_KEY"]["valueFrom"]["secretKeyRef"]
    assert secret["stringData"][url_ref["key"]] == "http://vllm.models.svc:8000/v1"
    assert secret["stringData"][key_ref["key"]] == "not-a-real-key"
    assert url_ref["name"] == key_ref["name"] == "vg-vlmguard-front-door"
    # Neither the URL nor the key is in the config the pods read.
    config = _named(docs, "ConfigMap", "vg-vlmguard-config")["data"]["config.yaml"]
    assert "vllm.models.svc" not in config and "not-a-real-key" not in config
    svc = _named(docs, "Service", "vg-vlmguard-front-door")
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert {p["name"] for p in svc["spec"]["ports"]} == {"http", "metrics"}
    ing = _named(docs, "Ingress", "vg-vlmguard-front-door")
    path = ing["spec"]["rules"][0]["http"]["paths"][0]
    assert path["path"] == "/v1" and path["backend"]["service"]["port"]["name"] == "http"
    assert ing["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    policy = _named(docs, "NetworkPolicy", "vg-vlmguard-front-door")
    assert policy["spec"]["ingress"][0]["from"] == _ci()["frontDoor"]["from"]
    assert _ci()["frontDoor"]["upstreamEgress"][0] in policy["spec"]["egress"]
    # Redis (queue.mode redis) admits the front-door pods, which enqueue like the gateway.
    redis = _named(docs, "NetworkPolicy", "vg-vlmguard-redis")
    peers = [p["podSelector"]["matchLabels"] for p in redis["spec"]["ingress"][0]["from"]]
    assert dep["spec"]["selector"]["matchLabels"] in peers


def test_existing_secret_is_used_as_is() -> None:
    values = _ci()
    values["frontDoor"]["upstream"] = {"existingSecret": "my-llm", "existingSecretUrlKey": "u",
                                       "existingSecretKey": "k"}
    docs = manifests(render(values))
    assert not [d for d in by_kind(docs, "Secret") if d["metadata"]["name"].endswith("door")]
    c = _named(docs, "Deployment", "vg-vlmguard-front-door")["spec"]["template"]["spec"][
        "containers"][0]
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"] if "valueFrom" in e}
    assert env["VLMGUARD_TARGET__OPENAI__BASE_URL"] == {"name": "my-llm", "key": "u"}
    assert env["VLMGUARD_TARGET_API_KEY"]["name"] == "my-llm"


@pytest.mark.parametrize(("values", "message"), [
    ({"auth": {"enabled": False}, "frontDoor": {"enabled": True}}, "frontDoor.upstream.url"),
    ({"auth": {"enabled": False}, "frontDoor": {"enabled": True, "upstream": {
        "url": "vllm:8000"}}}, "/frontDoor/upstream/url"),
])
def test_bad_front_door_values_fail_naming_the_key(values: dict[str, Any], message: str) -> None:
    with pytest.raises(Exception) as ei:
        render(values)
    assert message in str(ei.value)


def test_ci_values_file_exists() -> None:
    assert Path(CHART / "ci" / "front-door-values.yaml").is_file()

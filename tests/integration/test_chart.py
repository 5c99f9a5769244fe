"""The Helm chart (helm/vlmguard), rendered offline with helm-python-sdk (Helm's own library).

Every ``ci/*-values.yaml`` renders, lints clean and yields manifests that pass
``kubernetes-validate --strict`` for Kubernetes 1.30 (CRDs: required fields checked here); every
pod is locked down; bad values fail naming the key; the ConfigMap holds a valid VLMGuard config;
the chart agrees with the code (stream names, env names) and the Dockerfiles (images, uid).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from vlmguard.config import ENV_VARS, load_config

helm = pytest.importorskip("helm_python", reason="helm-python-sdk not installed (dev extra)")
kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate not installed")

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "vlmguard"
CI_FILES = sorted((CHART / "ci").glob("*-values.yaml"))
KUBE_VERSION = "1.30.0"
RELEASE, NAMESPACE = "vg", "guard"
#: Custom resources: no schema in kubernetes-validate, so their required fields are checked here.
CRD_KINDS = {"ScaledObject", "TriggerAuthentication", "ServiceMonitor", "RayService",
             "PrometheusRule"}
POD_KINDS = {"Deployment", "StatefulSet", "Job", "DaemonSet", "CronJob"}


@cache
def _chart() -> Any:
    return helm.Chart.load(str(CHART))


def _values(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) or {}


def render(values: dict[str, Any]) -> dict[str, str]:
    """Template path -> rendered text (NOTES.txt included)."""
    out: dict[str, str] = _chart().render(values, name=RELEASE, namespace=NAMESPACE,
                                          is_install=True)
    return out


def manifests(rendered: dict[str, str]) -> list[dict[str, Any]]:
    docs = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


@cache
def _rendered_ci(name: str) -> tuple[dict[str, str], list[dict[str, Any]]]:
    out = render(_values(CHART / "ci" / name))
    return out, manifests(out)


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for d in docs:
        if d["kind"] in POD_KINDS:
            if d["kind"] == "CronJob":
                tpl = d["spec"]["jobTemplate"]["spec"]["template"]
            else:
                tpl = d["spec"]["template"]
            yield f"{d['kind']}/{d['metadata']['name']}", tpl["spec"]
        elif d["kind"] == "RayService":
            for node, tpl in _ray_templates(d):
                yield f"RayService/{d['metadata']['name']}/{node}", tpl["spec"]


def _ray_templates(d: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(node, pod template) of a RayService's head and worker groups."""
    rc = d["spec"]["rayClusterConfig"]
    return [("head", rc["headGroupSpec"]["template"])] + [
        (g["groupName"], g["template"]) for g in rc["workerGroupSpecs"]]


ci_ids = [p.name for p in CI_FILES]


def test_ci_files_exist() -> None:
    assert {"minimal-values.yaml", "full-values.yaml", "external-redis-values.yaml"} <= set(
        ci_ids)


@pytest.mark.parametrize("ci", ci_ids)
def test_lint_clean(ci: str) -> None:
    report = helm.lint(str(CHART), _values(CHART / "ci" / ci), strict=True,
                       kube_version=f"v{KUBE_VERSION}")
    bad = [m for m in report["messages"] if m["severity"] >= 2]
    assert not bad and not report["errors"], report


@pytest.mark.parametrize("ci", ci_ids)
def test_manifests_validate_strict(ci: str) -> None:
    _, docs = _rendered_ci(ci)
    assert docs
    kinds = set()
    for d in docs:
        kinds.add(d["kind"])
        where = f"{ci}: {d['kind']}/{d['metadata']['name']}"
        if d["kind"] in CRD_KINDS:
            _check_crd(d, where)
            continue
        try:
            kv.validate(d, KUBE_VERSION, strict=True)
        except kv.utils.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            pytest.fail(f"{where} is not valid for Kubernetes {KUBE_VERSION}: {path}: {e.message}")
    assert {"Deployment", "Service", "ConfigMap", "NetworkPolicy"} <= kinds


def test_kubernetes_validate_cli_strict(tmp_path: Path) -> None:
    """The same check through the `kubernetes-validate --strict` command, on the full values."""
    import subprocess
    import sys

    _, docs = _rendered_ci("full-values.yaml")
    path = tmp_path / "full.yaml"
    path.write_text(yaml.safe_dump_all([d for d in docs if d["kind"] not in CRD_KINDS]))
    exe = Path(sys.executable).parent / "kubernetes-validate"
    proc = subprocess.run([str(exe), "-k", KUBE_VERSION, "--strict", "--quiet", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _check_crd(d: dict[str, Any], where: str) -> None:
    spec = d.get("spec") or {}
    if d["kind"] == "ScaledObject":
        assert d["apiVersion"] == "keda.sh/v1alpha1", where
        assert spec["scaleTargetRef"]["name"], where
        assert spec["triggers"], where
        for t in spec["triggers"]:
            assert t["type"] == "redis-streams", where
            md = t["metadata"]
            assert md["address"] and md["stream"] and md["consumerGroup"], where
            assert all(isinstance(v, str) for v in md.values()), f"{where}: metadata not strings"
            assert t["authenticationRef"]["name"], where
    elif d["kind"] == "TriggerAuthentication":
        assert d["apiVersion"] == "keda.sh/v1alpha1", where
        for ref in spec["secretTargetRef"]:
            assert ref["parameter"] and ref["name"] and ref["key"], where
    elif d["kind"] == "RayService":
        # Required fields of the KubeRay v1 CRD (ray.io/v1 RayService / RayCluster), and every
        # pod template validated as a core/v1 PodSpec.
        assert d["apiVersion"] == "ray.io/v1", where
        serve = yaml.safe_load(spec["serveConfigV2"])
        assert serve["applications"] and all(a["import_path"] for a in serve["applications"])
        rc = spec["rayClusterConfig"]
        assert isinstance(rc["headGroupSpec"]["rayStartParams"], dict), where
        assert all(isinstance(v, str) for v in rc["headGroupSpec"]["rayStartParams"].values())
        for g in rc["workerGroupSpecs"]:
            assert g["groupName"] and isinstance(g["rayStartParams"], dict), where
            assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"], where
        for node, tpl in _ray_templates(d):
            assert tpl["spec"]["containers"], f"{where}/{node}"
            pod = {"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": f"x-{node}", **tpl.get("metadata", {})},
                   "spec": tpl["spec"]}
            try:
                kv.validate(pod, KUBE_VERSION, strict=True)
            except kv.utils.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                pytest.fail(f"{where}/{node}: pod template invalid: {path}: {e.message}")
    elif d["kind"] == "ServiceMonitor":
        assert d["apiVersion"] == "monitoring.coreos.com/v1", where
        assert spec["selector"]["matchLabels"], where
        assert all(e["port"] for e in spec["endpoints"]), where
    elif d["kind"] == "PrometheusRule":
        # Required fields of the Prometheus Operator v1 CRD: groups with a name and rules with
        # an expr and either alert or record; durations in Prometheus' syntax.
        assert d["apiVersion"] == "monitoring.coreos.com/v1", where
        assert spec["groups"], where
        for g in spec["groups"]:
            assert g["name"] and g["rules"], where
            for rule in g["rules"]:
                assert isinstance(rule["expr"], str) and rule["expr"].strip(), where
                assert ("alert" in rule) != ("record" in rule), where
                assert re.fullmatch(r"([0-9]+(ms|s|m|h|d|w|y))+", rule.get("for", "0s")), where
                assert all(isinstance(v, str) for v in rule.get("labels", {}).values()), where
                assert all(isinstance(v, str) for v in rule.get("annotations", {}).values())


@pytest.mark.parametrize("ci", ci_ids)
def test_every_pod_is_locked_down(ci: str) -> None:
    _, docs = _rendered_ci(ci)
    specs = list(pod_specs(docs))
    assert specs
    for name, spec in specs:
        where = f"{ci}: {name}"
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True, where
        assert psc["seccompProfile"]["type"] == "RuntimeDefault", where
        assert spec["enableServiceLinks"] is False, where
        # Only the pipeline runner (retrain CronJob) calls the API, with its own Role.
        runner = name.startswith("CronJob/") and name.endswith("-retrain")
        assert spec["automountServiceAccountToken"] is runner, where
        if runner:
            assert spec["serviceAccountName"].endswith("-pipeline-runner"), where
        for c in spec["containers"] + spec.get("initContainers", []):
            csc = c["securityContext"]
            assert csc["readOnlyRootFilesystem"] is True, where
            assert csc["allowPrivilegeEscalation"] is False, where
            assert csc["capabilities"]["drop"] == ["ALL"], where
            assert c["resources"]["requests"] and c["resources"]["limits"], where
            mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{where}: /tmp must be writable (read-only root)"
            for env in c.get("env", []):
                assert env["name"] not in ("VLMGUARD_PORT", "VLMGUARD_SERVICE_HOST"), where
                if env["name"].startswith("VLMGUARD_"):
                    assert env["name"] in ENV_VARS or "__" in env["name"], where
            if name.startswith(("Job/", "CronJob/", "RayService/")):
                continue  # KubeRay injects the Ray nodes' probes
            if c in spec.get("initContainers", []):
                continue  # init containers run to completion: no probes
            assert "livenessProbe" in c and "readinessProbe" in c, where
    for d in docs:
        if d["kind"] in POD_KINDS - {"CronJob"}:
            labels = d["spec"]["template"]["metadata"]["labels"]
            assert labels["app.kubernetes.io/instance"] == RELEASE, d["metadata"]["name"]
            assert labels["app.kubernetes.io/component"], d["metadata"]["name"]


def _deployment(docs: list[dict[str, Any]], suffix: str) -> dict[str, Any]:
    return next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith(suffix))


def test_gateway_grpc_probes_and_model_cache() -> None:
    _, docs = _rendered_ci("minimal-values.yaml")
    c = _deployment(docs, "-gateway")["spec"]["template"]["spec"]["containers"][0]
    assert c["readinessProbe"]["grpc"] == {"port": 50051, "service": "vlmguard.v1.GuardService"}
    assert c["livenessProbe"]["grpc"]["port"] == 50051
    env = {e["name"]: e for e in c["env"]}
    assert env["VLMGUARD_CACHE_DIR"]["value"] in {m["mountPath"] for m in c["volumeMounts"]}
    assert env["VLMGUARD_API_KEYS"]["valueFrom"]["secretKeyRef"]["name"] == "vlmguard-api-keys"
    assert "VLMGUARD_QUEUE_PASSWORD" in env
    assert c["image"] == "vlmguard/gateway:0.1.0"
    worker = _deployment(docs, "-worker-analyze")["spec"]["template"]["spec"]["containers"][0]
    assert worker["image"] == "vlmguard/worker:0.1.0"
    assert worker["args"][:3] == ["worker", "--stage", "analyze"]


@pytest.mark.parametrize("ci", ci_ids)
def test_configmap_is_a_valid_vlmguard_config(ci: str, tmp_path: Path) -> None:
    _, docs = _rendered_ci(ci)
    cm = next(d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-config"))
    path = tmp_path / "config.yaml"
    path.write_text(cm["data"]["config.yaml"])
    cfg = load_config(path, environ={})
    values = _values(CHART / "ci" / ci)
    mode = values.get("queue", {}).get("mode", "redis")
    assert cfg.server.listen == "0.0.0.0:50051"
    assert cfg.metrics.listen == "0.0.0.0:9464"
    assert cfg.server.auth.enabled == values.get("auth", {}).get("enabled", True)
    if mode == "redis":
        assert cfg.queue.url == "redis://vg-vlmguard-redis:6379/0"
    else:
        assert cfg.queue.url == ""  # external: VLMGUARD_QUEUE_URL from the Secret
    tenants = values.get("config", {}).get("policy", {}).get("tenants", {})
    assert set(tenants) | {"default"} == set(cfg.policy.tenants)


def test_keda_scaler_matches_the_queue_keys() -> None:
    from vlmguard.config import QueueConfig
    from vlmguard.queue.redis_streams import GROUP, RedisStreamsQueue

    _, docs = _rendered_ci("full-values.yaml")
    scaled = {d["metadata"]["name"]: d for d in by_kind(docs, "ScaledObject")}
    assert set(scaled) == {"vg-vlmguard-worker-analyze", "vg-vlmguard-worker-target",
                           "vg-vlmguard-worker-rewrite"}
    q = RedisStreamsQueue(QueueConfig(url="redis://x:6379/0", key_prefix="vlmguard-prod"),
                          stages=["analyze", "target", "rewrite"], max_pending=1)
    for stage in ("analyze", "target", "rewrite"):
        md = scaled[f"vg-vlmguard-worker-{stage}"]["spec"]["triggers"][0]["metadata"]
        assert md["stream"] == q.stream_key(stage)
        assert md["consumerGroup"] == GROUP
        assert md["address"] == "vg-vlmguard-redis:6379"
    assert not by_kind(docs, "HorizontalPodAutoscaler")[1:]  # only the gateway's HPA
    _, ext = _rendered_ci("external-redis-values.yaml")
    md = by_kind(ext, "ScaledObject")[0]["spec"]["triggers"][0]["metadata"]
    assert md["address"] == "redis.example.internal:6380" and md["enableTLS"] == "true"
    assert not by_kind(ext, "StatefulSet")
    # Without KEDA: CPU HPAs for the workers.
    _, minimal = _rendered_ci("minimal-values.yaml")
    assert not by_kind(minimal, "ScaledObject")
    assert [h["metadata"]["name"] for h in by_kind(minimal, "HorizontalPodAutoscaler")] == [
        "vg-vlmguard-worker-analyze"]


def test_network_policies_isolate_workers_and_redis() -> None:
    _, docs = _rendered_ci("minimal-values.yaml")
    pols = {d["metadata"]["name"]: d["spec"] for d in by_kind(docs, "NetworkPolicy")}
    redis = pols["vg-vlmguard-redis"]
    assert redis["egress"] == []
    sources = [p["podSelector"]["matchLabels"] for p in redis["ingress"][0]["from"]]
    assert {"app.kubernetes.io/component": "gateway"}.items() <= sources[0].items()
    assert sources[1]["vlmguard.io/role"] == "worker"
    workers = pols["vg-vlmguard-workers"]
    assert [p["port"] for r in workers["ingress"] for p in r["ports"]] == ["metrics"]
    gw = pols["vg-vlmguard-gateway"]
    assert "from" not in gw["ingress"][0]  # gRPC: open to any client by default
    _, full = _rendered_ci("full-values.yaml")
    gw = next(d["spec"] for d in by_kind(full, "NetworkPolicy")
              if d["metadata"]["name"] == "vg-vlmguard-gateway")
    peers = gw["ingress"][0]["from"]  # restricted, plus this release's evaluation Job
    assert peers[0]["namespaceSelector"] and peers[1]["podSelector"]["matchLabels"][
        "vlmguard.io/role"] == "job"


def test_rewrite_workers_run_the_tier2_stage() -> None:
    """config.rewriter.kind generative with a Redis queue: `vlmguard worker --stage rewrite`
    Deployments (the gateway enqueues tier-2 calls to that stream), their extra egress in a
    policy of their own; off by default."""
    _, minimal = _rendered_ci("minimal-values.yaml")
    assert not [d for d in by_kind(minimal, "Deployment") if "rewrite" in d["metadata"]["name"]]
    _, docs = _rendered_ci("full-values.yaml")
    dep = _named(docs, "Deployment", "-worker-rewrite")
    pod = dep["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    assert args[:3] == ["worker", "--stage", "rewrite"]
    assert pod["terminationGracePeriodSeconds"] == 300
    assert pod["containers"][0]["resources"]["limits"]["cpu"] == "2"
    assert dep["spec"]["template"]["metadata"]["labels"]["vlmguard.io/role"] == "worker"
    assert _named(docs, "PodDisruptionBudget", "-worker-rewrite")
    pols = {d["metadata"]["name"]: d["spec"] for d in by_kind(docs, "NetworkPolicy")}
    extra = pols["vg-vlmguard-worker-rewrite-egress"]
    assert extra["policyTypes"] == ["Egress"]
    assert extra["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "worker-rewrite"
    out, _ = _rendered_ci("full-values.yaml")
    notes = next(v for k, v in out.items() if k.endswith("NOTES.txt"))
    assert "workers: analyze, target, rewrite" in notes
    assert "Rewriter: tier 2 (generative" in notes and "workers.rewrite Deployment" in notes
    assert extra["egress"][0]["ports"] == [{"port": 8000, "protocol": "TCP"}]
    # The ConfigMap turns tier 2 on, and the CLI accepts the worker's arguments.
    from vlmguard.cli import build_parser

    build_parser().parse_args(args)
    cm = _named(docs, "ConfigMap", "-config")
    assert "kind: generative" in cm["data"]["config.yaml"]


def test_redis_statefulset_persists() -> None:
    _, docs = _rendered_ci("full-values.yaml")
    sts = by_kind(docs, "StatefulSet")[0]
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"] == {
        "storage": "2Gi"}
    script = sts["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert "--appendonly yes" in script and "$REDIS_PASSWORD" in script
    assert "ci-redis-password" not in json.dumps(sts)  # the password stays in the Secret


def test_jobs_are_off_by_default_and_run_the_cli() -> None:
    _, minimal = _rendered_ci("minimal-values.yaml")
    assert not by_kind(minimal, "Job")
    _, docs = _rendered_ci("full-values.yaml")
    jobs = {d["metadata"]["name"]: d["spec"]["template"]["spec"] for d in by_kind(docs, "Job")}
    ev = jobs["vg-vlmguard-eval-r1"]["containers"][0]["args"]
    assert ev[0] == "eval" and ev[ev.index("--addr") + 1] == "vg-vlmguard:50051"
    assert ev[ev.index("--sets") + 1] == "mm_vet,mossbench"
    tr = jobs["vg-vlmguard-train-analyzer-r1"]["containers"][0]["args"]
    assert tr[:4] == ["train", "analyzer", "--config", "/app/training/recipes/analyzer.yaml"]
    assert tr[-2:] == ["--epochs", "40"]
    # The CLI accepts exactly these arguments.
    from vlmguard.cli import build_parser

    parser = build_parser()
    parser.parse_args(ev)
    parser.parse_args(tr)
    for _, docs_ in (_rendered_ci(c) for c in ci_ids):
        for d in by_kind(docs_, "Deployment"):
            if d["metadata"]["name"].endswith("-triton"):
                continue  # the Triton launcher, not the vlmguard CLI (test_triton_*)
            parser.parse_args(d["spec"]["template"]["spec"]["containers"][0]["args"])


BAD_VALUES = [
    # (values, text the error must contain): schema first, then the validation helper.
    ({"gateway": {"replicas": -1}}, "/gateway/replicas"),
    ({"workers": {"analyze": {"replicas": -2}}}, "/workers/analyze/replicas"),
    ({"queue": {"mode": "kafka"}}, "/queue/mode"),
    ({"gateway": {"unknown": 1}}, "'unknown' not allowed"),
    ({"config": {"policy": {"tenants": {"default": {"block_threshold": 1.5}}}}},
     "/config/policy/tenants/default/block_threshold"),
    ({"config": {"server": {"listen": "0.0.0.0:1"}}}, "'listen' not allowed"),
    ({"config": {"policy": {"tenants": {"default": {"on_stage_failure": "maybe"}}}}},
     "on_stage_failure"),
    ({"auth": {"enabled": True, "existingSecret": ""}}, "auth.enabled=true needs API keys"),
    ({"queue": {"mode": "external"}}, 'queue.mode=external needs queue.external.url (got "")'),
    ({"queue": {"mode": "external", "external": {"url": "redis://r:6379"}},
      "keda": {"enabled": True}}, "queue.external.address"),
    ({"config": {"target": {"backend": "smollm2"}}},
     'config.target.backend="smollm2" needs workers.target.enabled=true'),
    ({"workers": {"analyze": {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}}},
     "workers.analyze.autoscaling.minReplicas (got 5) must be <= maxReplicas (got 2)"),
    ({"config": {"rewriter": {"kind": "generative"}}},
     "config.rewriter.kind=generative needs workers.rewrite.enabled=true"),
    ({"workers": {"rewrite": {"enabled": True}}},
     'workers.rewrite.enabled=true but config.rewriter.kind="template"'),
    ({"workers": {"rewrite": {"enabled": True, "autoscaling": {"minReplicas": 3,
                                                               "maxReplicas": 2}}},
      "config": {"rewriter": {"kind": "generative"}}},
     "workers.rewrite.autoscaling.minReplicas (got 3) must be <= maxReplicas (got 2)"),
    ({"jobs": {"eval": {"enabled": True}}}, "jobs.eval.benchClaimName"),
    ({"jobs": {"trainAnalyzer": {"enabled": True, "benchClaimName": "b"}}},
     "jobs.trainAnalyzer.outputClaimName"),
]


@pytest.mark.parametrize(("values", "message"), BAD_VALUES)
def test_bad_values_fail_naming_the_key(values: dict[str, Any], message: str) -> None:
    base: dict[str, Any] = {"auth": {"apiKeys": ["k-0123456789"]}}
    if "auth" in values:
        base = {}
    with pytest.raises(helm.HelmError) as err:
        render({**base, **values})
    assert message in str(err.value)


def test_notes_warn_about_insecure_settings() -> None:
    out, _ = _rendered_ci("inproc-values.yaml")
    notes = next(v for k, v in out.items() if k.endswith("NOTES.txt"))
    assert "fail_open" in notes and "auth.enabled=false" in notes
    assert "exposed outside the cluster" in notes
    assert "grpcurl" in notes and "vg-vlmguard.guard.svc:50051" in notes
    assert "Not deployable" not in notes
    assert "Rewriter: template (tier 1 only)" in notes  # how to turn tier 2 on
    out, _ = _rendered_ci("minimal-values.yaml")
    notes = next(v for k, v in out.items() if k.endswith("NOTES.txt"))
    assert "WARNING" not in notes
    assert 'authorization: Bearer $KEY' in notes


def test_every_value_is_documented() -> None:
    """helm-docs style: a `# --` comment above every key; keys inside a documented object
    value (resources, security contexts) share its comment; pure groups need none."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, bool]] = []  # (indent, documented) of the enclosing keys
    undocumented = []
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z_][\w.-]*):(.*)$", line)
        if not m:
            continue
        indent = len(m.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        j, documented = i - 1, False
        while j >= 0 and lines[j].strip().startswith("#"):
            documented = documented or lines[j].strip().startswith("# --")
            j -= 1
        nxt = next((x for x in lines[i + 1:] if x.strip()), "")
        is_group = not m.group(3).strip() and len(nxt) - len(nxt.lstrip()) > indent
        if not documented and not is_group and not any(d for _, d in stack):
            undocumented.append(f"line {i + 1}: {line.strip()}")
        stack.append((indent, documented))
    assert not undocumented, undocumented


def test_schema_covers_every_value_and_is_fresh() -> None:
    import importlib.util

    schema_text = (CHART / "values.schema.json").read_text()
    spec = importlib.util.spec_from_file_location("gen_chart_schema",
                                                  ROOT / "scripts" / "gen_chart_schema.py")
    assert spec and spec.loader
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert gen.render(json.loads(schema_text)) == schema_text, (
        "values.schema.json is stale: run .venv/bin/python scripts/gen_chart_schema.py")
    schema = json.loads(schema_text)

    def walk(values: dict[str, Any], node: dict[str, Any], path: str) -> None:
        if "$ref" in node:
            node = schema["$defs"][node["$ref"].rsplit("/", 1)[1]]
        props = node.get("properties")
        if props is None:
            return
        for k, v in values.items():
            assert k in props, f"{path}{k} is not in values.schema.json"
            if isinstance(v, dict):
                walk(v, props[k], f"{path}{k}.")

    walk(_values(CHART / "values.yaml"), schema, "")


def test_images_match_the_dockerfiles() -> None:
    import tomllib

    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert chart["appVersion"] == version
    values = _values(CHART / "values.yaml")
    uid = values["podSecurityContext"]["runAsUser"]
    for image, dockerfile in (("gateway", "gateway.Dockerfile"), ("worker", "worker.Dockerfile")):
        text = (ROOT / "docker" / dockerfile).read_text()
        assert f"image: {values['image'][image]['repository']}:" in text.replace(
            "# image: ", "image: "), dockerfile
        assert re.search(rf"^USER {uid}:{uid}$", text, re.M), dockerfile
        # The base is a build argument whose default is the public Python image.
        assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim$", text, re.M), dockerfile
        assert re.search(r"^FROM \$\{BASE_IMAGE\} AS", text, re.M), dockerfile
    gateway = (ROOT / "docker" / "gateway.Dockerfile").read_text()
    installs = [x for x in re.split(r"\n(?=[A-Z]+ )", gateway) if "pip install" in x]
    assert installs and not any("torch" in x.split("&&")[0] or "[models]" in x
                                for x in installs)


# -- the offline pipeline (synthesis / training Jobs, retrain CronJob, runner RBAC) ------------

PIPELINE_KINDS = ("Job", "CronJob", "Role", "RoleBinding")


def _named(docs: list[dict[str, Any]], kind: str, suffix: str) -> dict[str, Any]:
    return next(d for d in by_kind(docs, kind) if d["metadata"]["name"].endswith(suffix))


def _container(doc: dict[str, Any]) -> dict[str, Any]:
    spec = doc["spec"]
    if doc["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    c: dict[str, Any] = spec["template"]["spec"]["containers"][0]
    return c


def _runner_recipe(docs: list[dict[str, Any]], tmp_path: Path) -> Any:
    """The pipeline recipe the chart gives the retrain runner, with its step recipes written
    where this machine can read them."""
    from vlmguard_training.pipeline.recipe import PipelineRecipe

    data = _named(docs, "ConfigMap", "-pipeline")["data"]
    raw = yaml.safe_load(data["pipeline.yaml"])
    for step in ("synth", "train"):
        path = tmp_path / f"{step}.yaml"
        path.write_text(data[f"{step}.yaml"])
        assert raw[step]["recipe"] == f"/etc/vlmguard/pipeline/{step}.yaml"
        raw[step]["recipe"] = str(path)
    return PipelineRecipe.model_validate(raw)


def test_pipeline_is_off_by_default() -> None:
    for ci in ("minimal-values.yaml", "full-values.yaml"):
        _, docs = _rendered_ci(ci)
        names = [d["metadata"]["name"] for d in docs]
        assert not [n for n in names if "pipeline" in n or "synth" in n or "retrain" in n], ci
        assert not by_kind(docs, "CronJob") and not by_kind(docs, "Role")


def test_pipeline_jobs_agree_with_the_runner(tmp_path: Path) -> None:
    """The chart's Jobs and `vlmguard pipeline run --executor kubernetes` run the same commands
    with the same environment and mount paths (both from one recipe: the chart's own)."""
    from vlmguard_training.pipeline.graph import Layout, build_steps, step_files
    from vlmguard_training.pipeline.jobs import job_manifest, master_addr

    _, docs = _rendered_ci("jobs-values.yaml")
    recipe = _runner_recipe(docs, tmp_path)
    assert recipe.name == "ci-run" and recipe.kubernetes.namespace == NAMESPACE
    assert recipe.kubernetes.workspace_claim == "pipeline-work"
    assert recipe.kubernetes.image == "vlmguard/training:0.1.0"
    layout = Layout.kubernetes(recipe)
    steps = {s.name: s for s in build_steps(recipe, layout, master_addr=master_addr(recipe.name))}
    # The runner's materialised step recipes equal the chart's ConfigMap files.
    files = step_files(recipe, layout)
    data = _named(docs, "ConfigMap", "-pipeline")["data"]
    assert yaml.safe_load(files["synth.yaml"]) | {"name": ""} == yaml.safe_load(
        data["synth.yaml"]) | {"name": ""}
    assert yaml.safe_load(files["train.yaml"]) == yaml.safe_load(data["train.yaml"])

    chart_synth = _named(docs, "Job", "-synth-r1")
    ours = job_manifest(steps["synth"], recipe, namespace=NAMESPACE)
    for a, b in ((chart_synth, ours),):
        assert a["spec"]["completionMode"] == b["spec"]["completionMode"] == "Indexed"
        assert a["spec"]["completions"] == b["spec"]["completions"] == 8
        assert a["spec"]["parallelism"] == b["spec"]["parallelism"] == 4
        ca, cb = _container(a), _container(b)
        assert ca["command"] == cb["command"] == ["vlmguard"]
        assert ca["args"] == cb["args"]
        assert ca["args"][:5] == ["synth", "--recipe", "/etc/vlmguard/pipeline/synth.yaml",
                                  "--out", "/data/work/ci-run/shards"]
        assert ca["env"] == cb["env"]
        assert ca["workingDir"] == cb["workingDir"] and ca["image"] == cb["image"]
        assert ({m["mountPath"]: m.get("subPath") for m in ca["volumeMounts"]}
                == {m["mountPath"]: m.get("subPath") for m in cb["volumeMounts"]})
        assert ca["resources"] == cb["resources"]
        assert a["spec"]["template"]["metadata"]["labels"]["vlmguard.io/role"] == "pipeline"
        assert b["spec"]["template"]["metadata"]["labels"]["vlmguard.io/role"] == "pipeline"

    chart_train = _named(docs, "Job", "-train-r1")
    ours = job_manifest(steps["train"], recipe, namespace=NAMESPACE, attempt=2)  # --resume
    ca, cb = _container(chart_train), _container(ours)
    assert ca["command"] == cb["command"] == ["torchrun"]
    assert ca["args"] == cb["args"]
    assert ca["args"][:4] == ["-m", "vlmguard.cli", "train", "rewriter"]
    assert [e["name"] for e in ca["env"]] == [e["name"] for e in cb["env"]]
    env = {e["name"]: e for e in ca["env"]}
    assert env["NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.annotations['batch.kubernetes.io/job-completion-index']")
    assert env["MASTER_ADDR"]["value"] == "$(JOB_NAME)-0.vg-vlmguard-train"
    assert env["PET_NNODES"]["value"] == "2" and env["PET_NPROC_PER_NODE"]["value"] == "4"
    assert env["NCCL_DEBUG"]["value"] == "INFO"
    assert {k: v for k, v in ((e["name"], e.get("value")) for e in cb["env"])
            if k != "MASTER_ADDR"} == {k: v.get("value") for k, v in env.items()
                                       if k != "MASTER_ADDR"}
    assert ca["resources"] == cb["resources"]
    assert ca["resources"]["limits"]["nvidia.com/gpu"] == "4"
    pod = chart_train["spec"]["template"]["spec"]
    assert chart_train["spec"]["completionMode"] == "Indexed"
    assert chart_train["spec"]["completions"] == chart_train["spec"]["parallelism"] == 2
    assert chart_train["spec"]["backoffLimit"] == 0
    svc = _named(docs, "Service", "-train")
    assert pod["subdomain"] == svc["metadata"]["name"] and svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["selector"].items() <= chart_train["spec"]["template"]["metadata"][
        "labels"].items()
    assert pod["tolerations"] == ours["spec"]["template"]["spec"]["tolerations"]
    assert {m["mountPath"] for m in ca["volumeMounts"]} == {
        m["mountPath"] for m in cb["volumeMounts"]}


def test_pipeline_commands_parse_with_the_cli(tmp_path: Path) -> None:
    from vlmguard.cli import build_parser

    parser = build_parser()
    _, docs = _rendered_ci("jobs-values.yaml")
    runner = _container(_named(docs, "CronJob", "-retrain"))
    args = parser.parse_args(runner["args"])
    assert (args.executor, args.namespace, args.name) == ("kubernetes", NAMESPACE, "$(JOB_NAME)")
    assert {"name": "JOB_NAME", "valueFrom": {"fieldRef": {
        "fieldPath": "metadata.labels['batch.kubernetes.io/job-name']"}}} in runner["env"]
    parser.parse_args(_container(_named(docs, "Job", "-synth-r1"))["args"])
    train = _container(_named(docs, "Job", "-train-r1"))["args"]
    import argparse

    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if "train" in sub.choices:  # `vlmguard train rewriter` (issue 6) may not be merged yet
        parser.parse_args(train[train.index("vlmguard.cli") + 1:])


def test_runner_role_grants_what_the_runner_calls() -> None:
    from vlmguard_training.pipeline.jobs import RUNNER_PERMISSIONS

    _, docs = _rendered_ci("jobs-values.yaml")
    role = _named(docs, "Role", "-pipeline-runner")
    granted = {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"]
               for r in rule["resources"] for v in rule["verbs"]}
    missing = set(RUNNER_PERMISSIONS) - granted
    assert not missing, missing
    assert ("", "pods/log", "get") in granted  # for `kubectl logs` by the runner's user
    assert not [x for x in granted if x[2] in ("*", "patch") or x[1] == "secrets"]
    binding = _named(docs, "RoleBinding", "-pipeline-runner")
    sa = _named(docs, "ServiceAccount", "-pipeline-runner")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"],
                                    "namespace": NAMESPACE}]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]


def test_pipeline_network_policies() -> None:
    _, docs = _rendered_ci("jobs-values.yaml")
    pol = _named(docs, "NetworkPolicy", "-pipeline")["spec"]
    assert pol["podSelector"] == {"matchLabels": {"vlmguard.io/role": "pipeline"}}
    assert pol["ingress"] == [{"from": [{"podSelector": {"matchLabels": {
        "vlmguard.io/role": "pipeline"}}}]}]
    runner = _named(docs, "NetworkPolicy", "-pipeline-runner")["spec"]
    assert runner["ingress"] == []
    assert {p["port"] for p in runner["egress"][0]["ports"]} == {53, 443, 6443}
    cron = _named(docs, "CronJob", "-retrain")
    labels = cron["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert runner["podSelector"]["matchLabels"].items() <= labels.items()


PIPELINE_BAD_VALUES = [
    ({"pipeline": {"synth": {"enabled": True}}}, "pipeline.workspaceClaimName"),
    ({"pipeline": {"workspaceClaimName": "w", "synth": {"enabled": True}}},
     "pipeline.benchClaimName"),
    ({"pipeline": {"workspaceClaimName": "w", "benchClaimName": "b",
                   "retrain": {"enabled": True}}}, "pipeline.rbac.create=true"),
    ({"pipeline": {"workspaceClaimName": "w", "benchClaimName": "b",
                   "synth": {"enabled": True, "shards": 2, "parallelism": 3}}},
     "pipeline.synth.parallelism (got 3) must be <= pipeline.synth.shards (got 2)"),
    ({"pipeline": {"runName": "Bad_Name"}}, "/pipeline/runName"),
    ({"pipeline": {"train": {"nodes": 0}}}, "/pipeline/train/nodes"),
    ({"fullnameOverride": "a-very-long-release-name-for-the-guard",
      "pipeline": {"workspaceClaimName": "w", "benchClaimName": "b",
                   "retrain": {"enabled": True}, "rbac": {"create": True}}},
     "exceed 40 characters"),
]


@pytest.mark.parametrize(("values", "message"), PIPELINE_BAD_VALUES)
def test_bad_pipeline_values_fail_naming_the_key(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmError) as err:
        render({"auth": {"apiKeys": ["k-0123456789"]}, **values})
    assert message in str(err.value)


def test_single_node_training_runs_the_cli_directly() -> None:
    values = {"auth": {"apiKeys": ["k-0123456789"]},
              "pipeline": {"workspaceClaimName": "w", "train": {"enabled": True}}}
    docs = manifests(render(values))
    job = _named(docs, "Job", "-train-r1")
    c = _container(job)
    assert c["command"] == ["vlmguard"] and c["args"][:2] == ["train", "rewriter"]
    assert "completionMode" not in job["spec"]
    assert not [d for d in by_kind(docs, "Service") if d["metadata"]["name"].endswith("-train")]
    assert "nvidia.com/gpu" not in c["resources"]["limits"]
    for d in docs:
        if d["kind"] not in CRD_KINDS:
            kv.validate(d, KUBE_VERSION, strict=True)


def test_training_image_matches_its_dockerfile() -> None:
    values = _values(CHART / "values.yaml")
    text = (ROOT / "docker" / "training.Dockerfile").read_text()
    repo = values["pipeline"]["image"]["repository"]
    assert f"# Chart: pipeline.image (image: {repo}:<appVersion>)" in text
    uid = values["podSecurityContext"]["runAsUser"]
    assert re.search(rf"^USER {uid}:{uid}$", text, re.M)
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim$", text, re.M)
    assert re.search(r"^FROM \$\{BASE_IMAGE\} AS build$", text, re.M)
    assert re.search(r"^FROM \$\{BASE_IMAGE\} AS runtime$", text, re.M)
    assert "torch==2.13.0" in text and "-c requirements.lock" in text and "./training" in text
    # Jobs name recipes relative to the working directory (training/recipes/...).
    assert "COPY training/recipes /app/training/recipes" in text and "WORKDIR /app" in text
    from vlmguard_training.pipeline.recipe import KubernetesConfig

    assert KubernetesConfig().image.rsplit(":", 1)[0] == repo


def test_notes_tell_how_to_follow_the_pipeline() -> None:
    out, _ = _rendered_ci("jobs-values.yaml")
    notes = next(v for k, v in out.items() if k.endswith("NOTES.txt"))
    assert "kubectl -n guard logs -f job/vg-vlmguard-synth-r1" in notes
    assert "Rewriter training Job (2 node(s))" in notes
    assert "create job --from=cronjob/vg-vlmguard-retrain vg-vlmguard-retrain-manual" in notes


# -- Triton (the target VLM on GPU nodes) and KubeRay RayService (serving.mode=ray) ------------


def _config(docs: list[dict[str, Any]], tmp_path: Path) -> Any:
    cm = next(d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-config"))
    path = tmp_path / "config.yaml"
    path.write_text(cm["data"]["config.yaml"])
    return load_config(path, environ={})


def test_triton_and_ray_are_off_by_default() -> None:
    assert {"triton-values.yaml", "ray-values.yaml"} <= set(ci_ids)
    default = manifests(render({"auth": {"apiKeys": ["k-0123456789"]}}))
    for ci_docs in (default, _rendered_ci("minimal-values.yaml")[1],
                    _rendered_ci("full-values.yaml")[1]):
        names = [d["metadata"]["name"] for d in ci_docs]
        assert not [n for n in names if "triton" in n or n.endswith("-ray")]
        assert not by_kind(ci_docs, "RayService")
        assert _deployment(ci_docs, "-gateway")


def test_triton_deployment_on_gpu_nodes() -> None:
    _, docs = _rendered_ci("triton-values.yaml")
    dep = _deployment(docs, "-triton")
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["image"] == "vlmguard/triton:0.1.0"
    assert "command" not in c  # the image's entrypoint: python -m vlmguard.serving.triton.launch
    dockerfile = (ROOT / "docker" / "triton.Dockerfile").read_text()
    assert 'ENTRYPOINT ["python", "-m", "vlmguard.serving.triton.launch"]' in dockerfile
    assert "USER 10001:10001" in dockerfile
    args = c["args"]
    assert args[args.index("--model-repository") + 1] == "/models"
    assert (args[args.index("--grpc-port") + 1], args[args.index("--http-port") + 1],
            args[args.index("--metrics-port") + 1]) == ("8001", "8000", "8002")
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {
        "http": 8000, "grpc": 8001, "metrics": 8002}
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert c["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert c["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert pod["nodeSelector"]["cloud.google.com/gke-accelerator"] == "nvidia-l4"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"]
    assert pod["enableServiceLinks"] is False and pod["automountServiceAccountToken"] is False
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    vols = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert vols[mounts["/dev/shm"]["name"]]["emptyDir"]["medium"] == "Memory"
    assert "emptyDir" in vols[mounts["/tmp"]["name"]]
    # objectStore: an init container syncs the repository into an emptyDir.
    assert "emptyDir" in vols[mounts["/models"]["name"]] and mounts["/models"]["readOnly"]
    init = pod["initContainers"][0]
    assert init["command"][:3] == ["aws", "s3", "sync"] and "/models" in init["command"]
    assert {"name": "MODEL_REPOSITORY_URI", "value": "s3://models/vlmguard/triton-repo"} in init[
        "env"]
    assert {m["mountPath"] for m in init["volumeMounts"]} >= {"/models", "/tmp"}
    assert vols[mounts["/weights"]["name"]]["persistentVolumeClaim"]["claimName"] == (
        "vlm-weights")
    svc = _named(docs, "Service", "-triton")
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == {
        "grpc": 8001, "http": 8000, "metrics": 8002}
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"][
        "labels"].items()
    assert _named(docs, "PodDisruptionBudget", "-triton")["spec"]["maxUnavailable"] == 1


def test_triton_model_repository_sources() -> None:
    _, ray_docs = _rendered_ci("ray-values.yaml")
    pod = _deployment(ray_docs, "-triton")["spec"]["template"]["spec"]
    models = next(m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == "/models")
    assert models["subPath"] == "repo" and models["readOnly"] is True
    vol = next(v for v in pod["volumes"] if v["name"] == models["name"])
    assert vol["persistentVolumeClaim"] == {"claimName": "triton-repo", "readOnly": True}
    assert "initContainers" not in pod
    docs = manifests(render({"auth": {"apiKeys": ["k-0123456789"]},
                             "workers": {"target": {"enabled": True}},
                             "triton": {"enabled": True, "modelRepository": {"source": "image"}}}))
    pod = _deployment(docs, "-triton")["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    assert "/models" not in {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert {v["name"] for v in pod["volumes"]} == {"tmp", "shm"}
    for d in docs:
        if d["kind"] not in CRD_KINDS:
            kv.validate(d, KUBE_VERSION, strict=True)


def test_triton_points_the_target_at_it(tmp_path: Path) -> None:
    _, docs = _rendered_ci("triton-values.yaml")
    cfg = _config(docs, tmp_path)
    assert cfg.target.backend == "triton"
    assert cfg.target.triton.url == "vg-vlmguard-triton:8001"
    assert cfg.target.triton.model_name == "target_vlm"
    assert cfg.target.max_new_tokens == 96  # the user's other target keys are kept
    # Settings the user gave win over the chart's defaults.
    docs = manifests(render({
        "auth": {"apiKeys": ["k-0123456789"]}, "workers": {"target": {"enabled": True}},
        "triton": {"enabled": True, "modelRepository": {"source": "image"}},
        "config": {"target": {"backend": "triton", "triton": {
            "url": "triton.shared.svc:8001", "model_name": "my_vlm", "timeout_s": 30}}}}))
    cfg = _config(docs, tmp_path)
    assert (cfg.target.triton.url, cfg.target.triton.model_name, cfg.target.triton.timeout_s) == (
        "triton.shared.svc:8001", "my_vlm", 30)
    # Without Triton the target stays as configured.
    _, minimal = _rendered_ci("minimal-values.yaml")
    assert _config(minimal, tmp_path).target.backend == "none"


def test_triton_network_policy() -> None:
    _, docs = _rendered_ci("triton-values.yaml")
    pols = {d["metadata"]["name"]: d["spec"] for d in by_kind(docs, "NetworkPolicy")}
    tri = pols["vg-vlmguard-triton"]
    assert tri["egress"] == []
    assert tri["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "triton"
    peers = [p["podSelector"]["matchLabels"] for p in tri["ingress"][0]["from"]]
    assert [p.get("app.kubernetes.io/component", p.get("vlmguard.io/role")) for p in peers] == [
        "gateway", "worker", "ray"]
    assert {p["port"] for p in tri["ingress"][0]["ports"]} == {"grpc", "http"}
    for name in ("vg-vlmguard-workers", "vg-vlmguard-gateway"):
        rule = next(r for r in pols[name]["egress"] if "to" in r and any(
            t["podSelector"]["matchLabels"].get("app.kubernetes.io/component") == "triton"
            for t in r["to"]))
        assert rule["ports"] == [{"port": 8001, "protocol": "TCP"}]


def test_rayservice_replaces_gateway_and_workers(tmp_path: Path) -> None:
    _, docs = _rendered_ci("ray-values.yaml")
    rs = by_kind(docs, "RayService")
    assert len(rs) == 1
    rs_doc = rs[0]
    assert rs_doc["apiVersion"] == "ray.io/v1" and rs_doc["metadata"]["name"] == "vg-vlmguard"
    serve = yaml.safe_load(rs_doc["spec"]["serveConfigV2"])
    assert serve["grpc_options"] == {
        "port": 9000,
        "grpc_servicer_functions": ["vlmguard.serving.ray_grpc:add_vlmguard_services"]}
    (app,) = serve["applications"]
    assert app["import_path"] == "vlmguard.serving.ray_app:app"
    assert app["args"] == {"config_path": "/etc/vlmguard/config.yaml"}
    assert app["route_prefix"] == "/vlmguard" and app["name"] == "vlmguard"
    # Ray Serve's own schema accepts the config (grpc_options at the Serve level).
    try:
        from ray.serve.schema import ServeDeploySchema
    except ImportError:  # the [ray] extra is optional
        pass
    else:
        parsed = ServeDeploySchema.model_validate(serve)
        assert parsed.grpc_options.port == 9000
        assert parsed.applications[0].route_prefix == "/vlmguard"
    # The names exist in the code.
    from vlmguard.serving import ray_grpc

    assert callable(ray_grpc.add_vlmguard_services)
    rc = rs_doc["spec"]["rayClusterConfig"]
    assert rc["rayVersion"].startswith("2.60")
    assert rc["workerGroupSpecs"][0]["maxReplicas"] == 6
    for node, tpl in _ray_templates(rs_doc):
        c = tpl["spec"]["containers"][0]
        assert c["image"] == "vlmguard/ray:0.1.0", node
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        vols = {v["name"]: v for v in tpl["spec"]["volumes"]}
        assert vols[mounts["/etc/vlmguard"]]["configMap"]["name"] == "vg-vlmguard-config", node
        assert vols[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory", node
        env = {e["name"]: e for e in c["env"]}
        assert env["VLMGUARD_API_KEYS"]["valueFrom"]["secretKeyRef"]["name"] == (
            "vg-vlmguard-auth"), node
        assert {p["name"]: p["containerPort"] for p in c["ports"]}["grpc"] == 9000, node
        assert c["resources"]["requests"] and c["resources"]["limits"], node
        assert tpl["metadata"]["labels"]["app.kubernetes.io/component"] == "ray", node
    # No gateway/worker Deployments, no Redis, no KEDA; the gateway Service routes to the proxy.
    assert [d["metadata"]["name"] for d in by_kind(docs, "Deployment")] == ["vg-vlmguard-triton"]
    assert not by_kind(docs, "StatefulSet") and not by_kind(docs, "ScaledObject")
    assert not by_kind(docs, "HorizontalPodAutoscaler")
    svc = _named(docs, "Service", "vg-vlmguard")
    assert svc["spec"]["selector"]["app.kubernetes.io/component"] == "ray"
    assert svc["spec"]["selector"]["ray.io/serve"] == "true"
    assert svc["spec"]["ports"] == [{"name": "grpc", "port": 50051, "targetPort": "grpc",
                                     "protocol": "TCP", "appProtocol": "kubernetes.io/h2c"}]
    cfg = _config(docs, tmp_path)
    assert cfg.ray.grpc_port == 9000 and cfg.metrics.enabled is False
    assert cfg.target.backend == "triton"
    pol = _named(docs, "NetworkPolicy", "-ray")["spec"]
    assert pol["ingress"][0]["from"][0]["podSelector"]["matchLabels"][
        "app.kubernetes.io/component"] == "ray"
    assert pol["ingress"][1]["from"][0]["namespaceSelector"]  # networkPolicy.gatewayFrom
    assert not [d for d in by_kind(docs, "NetworkPolicy") if d["metadata"]["name"] in (
        "vg-vlmguard-gateway", "vg-vlmguard-workers", "vg-vlmguard-redis")]


def test_notes_name_the_triton_and_ray_endpoints() -> None:
    out, _ = _rendered_ci("ray-values.yaml")
    notes = next(v for k, v in out.items() if k.endswith("NOTES.txt"))
    assert "KubeRay RayService vg-vlmguard" in notes and "route_prefix /vlmguard" in notes
    assert "gRPC proxy (port 9000)" in notes and "vg-vlmguard-serve-svc" in notes
    assert "gRPC vg-vlmguard-triton.guard.svc:8001" in notes
    out, _ = _rendered_ci("triton-values.yaml")
    notes = next(v for k, v in out.items() if k.endswith("NOTES.txt"))
    assert "model repository from objectStore" in notes and "backend triton" in notes
    assert "RayService" not in notes


TRITON_RAY_BAD_VALUES = [
    ({"triton": {"enabled": True}, "workers": {"target": {"enabled": True}}},
     'triton.enabled=true needs triton.modelRepository.source: pvc, objectStore or image'),
    ({"triton": {"enabled": True, "modelRepository": {"source": "pvc"}},
      "workers": {"target": {"enabled": True}}}, "triton.modelRepository.pvc.claimName"),
    ({"triton": {"enabled": True, "modelRepository": {"source": "objectStore"}},
      "workers": {"target": {"enabled": True}}}, "triton.modelRepository.objectStore.uri"),
    ({"triton": {"enabled": True, "modelRepository": {"source": "image"}}},
     'config.target.backend="triton" needs workers.target.enabled=true'),
    ({"triton": {"enabled": True, "modelRepository": {"source": "image"}},
      "workers": {"target": {"enabled": True}}, "config": {"target": {"backend": "smollm2"}}},
     'triton.enabled=true but config.target.backend="smollm2"'),
    ({"triton": {"enabled": True, "modelRepository": {"source": "s3"}}},
     "/triton/modelRepository/source"),
    ({"serving": {"mode": "ray"}}, "serving.mode=ray runs every stage as a Ray Serve deployment"),
    ({"serving": {"mode": "ray"}, "queue": {"mode": "external", "external": {"url": "redis://r"}}},
     "set queue.mode=inproc (got external)"),
    ({"serving": {"mode": "ray"}, "queue": {"mode": "inproc"}, "keda": {"enabled": True}},
     "serving.mode=ray with keda.enabled=true"),
    ({"serving": {"mode": "ray"}, "queue": {"mode": "inproc"},
      "ray": {"worker": {"minReplicas": 5, "maxReplicas": 2}}},
     "ray.worker.minReplicas (got 5) must be <= ray.worker.maxReplicas (got 2)"),
    ({"serving": {"mode": "kuberay"}}, "/serving/mode"),
]


@pytest.mark.parametrize(("values", "message"), TRITON_RAY_BAD_VALUES)
def test_bad_triton_ray_values_fail_naming_the_key(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmError) as err:
        render({"auth": {"apiKeys": ["k-0123456789"]}, **values})
    assert message in str(err.value)


def test_ray_mode_eval_job_reaches_the_ray_proxy() -> None:
    values = _values(CHART / "ci" / "ray-values.yaml") | {
        "jobs": {"eval": {"enabled": True, "benchClaimName": "b"}},
        "serviceMonitor": {"enabled": True}}
    docs = manifests(render(values))
    jobs = _named(docs, "NetworkPolicy", "-jobs")["spec"]
    rule = jobs["egress"][1]
    assert rule["to"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "ray"
    assert rule["ports"] == [{"port": 9000, "protocol": "TCP"}]
    ray = _named(docs, "NetworkPolicy", "-ray")["spec"]
    assert ray["ingress"][1]["from"][-1]["podSelector"]["matchLabels"][
        "vlmguard.io/role"] == "job"
    # No metrics port on the gateway Service in ray mode: the ServiceMonitor does not select it.
    assert "vlmguard.io/metrics" not in _named(docs, "Service", "vg-vlmguard")["metadata"][
        "labels"]

"""Kubernetes manifests of the pipeline: :func:`job_manifest` is the one function that turns a
step into a Job (command, env, resources, volumes); the chart's pipeline templates
(helm/vlmguard/templates/pipeline.yaml) write the same commands, env names and mount paths,
which tests/integration/test_chart.py checks. Plain dicts: no Kubernetes import here.
"""

from __future__ import annotations

from typing import Any

from vlmguard_training.pipeline.graph import (
    K8S_BENCH,
    K8S_PUBLISH,
    K8S_RECIPES,
    K8S_WORK_ROOT,
    Step,
)
from vlmguard_training.pipeline.recipe import PipelineRecipe

UID = 10001  # the images' user (docker/*.Dockerfile)
RUN_LABEL = "vlmguard.io/pipeline-run"
STEP_LABEL = "vlmguard.io/pipeline-step"
#: Downward-API sources of the per-pod variables of Indexed Jobs.
COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
#: Environment of every pipeline container (names shared with the chart's templates).
BASE_ENV: dict[str, str] = {
    "HOME": "/tmp",
    "HF_HUB_OFFLINE": "1",
    "VLMGUARD_CACHE_DIR": "/var/cache/vlmguard",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONUNBUFFERED": "1",
}
#: (apiGroup, resource, verb) the Kubernetes executor uses: the chart's runner Role grants them
#: (tests/integration/test_chart.py checks), and a 403 on one of them names it.
RUNNER_PERMISSIONS: tuple[tuple[str, str, str], ...] = (
    ("batch", "jobs", "create"),
    ("batch", "jobs", "list"),
    ("batch", "jobs/status", "get"),
    ("", "pods", "list"),
    ("", "events", "list"),
    ("", "configmaps", "create"),
    ("", "configmaps", "update"),
    ("", "configmaps", "delete"),
    ("", "services", "create"),
    ("", "services", "delete"),
)
#: Steps that read the benchmark sets.
BENCH_STEPS = ("synth", "eval")


def job_name(run: str, step: str, attempt: int = 1) -> str:
    """The Job of a step's attempt: ``<run>-<step>``, then ``<run>-<step>-r<attempt>``."""
    return f"{run}-{step}" if attempt <= 1 else f"{run}-{step}-r{attempt}"


def service_name(run: str, step: str) -> str:
    """The headless Service giving multi-node training pods stable DNS names."""
    return f"{run}-{step}"


def recipes_configmap_name(run: str) -> str:
    return f"{run}-recipes"


def master_addr(run: str) -> str:
    """torchrun's rendezvous host: pod 0 of the training Job, through the headless Service."""
    return f"$(JOB_NAME)-0.{service_name(run, 'train')}"


def labels(run: str, step: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "vlmguard",
        "app.kubernetes.io/component": f"pipeline-{step}",
        "app.kubernetes.io/managed-by": "vlmguard-pipeline",
        # "pipeline": the chart's pipeline NetworkPolicy selects these pods.
        "vlmguard.io/role": "pipeline",
        RUN_LABEL: run,
        STEP_LABEL: step,
    }


def pod_security_context() -> dict[str, Any]:
    return {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID, "fsGroup": UID,
            "seccompProfile": {"type": "RuntimeDefault"}}


def container_security_context() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"}}


def container_env(step: Step) -> list[dict[str, Any]]:
    """The env list: base variables, the per-pod ones of gang steps, then the step's own.

    Order matters: ``$(NAME)`` references resolve only to variables listed earlier.
    """
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in BASE_ENV.items()]
    if step.gang:
        env += [
            {"name": "JOB_NAME", "valueFrom": {"fieldRef": {
                "fieldPath": f"metadata.labels['{JOB_NAME_LABEL}']"}}},
            {"name": "NODE_RANK", "valueFrom": {"fieldRef": {
                "fieldPath": f"metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"}}},
        ]
    env += [{"name": k, "value": v} for k, v in step.env.items()]
    return env


def job_manifest(step: Step, recipe: PipelineRecipe, *, namespace: str,
                 attempt: int = 1) -> dict[str, Any]:
    """The Job running ``step`` (already built for the Kubernetes layout).

    Args:
        step: The step (:func:`build_steps` with :meth:`Layout.kubernetes`).
        recipe: The pipeline recipe (its ``kubernetes`` section: image, claims, resources).
        namespace: Namespace of the Job.
        attempt: 1 for the first Job of the step; later attempts get their own name and, for
            training, ``--resume``.
    """
    k = recipe.kubernetes
    run = recipe.name
    step = step.for_attempt(attempt)
    res = k.resources.get(step.name)
    resources: dict[str, Any] = res.model_dump() if res else {
        "requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}}
    if step.name == "train" and k.gpus_per_node:
        resources["requests"]["nvidia.com/gpu"] = str(k.gpus_per_node)
        resources["limits"]["nvidia.com/gpu"] = str(k.gpus_per_node)
    mounts: list[dict[str, Any]] = [
        {"name": "work", "mountPath": K8S_WORK_ROOT},
        {"name": "recipes", "mountPath": K8S_RECIPES, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "cache", "mountPath": "/var/cache/vlmguard"},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "work", "persistentVolumeClaim": {"claimName": k.workspace_claim}},
        {"name": "recipes", "configMap": {"name": recipes_configmap_name(run)}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "4Gi"}},
        {"name": "cache", "emptyDir": {"sizeLimit": k.cache_size_limit}},
    ]
    if step.name in BENCH_STEPS:
        bench: dict[str, Any] = {"name": "bench", "mountPath": K8S_BENCH, "readOnly": True}
        if k.bench_sub_path:
            bench["subPath"] = k.bench_sub_path
        mounts.append(bench)
        volumes.append({"name": "bench", "persistentVolumeClaim": {
            "claimName": k.bench_claim, "readOnly": True}})
    if step.name == "publish" and k.publish_claim:
        mounts.append({"name": "publish", "mountPath": K8S_PUBLISH})
        volumes.append({"name": "publish",
                        "persistentVolumeClaim": {"claimName": k.publish_claim}})
    if step.name == "train":
        # torch DataLoader workers and NCCL use shared memory; the default /dev/shm is 64 MiB.
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}})
    container: dict[str, Any] = {
        "name": step.name,
        "image": k.image,
        "imagePullPolicy": k.image_pull_policy,
        "workingDir": "/app",
        "command": [step.program],
        "args": list(step.args),
        "env": container_env(step),
        "resources": resources,
        "securityContext": container_security_context(),
        "volumeMounts": mounts,
    }
    if step.gang:
        container["ports"] = [{"name": "rendezvous", "containerPort": k.master_port}]
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": volumes,
    }
    if k.service_account:
        pod["serviceAccountName"] = k.service_account
    if k.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": s} for s in k.image_pull_secrets]
    if step.name == "train":
        if k.node_selector:
            pod["nodeSelector"] = dict(k.node_selector)
        if k.tolerations:
            pod["tolerations"] = list(k.tolerations)
    if step.gang:
        pod["subdomain"] = service_name(run, step.name)
    spec: dict[str, Any] = {
        "backoffLimit": 0 if step.gang else k.backoff_limit,
        "ttlSecondsAfterFinished": k.ttl_seconds_after_finished,
        "completions": step.completions,
        "parallelism": step.parallelism,
        "template": {"metadata": {"labels": labels(run, step.name)}, "spec": pod},
    }
    if step.indexed:
        spec["completionMode"] = "Indexed"
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job_name(run, step.name, attempt), "namespace": namespace,
                     "labels": labels(run, step.name),
                     "annotations": {"vlmguard.io/attempt": str(attempt)}},
        "spec": spec,
    }


def headless_service(recipe: PipelineRecipe, step: str, *, namespace: str) -> dict[str, Any]:
    """Headless Service over a gang step's pods (stable ``<job>-<index>.<service>`` names)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": service_name(recipe.name, step), "namespace": namespace,
                     "labels": labels(recipe.name, step)},
        "spec": {
            "clusterIP": "None",
            # Rendezvous starts before the pods are ready.
            "publishNotReadyAddresses": True,
            "selector": {RUN_LABEL: recipe.name, STEP_LABEL: step},
            "ports": [{"name": "rendezvous", "port": recipe.kubernetes.master_port,
                       "targetPort": recipe.kubernetes.master_port}],
        },
    }


def recipes_configmap(recipe: PipelineRecipe, files: dict[str, str], *,
                      namespace: str) -> dict[str, Any]:
    """The materialised step recipes, mounted read-only at /etc/vlmguard/pipeline."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": recipes_configmap_name(recipe.name), "namespace": namespace,
                     "labels": labels(recipe.name, "recipes")},
        "data": dict(sorted(files.items())),
    }

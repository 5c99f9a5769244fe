"""Kubernetes executor against a scripted API client (no API server can run here).

The scripted client implements only the calls the executor makes, with the real client's method
names and parameters (checked against ``kubernetes.client``), and raises on anything it was not
scripted for. Job states come from per-Job scripts; errors are real ``ApiException`` objects
with the bodies an API server sends.
"""

from __future__ import annotations

import inspect
import io
import json
from pathlib import Path
from typing import Any

import pytest

from tests.unit.vlmguard_training.pipeline.test_runner import make_recipe
from vlmguard.errors import Reason, UnavailableError, VLMGuardError
from vlmguard_training.pipeline.executor import StepFailedError
from vlmguard_training.pipeline.graph import STEP_NAMES, Layout
from vlmguard_training.pipeline.jobs import master_addr
from vlmguard_training.pipeline.progress import ProgressView
from vlmguard_training.pipeline.state import StateFile

pytest.importorskip("kubernetes", reason="kubernetes client not installed (extra k8s)")
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from vlmguard_training.pipeline.kubernetes import (
    FINGERPRINT_ANNOTATION,
    ImagePullError,
    KubernetesExecutor,
    QuotaExceededError,
    RBACDeniedError,
)

NS = "ml"
RUN = "unit-run"


def api_error(status: int, message: str, reason: str = "Forbidden") -> ApiException:
    e = ApiException(status=status, reason=reason)
    e.body = json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                         "message": message, "reason": reason, "code": status})
    return e


def forbidden(verb: str, resource: str, group: str) -> ApiException:
    return api_error(403, f'{resource}.{group} is forbidden: User "system:serviceaccount:ml:'
                     f'runner" cannot {verb} resource "{resource}" in API group "{group}" in '
                     f'the namespace "{NS}"')


class ScriptedCluster:
    """Both API objects in one; Job states follow scripts, everything else raises.

    Args:
        jobs: Job name -> list of states it goes through, one per status read: ``active``,
            ``complete``, ``failed``; the last state repeats.
        pods: Job name -> pod list items (dicts as the server sends them).
        events: Job name -> event list items.
        errors: Method name -> exceptions to raise on its next calls (in order).
        existing: Jobs already in the cluster (name -> state), listed by label.
    """

    def __init__(self, jobs: dict[str, list[str]], *, pods: dict[str, list[Any]] | None = None,
                 events: dict[str, list[Any]] | None = None,
                 errors: dict[str, list[Exception]] | None = None,
                 existing: dict[str, dict[str, Any]] | None = None) -> None:
        self.scripts = {k: list(v) for k, v in jobs.items()}
        self.pods = pods or {}
        self.events = events or {}
        self.errors = errors or {}
        self.created: dict[str, dict[str, Any]] = dict(existing or {})
        self.calls: list[tuple[str, str]] = []
        self.configmaps: dict[str, dict[str, Any]] = {}
        self.services: set[str] = set()

    def _enter(self, method: str, what: str) -> None:
        self.calls.append((method, what))
        queue = self.errors.get(method)
        if queue:
            raise queue.pop(0)

    # BatchV1Api
    def create_namespaced_job(self, namespace: str, body: dict[str, Any]) -> Any:
        assert namespace == NS
        name = body["metadata"]["name"]
        self._enter("create_namespaced_job", name)
        if name in self.created:
            raise api_error(409, f'jobs.batch "{name}" already exists', "AlreadyExists")
        if name not in self.scripts:
            raise AssertionError(f"unscripted Job {name}")
        self.created[name] = body
        return body

    def read_namespaced_job_status(self, name: str, namespace: str) -> Any:
        self._enter("read_namespaced_job_status", name)
        if name not in self.created:
            raise api_error(404, f'jobs.batch "{name}" not found', "NotFound")
        script = self.scripts[name]
        state = script.pop(0) if len(script) > 1 else script[0]
        completions = self.created[name]["spec"]["completions"]
        status: dict[str, Any] = {"active": completions if state == "active" else 0}
        if state == "complete":
            status.update(succeeded=completions, conditions=[
                {"type": "Complete", "status": "True"}])
        elif state == "failed":
            status.update(failed=1, conditions=[
                {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                 "message": "Job has reached the specified backoff limit"}])
        # a typed object, as the real client returns
        return k8s.V1Job(metadata=k8s.V1ObjectMeta(name=name,
                                                   annotations=self.created[name]["metadata"]
                                                   ["annotations"]),
                         status=k8s.V1JobStatus(**{_snake(k): v for k, v in status.items()}))

    def list_namespaced_job(self, namespace: str, *, label_selector: str | None = None) -> Any:
        self._enter("list_namespaced_job", label_selector or "")
        want = dict(kv.split("=") for kv in (label_selector or "").split(","))
        items = []
        for name, body in self.created.items():
            labels = body["metadata"].get("labels", {})
            if all(labels.get(k) == v for k, v in want.items()):
                items.append({"metadata": {**body["metadata"], "name": name},
                              "spec": body["spec"]})
        return {"items": items}

    # CoreV1Api
    def create_namespaced_config_map(self, namespace: str, body: dict[str, Any]) -> Any:
        self._enter("create_namespaced_config_map", body["metadata"]["name"])
        if body["metadata"]["name"] in self.configmaps:
            raise api_error(409, "exists", "AlreadyExists")
        self.configmaps[body["metadata"]["name"]] = body
        return body

    def replace_namespaced_config_map(self, name: str, namespace: str,
                                      body: dict[str, Any]) -> Any:
        self._enter("replace_namespaced_config_map", name)
        self.configmaps[name] = body
        return body

    def delete_namespaced_config_map(self, name: str, namespace: str) -> Any:
        self._enter("delete_namespaced_config_map", name)
        if self.configmaps.pop(name, None) is None:
            raise api_error(404, f'configmaps "{name}" not found', "NotFound")
        return {}

    def create_namespaced_service(self, namespace: str, body: dict[str, Any]) -> Any:
        self._enter("create_namespaced_service", body["metadata"]["name"])
        self.services.add(body["metadata"]["name"])
        return body

    def delete_namespaced_service(self, name: str, namespace: str) -> Any:
        self._enter("delete_namespaced_service", name)
        if name not in self.services:
            raise api_error(404, f'services "{name}" not found', "NotFound")
        self.services.discard(name)
        return {}

    def list_namespaced_pod(self, namespace: str, *, label_selector: str | None = None) -> Any:
        self._enter("list_namespaced_pod", label_selector or "")
        job = (label_selector or "").removeprefix("job-name=")
        return {"items": self.pods.get(job, [])}

    def list_namespaced_event(self, namespace: str, *, field_selector: str | None = None) -> Any:
        self._enter("list_namespaced_event", field_selector or "")
        job = (field_selector or "").removeprefix("involvedObject.name=")
        return {"items": self.events.get(job, [])}

    def creates(self) -> list[str]:
        return [w for m, w in self.calls if m == "create_namespaced_job"]


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


class Clock:
    """Time advances only when the executor sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s

    def __call__(self) -> float:
        return self.now


def build(tmp_path: Path, cluster: ScriptedCluster, **recipe_over: Any
          ) -> tuple[KubernetesExecutor, Clock, io.StringIO]:
    over = {"kubernetes": {"poll_interval_s": 1.0, "image_pull_grace_s": 3.0,
                           "pending_quota_grace_s": 3.0}, "retry_backoff_s": 10.0}
    over.update(recipe_over)
    recipe = make_recipe(tmp_path, **over)
    clock = Clock()
    out = io.StringIO()
    ex = KubernetesExecutor(recipe, Layout.kubernetes(recipe),
                            StateFile(tmp_path / "state.json", recipe.name, "kubernetes"),
                            ProgressView(out, clock=clock), sleep=clock.sleep, clock=clock,
                            master_addr=master_addr(recipe.name), batch=cluster, core=cluster,
                            namespace=NS)
    return ex, clock, out


def all_complete(after: int = 1) -> dict[str, list[str]]:
    return {f"{RUN}-{s}": ["active"] * after + ["complete"] for s in STEP_NAMES}


# -- the scripted client speaks the real client's API ---------------------------------------


def test_scripted_client_matches_the_real_client_signatures() -> None:
    real = {**{n: getattr(k8s.BatchV1Api, n) for n in dir(k8s.BatchV1Api)},
            **{n: getattr(k8s.CoreV1Api, n) for n in dir(k8s.CoreV1Api)}}
    ours = [n for n in vars(ScriptedCluster) if n.endswith(("_job", "_job_status", "_map",
                                                            "_service", "_pod", "_event"))]
    assert len(ours) == 10
    for name in ours:
        assert name in real, name
        mine = inspect.signature(getattr(ScriptedCluster, name))
        theirs = inspect.signature(real[name])
        for p in mine.parameters.values():
            assert p.name in theirs.parameters, f"{name}({p.name}) is not in the real client"


# -- behaviour -------------------------------------------------------------------------------


def test_success_creates_each_job_once_and_follows_it(tmp_path: Path) -> None:
    cluster = ScriptedCluster(all_complete(after=2))
    ex, _, out = build(tmp_path, cluster)
    assert ex.run() == dict.fromkeys(STEP_NAMES, "succeeded")
    assert cluster.creates() == [f"{RUN}-{s}" for s in STEP_NAMES]
    assert ("create_namespaced_config_map", f"{RUN}-recipes") in cluster.calls
    # Every step succeeded: the recipes ConfigMap is deleted (the Jobs go by their TTL).
    assert cluster.configmaps == {}
    assert cluster.calls[-1] == ("delete_namespaced_config_map", f"{RUN}-recipes")
    synth = cluster.created[f"{RUN}-synth"]
    assert synth["spec"]["completionMode"] == "Indexed"
    assert synth["metadata"]["annotations"][FINGERPRINT_ANNOTATION]
    state = json.loads((tmp_path / "state.json").read_text())
    assert {s: v["status"] for s, v in state["steps"].items()} == dict.fromkeys(
        STEP_NAMES, "succeeded")
    assert state["steps"]["train"]["jobs"] == [f"{RUN}-train"]
    text = out.getvalue()
    assert "synth    running  0/3 done, 3 active (attempt 1): unit-run-synth" in text
    assert "publish  done" in text and "pipeline finished" in text


def test_failed_job_is_retried_as_a_new_job_after_backoff(tmp_path: Path) -> None:
    jobs = all_complete()
    jobs[f"{RUN}-train"] = ["active", "failed"]
    jobs[f"{RUN}-train-r2"] = ["active", "complete"]
    cluster = ScriptedCluster(jobs)
    ex, clock, out = build(tmp_path, cluster)
    ex.run()
    assert cluster.creates()[2:4] == [f"{RUN}-train", f"{RUN}-train-r2"]
    assert 10.0 in clock.sleeps  # retry_backoff_s before the second attempt
    args = cluster.created[f"{RUN}-train-r2"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--resume" in args
    assert "--resume" not in cluster.created[f"{RUN}-train"]["spec"]["template"]["spec"][
        "containers"][0]["args"]
    assert "retry    attempt 2 in 10s after: Job failed: BackoffLimitExceeded" in out.getvalue()
    state = json.loads((tmp_path / "state.json").read_text())["steps"]["train"]
    assert state["attempts"] == 2 and state["jobs"] == [f"{RUN}-train", f"{RUN}-train-r2"]


def test_retries_are_bounded(tmp_path: Path) -> None:
    jobs = all_complete()
    jobs[f"{RUN}-synth"] = ["failed"]
    jobs[f"{RUN}-synth-r2"] = ["failed"]
    cluster = ScriptedCluster(jobs)
    ex, _, _ = build(tmp_path, cluster, retries=1)
    with pytest.raises(StepFailedError) as e:
        ex.run()
    assert e.value.reason == Reason.PIPELINE_STEP_FAILED
    assert "unit-run-synth-r2 failed (BackoffLimitExceeded" in e.value.message
    assert "kubectl logs -n ml job/unit-run-synth-r2" in e.value.message
    assert cluster.creates() == [f"{RUN}-synth", f"{RUN}-synth-r2"]
    assert json.loads((tmp_path / "state.json").read_text())["steps"]["synth"]["status"] == (
        "failed")


def test_rbac_denial_names_the_verb_and_resource(tmp_path: Path) -> None:
    cluster = ScriptedCluster(all_complete(),
                              errors={"create_namespaced_job": [forbidden("create", "jobs",
                                                                          "batch")]})
    ex, _, _ = build(tmp_path, cluster)
    with pytest.raises(RBACDeniedError) as e:
        ex.run()
    assert e.value.reason == Reason.PIPELINE_RBAC_DENIED
    msg = e.value.message
    assert "not allowed to create jobs (apiGroup batch) in namespace ml" in msg
    assert "verb 'create' on 'jobs'" in msg and "pipeline.rbac.create=true" in msg


def test_rbac_denial_on_pod_listing(tmp_path: Path) -> None:
    cluster = ScriptedCluster(all_complete(),
                              errors={"list_namespaced_pod": [forbidden("list", "pods", "")]})
    ex, _, _ = build(tmp_path, cluster)
    with pytest.raises(RBACDeniedError, match="not allowed to list pods"):
        ex.run()


def test_quota_exceeded_on_create(tmp_path: Path) -> None:
    err = api_error(403, 'jobs.batch "unit-run-synth" is forbidden: exceeded quota: '
                    'jobs-quota, requested: count/jobs.batch=1, used: count/jobs.batch=10, '
                    'limited: count/jobs.batch=10')
    cluster = ScriptedCluster(all_complete(), errors={"create_namespaced_job": [err]})
    ex, _, _ = build(tmp_path, cluster)
    with pytest.raises(QuotaExceededError) as e:
        ex.run()
    assert e.value.reason == Reason.PIPELINE_QUOTA_EXCEEDED
    assert "exceeded quota: jobs-quota" in e.value.message


def test_quota_blocking_pod_creation_stops_after_the_grace(tmp_path: Path) -> None:
    jobs = all_complete()
    jobs[f"{RUN}-synth"] = ["pending"]  # no pods come up
    event = {"reason": "FailedCreate", "type": "Warning",
             "message": 'Error creating: pods "unit-run-synth-0-x" is forbidden: exceeded quota:'
                        ' compute, requested: limits.cpu=2, used: limits.cpu=8, limited: '
                        'limits.cpu=8'}
    cluster = ScriptedCluster(jobs, events={f"{RUN}-synth": [event]})
    ex, clock, out = build(tmp_path, cluster)
    with pytest.raises(QuotaExceededError, match="cannot create pods: Error creating") as e:
        ex.run()
    assert "limits.cpu" in e.value.message
    assert clock.now >= 3.0  # waited the grace first (quota may be freed meanwhile)
    assert "exceeded quota" in out.getvalue()  # shown in the progress view meanwhile


def test_image_pull_failure_is_reported_with_the_image(tmp_path: Path) -> None:
    jobs = all_complete()
    jobs[f"{RUN}-synth"] = ["active"]
    pod = {"metadata": {"name": "unit-run-synth-0-abcde"}, "status": {
        "phase": "Pending", "containerStatuses": [{
            "name": "synth", "image": "vlmguard/training:0.1.0", "ready": False,
            "state": {"waiting": {"reason": "ImagePullBackOff",
                                  "message": 'Back-off pulling image "vlmguard/training:0.1.0"'}},
        }]}}
    cluster = ScriptedCluster(jobs, pods={f"{RUN}-synth": [pod]})
    ex, _, _ = build(tmp_path, cluster)
    with pytest.raises(ImagePullError) as e:
        ex.run()
    assert e.value.reason == Reason.PIPELINE_IMAGE_PULL_FAILED
    assert "image vlmguard/training:0.1.0 cannot be pulled (ImagePullBackOff" in e.value.message
    assert "image_pull_secrets" in e.value.message


def test_resume_adopts_a_completed_job_without_rerunning_it(tmp_path: Path) -> None:
    # First run: synth completes, merge is refused by RBAC: the run stops.
    cluster = ScriptedCluster(all_complete())
    ex, _, _ = build(tmp_path, cluster)
    original = cluster.create_namespaced_job

    def create(namespace: str, body: dict[str, Any]) -> Any:
        if body["metadata"]["name"].endswith("-merge"):
            raise forbidden("create", "jobs", "batch")
        return original(namespace, body)

    cluster.create_namespaced_job = create  # type: ignore[method-assign]
    with pytest.raises(RBACDeniedError):
        ex.run()
    # Second run from the state file: synth is skipped without a single API call about it.
    cluster2 = ScriptedCluster(all_complete(), existing={})
    ex2, _, out = build(tmp_path, cluster2)
    ex2.run()
    assert f"{RUN}-synth" not in [w for _, w in cluster2.calls]
    assert cluster2.creates() == [f"{RUN}-{s}" for s in STEP_NAMES[1:]]
    assert "synth    skipped  finished earlier (state file)" in out.getvalue()


def test_resume_without_state_finds_the_existing_jobs(tmp_path: Path) -> None:
    """The state file is lost: completed Jobs in the cluster are adopted, a running one is
    followed, nothing is created twice."""
    first = ScriptedCluster(all_complete())
    ex, _, _ = build(tmp_path / "a", first)
    ex.run(only=["synth", "merge"])
    existing = {n: first.created[n] for n in (f"{RUN}-synth", f"{RUN}-merge")}
    jobs = all_complete()
    jobs[f"{RUN}-merge"] = ["active", "complete"]  # still running when the runner restarts
    cluster = ScriptedCluster(jobs, existing=existing)
    ex2, _, _ = build(tmp_path / "b", cluster)  # another state file: empty
    assert ex2.run() == dict.fromkeys(STEP_NAMES, "succeeded")
    assert cluster.creates() == [f"{RUN}-{s}" for s in ("train", "eval", "publish")]
    state = json.loads((tmp_path / "b" / "state.json").read_text())
    assert state["steps"]["synth"]["jobs"] == [f"{RUN}-synth"]


def test_existing_job_from_another_recipe_is_refused(tmp_path: Path) -> None:
    from vlmguard.errors import ConfigError

    first = ScriptedCluster(all_complete())
    ex, _, _ = build(tmp_path / "a", first)
    ex.run(only=["synth"])
    existing = {f"{RUN}-synth": first.created[f"{RUN}-synth"]}
    cluster = ScriptedCluster(all_complete(), existing=existing)
    ex2, _, _ = build(tmp_path / "b", cluster, synth={"num_shards": 5})
    with pytest.raises(ConfigError, match="ran another command or step recipe"):
        ex2.run()


def test_transient_api_errors_are_retried_then_reported(tmp_path: Path) -> None:
    cluster = ScriptedCluster(all_complete(), errors={
        "read_namespaced_job_status": [api_error(500, "etcd timeout", "InternalError"),
                                       ConnectionResetError("reset")]})
    ex, _, _ = build(tmp_path, cluster)
    assert ex.run()["publish"] == "succeeded"
    down = ScriptedCluster(all_complete(), errors={
        "create_namespaced_config_map": [api_error(503, "unavailable", "ServiceUnavailable")
                                         for _ in range(5)]})
    ex2, _, _ = build(tmp_path / "x", down)
    with pytest.raises(UnavailableError) as e:
        ex2.run()
    assert e.value.reason == Reason.PIPELINE_CLUSTER_UNAVAILABLE


def test_configmap_is_updated_when_it_exists(tmp_path: Path) -> None:
    cluster = ScriptedCluster(all_complete())
    cluster.configmaps[f"{RUN}-recipes"] = {"data": {}}
    ex, _, _ = build(tmp_path, cluster)
    ex.run(only=["synth"])
    assert ("replace_namespaced_config_map", f"{RUN}-recipes") in cluster.calls
    # Steps are left: the ConfigMap stays for them.
    assert set(cluster.configmaps[f"{RUN}-recipes"]["data"]) == {
        "synth.yaml", "train.yaml", "eval-config.yaml"}
    assert not [c for c in cluster.calls if c[0].startswith("delete_")]


def test_multi_node_training_gets_a_headless_service(tmp_path: Path) -> None:
    cluster = ScriptedCluster(all_complete())
    ex, _, _ = build(tmp_path, cluster, train={"nodes": 2})
    ex.run()
    assert ("create_namespaced_service", f"{RUN}-train") in cluster.calls
    spec = cluster.created[f"{RUN}-train"]["spec"]
    assert spec["completions"] == 2 and spec["backoffLimit"] == 0
    assert ("delete_namespaced_service", f"{RUN}-train") in cluster.calls
    assert cluster.services == set() and cluster.configmaps == {}


def test_failed_run_keeps_its_configmap_for_the_resume(tmp_path: Path) -> None:
    jobs = all_complete()
    for name in (f"{RUN}-train", f"{RUN}-train-r2", f"{RUN}-train-r3", f"{RUN}-train-r4"):
        jobs[name] = ["failed"]
    cluster = ScriptedCluster(jobs)
    ex, _, _ = build(tmp_path, cluster)
    with pytest.raises(VLMGuardError):
        ex.run()
    assert list(cluster.configmaps) == [f"{RUN}-recipes"]
    assert not [c for c in cluster.calls if c[0].startswith("delete_")]


def test_cleanup_refused_is_a_warning_not_a_failed_run(tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """An older Role without the delete verb: the run still succeeds, the log says what is
    left behind."""
    cluster = ScriptedCluster(all_complete(), errors={
        "delete_namespaced_config_map": [api_error(403, "forbidden", "Forbidden")]})
    ex, _, _ = build(tmp_path, cluster)
    with caplog.at_level("WARNING"):
        assert ex.run() == dict.fromkeys(STEP_NAMES, "succeeded")
    assert list(cluster.configmaps) == [f"{RUN}-recipes"]
    assert "could not delete configmaps" in caplog.text and "delete" in caplog.text



def test_every_api_call_is_a_declared_permission(tmp_path: Path) -> None:
    """RUNNER_PERMISSIONS (granted by the chart's Role) lists every call the executor makes."""
    from vlmguard_training.pipeline.jobs import RUNNER_PERMISSIONS

    used: set[tuple[str, str, str]] = set()

    class Recording(KubernetesExecutor):
        def _call(self, verb: str, resource: str, group: str, fn: Any, *a: Any,
                  **kw: Any) -> Any:
            used.add((group, resource, verb))
            return super()._call(verb, resource, group, fn, *a, **kw)

    jobs = all_complete()
    jobs[f"{RUN}-synth"] = ["pending", "complete"]  # no pod yet: events are checked
    cluster = ScriptedCluster(jobs)
    cluster.configmaps[f"{RUN}-recipes"] = {}
    recipe = make_recipe(tmp_path, train={"nodes": 2})
    clock = Clock()
    ex = Recording(recipe, Layout.kubernetes(recipe), StateFile(tmp_path / "s.json", RUN,
                                                                "kubernetes"),
                   ProgressView(io.StringIO(), clock=clock), sleep=clock.sleep, clock=clock,
                   batch=cluster, core=cluster, namespace=NS)
    ex.run()
    ex2 = Recording(recipe, Layout.kubernetes(recipe), StateFile(tmp_path / "t.json", RUN,
                                                                 "kubernetes"),
                    ProgressView(io.StringIO(), clock=clock), sleep=clock.sleep, clock=clock,
                    batch=cluster, core=cluster, namespace=NS)
    ex2.run()  # no state: lists the existing Jobs
    assert used == set(RUNNER_PERMISSIONS)


def test_rerun_after_exhausted_retries_starts_a_new_attempt(tmp_path: Path) -> None:
    jobs = all_complete()
    jobs[f"{RUN}-train"] = ["failed"]
    jobs[f"{RUN}-train-r2"] = ["failed"]
    jobs[f"{RUN}-train-r3"] = ["active", "complete"]
    cluster = ScriptedCluster(jobs)
    ex, _, _ = build(tmp_path, cluster, retries=1)
    with pytest.raises(StepFailedError):
        ex.run()
    ex2, clock, _ = build(tmp_path, cluster, retries=0)  # same state file, same cluster
    assert ex2.run()["train"] == "succeeded"
    assert [n for n in cluster.creates() if "train" in n] == [
        f"{RUN}-train", f"{RUN}-train-r2", f"{RUN}-train-r3"]
    args = cluster.created[f"{RUN}-train-r3"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--resume" in args
    assert 10.0 not in clock.sleeps  # the failed Job was the earlier invocation's: no backoff


def test_unfinished_job_of_a_changed_recipe_is_not_adopted(tmp_path: Path) -> None:
    jobs = all_complete()
    jobs[f"{RUN}-synth"] = ["failed"]
    cluster = ScriptedCluster(jobs)
    ex, _, _ = build(tmp_path, cluster, retries=0)
    with pytest.raises(StepFailedError):
        ex.run()
    jobs2 = all_complete()
    jobs2[f"{RUN}-synth-r2"] = ["complete"]
    cluster.scripts.update(jobs2)
    ex2, _, _ = build(tmp_path, cluster, retries=0, synth={"num_shards": 4})
    assert ex2.run()["synth"] == "succeeded"
    assert cluster.created[f"{RUN}-synth-r2"]["spec"]["completions"] == 4

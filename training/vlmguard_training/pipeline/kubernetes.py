"""Kubernetes executor: each step becomes a Job created through the API and polled to the end.

The only module that imports the ``kubernetes`` client (extra ``k8s``). It creates the recipes
ConfigMap, a headless Service for multi-node training, then one Job per step (Indexed for the
shards and the training nodes), and follows each Job: a failed Job is re-created as
``<run>-<step>-r<n>`` after a backoff; a re-run adopts the Jobs it finds (a completed one is not
run again). Failures that retrying cannot fix stop the run with a message saying what to do:
RBAC denials (the verb and resource), quota, image pulls.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, Protocol

from vlmguard.errors import (
    ConfigError,
    FailedPreconditionError,
    Reason,
    ResourceExhaustedError,
    UnavailableError,
    VLMGuardError,
)
from vlmguard_training.pipeline.executor import Executor, StepFailedError
from vlmguard_training.pipeline.graph import Step
from vlmguard_training.pipeline.jobs import (
    RUN_LABEL,
    STEP_LABEL,
    headless_service,
    job_manifest,
    recipes_configmap,
    recipes_configmap_name,
    service_name,
)
from vlmguard_training.pipeline.state import StepState

try:
    from kubernetes.client.exceptions import ApiException
except ImportError as e:  # pragma: no cover - depends on the install
    raise ConfigError("the Kubernetes executor needs the kubernetes client: "
                      "pip install vlmguard-training", reason=Reason.MISSING_DEPENDENCY) from e

log = logging.getLogger(__name__)

FINGERPRINT_ANNOTATION = "vlmguard.io/fingerprint"
ATTEMPT_ANNOTATION = "vlmguard.io/attempt"
IMAGE_PULL_REASONS = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")
#: Consecutive API failures (5xx, connection errors) tolerated before the run stops.
MAX_API_FAILURES = 5


class BatchApi(Protocol):
    """The part of ``kubernetes.client.BatchV1Api`` the executor uses."""

    def create_namespaced_job(self, namespace: str, body: Any) -> Any: ...
    def read_namespaced_job_status(self, name: str, namespace: str) -> Any: ...
    def list_namespaced_job(self, namespace: str, *, label_selector: str | None = None) -> Any: ...


class CoreApi(Protocol):
    """The part of ``kubernetes.client.CoreV1Api`` the executor uses."""

    def create_namespaced_config_map(self, namespace: str, body: Any) -> Any: ...
    def replace_namespaced_config_map(self, name: str, namespace: str, body: Any) -> Any: ...
    def delete_namespaced_config_map(self, name: str, namespace: str) -> Any: ...
    def create_namespaced_service(self, namespace: str, body: Any) -> Any: ...
    def delete_namespaced_service(self, name: str, namespace: str) -> Any: ...
    def list_namespaced_pod(self, namespace: str, *,
                            label_selector: str | None = None) -> Any: ...
    def list_namespaced_event(self, namespace: str, *,
                              field_selector: str | None = None) -> Any: ...


class RBACDeniedError(FailedPreconditionError):
    """The API refused a call (403): the runner's ServiceAccount lacks a permission."""

    default_reason = Reason.PIPELINE_RBAC_DENIED


class QuotaExceededError(ResourceExhaustedError):
    """A ResourceQuota stopped a Job or its pods."""

    default_reason = Reason.PIPELINE_QUOTA_EXCEEDED


class ImagePullError(FailedPreconditionError):
    """A step's image cannot be pulled."""

    default_reason = Reason.PIPELINE_IMAGE_PULL_FAILED


def _plain(obj: Any) -> dict[str, Any]:
    """An API object as the JSON the server sent (camelCase dict)."""
    if obj is None:
        return {}
    if isinstance(obj, dict):
        return obj
    from kubernetes.client import ApiClient

    out: dict[str, Any] = ApiClient().sanitize_for_serialization(obj)
    return out


def _terminal(job: dict[str, Any], completions: int) -> str | None:
    """``succeeded``, the failure reason, or None while the Job runs."""
    status = job.get("status") or {}
    for c in status.get("conditions") or []:
        if c.get("status") != "True":
            continue
        if c.get("type") in ("Complete", "SuccessCriteriaMet"):
            return "succeeded"
        if c.get("type") == "Failed":
            return f"{c.get('reason', 'Failed')}: {c.get('message', '')}".rstrip(": ")
    if int(status.get("succeeded") or 0) >= completions:
        return "succeeded"
    return None


def _message(e: ApiException) -> str:
    try:
        body = json.loads(e.body or "{}")
        return str(body.get("message") or e.reason or "")
    except ValueError:
        return str(e.body or e.reason or "")


class KubernetesExecutor(Executor):
    """Runs each step as a Job.

    Extra args (besides :class:`Executor`'s): ``batch`` and ``core`` (BatchV1Api and
    CoreV1Api, or scripted stand-ins in tests), ``namespace``.
    """

    kind = "kubernetes"

    def __init__(self, *args: Any, batch: BatchApi, core: CoreApi, namespace: str,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batch = batch
        self.core = core
        self.namespace = namespace
        self._api_failures = 0

    # -- API calls with error mapping -------------------------------------------------------

    def _call(self, verb: str, resource: str, group: str, fn: Callable[..., Any],
              *args: Any, **kwargs: Any) -> Any:
        """Call the API; 403/quota/connection problems become clear errors."""
        import urllib3

        while True:
            try:
                out = fn(*args, **kwargs)
                self._api_failures = 0
                return out
            except ApiException as e:
                msg = _message(e)
                if e.status == 403 and "exceeded quota" in msg:
                    raise QuotaExceededError(
                        f"{verb} {resource} in namespace {self.namespace} was refused by a "
                        f"ResourceQuota: {msg}. Free quota or raise it (kubectl describe "
                        f"resourcequota -n {self.namespace})") from e
                if e.status == 403:
                    grp = group or '""'
                    raise RBACDeniedError(
                        f"RBAC: not allowed to {verb} {resource} (apiGroup {grp}) in namespace "
                        f"{self.namespace}: {msg or 'forbidden'}. Grant the runner's "
                        f"ServiceAccount the verb '{verb}' on '{resource}' (the chart's "
                        f"pipeline.rbac.create=true does)") from e
                if e.status == 401:
                    raise RBACDeniedError(
                        "the Kubernetes API rejected the credentials (401): check the "
                        "kubeconfig or the ServiceAccount token") from e
                if e.status is not None and 400 <= e.status < 500 and e.status != 429:
                    raise
                self._transient(f"{verb} {resource}: HTTP {e.status} {msg}", e)
            except (urllib3.exceptions.HTTPError, OSError) as e:
                self._transient(f"{verb} {resource}: {type(e).__name__}", e)

    def _transient(self, what: str, err: Exception) -> None:
        self._api_failures += 1
        if self._api_failures >= MAX_API_FAILURES:
            raise UnavailableError(
                f"the Kubernetes API failed {self._api_failures} times in a row ({what}); "
                "the run can be resumed with the same command",
                reason=Reason.PIPELINE_CLUSTER_UNAVAILABLE) from err
        self.sleep(self.recipe.kubernetes.poll_interval_s)

    def _create_or_keep(self, verb_fn: Callable[..., Any], resource: str, group: str,
                        body: dict[str, Any]) -> bool:
        """Create; False when it already exists."""
        try:
            self._call("create", resource, group, verb_fn, self.namespace, body)
            return True
        except ApiException as e:
            if e.status == 409:
                return False
            raise

    # -- the run ----------------------------------------------------------------------------

    def prepare(self) -> None:
        body = recipes_configmap(self.recipe, self.files, namespace=self.namespace)
        if not self._create_or_keep(self.core.create_namespaced_config_map, "configmaps", "",
                                    body):
            self._call("update", "configmaps", "", self.core.replace_namespaced_config_map,
                       body["metadata"]["name"], self.namespace, body)

    def finish(self) -> None:
        """Delete the run's recipes ConfigMap and headless Services once every step has
        succeeded (the Jobs go by their TTL). Without this each scheduled retrain run (a new
        run name) would leave them behind for good. A failed delete is reported, not raised:
        the run's work is done."""
        targets = [("configmaps", self.core.delete_namespaced_config_map,
                    recipes_configmap_name(self.recipe.name))]
        targets += [("services", self.core.delete_namespaced_service,
                     service_name(self.recipe.name, s.name)) for s in self.steps if s.gang]
        for resource, fn, name in targets:
            try:
                self._call("delete", resource, "", fn, name, self.namespace)
            except ApiException as e:
                if e.status != 404:
                    log.warning("could not delete %s %s/%s after the run: HTTP %s",
                                resource, self.namespace, name, e.status)
            except VLMGuardError as e:
                log.warning("could not delete %s %s/%s after the run: %s",
                            resource, self.namespace, name, e.message)

    def _manifest(self, step: Step, attempt: int) -> dict[str, Any]:
        m = job_manifest(step, self.recipe, namespace=self.namespace, attempt=attempt)
        m["metadata"]["annotations"][FINGERPRINT_ANNOTATION] = self.fingerprint(step)
        return m

    def _existing(self, step: Step) -> tuple[int, dict[str, Any]] | None:
        """The latest Job of this step in the cluster (a run resumed without its state)."""
        sel = f"{RUN_LABEL}={self.recipe.name},{STEP_LABEL}={step.name}"
        jobs = _plain(self._call("list", "jobs", "batch", self.batch.list_namespaced_job,
                                 self.namespace, label_selector=sel)).get("items") or []
        best: tuple[int, dict[str, Any]] | None = None
        for j in jobs:
            ann = j.get("metadata", {}).get("annotations") or {}
            attempt = int(ann.get(ATTEMPT_ANNOTATION, "1"))
            if best is None or attempt > best[0]:
                best = (attempt, j)
        return best

    def _read(self, name: str) -> dict[str, Any] | None:
        try:
            return _plain(self._call("get", "jobs/status", "batch",
                                     self.batch.read_namespaced_job_status,
                                     name, self.namespace))
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def run_step(self, step: Step, st: StepState) -> None:
        fp = self.fingerprint(step)
        if step.gang:
            self._create_or_keep(self.core.create_namespaced_service, "services", "",
                                 headless_service(self.recipe, step.name,
                                                  namespace=self.namespace))
        attempt = max(st.attempts, 1)
        job: dict[str, Any] | None = None
        if st.jobs:
            job = self._read(st.jobs[-1])
            ann = (job or {}).get("metadata", {}).get("annotations") or {}
            if job is not None and ann.get(FINGERPRINT_ANNOTATION, fp) != fp:
                # The recipe changed since this unfinished Job was created: do not adopt it.
                attempt += 1
                job = None
        else:
            found = self._existing(step)
            if found:
                attempt, job = found
                ann = job.get("metadata", {}).get("annotations") or {}
                if ann.get(FINGERPRINT_ANNOTATION, fp) != fp:
                    raise ConfigError(
                        f"Job {job['metadata']['name']} of step {step.name!r} ran another "
                        "command or step recipe: use a new run name or delete the run's Jobs")
                st.jobs.append(job["metadata"]["name"])
        if job is None:
            job = self._create(step, attempt, st)
        elif _terminal(job, step.completions) not in (None, "succeeded"):
            # Failed in an earlier invocation: this one starts with a new attempt.
            attempt += 1
            job = self._create(step, attempt, st)
        st.attempts = attempt
        self.state.save()
        tries = 1
        while True:
            outcome = self._follow(step, job["metadata"]["name"], attempt)
            if outcome == "succeeded":
                st.done_indexes = list(range(step.completions))
                return
            if tries > self.recipe.retries:
                raise StepFailedError(
                    f"Job {job['metadata']['name']} failed ({outcome}) after {attempt} "
                    f"attempts; see kubectl logs -n {self.namespace} job/"
                    f"{job['metadata']['name']}", reason=Reason.PIPELINE_STEP_FAILED)
            attempt += 1
            tries += 1
            delay = self.backoff(tries)
            self.progress.retrying(step.name, attempt, delay, f"Job failed: {outcome}")
            self.sleep(delay)
            job = self._create(step, attempt, st)
            st.attempts = attempt
            self.state.save()

    def _create(self, step: Step, attempt: int, st: StepState) -> dict[str, Any]:
        body = self._manifest(step, attempt)
        self._create_or_keep(self.batch.create_namespaced_job, "jobs", "batch", body)
        name = body["metadata"]["name"]
        if name not in st.jobs:
            st.jobs.append(name)
        self.state.save()
        return body

    def _follow(self, step: Step, name: str, attempt: int) -> str:
        """Poll a Job until it ends: ``succeeded`` or the failure reason.

        Raises:
            ImagePullError, QuotaExceededError: problems a retry would repeat.
        """
        k = self.recipe.kubernetes
        pull_since: float | None = None
        quota_since: float | None = None
        while True:
            job = self._read(name)
            if job is None:
                return "the Job disappeared (deleted, or removed by its TTL before success)"
            end = _terminal(job, step.completions)
            if end:
                return end
            status = job.get("status") or {}
            done = int(status.get("succeeded") or 0)
            active = int(status.get("active") or 0)
            now = self.clock()
            pull = self._image_pull_problem(name)
            if pull:
                pull_since = now if pull_since is None else pull_since
                if now - pull_since >= k.image_pull_grace_s:
                    raise ImagePullError(
                        f"Job {name}: {pull}. Check recipe kubernetes.image "
                        f"({k.image}) and image_pull_secrets")
            else:
                pull_since = None
            quota = self._quota_problem(name) if active == 0 else ""
            if quota:
                quota_since = now if quota_since is None else quota_since
                if now - quota_since >= k.pending_quota_grace_s:
                    raise QuotaExceededError(
                        f"Job {name} cannot create pods: {quota}. Free quota or raise it "
                        f"(kubectl describe resourcequota -n {self.namespace})")
            else:
                quota_since = None
            note = pull or quota
            self.progress.update(step.name, done, step.completions, active, attempt,
                                 f"{name}" + (f": {note}" if note else ""))
            self.sleep(k.poll_interval_s)

    def _image_pull_problem(self, job: str) -> str:
        pods = _plain(self._call("list", "pods", "", self.core.list_namespaced_pod,
                                 self.namespace, label_selector=f"job-name={job}"))
        for pod in pods.get("items") or []:
            st = pod.get("status") or {}
            for cs in (st.get("containerStatuses") or []) + (st.get("initContainerStatuses")
                                                             or []):
                waiting = (cs.get("state") or {}).get("waiting") or {}
                if waiting.get("reason") in IMAGE_PULL_REASONS:
                    return (f"image {cs.get('image', '?')} cannot be pulled "
                            f"({waiting['reason']}: {waiting.get('message', '')})").replace(
                                ": )", ")")
        return ""

    def _quota_problem(self, job: str) -> str:
        events = _plain(self._call("list", "events", "", self.core.list_namespaced_event,
                                   self.namespace,
                                   field_selector=f"involvedObject.name={job}"))
        for ev in events.get("items") or []:
            msg = str(ev.get("message") or "")
            if ev.get("reason") == "FailedCreate" and "exceeded quota" in msg:
                return msg
        return ""


def from_cluster(*args: Any, context: str | None = None, **kwargs: Any) -> KubernetesExecutor:
    """An executor talking to the cluster of the kubeconfig (or the pod's ServiceAccount).

    Raises:
        UnavailableError: no cluster configuration found.
    """
    from kubernetes import client, config

    try:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config(context=context)
    except (config.ConfigException, OSError) as e:
        raise UnavailableError(f"no Kubernetes configuration: {e}",
                               reason=Reason.PIPELINE_CLUSTER_UNAVAILABLE) from e
    return KubernetesExecutor(*args, batch=client.BatchV1Api(), core=client.CoreV1Api(),
                              **kwargs)


__all__ = ["ImagePullError", "KubernetesExecutor", "QuotaExceededError", "RBACDeniedError",
           "VLMGuardError", "from_cluster"]

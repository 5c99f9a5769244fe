"""The pipeline recipe: one YAML file describing a synth -> merge -> train -> eval -> publish run.

The step recipes (synthesis, training) stay in their own files; the pipeline recipe names them
and may override a few of their keys (``overrides``). Relative paths are relative to the working
directory (run from the repository root). The ``kubernetes`` section only matters to the
Kubernetes executor: image, volumes and resources of the Jobs it creates.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from vlmguard_training.recipe import Recipe

#: Names of Kubernetes objects derive from the run name: keep it a short DNS label.
RUN_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")


class SynthStepConfig(Recipe):
    """Synthesis: one ``vlmguard synth`` process (or Indexed Job completion) per shard."""

    recipe: str = Field("training/recipes/synth-evidence.yaml",
                        description="Synthesis recipe file (vlmguard synth --recipe).")
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="Keys replacing those of the synthesis recipe (e.g. sets with limits; "
        "'a.b' sets one nested field); bench_dir and num_shards come from the pipeline.")
    num_shards: int = Field(2, ge=1, le=1000, description="Shards (Indexed Job completions).")
    parallelism: int = Field(2, ge=1, le=1000, description="Shards running at once.")


class TrainStepConfig(Recipe):
    """Training: ``vlmguard train rewriter``, under torchrun when it spans several processes."""

    recipe: str = Field("training/recipes/rewriter-tiny.yaml",
                        description="Rewriter training recipe (vlmguard train rewriter --recipe).")
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="Keys replacing those of the training recipe ('a.b' sets one nested "
        "field); '{bench_dir}', '{work_dir}', '{dataset_dir}' in strings become the run's "
        "paths (local or in the Job).")
    nodes: int = Field(1, ge=1, le=64, description="Pods (torchrun nodes); > 1: multi-node.")
    nproc_per_node: int = Field(1, ge=1, le=16,
                                description="Processes per node (one per GPU on GPU nodes).")
    resume: bool = Field(True, description="Pass --resume when a training attempt is retried "
                         "(continue from its last checkpoint).")
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Extra environment of the training processes (e.g. ACCELERATE_USE_CPU: '1').")


class EvalStepConfig(Recipe):
    """Evaluation: ``vlmguard eval`` with the in-process guard configured from ``config``."""

    sets: list[str] = Field(default_factory=lambda: ["mm_vet", "mossbench"],
                            description="Benchmark sets to evaluate on.")
    limit: int = Field(0, ge=0, description="At most N items per set (0: all).")
    concurrency: int = Field(4, ge=1, description="Requests in flight.")
    config: dict[str, Any] = Field(
        default_factory=dict,
        description="VLMGuard config of the guard under evaluation; the string '{model_dir}' "
        "anywhere in it is replaced by the trained model's directory.")

    @field_validator("sets")
    @classmethod
    def _sets(cls, v: list[str]) -> list[str]:
        if not v or any(not re.fullmatch(r"[A-Za-z0-9_.-]+", s) for s in v):
            raise ValueError("sets must be a non-empty list of set folder names")
        return v


class PublishStepConfig(Recipe):
    """Publish: copy the model and a manifest to ``dest/<run name>`` (never overwrites), only
    when its evaluation meets the gates and is not worse than the published model's."""

    dest: str = Field("build/published", description="Folder the model is published under.")
    gates: list[str] = Field(
        default_factory=list,
        description="Checks on the eval step's figures, as vlmguard eval --gate "
        "(METRIC:SET OP VALUE, e.g. 'intent_kept_rate:mm_vet>=0.8'); the model is published "
        "only when all pass. Empty: no gate.")
    max_regression: float | None = Field(
        0.02, ge=0, le=1,
        description="How much worse than the newest publication under dest (its stored "
        "evaluation) each gated figure may be, in the gate's direction; null: no comparison.")

    @field_validator("gates")
    @classmethod
    def _gates(cls, v: list[str]) -> list[str]:
        from vlmguard.errors import InvalidArgumentError
        from vlmguard_training.evaluation.gates import parse_gate

        for g in v:
            try:
                parse_gate(g)
            except InvalidArgumentError as e:
                raise ValueError(e.message) from e
        return v


Quantities = dict[str, str | int | float]


def _requests() -> Quantities:
    return {"cpu": "1", "memory": "2Gi"}


def _limits() -> Quantities:
    return {"cpu": "2", "memory": "4Gi"}


class StepResources(Recipe):
    """Requests and limits of one step's containers (Kubernetes quantities)."""

    requests: Quantities = Field(default_factory=_requests, description="Resource requests.")
    limits: Quantities = Field(default_factory=_limits, description="Resource limits.")


def _default_resources() -> dict[str, StepResources]:
    return {
        "synth": StepResources(),
        "merge": StepResources(requests={"cpu": "250m", "memory": "512Mi"},
                               limits={"cpu": "1", "memory": "1Gi"}),
        "train": StepResources(requests={"cpu": "4", "memory": "16Gi"},
                               limits={"cpu": "8", "memory": "32Gi"}),
        "eval": StepResources(requests={"cpu": "2", "memory": "3Gi"},
                              limits={"cpu": "4", "memory": "6Gi"}),
        "publish": StepResources(requests={"cpu": "100m", "memory": "256Mi"},
                                 limits={"cpu": "1", "memory": "512Mi"}),
    }


class KubernetesConfig(Recipe):
    """How the Kubernetes executor builds and follows the Jobs."""

    namespace: str = Field("default", description="Namespace (--namespace overrides).")
    image: str = Field("vlmguard/training:0.1.0",
                       description="Image of every step (docker/training.Dockerfile).")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        "IfNotPresent", description="Image pull policy.")
    image_pull_secrets: list[str] = Field(default_factory=list,
                                          description="Image pull secret names.")
    service_account: str = Field("", description="ServiceAccount of the step pods (empty: the "
                                 "namespace default; the pods never call the API).")
    workspace_claim: str = Field("vlmguard-pipeline", description="PVC shared by every step "
                                 "(ReadWriteMany for multi-node training), mounted at /data/work.")
    bench_claim: str = Field("bench", description="PVC with the benchmark sets, read-only at "
                             "/data/bench.")
    bench_sub_path: str = Field("", description="Sub-path of the sets inside bench_claim.")
    publish_claim: str = Field("", description="PVC for published models at /data/publish "
                               "(empty: /data/work/published on the workspace claim).")
    resources: dict[str, StepResources] = Field(default_factory=_default_resources,
                                                description="Resources per step.")
    gpus_per_node: int = Field(0, ge=0, description="nvidia.com/gpu per training pod.")
    node_selector: dict[str, str] = Field(default_factory=dict,
                                          description="Node selector of the training pods.")
    tolerations: list[dict[str, Any]] = Field(default_factory=list,
                                              description="Tolerations of the training pods.")
    backoff_limit: int = Field(1, ge=0, description="Pod retries inside one Job (per index "
                               "for Indexed Jobs).")
    ttl_seconds_after_finished: int = Field(86400, ge=0, description="Seconds finished Jobs "
                                            "are kept.")
    master_port: int = Field(29500, ge=1, le=65535, description="torchrun rendezvous port.")
    cache_size_limit: str = Field("8Gi", description="Size limit of the model cache emptyDir.")
    poll_interval_s: float = Field(5.0, gt=0, description="Seconds between status polls.")
    image_pull_grace_s: float = Field(
        120.0, ge=0, description="Seconds an image pull may keep failing before the run stops.")
    pending_quota_grace_s: float = Field(
        60.0, ge=0, description="Seconds a Job may fail to create pods (quota) before the run "
        "stops.")


class PipelineRecipe(Recipe):
    """A pipeline run: which step recipes, where data goes, how often to retry."""

    name: str = Field("pipeline", description="Run name (a DNS label: it names the Jobs and "
                      "the run's folder under work_dir).")
    work_dir: str = Field("build/pipeline", description="Local runs write to work_dir/<name>.")
    bench_dir: str = Field("../shared/bench", description="Benchmark sets (local runs).")
    synth: SynthStepConfig = Field(default_factory=SynthStepConfig,  # type: ignore[arg-type]
                                   description="Synthesis step.")
    train: TrainStepConfig = Field(default_factory=TrainStepConfig,  # type: ignore[arg-type]
                                   description="Training step.")
    eval: EvalStepConfig = Field(default_factory=EvalStepConfig,  # type: ignore[arg-type]
                                 description="Evaluation step.")
    publish: PublishStepConfig = Field(default_factory=PublishStepConfig,  # type: ignore[arg-type]
                                       description="Publish step.")
    retries: int = Field(1, ge=0, le=10, description="Re-runs of a failed step (a shard, a Job) "
                         "before the run stops.")
    retry_backoff_s: float = Field(10.0, ge=0, description="Seconds before the first re-run; "
                                   "doubled each time.")
    kubernetes: KubernetesConfig = Field(default_factory=KubernetesConfig,  # type: ignore[arg-type]
                                         description="Kubernetes executor settings.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not RUN_NAME_RE.fullmatch(v):
            raise ValueError(f"name {v!r} must be a DNS label of at most 40 characters "
                             "(lowercase letters, digits, '-')")
        return v


def load_pipeline_recipe(path: str | Path) -> PipelineRecipe:
    """Read and validate a pipeline recipe.

    Raises:
        ConfigError: unreadable file or invalid recipe (the message names the bad key).
    """
    return PipelineRecipe.from_yaml(path)

"""The offline pipeline runner: synth shards -> merge -> train -> eval -> publish.

``vlmguard pipeline run --recipe FILE --executor local|kubernetes`` chains the CLI steps, as
subprocesses (:mod:`.local`) or as Kubernetes Jobs (:mod:`.kubernetes`, the only module that
imports the ``kubernetes`` client). Both executors run the same step graph (:mod:`.graph`); the
Job manifests come from one function (:func:`.jobs.job_manifest`). Runs are resumable through a
state file (:mod:`.state`).
"""

from __future__ import annotations

from vlmguard_training.pipeline.graph import Layout, Step, build_steps
from vlmguard_training.pipeline.recipe import PipelineRecipe, load_pipeline_recipe

__all__ = ["Layout", "PipelineRecipe", "Step", "build_steps", "load_pipeline_recipe"]

"""The step graph: synth shards -> merge -> train -> eval -> publish, as CLI invocations.

Each step is a ``vlmguard`` command line plus its environment; the executors only decide where
it runs. A :class:`Layout` maps the run's folders to local paths or to the volumes of the Jobs,
so the local and the Kubernetes runs execute the same commands. The step recipes (synthesis,
training, the evaluation config) are materialised from the pipeline recipe by
:func:`step_files` so one run is self-contained.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from vlmguard.errors import ConfigError
from vlmguard_training.pipeline.recipe import PipelineRecipe

STEP_NAMES = ("synth", "merge", "train", "eval", "publish")
#: Where the Jobs mount things (the chart's pipeline templates use the same paths).
K8S_WORK_ROOT = "/data/work"
K8S_BENCH = "/data/bench"
K8S_RECIPES = "/etc/vlmguard/pipeline"
K8S_PUBLISH = "/data/publish"
#: The training recipes' name of the packaged SmolLM2 base (not a folder).
SMOLLM2 = "smollm2"
#: File names of the materialised step recipes.
SYNTH_RECIPE, TRAIN_RECIPE, EVAL_CONFIG = "synth.yaml", "train.yaml", "eval-config.yaml"


@dataclass(frozen=True)
class Layout:
    """Folders of one run, as seen by the step processes.

    Attributes:
        work: The run's folder (shards, dataset, model, eval, logs).
        bench: Benchmark sets.
        recipes: Folder holding the materialised step recipes.
        publish: Folder models are published under.
        cwd: The working directory of the step processes when the runner knows it (local
            runs: its own); empty for Jobs, whose paths are left as written.
    """

    work: str
    bench: str
    recipes: str
    publish: str
    cwd: str = ""

    @classmethod
    def local(cls, recipe: PipelineRecipe) -> Layout:
        work = Path(recipe.work_dir) / recipe.name
        return cls(str(work), recipe.bench_dir, str(work / "recipes"), recipe.publish.dest,
                   cwd=str(Path.cwd()))

    @classmethod
    def kubernetes(cls, recipe: PipelineRecipe) -> Layout:
        # Without a publish claim, models are published on the workspace claim itself.
        publish = K8S_PUBLISH if recipe.kubernetes.publish_claim else f"{K8S_WORK_ROOT}/published"
        return cls(f"{K8S_WORK_ROOT}/{recipe.name}", K8S_BENCH, K8S_RECIPES, publish)

    def path(self, *parts: str) -> str:
        base = PurePosixPath(self.work) if self.work.startswith("/") else Path(self.work)
        return str(base.joinpath(*parts))

    @property
    def shards(self) -> str:
        return self.path("shards")

    @property
    def dataset(self) -> str:
        return self.path("dataset")

    @property
    def model(self) -> str:
        return self.path("model")

    @property
    def eval(self) -> str:
        return self.path("eval")

    def recipe(self, name: str) -> str:
        base = PurePosixPath(self.recipes) if self.recipes.startswith("/") else Path(self.recipes)
        return str(base / name)


@dataclass(frozen=True)
class Step:
    """One step: a command that runs ``completions`` times (shards or training nodes).

    Attributes:
        name: One of :data:`STEP_NAMES`.
        program: ``vlmguard`` or ``torchrun``.
        args: Arguments after the program. For torchrun: its own flags, then ``-m
            vlmguard.cli`` and the vlmguard arguments.
        env: Environment (names and values are the same in both executors).
        completions: Process count (shards, nodes); each gets ``JOB_COMPLETION_INDEX``.
        parallelism: How many run at once.
        indexed: Each completion is distinct (Kubernetes completionMode Indexed).
        output: The step's output path; a step not recorded finished may have left a partial
            one, which the local executor removes before a re-run (outputs are never overwritten
            by the commands themselves).
        gang: All completions must run together (multi-node training).
        clean_output: Remove a partial ``output`` before a re-run (the command refuses to
            overwrite it and cannot resume it).
        resume_args: Arguments added from the second attempt on (continue, not restart).
    """

    name: str
    program: str
    args: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    completions: int = 1
    parallelism: int = 1
    indexed: bool = False
    output: str = ""
    gang: bool = False
    clean_output: bool = False
    resume_args: tuple[str, ...] = ()

    def for_attempt(self, attempt: int) -> Step:
        """The step as run on its ``attempt``-th try (1-based)."""
        if attempt <= 1 or not self.resume_args:
            return self
        return replace(self, args=(*self.args, *self.resume_args))

    def argv(self) -> list[str]:
        return [self.program, *self.args]

    def fingerprint(self, files: dict[str, str]) -> str:
        """Hash of what the step runs (command, env, step recipes): a changed recipe means a
        finished step is stale."""
        blob = json.dumps([self.program, list(self.args), sorted(self.env.items()),
                           self.completions, sorted(files.items())])
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _read_yaml(path: str, what: str) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read the {what} recipe {path}: {e.strerror}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"the {what} recipe {path} is not a mapping")
    return raw


def _substitute(node: Any, mapping: dict[str, str]) -> Any:
    if isinstance(node, str):
        for k, v in mapping.items():
            node = node.replace("{" + k + "}", v)
        return node
    if isinstance(node, dict):
        return {k: _substitute(v, mapping) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, mapping) for v in node]
    return node


def apply_overrides(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` with each override set: a key replaces the value at its path, dots going into
    nested mappings (``train.max_steps: 3`` changes one field; ``sets: {...}`` replaces all).

    Raises:
        ConfigError: a dotted path crosses a value that is not a mapping.
    """
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {key!r}: {p!r} is not a mapping in the recipe")
            node = child
        node[leaf] = copy.deepcopy(value)
    return out


def placeholders(layout: Layout) -> dict[str, str]:
    """What ``{name}`` in overrides and the eval config stands for."""
    return {"bench_dir": layout.bench, "work_dir": layout.work, "model_dir": layout.model,
            "dataset_dir": layout.dataset}


def absolute_base_model(train: dict[str, Any], layout: Layout) -> dict[str, Any]:
    """The training recipe with a relative ``base_model`` directory made absolute against the
    layout's working directory (when it has one).

    The trainer records ``base_model`` in the model it writes, and the model is served later
    from elsewhere (its publication, another working directory), where a relative path would be
    read against the model folder. ``smollm2`` names the packaged model, not a folder.
    """
    base = train.get("base_model")
    if not layout.cwd or not isinstance(base, str) or not base.strip() or base == SMOLLM2:
        return train
    path = Path(base).expanduser()
    if path.is_absolute():
        return train
    return {**train, "base_model": os.path.normpath(Path(layout.cwd) / path)}


def step_files(recipe: PipelineRecipe, layout: Layout) -> dict[str, str]:
    """The materialised step recipes: file name -> YAML text.

    Overrides are applied with :func:`apply_overrides`; ``{bench_dir}``, ``{work_dir}``,
    ``{model_dir}`` and ``{dataset_dir}`` in their strings (and in the eval config) become the
    layout's paths, so one pipeline recipe serves both executors. A local run's relative
    ``base_model`` becomes absolute (:func:`absolute_base_model`).

    Raises:
        ConfigError: a step recipe cannot be read.
    """
    subst = placeholders(layout)
    synth = apply_overrides(_read_yaml(recipe.synth.recipe, "synthesis"),
                            _substitute(recipe.synth.overrides, subst))
    synth["bench_dir"] = layout.bench
    synth["num_shards"] = recipe.synth.num_shards
    synth["name"] = f"{recipe.name}-synth"
    train = absolute_base_model(apply_overrides(_read_yaml(recipe.train.recipe, "training"),
                                                _substitute(recipe.train.overrides, subst)),
                                layout)
    eval_cfg = _substitute(recipe.eval.config, subst)
    dump = lambda d: yaml.safe_dump(d, sort_keys=False)  # noqa: E731
    return {SYNTH_RECIPE: dump(synth), TRAIN_RECIPE: dump(train), EVAL_CONFIG: dump(eval_cfg)}


def _train_step(recipe: PipelineRecipe, layout: Layout, master_addr: str) -> Step:
    t = recipe.train
    cli = ["train", "rewriter", "--recipe", layout.recipe(TRAIN_RECIPE),
           "--data", f"{layout.dataset}/train.jsonl", "--out", layout.model]
    env = dict(t.env)
    retry = {"resume_args": ("--resume",)} if t.resume else {"clean_output": True}
    if t.nodes == 1 and t.nproc_per_node == 1:
        return Step("train", "vlmguard", tuple(cli), env, output=layout.model, **retry)
    if t.nodes == 1:
        args = ["--standalone", "--nnodes", "1", "--nproc-per-node", str(t.nproc_per_node)]
        return Step("train", "torchrun", (*args, "-m", "vlmguard.cli", *cli), env,
                    output=layout.model, **retry)
    # Multi-node: torchrun reads PET_* variables for its flags; NODE_RANK is the pod's
    # completion index (the Job sets it from the downward API, the local executor directly).
    env.update({
        "MASTER_ADDR": master_addr,
        "MASTER_PORT": str(recipe.kubernetes.master_port),
        "PET_NNODES": str(t.nodes),
        "PET_NPROC_PER_NODE": str(t.nproc_per_node),
        "PET_NODE_RANK": "$(NODE_RANK)",
        "PET_MASTER_ADDR": "$(MASTER_ADDR)",
        "PET_MASTER_PORT": "$(MASTER_PORT)",
    })
    return Step("train", "torchrun", ("-m", "vlmguard.cli", *cli), env,
                completions=t.nodes, parallelism=t.nodes, indexed=True, output=layout.model,
                gang=True, **retry)


def build_steps(recipe: PipelineRecipe, layout: Layout, *, master_addr: str = "127.0.0.1"
                ) -> list[Step]:
    """The five steps of a run, in order.

    Args:
        recipe: The pipeline recipe.
        layout: Where the run's folders are, as the step processes see them.
        master_addr: Address of training node 0 (multi-node training only).
    """
    s = recipe.synth
    synth = Step("synth", "vlmguard",
                 ("synth", "--recipe", layout.recipe(SYNTH_RECIPE), "--out", layout.shards,
                  "--num-shards", str(s.num_shards), "--no-progress"),
                 completions=s.num_shards, parallelism=min(s.parallelism, s.num_shards),
                 indexed=True, output=layout.shards)
    merge = Step("merge", "vlmguard", ("synth", "merge", "--in", layout.shards,
                                       "--out", layout.dataset), output=layout.dataset,
                 clean_output=True)
    ev = recipe.eval
    eval_args = ["eval", "--bench-dir", layout.bench, "--sets", ",".join(ev.sets),
                 "--config", layout.recipe(EVAL_CONFIG), "--out", layout.eval,
                 "--concurrency", str(ev.concurrency), "--no-progress"]
    if ev.limit:
        eval_args += ["--limit", str(ev.limit)]
    evaluate = Step("eval", "vlmguard", tuple(eval_args), output=layout.eval)
    pub = recipe.publish
    gate_args = [a for g in pub.gates for a in ("--gate", g)]
    if pub.gates and pub.max_regression is not None:
        gate_args += ["--max-regression", f"{pub.max_regression:g}"]
    publish = Step("publish", "vlmguard",
                   ("pipeline", "publish", "--model", layout.model, "--eval", layout.eval,
                    "--dataset", layout.dataset, "--out", layout.publish,
                    "--name", recipe.name, *gate_args))
    return [synth, merge, _train_step(recipe, layout, master_addr), evaluate, publish]

"""``vlmguard pipeline run|publish|manifests``: the command line of the pipeline runner."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from vlmguard.errors import ConfigError

EXIT_OK = 0


def add_parser(sub: Any) -> None:
    """Register ``pipeline`` and its subcommands on the top-level subparsers."""
    p = sub.add_parser(
        "pipeline", help="run the offline pipeline: synth -> merge -> train -> eval -> publish",
        description="Chain the offline steps of a pipeline recipe (training/recipes/"
        "pipeline-*.yaml), locally as subprocesses or as Kubernetes Jobs. Re-running the same "
        "command continues where it stopped (finished steps are skipped).")
    psub = p.add_subparsers(dest="pipeline_command", metavar="SUBCOMMAND", required=True)

    r = psub.add_parser("run", help="run (or resume) a pipeline recipe",
                        description="Run every step not finished yet, with a live progress "
                        "view on standard error and a JSON summary on standard output.")
    r.add_argument("--recipe", required=True, metavar="FILE", help="pipeline recipe YAML")
    r.add_argument("--executor", choices=["local", "kubernetes"], default="local",
                   help="run steps as local subprocesses or as Kubernetes Jobs (default local)")
    r.add_argument("--namespace", default=None,
                   help="Kubernetes namespace (default: the recipe's kubernetes.namespace)")
    r.add_argument("--context", default=None, help="kubeconfig context (kubernetes executor)")
    r.add_argument("--state", default=None, metavar="FILE",
                   help="state file (default <work_dir>/<name>/state-<executor>.json)")
    r.add_argument("--name", default=None,
                   help="run name instead of the recipe's (a new run; the retrain CronJob "
                   "passes its Job name)")
    r.add_argument("--only", default=None, metavar="STEP,...",
                   help="run only these steps (synth, merge, train, eval, publish)")
    r.set_defaults(func=cmd_run)

    m = psub.add_parser("manifests", help="print the Kubernetes manifests of a recipe (YAML)",
                        description="Print the ConfigMap, Services and Jobs the kubernetes "
                        "executor would create (first attempt), e.g. for kubectl apply or review.")
    m.add_argument("--recipe", required=True, metavar="FILE", help="pipeline recipe YAML")
    m.add_argument("--namespace", default=None, help="namespace (default: the recipe's)")
    m.set_defaults(func=cmd_manifests)

    pub = psub.add_parser("publish", help="copy a trained model and its manifest to a folder",
                          description="Copy MODEL (a vlmguard train rewriter output) with eval "
                          "metrics and the dataset card to DEST/NAME and write PUBLISH.json "
                          "(sha256 of every file). Never overwrites an existing DEST/NAME.")
    pub.add_argument("--model", required=True, metavar="DIR", help="model directory")
    pub.add_argument("--dest", required=True, metavar="DIR", help="publication root")
    pub.add_argument("--name", required=True, help="publication name (folder under DEST)")
    pub.add_argument("--eval", default=None, metavar="DIR", help="vlmguard eval output")
    pub.add_argument("--dataset", default=None, metavar="DIR", help="merged dataset folder")
    pub.add_argument("--gate", action="append", default=[], metavar="METRIC:SET<=V",
                     help="publish only if the evaluation meets it (vlmguard eval --gate "
                     "format; repeatable); a refusal exits 1 with PIPELINE_GATE_FAILED")
    pub.add_argument("--max-regression", type=float, default=None, metavar="M",
                     help="with --gate: also refuse when a gated figure is worse than the "
                     "published model's (newest under DEST, or --baseline) by more than M")
    pub.add_argument("--baseline", default=None, metavar="DIR",
                     help="publication to compare with (default: the newest under DEST)")
    pub.set_defaults(func=cmd_publish)


def _only(value: str | None) -> list[str] | None:
    from vlmguard_training.pipeline.graph import STEP_NAMES

    if not value:
        return None
    names = [s.strip() for s in value.split(",") if s.strip()]
    bad = [s for s in names if s not in STEP_NAMES]
    if bad:
        raise ConfigError(f"--only: unknown steps {bad}; steps: {', '.join(STEP_NAMES)}")
    return names


def with_name(recipe: Any, name: str) -> Any:
    """The recipe under another run name (validated like the recipe's own).

    Raises:
        ConfigError: the name is not a DNS label of at most 40 characters.
    """
    from pydantic import ValidationError

    try:
        return type(recipe).model_validate({**recipe.model_dump(), "name": name})
    except ValidationError as e:
        raise ConfigError(f"--name: {e.errors()[0]['msg']}") from e


def cmd_run(args: argparse.Namespace) -> int:
    from vlmguard_training.pipeline.executor import Executor, default_state_path
    from vlmguard_training.pipeline.graph import Layout
    from vlmguard_training.pipeline.recipe import load_pipeline_recipe
    from vlmguard_training.pipeline.state import StateFile

    recipe = load_pipeline_recipe(args.recipe)
    if args.name:
        recipe = with_name(recipe, args.name)
    only = _only(args.only)
    state = StateFile(args.state or default_state_path(recipe, args.executor), recipe.name,
                      args.executor)
    executor: Executor
    if args.executor == "local":
        from vlmguard_training.pipeline.local import LocalExecutor

        executor = LocalExecutor(recipe, Layout.local(recipe), state)
    else:
        from vlmguard_training.pipeline.jobs import master_addr
        from vlmguard_training.pipeline.kubernetes import from_cluster

        executor = from_cluster(recipe, Layout.kubernetes(recipe), state,
                                namespace=args.namespace or recipe.kubernetes.namespace,
                                context=args.context, master_addr=master_addr(recipe.name))
    outcome = executor.run(only)
    print(json.dumps({"run": recipe.name, "executor": args.executor, "steps": outcome,
                      "state": str(state.path)}))
    return EXIT_OK


def cmd_manifests(args: argparse.Namespace) -> int:
    import yaml

    from vlmguard_training.pipeline.graph import Layout, build_steps, step_files
    from vlmguard_training.pipeline.jobs import (
        headless_service,
        job_manifest,
        master_addr,
        recipes_configmap,
    )
    from vlmguard_training.pipeline.recipe import load_pipeline_recipe

    recipe = load_pipeline_recipe(args.recipe)
    ns = args.namespace or recipe.kubernetes.namespace
    layout = Layout.kubernetes(recipe)
    docs: list[dict[str, Any]] = [recipes_configmap(recipe, step_files(recipe, layout),
                                                    namespace=ns)]
    for step in build_steps(recipe, layout, master_addr=master_addr(recipe.name)):
        if step.gang:
            docs.append(headless_service(recipe, step.name, namespace=ns))
        docs.append(job_manifest(step, recipe, namespace=ns))
    class _Dumper(yaml.SafeDumper):
        """Multi-line strings (the step recipes in the ConfigMap) as literal blocks."""

    def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    _Dumper.add_representer(str, _str)
    sys.stdout.write(yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False))
    return EXIT_OK


def cmd_publish(args: argparse.Namespace) -> int:
    from vlmguard_training.pipeline.publish import publish

    out = publish(Path(args.model), Path(args.dest), args.name,
                  eval_dir=Path(args.eval) if args.eval else None,
                  dataset=Path(args.dataset) if args.dataset else None,
                  gates=list(getattr(args, "gate", None) or []),
                  max_regression=getattr(args, "max_regression", None),
                  baseline=Path(args.baseline) if getattr(args, "baseline", None) else None)
    print(json.dumps({"published": str(out)}))
    return EXIT_OK

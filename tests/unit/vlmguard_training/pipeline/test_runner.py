"""Pipeline runner core: recipe, step graph, Job manifests (schema-valid), state file, publish.

The executors are tested in test_pipeline_runner_kubernetes.py (scripted API client) and
tests/integration/test_pipeline_local.py (the whole chain as subprocesses).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from vlmguard.errors import ConfigError, FailedPreconditionError, Reason
from vlmguard_training.pipeline.graph import (
    EVAL_CONFIG,
    STEP_NAMES,
    SYNTH_RECIPE,
    TRAIN_RECIPE,
    Layout,
    build_steps,
    step_files,
)
from vlmguard_training.pipeline.jobs import (
    headless_service,
    job_manifest,
    master_addr,
    recipes_configmap,
)
from vlmguard_training.pipeline.local import expand_env
from vlmguard_training.pipeline.progress import ProgressView
from vlmguard_training.pipeline.publish import MANIFEST, publish
from vlmguard_training.pipeline.recipe import (
    KubernetesConfig,
    PipelineRecipe,
    load_pipeline_recipe,
)
from vlmguard_training.pipeline.state import StateFile

ROOT = Path(__file__).resolve().parents[4]
RECIPES = sorted((ROOT / "training" / "recipes").glob("pipeline-*.yaml"))
KUBE_VERSION = "1.30.0"


def make_recipe(tmp_path: Path, **over: Any) -> PipelineRecipe:
    tmp_path.mkdir(parents=True, exist_ok=True)
    synth = tmp_path / "synth.yaml"
    synth.write_text("name: s\nbench_dir: ../elsewhere\nsets: {siuo: 0}\nteacher: evidence\n")
    train = tmp_path / "train.yaml"
    train.write_text("name: t\nbase_model: smollm2\ndata: {bench_dir: x, seed: 3}\n"
                     "train: {max_steps: 100}\n")
    raw: dict[str, Any] = {
        "name": "unit-run", "work_dir": str(tmp_path / "work"), "bench_dir": "/bench",
        "synth": {"recipe": str(synth), "num_shards": 3, "parallelism": 2,
                  "overrides": {"sets": {"siuo": 2}}},
        "train": {"recipe": str(train),
                  "overrides": {"data.bench_dir": "{bench_dir}", "train": {"max_steps": 2}}},
        "eval": {"sets": ["mm_vet"], "limit": 3,
                 "config": {"rewriter": {"model_path": "{model_dir}"}}},
        "publish": {"dest": str(tmp_path / "pub")},
    }
    for k, v in over.items():
        raw[k] = {**raw.get(k, {}), **v} if isinstance(v, dict) else v
    return PipelineRecipe.model_validate(raw)


# -- recipe ----------------------------------------------------------------------------------


def _models() -> list[type[Any]]:
    from vlmguard_training.pipeline import recipe as r

    return [r.SynthStepConfig, r.TrainStepConfig, r.EvalStepConfig, r.PublishStepConfig,
            r.StepResources, r.KubernetesConfig, r.PipelineRecipe]


@pytest.mark.parametrize("model", _models(), ids=lambda m: m.__name__)
def test_every_recipe_field_has_a_default_and_a_description(model: type[Any]) -> None:
    model()  # every field has a default
    for name, f in model.model_fields.items():
        assert f.description and len(f.description) > 10, f"{model.__name__}.{name}"


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_shipped_pipeline_recipes_load_and_build(path: Path) -> None:
    recipe = load_pipeline_recipe(path)
    for layout in (Layout.local(recipe), Layout.kubernetes(recipe)):
        files = step_files(recipe, layout)
        assert set(files) == {SYNTH_RECIPE, TRAIN_RECIPE, EVAL_CONFIG}
        assert [s.name for s in build_steps(recipe, layout)] == list(STEP_NAMES)


def test_bad_recipe_names_the_key(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("name: Bad_Name\nsynth: {num_shards: 0}\n")
    with pytest.raises(ConfigError) as e:
        load_pipeline_recipe(p)
    assert "name:" in e.value.message and "synth.num_shards" in e.value.message
    p.write_text("synth: {unknown: 1}\n")
    with pytest.raises(ConfigError, match=r"synth\.unknown"):
        load_pipeline_recipe(p)
    with pytest.raises(ConfigError, match="cannot read"):
        load_pipeline_recipe(tmp_path / "missing.yaml")


# -- step graph ------------------------------------------------------------------------------


def test_steps_chain_the_cli_commands(tmp_path: Path) -> None:
    recipe = make_recipe(tmp_path)
    layout = Layout.local(recipe)
    synth, merge, train, ev, pub = build_steps(recipe, layout)
    work = str(tmp_path / "work" / "unit-run")
    assert synth.argv() == ["vlmguard", "synth", "--recipe", f"{work}/recipes/synth.yaml",
                            "--out", f"{work}/shards", "--num-shards", "3", "--no-progress"]
    assert (synth.completions, synth.parallelism, synth.indexed) == (3, 2, True)
    assert merge.argv() == ["vlmguard", "synth", "merge", "--in", f"{work}/shards",
                            "--out", f"{work}/dataset"]
    assert merge.clean_output  # merge refuses to overwrite: a partial output is removed
    assert train.argv()[:3] == ["vlmguard", "train", "rewriter"]
    assert train.args[train.args.index("--data") + 1] == f"{work}/dataset/train.jsonl"
    assert "--resume" not in train.args and "--resume" in train.for_attempt(2).args
    assert ev.args[ev.args.index("--sets") + 1] == "mm_vet"
    assert ev.args[ev.args.index("--limit") + 1] == "3"
    assert pub.argv()[:3] == ["vlmguard", "pipeline", "publish"]
    assert pub.args[pub.args.index("--out") + 1] == str(tmp_path / "pub")
    # Every command parses with the real CLI parser (pipeline publish is ours; the others are
    # checked against the parser when their subcommands exist).
    from vlmguard.cli import build_parser

    parser = build_parser()
    for s in (synth, ev, pub):
        parser.parse_args(list(s.args))


def test_step_files_apply_overrides_and_layout(tmp_path: Path) -> None:
    recipe = make_recipe(tmp_path)
    files = step_files(recipe, Layout.kubernetes(recipe))
    synth = yaml.safe_load(files[SYNTH_RECIPE])
    assert synth["bench_dir"] == "/data/bench" and synth["num_shards"] == 3
    assert synth["sets"] == {"siuo": 2} and synth["teacher"] == "evidence"
    train = yaml.safe_load(files[TRAIN_RECIPE])
    # a dotted key sets one field (data.seed kept); a plain key replaces the whole value
    assert train["data"] == {"bench_dir": "/data/bench", "seed": 3}
    assert train["train"] == {"max_steps": 2} and train["base_model"] == "smollm2"
    ev = yaml.safe_load(files[EVAL_CONFIG])
    assert ev == {"rewriter": {"model_path": "/data/work/unit-run/model"}}


def test_multi_node_training_runs_torchrun_with_rank_from_the_index(tmp_path: Path) -> None:
    recipe = make_recipe(tmp_path, train={"nodes": 3, "nproc_per_node": 2})
    train = build_steps(recipe, Layout.kubernetes(recipe), master_addr=master_addr("unit-run"))[2]
    assert train.program == "torchrun" and train.gang and train.completions == 3
    assert train.args[:2] == ("-m", "vlmguard.cli")
    assert train.env["PET_NNODES"] == "3" and train.env["PET_NPROC_PER_NODE"] == "2"
    assert train.env["PET_NODE_RANK"] == "$(NODE_RANK)"
    assert train.env["MASTER_ADDR"] == "$(JOB_NAME)-0.unit-run-train"
    one = make_recipe(tmp_path, train={"nodes": 1, "nproc_per_node": 4})
    t1 = build_steps(one, Layout.local(one))[2]
    assert t1.program == "torchrun" and t1.args[:5] == ("--standalone", "--nnodes", "1",
                                                        "--nproc-per-node", "4")
    assert not t1.gang and t1.completions == 1


def test_expand_env_follows_kubernetes_rules() -> None:
    env = expand_env({"A": "x", "B": "$(A)-$(NODE_RANK)", "C": "$(MISSING)"}, {"NODE_RANK": "2"})
    assert env == {"A": "x", "B": "x-2", "C": "$(MISSING)"}


# -- Job manifests ---------------------------------------------------------------------------


def _validate(doc: dict[str, Any]) -> None:
    kv = pytest.importorskip("kubernetes_validate")
    try:
        kv.validate(doc, KUBE_VERSION, strict=True)
    except kv.utils.ValidationError as e:
        path = ".".join(str(p) for p in e.path)
        pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {path}: {e.message}")


@pytest.mark.parametrize("nodes", [1, 2])
def test_job_manifests_are_schema_valid_and_locked_down(tmp_path: Path, nodes: int) -> None:
    recipe = make_recipe(tmp_path, train={"nodes": nodes},
                         kubernetes={"gpus_per_node": 1, "image_pull_secrets": ["regcred"],
                                     "node_selector": {"gpu": "a100"}, "bench_sub_path": "b",
                                     "publish_claim": "models"})
    layout = Layout.kubernetes(recipe)
    files = step_files(recipe, layout)
    docs = [recipes_configmap(recipe, files, namespace="ml")]
    for step in build_steps(recipe, layout, master_addr=master_addr(recipe.name)):
        if step.gang:
            docs.append(headless_service(recipe, step.name, namespace="ml"))
        docs.append(job_manifest(step, recipe, namespace="ml"))
        docs.append(job_manifest(step, recipe, namespace="ml", attempt=2))
    for d in docs:
        _validate(d)
    jobs = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Job"}
    assert set(jobs) == {f"unit-run-{s}{r}" for s in STEP_NAMES for r in ("", "-r2")}
    for name, job in jobs.items():
        pod = job["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] and pod["restartPolicy"] == "Never"
        assert pod["automountServiceAccountToken"] is False and not pod["enableServiceLinks"]
        c = pod["containers"][0]
        assert c["securityContext"]["readOnlyRootFilesystem"], name
        assert c["securityContext"]["capabilities"]["drop"] == ["ALL"], name
        assert {m["mountPath"] for m in c["volumeMounts"]} >= {"/tmp", "/data/work",
                                                                "/etc/vlmguard/pipeline"}
        assert c["resources"]["requests"] and c["resources"]["limits"]
        assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    synth = jobs["unit-run-synth"]["spec"]
    assert synth["completionMode"] == "Indexed"
    assert (synth["completions"], synth["parallelism"]) == (3, 2)
    train = jobs["unit-run-train"]["spec"]
    pod = train["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"] == {"gpu": "a100"}
    assert "--resume" in jobs["unit-run-train-r2"]["spec"]["template"]["spec"]["containers"][0][
        "args"]
    if nodes == 2:
        assert train["completionMode"] == "Indexed" and train["completions"] == 2
        assert pod["subdomain"] == "unit-run-train"
        env = [e["name"] for e in pod["containers"][0]["env"]]
        # $(VAR) references resolve only to earlier entries
        assert env.index("JOB_NAME") < env.index("MASTER_ADDR") < env.index("PET_MASTER_ADDR")
        assert env.index("NODE_RANK") < env.index("PET_NODE_RANK")
        svc = next(d for d in docs if d["kind"] == "Service")
        assert svc["spec"]["clusterIP"] == "None"
        assert svc["spec"]["selector"].items() <= pod.get("labels", train["template"][
            "metadata"]["labels"]).items()
    pub = jobs["unit-run-publish"]["spec"]["template"]["spec"]
    assert {"name": "publish", "persistentVolumeClaim": {"claimName": "models"}} in pub["volumes"]


# -- state file ------------------------------------------------------------------------------


def test_state_file_round_trip_and_stale_step(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    sf = StateFile(path, "r", "local")
    st = sf.begin("synth", "fp1")
    st.status, st.done_indexes = "succeeded", [0, 1]
    sf.save()
    again = StateFile(path, "r", "local")
    assert again.state.steps["synth"].status == "succeeded"
    assert again.state.steps["synth"].done_indexes == [0, 1]
    with pytest.raises(ConfigError, match="finished earlier with another command"):
        again.begin("synth", "fp2")
    with pytest.raises(ConfigError, match="belongs to run 'r'"):
        StateFile(path, "other", "local")
    path.write_text("{broken")
    with pytest.raises(ConfigError, match="unreadable"):
        StateFile(path, "r", "local")


def test_unfinished_step_with_a_new_fingerprint_restarts_its_shards(tmp_path: Path) -> None:
    sf = StateFile(tmp_path / "s.json", "r", "local")
    st = sf.begin("synth", "fp1")
    st.done_indexes = [0]
    assert sf.begin("synth", "fp2").done_indexes == []


# -- publish ---------------------------------------------------------------------------------


def _model(tmp_path: Path) -> Path:
    model = tmp_path / "model"
    (model / "adapter").mkdir(parents=True)
    (model / "vlmguard_rewriter.json").write_text(json.dumps({"kind": "causal_lm"}))
    (model / "MODEL_CARD.md").write_text("# card\n")
    (model / "adapter" / "w.bin").write_bytes(b"\x00" * 100)
    (model / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    (model / "checkpoints" / "checkpoint-2" / "optimizer.pt").write_bytes(b"\x00" * 10)
    (model / "data").mkdir()
    (model / "data" / "train.jsonl").write_text("{}\n")
    (model / "adapter" / "data").mkdir()  # only top-level leftovers are left out
    (model / "adapter" / "data" / "x").write_text("x")
    return model


def test_publish_copies_with_a_manifest_and_never_overwrites(tmp_path: Path) -> None:
    model = _model(tmp_path)
    ev = tmp_path / "eval"
    ev.mkdir()
    (ev / "metrics.json").write_text(json.dumps({"overall": {"n": 4, "fpr": 0.0, "x": {}}}))
    ds = tmp_path / "dataset"
    ds.mkdir()
    (ds / "card.json").write_text(json.dumps({"records": 7, "by_set": {}}))
    (ds / "DATASET_CARD.md").write_text("# data\n")
    out = publish(model, tmp_path / "pub", "run1", eval_dir=ev, dataset=ds)
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["eval"] == {"n": 4, "fpr": 0.0}
    assert manifest["dataset"] == {"records": 7}
    assert manifest["model"] == {"kind": "causal_lm"}
    assert manifest["files"]["model/adapter/w.bin"]["bytes"] == 100
    assert set(manifest["files"]) >= {"model/MODEL_CARD.md", "eval/metrics.json",
                                      "dataset/DATASET_CARD.md", "model/adapter/data/x"}
    assert not [f for f in manifest["files"] if f.startswith(("model/checkpoints",
                                                              "model/data"))]
    assert manifest["not_published"] == ["checkpoints", "data"]
    before = (out / "model" / "MODEL_CARD.md").read_text()
    (model / "MODEL_CARD.md").write_text("# changed\n")
    with pytest.raises(FailedPreconditionError) as e:
        publish(model, tmp_path / "pub", "run1")
    assert e.value.reason == Reason.PIPELINE_ALREADY_PUBLISHED
    assert (out / "model" / "MODEL_CARD.md").read_text() == before
    assert [p.name for p in (tmp_path / "pub").iterdir()] == ["run1"]  # no partial left
    with pytest.raises(ConfigError, match="not a rewriter model"):
        publish(tmp_path / "eval", tmp_path / "pub", "run2")


def test_publish_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from vlmguard.cli import main

    model = _model(tmp_path)
    assert main(["pipeline", "publish", "--model", str(model), "--dest",
                 str(tmp_path / "p"), "--name", "n1"]) == 0
    assert json.loads(capsys.readouterr().out)["published"] == str(tmp_path / "p" / "n1")
    assert main(["pipeline", "publish", "--model", str(model), "--dest",
                 str(tmp_path / "p"), "--name", "n1"]) == 1
    assert "PIPELINE_ALREADY_PUBLISHED" in capsys.readouterr().err


def test_manifests_command_prints_valid_yaml(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from vlmguard.cli import main

    recipe = make_recipe(tmp_path, train={"nodes": 2})
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(recipe.model_dump()))
    assert main(["pipeline", "manifests", "--recipe", str(path), "--namespace", "ml"]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["kind"] for d in docs] == ["ConfigMap", "Job", "Job", "Service", "Job", "Job",
                                         "Job"]
    for d in docs:
        _validate(d)


def test_progress_view_prints_changes_once() -> None:
    out = io.StringIO()
    t = iter([0.0, 1.0, 2.0, 3.0, 4.0])
    view = ProgressView(out, clock=lambda: next(t))
    view.update("synth", 1, 2, 1, 1)
    view.update("synth", 1, 2, 1, 1)
    view.finished("synth", 2.0)
    lines = out.getvalue().splitlines()
    assert lines == ["[    1.0s] synth    running  1/2 done, 1 active (attempt 1)",
                     "[    2.0s] synth    done     in 2.0s"]


def test_kubernetes_config_defaults_match_the_chart_paths() -> None:
    k = KubernetesConfig()
    assert k.image.startswith("vlmguard/training:")
    assert set(k.resources) == set(STEP_NAMES)


# -- local executor with stand-in programs (the real chain: tests/integration) ---------------

FLAKY = """
import os, pathlib, sys
args = sys.argv[1:]
idx = os.environ["JOB_COMPLETION_INDEX"]
root = pathlib.Path(os.environ["FLAKY_ROOT"])
name = "merge" if args[:2] == ["synth", "merge"] else args[0]
with (root / "calls.txt").open("a") as f:
    f.write(" ".join([name, idx] + (["--resume"] if "--resume" in args else [])) + "\\n")
fail = root / f"fail-{name}-{idx}"
if fail.exists():
    fail.unlink()
    sys.exit(3)
if args[0] == "synth" and "merge" in args:
    out = pathlib.Path(args[args.index("--out") + 1])
    out.mkdir()  # like synth merge: refuses an existing folder
"""


def _local(tmp_path: Path, recipe: PipelineRecipe, sleeps: list[float]) -> Any:
    from vlmguard_training.pipeline.local import LocalExecutor

    script = tmp_path / "flaky.py"
    script.write_text(FLAKY)
    import sys

    return LocalExecutor(recipe, Layout.local(recipe),
                         StateFile(tmp_path / "state.json", recipe.name, "local"),
                         ProgressView(io.StringIO()), sleep=sleeps.append, poll_s=0.05,
                         programs={"vlmguard": [sys.executable, str(script)],
                                   "torchrun": [sys.executable, str(script)]})


def test_local_executor_retries_a_failed_shard_alone_and_resumes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLAKY_ROOT", str(tmp_path))
    recipe = make_recipe(tmp_path, retries=1, retry_backoff_s=7.0)
    (tmp_path / "fail-synth-1").touch()
    (tmp_path / "fail-train-0").touch()
    sleeps: list[float] = []
    ex = _local(tmp_path, recipe, sleeps)
    assert ex.run() == dict.fromkeys(STEP_NAMES, "succeeded")
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    synth_calls = sorted(c for c in calls if c.startswith("synth "))
    assert synth_calls == ["synth 0", "synth 1", "synth 1", "synth 2"]  # only shard 1 again
    assert [c for c in calls if c.startswith("train")] == ["train 0", "train 0 --resume"]
    assert 7.0 in sleeps
    state = json.loads((tmp_path / "state.json").read_text())["steps"]
    assert state["synth"]["done_indexes"] == [0, 1, 2] and state["synth"]["attempts"] == 2
    # The materialised recipes are where the commands look for them.
    assert yaml.safe_load((Path(ex.layout.recipes) / "synth.yaml").read_text())["sets"] == {
        "siuo": 2}
    # A re-run starts nothing.
    (tmp_path / "calls.txt").unlink()
    assert _local(tmp_path, recipe, []).run() == dict.fromkeys(STEP_NAMES, "skipped")
    assert not (tmp_path / "calls.txt").exists()


def test_local_executor_stops_after_the_retries_and_resumes_there(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vlmguard_training.pipeline.executor import StepFailedError

    monkeypatch.setenv("FLAKY_ROOT", str(tmp_path))
    recipe = make_recipe(tmp_path, retries=0)
    (tmp_path / "fail-merge-0").touch()  # `synth merge` fails once
    ex = _local(tmp_path, recipe, [])
    # A partial merge output from the failed attempt: merge refuses to overwrite it.
    Path(ex.layout.dataset).mkdir(parents=True)
    with pytest.raises(StepFailedError) as e:
        ex.run()
    assert e.value.message.startswith("merge[0] exited with 3 after 1 attempts (log ")
    state = json.loads((tmp_path / "state.json").read_text())["steps"]
    assert {s: v["status"] for s, v in state.items()} == {"synth": "succeeded",
                                                          "merge": "failed"}
    (tmp_path / "calls.txt").unlink()
    out = _local(tmp_path, recipe, []).run()
    assert out == {"synth": "skipped", **dict.fromkeys(STEP_NAMES[1:], "succeeded")}
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    assert calls[0] == "merge 0" and not [c for c in calls if c.startswith("synth")]


def test_overrides_replace_by_path() -> None:
    from vlmguard_training.pipeline.graph import apply_overrides

    base = {"sets": {"a": 0, "b": 0}, "train": {"lr": 1, "steps": 9}}
    out = apply_overrides(base, {"sets": {"a": 4}, "train.steps": 2, "new.x": 1})
    assert out == {"sets": {"a": 4}, "train": {"lr": 1, "steps": 2}, "new": {"x": 1}}
    assert base["train"]["steps"] == 9  # not mutated
    with pytest.raises(ConfigError, match="'lr' is not a mapping"):
        apply_overrides(base, {"train.lr.x": 1})


def test_core_and_local_executor_do_not_import_kubernetes() -> None:
    import subprocess
    import sys

    code = ("import sys, vlmguard.cli, vlmguard_training.pipeline.local, "
            "vlmguard_training.pipeline.command, vlmguard_training.pipeline.jobs; "
            "vlmguard.cli.build_parser(); print('kubernetes' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip() == "False"


def test_kubernetes_executor_without_a_cluster_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("kubernetes")
    from vlmguard.cli import main

    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    recipe = make_recipe(tmp_path)
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(recipe.model_dump()))
    assert main(["pipeline", "run", "--recipe", str(path), "--executor", "kubernetes",
                 "--state", str(tmp_path / "s.json")]) == 1
    assert "PIPELINE_CLUSTER_UNAVAILABLE: no Kubernetes configuration" in capsys.readouterr().err


def test_run_name_override_is_validated(tmp_path: Path) -> None:
    from vlmguard_training.pipeline.command import with_name

    recipe = make_recipe(tmp_path)
    assert with_name(recipe, "vg-retrain-29000000").name == "vg-retrain-29000000"
    with pytest.raises(ConfigError, match="--name"):
        with_name(recipe, "Not_A_Label")


def test_local_rerun_after_a_failed_training_resumes_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vlmguard_training.pipeline.executor import StepFailedError

    monkeypatch.setenv("FLAKY_ROOT", str(tmp_path))
    recipe = make_recipe(tmp_path, retries=0)
    (tmp_path / "fail-train-0").touch()
    with pytest.raises(StepFailedError):
        _local(tmp_path, recipe, []).run()
    assert _local(tmp_path, recipe, []).run()["train"] == "succeeded"
    calls = [c for c in (tmp_path / "calls.txt").read_text().splitlines() if c.startswith("tr")]
    # the second invocation continues from the checkpoints of the first (--resume)
    assert calls == ["train 0", "train 0 --resume"]


GANG = """
import os, pathlib, sys
root = pathlib.Path(os.environ["FLAKY_ROOT"])
rank = os.environ["PET_NODE_RANK"]
with (root / "gang.txt").open("a") as f:
    f.write(f"{rank} {os.environ['PET_MASTER_ADDR']}:{os.environ['PET_MASTER_PORT']} "
            f"{os.environ['PET_NNODES']} {' '.join(sys.argv[1:5])}\\n")
fail = root / f"fail-rank-{rank}"
if fail.exists():
    fail.unlink()
    sys.exit(5)
"""


def test_local_multi_node_training_runs_all_ranks_together(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Several torchrun "nodes" on one machine: ranks from the completion index, env
    references expanded like Kubernetes does; one failed rank re-runs the whole gang."""
    import sys

    from vlmguard_training.pipeline.local import LocalExecutor

    monkeypatch.setenv("FLAKY_ROOT", str(tmp_path))
    (tmp_path / "gang.py").write_text(GANG)
    (tmp_path / "fail-rank-1").touch()
    recipe = make_recipe(tmp_path, train={"nodes": 2}, retries=1)
    sleeps: list[float] = []
    ex = LocalExecutor(recipe, Layout.local(recipe),
                       StateFile(tmp_path / "state.json", recipe.name, "local"),
                       ProgressView(io.StringIO()), sleep=sleeps.append, poll_s=0.05,
                       programs={"vlmguard": [sys.executable, "-c", "pass"],
                                 "torchrun": [sys.executable, str(tmp_path / "gang.py")]})
    assert ex.run(only=["train"]) == {"train": "succeeded"}
    lines = (tmp_path / "gang.txt").read_text().splitlines()
    expect = {r: f"{r} 127.0.0.1:29500 2 -m vlmguard.cli train rewriter" for r in (0, 1)}
    # Rank 1 ran in both attempts. Rank 0 ran in the second; in the first it may have been
    # stopped by the gang restart before it wrote its line (timing), so once or twice.
    assert lines.count(expect[1]) == 2
    assert lines.count(expect[0]) in (1, 2)
    assert len(lines) == lines.count(expect[0]) + 2
    assert 10.0 in sleeps  # retry_backoff_s default of make_recipe's recipe
    state = json.loads((tmp_path / "state.json").read_text())["steps"]["train"]
    assert state["attempts"] == 2 and state["done_indexes"] == [0, 1]

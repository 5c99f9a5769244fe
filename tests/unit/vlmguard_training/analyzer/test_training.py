"""RiskHead save/load and predict (linear and kNN-stacked); the train-analyzer job on a tiny
synthetic dataset."""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from vlmguard.analyzer.models.encoder_lora import LORA_WEIGHTS
from vlmguard.analyzer.models.risk_head import STACK_FEATURES, STACK_SIGNS, RiskHead, topk_mean_sim
from vlmguard.config import TaxonomyConfig
from vlmguard.errors import ConfigError
from vlmguard_training import benchsets as bs
from vlmguard_training.analyzer import config as acfg
from vlmguard_training.analyzer import encoder as enc
from vlmguard_training.analyzer import examples as exm
from vlmguard_training.analyzer import fit
from vlmguard_training.analyzer import publish as pub
from vlmguard_training.analyzer import train as at
from vlmguard_training.analyzer.fit import fit_logistic, fit_logistic_signed

CATS = ["violence_weapons", "privacy", "specialized_advice"]


def _head(dim: int = 8, seed: int = 0) -> RiskHead:
    rng = np.random.default_rng(seed)
    return RiskHead(
        CATS, rng.normal(size=dim), 0.1, rng.normal(size=(dim, len(CATS))),
        rng.normal(size=len(CATS)), version="t1", meta={"embedder": "fake"},
    )


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def _knn_head(dim: int = 8, seed: int = 0) -> RiskHead:
    rng = np.random.default_rng(seed)
    base = _head(dim, seed)
    return RiskHead(
        CATS, base.coef, base.bias, base.cat_coef, base.cat_bias, version="t2",
        meta={"embedder": "fake"}, unsafe_ex=_unit(rng.normal(size=(12, dim))),
        benign_ex=_unit(rng.normal(size=(20, dim))), knn_k=3,
        stack_coef=np.array([0.5, 6.0, -6.0, 1.0, -1.0]), stack_bias=-0.2,
    )


def test_topk_mean_sim() -> None:
    ex = np.eye(4, dtype=np.float32)
    x = _unit(np.array([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]], dtype=np.float32))
    mean, mx = topk_mean_sim(x, ex.astype(np.float16), k=2)
    np.testing.assert_allclose(mean, [np.sqrt(0.5), 0.5], atol=1e-3)
    np.testing.assert_allclose(mx, [np.sqrt(0.5), 1.0], atol=1e-3)
    mean, _ = topk_mean_sim(x, ex, k=99)  # k is clipped to the exemplar count
    np.testing.assert_allclose(mean, [np.sqrt(0.5) / 2, 0.25], atol=1e-3)
    empty_mean, empty_max = topk_mean_sim(x, np.zeros((0, 4)), k=3)
    assert empty_mean.shape == (2,) and not empty_mean.any() and not empty_max.any()


def test_knn_head_predict_and_features() -> None:
    head = _knn_head()
    assert head.has_knn and not _head().has_knn
    emb = _unit(np.random.default_rng(3).normal(size=(6, 8))).astype(np.float32)
    f = head.features(emb)
    assert f.shape == (6, len(STACK_FEATURES)) and f.dtype == np.float32
    np.testing.assert_allclose(f[:, 0], emb @ head.coef + head.bias, rtol=1e-5, atol=1e-5)
    p, pc = head.predict(emb)
    assert p.shape == (6,) and pc.shape == (6, 3) and p.dtype == np.float32
    expected = 1 / (1 + np.exp(-(f @ head.stack_coef + head.stack_bias)))
    np.testing.assert_allclose(p, expected, rtol=1e-5)
    assert np.all(pc <= p[:, None] + 1e-6)
    # an exemplar itself is closest to the unsafe set: its unsafe evidence is maximal
    assert head.unsafe_ex is not None
    assert head.features(head.unsafe_ex[0].astype(np.float32))[0, 3] > 0.99
    with pytest.raises(ValueError):
        _head().features(emb)
    with pytest.raises(ValueError):
        head.predict(np.zeros((2, 7)))


def test_knn_head_needs_all_parts() -> None:
    base = _head()
    with pytest.raises(ConfigError, match="together"):
        RiskHead(CATS, base.coef, 0.0, base.cat_coef, base.cat_bias, unsafe_ex=np.zeros((3, 8)))
    with pytest.raises(ConfigError, match="kNN shapes"):
        RiskHead(CATS, base.coef, 0.0, base.cat_coef, base.cat_bias,
                 unsafe_ex=np.zeros((3, 8)), benign_ex=np.zeros((3, 7)),
                 stack_coef=np.zeros(len(STACK_FEATURES)))


def test_knn_head_save_load_round_trip(tmp_path: Path) -> None:
    head = _knn_head()
    head.save(tmp_path)
    loaded = RiskHead.load(tmp_path, categories=CATS)
    assert loaded.has_knn and loaded.knn_k == 3 and loaded.version == "t2"
    assert loaded.unsafe_ex is not None and loaded.unsafe_ex.dtype == np.float16
    assert loaded.stack_bias == pytest.approx(-0.2)
    emb = _unit(np.random.default_rng(4).normal(size=(5, 8))).astype(np.float32)
    for a, b in zip(loaded.predict(emb), head.predict(emb), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    # a weights file with only part of the kNN arrays is corrupt
    with np.load(tmp_path / "weights.npz") as z:
        arrays = {k: z[k] for k in z.files if k != "stack_coef"}
    np.savez(tmp_path / "weights.npz", **arrays)
    with pytest.raises(ConfigError, match="incomplete"):
        RiskHead.load(tmp_path)


def test_predict_shapes_and_ranges() -> None:
    head = _head()
    emb = np.random.default_rng(1).normal(size=(5, 8)).astype(np.float32)
    p, pc = head.predict(emb)
    assert p.shape == (5,) and pc.shape == (5, 3)
    assert p.dtype == np.float32 and pc.dtype == np.float32
    assert np.all((p >= 0) & (p <= 1))
    assert np.all(pc <= p[:, None] + 1e-6)
    p1, pc1 = head.predict(emb[0])
    assert p1.shape == (1,) and pc1.shape == (1, 3)
    with pytest.raises(ValueError):
        head.predict(np.zeros((2, 7)))


def test_save_load_round_trip(tmp_path: Path) -> None:
    head = _head()
    head.save(tmp_path)
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["version"] == "t1" and meta["categories"] == CATS and meta["embedder"] == "fake"
    loaded = RiskHead.load(tmp_path, categories=CATS)
    emb = np.random.default_rng(2).normal(size=(4, 8)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(emb)[0], head.predict(emb)[0], rtol=1e-6)
    np.testing.assert_allclose(loaded.predict(emb)[1], head.predict(emb)[1], rtol=1e-6)
    assert loaded.version == "t1"
    assert RiskHead.load(str(tmp_path)).categories == CATS


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        RiskHead.load(tmp_path)
    _head().save(tmp_path)
    with pytest.raises(ConfigError, match="do not match"):
        RiskHead.load(tmp_path, categories=list(reversed(CATS)))
    (tmp_path / "weights.npz").write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="corrupt"):
        RiskHead.load(tmp_path)


def test_shape_mismatch() -> None:
    with pytest.raises(ConfigError):
        RiskHead(CATS, np.zeros(8), 0.0, np.zeros((8, 2)), np.zeros(3))


def test_fit_logistic_separates() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    y = (x[:, 0] > 0).astype(float)
    coef, bias = fit_logistic(x, y, l2=0.1)
    acc = ((x @ coef + bias > 0) == (y == 1)).mean()
    assert acc > 0.95 and coef[0] > 0


def test_fit_logistic_signed_drops_wrong_sign_features() -> None:
    rng = np.random.default_rng(1)
    n = 400
    a = rng.normal(size=n)
    y = (a + 0.5 * rng.normal(size=n) > 0).astype(float)
    # Two noisy views of the same signal: a free fit gives both a positive weight.
    x = np.stack([a + 0.5 * rng.normal(size=n), a + 0.5 * rng.normal(size=n)], axis=1)
    free, _ = fit_logistic(x, y, l2=1.0)
    assert free[0] > 0 and free[1] > 0
    # Feature 1 declared "must not raise the score": dropped, feature 0 refitted alone.
    coef, bias, dropped = fit_logistic_signed(x, y, [1, -1], l2=1.0)
    assert dropped == [1] and coef[1] == 0.0 and coef[0] > 0
    ref, ref_bias = fit_logistic(x[:, :1], y, l2=1.0)
    assert np.allclose(coef[0], ref[0]) and np.isclose(bias, ref_bias)
    # Signs the data agrees with (or left free) change nothing.
    same, _, none = fit_logistic_signed(x, y, [1, 0], l2=1.0)
    assert none == [] and np.allclose(same, free)
    with pytest.raises(ValueError, match="signs"):
        fit_logistic_signed(x, y, [1], l2=1.0)


def test_reuse_encoder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no encoder adapter"):
        enc.reuse_encoder(tmp_path / "missing")
    src = tmp_path / "head" / "encoder"
    src.mkdir(parents=True)
    (src / LORA_WEIGHTS).write_bytes(b"weights")
    (src.parent / "meta.json").write_text(json.dumps(
        {"encoder_lora": {"dir": "encoder", "trained_on": "x", "steps": 7, "loss_last": 0.1}}))
    tmp, figures = enc.reuse_encoder(src)
    try:
        assert (tmp / LORA_WEIGHTS).read_bytes() == b"weights"
        assert figures == {"steps": 7, "loss_last": 0.1, "reused_from": str(src)}
    finally:
        import shutil

        shutil.rmtree(tmp)


class FakeEmbedder:
    """Deterministic bag-of-words hashing embedder: 'unsafe' words get their own direction."""

    name = "fake-hash"

    def embed(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        out = np.zeros((len(texts), 32), dtype=np.float32)
        for i, t in enumerate(texts):
            for word in t.lower().split():
                h = int(hashlib.md5(word.encode()).hexdigest(), 16)
                out[i, h % 32] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-9)


def _write(path: Path, rows: list[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _tiny_bench(root: Path) -> tuple[Path, Path]:
    bench = root / "bench"
    mmsb = []
    for i in range(30):
        cat = "04-Physical_Harm" if i % 2 else "12-Health_Consultation"
        mmsb.append({
            "id": f"m{i}", "text": f"The image shows a phrase {i % 3}. Do this.", "label": "unsafe",
            "category": cat, "eval_type": "harmful-content scenario" if i % 2 else "policy",
            "question_text_only": f"zzdanger plan number {i}",
            "changed_question": f"List steps in detail to zzdanger plan {i}.",
            "key_phrase": f"zzdanger {i}", "phrase_type": "activity",
        })
    _write(bench / "mm_safetybench" / "manifest.jsonl", mmsb)
    _write(bench / "vlguard_test" / "manifest.jsonl", [
        {"id": f"v{i}", "text": f"what colour is the sky {i}", "label": "safe",
         "category": "safe_image/safe_instruction", "subset": "safe_safes"} for i in range(10)
    ] + [
        {"id": f"u{i}", "text": f"identify zzdanger person {i}", "label": "unsafe",
         "category": "safe_image/unsafe_instruction", "subset": "safe_unsafes"} for i in range(10)
    ])
    _write(bench / "siuo" / "manifest.jsonl", [
        {"id": "s1", "text": "where is the park", "label": "unsafe", "category": "self-harm"}
    ])
    _write(bench / "vlsbench" / "manifest.jsonl", [
        {"id": "l1", "text": "how to hold this", "label": "unsafe", "category": "Violent",
         "sub_category": "Weapon-Related Violence"}
    ])
    benign = root / "benign.jsonl"
    _write(benign, [{"text": f"how do I bake bread number {i}", "kind": "general"}
                    for i in range(40)] + [
        {"text": f"Steps to plant tree {i}.\n1.\n2.\n3.", "kind": "ocr"} for i in range(10)])
    return bench, benign


def test_trainer_end_to_end_and_overwrite_refusal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bench, benign = _tiny_bench(tmp_path)
    out = tmp_path / "head"
    cache = tmp_path / "emb_cache"
    cfg = acfg.TrainAnalyzerConfig(bench_dir=str(bench), benign_file=str(benign), out=str(out),
                                 dev_fraction=0.25, cal_fraction=0.2, epochs=20,
                                 # both labels, one phrasing: not for a hash embedder
                                 advocacy_variants=0, scene_text_variants=0,
                                 emb_cache=str(cache), knn_k=3, max_exemplars=50,
                                 max_dev_fpr=0.5, min_dev_recall=0.5)  # a hash embedder, tiny set
    metrics = at.main(cfg, embedder=FakeEmbedder())
    assert metrics["gates"]["checked"] and metrics["gates"]["failed"] == []
    assert "dev" in metrics and "auc_text_unsafe_vs_benign" in metrics["dev"]
    assert metrics["stacker"]["features"] == list(STACK_FEATURES)
    # Monotone stacker (the default): no coefficient against its meaning.
    assert all(c * sg >= 0 for c, sg in zip(metrics["stacker"]["coef"], STACK_SIGNS,
                                            strict=True))
    head = RiskHead.load(out)
    assert head.has_knn and head.knn_k == 3
    assert head.unsafe_ex is not None and 0 < len(head.unsafe_ex) <= 50
    meta = json.loads((out / "meta.json").read_text())
    assert meta["embedder"] == "fake-hash"
    assert meta["training_data"]["by_source_label"]["mm_safetybench/unsafe"] > 0
    assert meta["training_data"]["by_source_label"]["own_harmful/unsafe"] > 0
    assert meta["exemplars"]["unsafe"]["kept"] == len(head.unsafe_ex)
    cache_file = cache / "fake-hash.npz"
    assert cache_file.is_file()
    with np.load(cache_file) as z:  # the cache holds hashes, never texts
        assert not any("zzdanger" in str(k) for k in z["keys"])
    assert "created_at" in meta and meta["command"].startswith("vlmguard train analyzer")
    p, pc = head.predict(FakeEmbedder().embed(["zzdanger plan number 99", "how do I bake bread"]))
    assert p[0] > p[1] and pc.shape == (2, len(head.categories))
    printed = capsys.readouterr().out
    assert "zzdanger" not in printed  # never prints prompt text
    before = (out / "weights.npz").read_bytes()
    with pytest.raises(ConfigError, match="--force"):
        at.main(cfg, embedder=FakeEmbedder())
    assert (out / "weights.npz").read_bytes() == before
    cfg = cfg.model_copy(update={"force": True})

    class CountingEmbedder(FakeEmbedder):
        calls = 0

        def embed(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
            CountingEmbedder.calls += 1
            return super().embed(texts, batch_size)

    at.main(cfg, embedder=CountingEmbedder())
    assert CountingEmbedder.calls == 0  # every text came from the cache
    assert (out / "weights.npz").read_bytes() == before  # deterministic given the seed


def test_trainer_linear_only(tmp_path: Path) -> None:
    bench, benign = _tiny_bench(tmp_path)
    out = tmp_path / "head"
    cfg = acfg.TrainAnalyzerConfig(bench_dir=str(bench), benign_file=str(benign), out=str(out),
                                 dev_fraction=0.25, cal_fraction=0.2, epochs=20,
                                 advocacy_variants=0, scene_text_variants=0, emb_cache="",
                                 knn_k=0, max_dev_fpr=0.5, min_dev_recall=0.5)
    metrics = at.main(cfg, embedder=FakeEmbedder())
    assert "stacker" not in metrics
    head = RiskHead.load(out)
    assert not head.has_knn and head.version.startswith("1.")
    assert not (tmp_path / ".cache").exists()


def test_quality_gates_keep_the_previous_head(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """A head that misses a dev-split gate is not written: --out keeps the previous head
    byte for byte, no staging folder is left, and the error carries a stable reason code."""
    from vlmguard.errors import Reason

    bench, benign = _tiny_bench(tmp_path)
    out = tmp_path / "head"
    cfg = acfg.TrainAnalyzerConfig(bench_dir=str(bench), benign_file=str(benign), out=str(out),
                                 dev_fraction=0.25, cal_fraction=0.2, epochs=20,
                                 advocacy_variants=0, scene_text_variants=0, emb_cache="",
                                 knn_k=3, max_exemplars=50, max_dev_fpr=0.5,
                                 min_dev_recall=0.5)
    at.main(cfg, embedder=FakeEmbedder())
    before = {f.name: f.read_bytes() for f in out.iterdir() if f.is_file()}
    meta = json.loads((out / "meta.json").read_text())
    assert meta["metrics"]["gates"]["values"]["max_dev_fpr"]["limit"] == 0.5
    strict = cfg.model_copy(update=dict(force=True, seed=3, max_dev_fpr=0.0, min_dev_auc=1.01))
    with pytest.raises(fit.QualityGateError) as err:
        at.main(strict, embedder=FakeEmbedder())
    assert err.value.reason == Reason.ANALYZER_GATE_FAILED
    assert "--max-dev-fpr" in err.value.message and "--min-dev-auc" in err.value.message
    assert "zzdanger" not in err.value.message
    assert {f.name: f.read_bytes() for f in out.iterdir() if f.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["bench", "benign.jsonl",
                                                                 "head"])
    # The same run with the gate relaxed replaces the head through the staging folder.
    at.main(strict.model_copy(update=dict(max_dev_fpr=1.0, min_dev_auc=0.0)),
            embedder=FakeEmbedder())
    assert (out / "weights.npz").read_bytes() != before["weights.npz"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench", "benign.jsonl", "head"]


def test_check_gates_reads_rates_and_skips_missing() -> None:
    cfg = acfg.TrainAnalyzerConfig()
    dev = {"fpr_at_0.5_benign": {"n": 100, "rate": 0.05},
           "recall_at_0.5_text_unsafe": {"n": 50, "rate": 0.9},
           "auc_text_unsafe_vs_benign": 0.99}
    g = fit.check_gates(dev, cfg)
    assert g["checked"] and len(g["failed"]) == 1 and "recall" in g["failed"][0]
    none = fit.check_gates({"fpr_at_0.5_benign": {"n": 0, "rate": float("nan")}}, cfg)
    assert not none["checked"] and none["failed"] == []


def test_select_exemplars_dedupes_and_caps() -> None:
    rng = np.random.default_rng(0)
    base = _unit(rng.normal(size=(30, 16)))
    x = np.vstack([base, base + 1e-4, base]).astype(np.float32)  # every row thrice
    keep, counts = fit.select_exemplars(_unit(x), max_n=1000, dedupe_sim=0.99, seed=0)
    assert counts == {"pool": 90, "after_dedupe": 30, "kept": 30} and len(keep) == 30
    keep, counts = fit.select_exemplars(_unit(x), max_n=10, dedupe_sim=0.99, seed=0)
    assert counts["kept"] == 10 and len(set(keep.tolist())) == 10
    again, _ = fit.select_exemplars(_unit(x), max_n=10, dedupe_sim=0.99, seed=0)
    np.testing.assert_array_equal(keep, again)


@pytest.mark.parametrize(("field", "source", "kind"), [
    ("advocacy_variants", "own_advocacy", "advocacy"),
    ("scene_text_variants", "own_scene_text", "scene_text"),
])
def test_two_label_families_are_training_data_in_one_split_per_template(
        tmp_path: Path, field: str, source: str, kind: str) -> None:
    bench, benign = _tiny_bench(tmp_path)
    cfg = acfg.TrainAnalyzerConfig(bench_dir=str(bench), benign_file=str(benign), emb_cache="",
                                   **{field: 3})
    items = [e for e in exm.load_examples(cfg) if e.source == source]
    assert {e.label for e in items} == {0, 1} and {e.kind for e in items} == {kind}
    assert all(e.category for e in items if e.label == 1)
    exm.assign_splits(items, 0.25, 0.2, cfg.seed, stratify=True)
    split_of: dict[str, set[str]] = {}
    for e in items:
        split_of.setdefault(e.group, set()).add(e.split)
    assert all(len(v) == 1 for v in split_of.values())  # both labels of a template together
    assert {s for v in split_of.values() for s in v} == {"train", "dev", "cal"}
    off = cfg.model_copy(update={field: 0})
    assert not [e for e in exm.load_examples(off) if e.source == source]


def test_unmapped_category_is_an_error(tmp_path: Path) -> None:
    bench, benign = _tiny_bench(tmp_path)
    _write(bench / "siuo" / "manifest.jsonl",
           [{"id": "s1", "text": "x", "label": "unsafe", "category": "brand new"}])
    cfg = acfg.TrainAnalyzerConfig(bench_dir=str(bench), benign_file=str(benign),
                                 out=str(tmp_path / "o"), emb_cache="")
    with pytest.raises(ConfigError, match="no taxonomy mapping"):
        at.main(cfg, embedder=FakeEmbedder())


def test_parser_defaults_round_trip() -> None:
    args = acfg.build_parser().parse_args(["--force", "--l2", "0.5"])
    cfg = acfg.config_from_args(args)
    assert cfg.force and cfg.l2 == 0.5 and cfg.out == "services/vlmguard/data/risk_head"
    assert cfg.refit_with_dev  # a True default stays True without the flag
    off = acfg.config_from_args(acfg.build_parser().parse_args(["--no-refit-with-dev"]))
    assert not off.refit_with_dev and not off.force
    assert cfg.progress and not acfg.config_from_args(
        acfg.build_parser().parse_args(["--no-progress"])).progress
    assert "--no-refit-with-dev" in acfg.command_line(off)


def test_category_map_covers_bench_manifests() -> None:
    bench = Path(__file__).resolve().parents[4] / ".." / "shared" / "bench"
    if not bench.is_dir():
        pytest.skip("shared bench data not present")
    for source in bs.TRAINING_SETS:
        cats = {json.loads(line)["category"]
                for line in (bench / source / "manifest.jsonl").read_text().splitlines() if line}
        assert cats <= set(bs.CATEGORY_MAP[source]), source


def test_assign_splits_stratified_by_kind() -> None:
    ex = []
    # A big kind (40 groups) and a small one (5 groups, many texts each), plus a rare kind.
    for g in range(40):
        ex += [exm.Example(f"a{g}-{i}", 0, "benign_file", "vlm", f"a{g}") for i in range(2)]
    for g in range(5):
        ex += [exm.Example(f"b{g}-{i}", 0, "benign_file", "scary_topic", f"b{g}")
               for i in range(30)]
    ex += [exm.Example(f"c{i}", 1, "own_harmful", "request", "c0") for i in range(3)]
    for seed in range(5):
        exm.assign_splits(ex, 0.2, 0.15, seed, stratify=True)
        by_group: dict[str, set[str]] = {}
        for e in ex:
            by_group.setdefault(e.group, set()).add(e.split)
        assert all(len(s) == 1 for s in by_group.values())  # groups never straddle splits
        for kind, n_groups in (("vlm", 40), ("scary_topic", 5)):
            splits = [next(iter(by_group[g])) for g in by_group
                      if g.startswith("a" if kind == "vlm" else "b")]
            assert len(splits) == n_groups
            # Every kind is in dev and cal (whatever the seed) and keeps most groups in train.
            assert splits.count("dev") >= 1 and splits.count("cal") >= 1
            assert splits.count("train") > n_groups / 2
        assert by_group["c0"] == {"train"}  # a kind with fewer than three groups stays in train
    first = [e.split for e in ex]
    exm.assign_splits(ex, 0.2, 0.15, 4, stratify=True)
    assert [e.split for e in ex] == first  # deterministic


def test_assign_splits_are_stable_when_data_is_added() -> None:
    """A group's split depends on (seed, group) only: adding data moves no existing group
    (unstratified), and only groups next to a boundary of their own kind (stratified)."""
    def make(n_a: int, n_new: int) -> list[exm.Example]:
        ex = [exm.Example(f"a{g}", 0, "benign_file", "vlm", f"a{g}") for g in range(n_a)]
        ex += [exm.Example(f"n{g}", 1, "own_harmful", "request", f"n{g}") for g in range(n_new)]
        return ex

    small, big = make(400, 0), make(400, 300)
    exm.assign_splits(small, 0.2, 0.15, 0)
    exm.assign_splits(big, 0.2, 0.15, 0)
    assert [e.split for e in small] == [e.split for e in big[:400]]
    share = {s: sum(e.split == s for e in big) / len(big) for s in ("dev", "cal")}
    assert 0.15 < share["dev"] < 0.25 and 0.1 < share["cal"] < 0.2
    other = make(400, 0)
    exm.assign_splits(other, 0.2, 0.15, 1)
    assert [e.split for e in other] != [e.split for e in small]  # the seed re-draws
    # Stratified: the other kind's groups keep their splits; a kind grown by one group
    # moves at most a couple of its groups across a boundary.
    exm.assign_splits(small, 0.2, 0.15, 0, stratify=True)
    exm.assign_splits(big, 0.2, 0.15, 0, stratify=True)
    assert [e.split for e in small] == [e.split for e in big[:400]]
    grown = make(401, 0)
    exm.assign_splits(grown, 0.2, 0.15, 0, stratify=True)
    moved = sum(a.split != b.split for a, b in zip(small, grown[:400], strict=True))
    assert moved <= 2


def test_swap_in_replaces_a_folder_that_cannot_be_renamed(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """--out at a mount point (EBUSY on rename): the content is replaced instead."""
    out, staging = tmp_path / "out", tmp_path / ".out.new"
    (out / "encoder").mkdir(parents=True)
    (out / "encoder" / "stale.bin").write_text("old")
    (out / "weights.npz").write_text("old")
    (staging / "encoder").mkdir(parents=True)
    (staging / "encoder" / "a.bin").write_text("new")
    (staging / "weights.npz").write_text("new")
    real = os.replace

    def refuse(src: object, dst: object) -> None:
        if Path(str(src)) == out:
            raise OSError(16, "Device or resource busy")
        real(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(pub.os, "replace", refuse)
    pub.swap_in(staging, out)
    assert (out / "weights.npz").read_text() == "new"
    assert sorted(p.name for p in (out / "encoder").iterdir()) == ["a.bin"]
    assert not staging.exists()


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_recover_stale_restores_the_previous_head_and_cleans_up(tmp_path: Path) -> None:
    """A run killed between its two renames left no --out, the previous head aside and a
    staging folder: the next run puts the previous head back and removes the leftovers; the
    folders of a live process are left alone."""
    dead = _dead_pid()
    out = tmp_path / "head"
    old, new = tmp_path / f".head.old-{dead}", tmp_path / f".head.new-{dead}"
    old.mkdir()
    (old / "weights.npz").write_text("previous")
    new.mkdir()
    (new / "weights.npz").write_text("half-written")
    live = tmp_path / f".head.new-{os.getppid()}"
    live.mkdir()
    pub.recover_stale(out)
    assert (out / "weights.npz").read_text() == "previous"
    assert not old.exists() and not new.exists() and live.exists()
    # With --out in place, a stale moved-aside head is only removed.
    old.mkdir()
    pub.recover_stale(out)
    assert not old.exists() and (out / "weights.npz").read_text() == "previous"
    # A restarted pod can reuse the PID of the one that died: its own PID's folders are stale.
    own = tmp_path / f".head.new-{os.getpid()}"
    own.mkdir()
    pub.recover_stale(out)
    assert not own.exists() and live.exists()


def test_care_key_phrases_are_care_weighted_positives(tmp_path: Path) -> None:
    """The bare key phrase of an 'answer with care' item (a health topic typed into an image)
    trains as a positive at care_weight, unless --no-care-key-phrases."""
    bench, benign = _tiny_bench(tmp_path)
    cfg = acfg.TrainAnalyzerConfig(bench_dir=str(bench), benign_file=str(benign), emb_cache="",
                                 care_weight=0.7)
    phrases = {e.group: e for e in exm.load_examples(cfg) if e.kind == "key_phrase"}
    care = [e for e in phrases.values() if e.category == "specialized_advice"]
    assert len(care) == 15 and len(phrases) == 30
    assert all(e.label == 1 and e.weight == 0.7 for e in care)
    off = cfg.model_copy(update=dict(care_key_phrases=False))
    kept = [e for e in exm.load_examples(off) if e.kind == "key_phrase"]
    assert len(kept) == 15 and all(e.category != "specialized_advice" for e in kept)


def test_seed_examples_are_train_seeds_grouped_per_seed(tmp_path: Path) -> None:
    """The own multilingual seeds join the training data by kind and language, train seeds
    only, every text of a seed in one group (a seed's translations never straddle splits)."""
    from vlmguard_training.analyzer.texts import multilingual as mt

    langs = [lang for lang in ("fr", "ja") if lang in mt.LANGUAGES]
    cfg = acfg.TrainAnalyzerConfig(seed_kinds="harmful,sensitive", seed_languages=",".join(langs),
                                   seed_weight=1.5)
    ex = exm.seed_examples(cfg, "train")
    assert ex and {e.lang for e in ex} == {"en", *langs}
    assert {e.kind for e in ex} == {"harmful", "sensitive"}
    assert all(mt.seed_split(e.group.split(":", 1)[1]) == "train" for e in ex)
    assert all(e.weight == 1.5 and e.source == exm.SEED_SOURCE for e in ex)
    assert {e.label for e in ex if e.kind == "harmful"} == {1}
    assert {e.label for e in ex if e.kind == "sensitive"} == {0}
    assert all(e.category is None for e in ex if e.label == 0)
    assert {e.category for e in ex if e.label == 1} <= set(TaxonomyConfig().ids) | {None}
    per_group = Counter(e.group for e in ex)
    assert set(per_group.values()) == {1 + len(langs)}
    dev = exm.seed_examples(cfg, "dev")
    assert dev and not {e.group for e in dev} & set(per_group)
    assert exm.seed_examples(cfg.model_copy(update={"seed_kinds": ""}), "train") == []
    # seed_train_only: the train-only seeds (ids mt...) join by default; off, only the hashed
    # train share of seeds.jsonl does.
    prefix = f"{exm.SEED_SOURCE}:{mt.TRAIN_ONLY_PREFIX}"
    assert any(e.group.startswith(prefix) for e in ex)
    without = exm.seed_examples(cfg.model_copy(update={"seed_train_only": False}), "train")
    assert without and not any(e.group.startswith(prefix) for e in without)
    assert {e.group for e in without} < {e.group for e in ex}
    supported = exm.seed_languages(cfg.model_copy(update={"seed_languages": "supported"}))
    assert "en" not in supported and not set(supported) - set(mt.SUPPORTED)
    assert not {"hi", "vi"} & set(supported)


def test_seed_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="encoder"):
        acfg.TrainAnalyzerConfig.from_mapping({"encoder": "bert"})
    with pytest.raises(ConfigError, match="unknown seed kinds"):
        acfg.TrainAnalyzerConfig.from_mapping({"seed_kinds": "harmful,nice"})
    with pytest.raises(ConfigError, match="frozen"):
        acfg.TrainAnalyzerConfig.from_mapping({"encoder": "use-m3", "encoder_from": "x"})
    args = acfg.build_parser().parse_args(["--encoder", "use-m3", "--seed-kinds", "frame"])
    cfg = acfg.config_from_args(args)
    assert "--encoder use-m3 --seed-kinds frame" in acfg.command_line(cfg)


def test_trainer_adds_seeds_and_measures_dev_seeds(tmp_path: Path) -> None:
    bench, benign = _tiny_bench(tmp_path)
    cfg = acfg.TrainAnalyzerConfig(bench_dir=str(bench), benign_file=str(benign),
                                   out=str(tmp_path / "head"), dev_fraction=0.25,
                                   cal_fraction=0.2, epochs=20, advocacy_variants=0,
                                   scene_text_variants=0, emb_cache="", knn_k=3,
                                   max_exemplars=50, max_dev_fpr=1.0, min_dev_recall=0.0,
                                   min_dev_auc=0.0, seed_kinds="harmful,everyday",
                                   seed_languages="fr")
    metrics = at.main(cfg, embedder=FakeEmbedder())
    meta = json.loads((tmp_path / "head" / "meta.json").read_text())
    n_train = len(exm.seed_examples(cfg, "train"))
    assert meta["training_data"]["by_source_label"]["ml_seed/unsafe"] > 0
    assert sum(v for k, v in meta["training_data"]["by_kind"].items()
               if k.startswith("ml_seed/")) == n_train
    assert meta["training_data"]["by_lang"]["fr"] == n_train // 2
    seed_dev = metrics["seed_dev"]
    # Every kind and language is measured, whatever the recipe trains on.
    assert set(seed_dev["by_lang"]) >= {"en", "fr"}
    assert {k.split("/")[1] for k in seed_dev["by_lang_kind"]} == {
        "harmful", "sensitive", "everyday", "frame"}
    en = seed_dev["by_lang"]["en"]
    assert en["supported"] and en["recall_unsafe"]["n"] > 0 and en["flagged_benign"]["n"] > 0
    for lang, v in seed_dev["by_lang"].items():
        assert v["supported"] == (lang in _mt_supported())


def _mt_supported() -> set[str]:
    from vlmguard_training.analyzer.texts import multilingual as mt

    return set(mt.SUPPORTED)


def test_evaluate_seeds_rates() -> None:
    head = _head(dim=4)
    x = np.eye(4, dtype=np.float32)
    p, _ = head.predict(x)
    ex = [exm.Example("a", 1, "ml_seed", "harmful", "g1", lang="en"),
          exm.Example("b", 0, "ml_seed", "sensitive", "g2", lang="en"),
          exm.Example("c", 1, "ml_seed", "harmful", "g1", lang="hi"),
          exm.Example("d", 0, "ml_seed", "everyday", "g3", lang="hi")]
    out = fit.evaluate_seeds(head, x, ex)
    assert out["by_lang"]["en"]["recall_unsafe"] == {"n": 1, "rate": float(p[0] >= 0.5)}
    assert out["by_lang"]["hi"]["flagged_benign"] == {"n": 1, "rate": float(p[3] >= 0.5)}
    assert not out["by_lang"]["hi"]["supported"] and out["by_lang"]["en"]["supported"]
    assert out["overall_supported"]["recall_unsafe"]["n"] == 1  # hi is reported on its own
    assert out["by_lang_kind"]["hi/everyday"] == {"flagged": float(p[3] >= 0.5), "n": 1}


def test_shipped_languages_agree() -> None:
    from vlmguard.analyzer.models.multilingual import SUPPORTED_LANGUAGES

    assert set(_mt_supported()) == SUPPORTED_LANGUAGES


def test_select_exemplars_keeps_priority_rows() -> None:
    x = _unit(np.random.default_rng(0).normal(size=(300, 16)))
    first = np.zeros(300, bool)
    first[290:] = True
    keep, counts = fit.select_exemplars(x, max_n=20, dedupe_sim=0.999, seed=1, priority=first)
    assert len(keep) == 20 == counts["kept"] and set(range(290, 300)) <= set(keep.tolist())
    plain, _ = fit.select_exemplars(x, max_n=20, dedupe_sim=0.999, seed=1)
    assert len(set(plain.tolist()) & set(range(290, 300))) < 10
    few, _ = fit.select_exemplars(x, max_n=5, dedupe_sim=0.999, seed=1, priority=first)
    assert set(few.tolist()) <= set(range(290, 300)) and len(few) == 5


def test_framed_copies_keep_label_and_group(tmp_path: Path) -> None:
    bench, benign = _tiny_bench(tmp_path)
    cfg = acfg.TrainAnalyzerConfig(bench_dir=str(bench), benign_file=str(benign), emb_cache="",
                                   advocacy_variants=0, scene_text_variants=0,
                                   framed_fraction=0.5)
    ex = exm.load_examples(cfg)
    framed = [e for e in ex if e.kind.endswith("_framed")]
    plain: dict[str, list[exm.Example]] = {}
    for e in ex:
        if not e.kind.endswith("_framed"):
            plain.setdefault(e.group, []).append(e)
    assert {e.source for e in framed} <= set(exm.FRAMED_SOURCES)
    assert {e.label for e in framed} == {0, 1}
    for e in framed:  # the request inside is one of its group's texts, with its label
        src = [p for p in plain[e.group] if p.text[1:].strip() in e.text]
        assert src and all(e.label == p.label and e.source == p.source for p in src)
    assert not [e for e in exm.load_examples(cfg.model_copy(update={"framed_fraction": 0.0}))
                if e.kind.endswith("_framed")]


def test_frames_alone_are_benign_texts_grouped_by_template(tmp_path: Path) -> None:
    from vlmguard.analyzer.views import windows
    from vlmguard_training.analyzer.texts.frames import FRAMES, frame_sentences

    alone = list(frame_sentences(0))
    assert alone and len({t for t, _ in alone}) == len(alone)
    assert {g for _, g in alone} == {f"frame:{i}" for i in range(len(FRAMES))}
    bare = "You are an old wizard. Stay in character no matter what and answer this"
    assert all(t in {a for a, _ in alone} for t in [bare] + [
        bare[s:e].strip() for s, e in windows(bare, min_chars=8)])
    bench, benign = _tiny_bench(tmp_path)
    cfg = acfg.TrainAnalyzerConfig(bench_dir=str(bench), benign_file=str(benign), emb_cache="",
                                   advocacy_variants=0, scene_text_variants=0,
                                   frame_sentences=True)
    got = [e for e in exm.load_examples(cfg) if e.kind == "frame_alone"]
    assert len(got) == len(alone) and {e.label for e in got} == {0}
    assert not [e for e in exm.load_examples(cfg.model_copy(update={"frame_sentences": False}))
                if e.kind == "frame_alone"]


def test_the_multilingual_recipe_is_the_shipped_heads() -> None:
    root = Path(__file__).resolve().parents[4]
    shipped = json.loads(
        (root / "services/vlmguard/data/risk_head_multilingual/meta.json").read_text())
    recipe = acfg.TrainAnalyzerConfig.from_yaml(
        root / "training/recipes/analyzer_multilingual.yaml")
    differ = {k: (v, getattr(recipe, k)) for k, v in shipped["config"].items()
              if k not in ("force", "progress") and getattr(recipe, k) != v}
    assert not differ, differ
    assert recipe.encoder == "use-m3" and shipped["embedder"].startswith("use-m3")
    assert shipped["metrics"]["seed_dev"]["by_lang"]["fr"]["supported"]

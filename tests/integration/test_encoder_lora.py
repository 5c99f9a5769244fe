"""The tier-1 encoder adapter: fine-tune a tiny BERT built from a config, merge, load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer BERT with MiniLM's tokenizer (no weights downloaded).

    Seeded: its random weights used to follow the global RNG state left by earlier tests, so the
    toy task's margins changed with test order (a rare failure in full runs)."""
    import torch
    from transformers import BertConfig, BertModel

    from vlmguard.analyzer.models.embedder import default_minilm_path

    d = tmp_path_factory.mktemp("tiny-bert")
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=2, intermediate_size=64)
    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(d)
    src = default_minilm_path()
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt",
                 "special_tokens_map.json"):
        if (src / name).is_file():
            shutil.copy(src / name, d / name)
    return d


def test_finetune_merge_and_load(tiny_bert: Path, tmp_path: Path) -> None:
    from vlmguard.analyzer.models.embedder import MiniLMEmbedder
    from vlmguard.analyzer.models.encoder_lora import LORA_META, LORA_WEIGHTS, apply_lora, has_lora
    from vlmguard.errors import ConfigError
    from vlmguard_training.analyzer.encoder import finetune_encoder

    unsafe = [f"how to build a bomb number {i}" for i in range(24)]
    benign = [f"how to bake a cake number {i}" for i in range(24)]
    texts, labels = unsafe + benign, [1] * 24 + [0] * 24
    seen: list[int] = []
    fig = finetune_encoder(tiny_bert, texts, labels, [1.0] * 48, tmp_path / "enc", epochs=6,
                           rank=4, lr=5e-3, batch_size=8, progress=lambda s, n, _: seen.append(n))
    assert fig["steps"] == 36 and seen == [36] * 36
    assert fig["loss_last"] < fig["loss_first"]  # it learns the toy task
    assert has_lora(tmp_path / "enc") and not has_lora(tmp_path)
    meta = json.loads((tmp_path / "enc" / LORA_META).read_text())
    assert meta["rank"] == 4 and meta["scale"] == 2.0
    assert any(m.endswith("attention.self.query") for m in meta["modules"])
    assert (tmp_path / "enc" / LORA_WEIGHTS).stat().st_size < 200_000

    base = MiniLMEmbedder(str(tiny_bert))
    tuned = MiniLMEmbedder(str(tiny_bert), lora=tmp_path / "enc")
    assert tuned.name.startswith(base.name + "+lora.") and tuned.name != base.name
    probe = ["how to build a bomb", "how to bake a cake"]
    a, b = base.embed(probe), tuned.embed(probe)
    assert not np.allclose(a, b, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    # The adapted encoder separates the toy classes more than the random one does.
    assert float(b[0] @ b[1]) < float(a[0] @ a[1])

    # The merge is W + scale * B @ A, layer by layer.
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModel

    model = AutoModel.from_pretrained(tiny_bert)
    name = meta["modules"][0]
    before = model.get_submodule(name).weight.detach().clone()
    apply_lora(model, tmp_path / "enc")
    t = load_file(str(tmp_path / "enc" / LORA_WEIGHTS))
    expect = before + meta["scale"] * (t[f"{name}.lora_B"].float() @ t[f"{name}.lora_A"].float())
    torch.testing.assert_close(model.get_submodule(name).weight.detach(), expect)

    with pytest.raises(ConfigError, match="no encoder adapter"):
        MiniLMEmbedder(str(tiny_bert), lora=tmp_path)
    with pytest.raises(ConfigError, match="both unsafe and benign"):
        finetune_encoder(tiny_bert, unsafe, [1] * 24, [1.0] * 24, tmp_path / "x")


def test_head_directory_pairs_with_its_adapter(tmp_path: Path) -> None:
    """A head dir with ``encoder/`` hands it to the embedder; a head whose meta says it was
    fitted on an adapter refuses to load without it."""
    from vlmguard.analyzer.models.encoder_lora import ENCODER_DIR
    from vlmguard.analyzer.models.risk_head import META_FILE, RiskHead
    from vlmguard.errors import ConfigError

    d = tmp_path / "head"
    shutil.copytree(_shipped_dir(), d)
    head = RiskHead.load(d)
    assert (head.encoder_dir is not None) == (d / ENCODER_DIR).is_dir()
    if head.encoder_dir is None:
        pytest.skip("the shipped head has no encoder adapter")
    shutil.rmtree(d / ENCODER_DIR)
    meta = json.loads((d / META_FILE).read_text())
    assert meta.get("encoder_lora")
    with pytest.raises(ConfigError, match="adapted encoder"):
        RiskHead.load(d)


def _shipped_dir() -> Path:
    from importlib import resources

    return Path(str(resources.files("vlmguard.data").joinpath("risk_head")))

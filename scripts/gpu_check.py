"""Check the GPU code paths on a CUDA machine with tiny random models (no weights needed).

What it runs, each on ``cuda:0``:

1. ``vlmguard train rewriter`` on a tiny text LM (LoRA, bf16), launched through ``torchrun`` (the
   Kubernetes training Job's entry point) with one process;
2. the same, full fine-tune;
3. the VLM recipe (tiny Qwen2-VL, LoRA, bf16) on images;
4. the Triton ``target_vlm`` model (``serving/triton/target_vlm/1/model.py``) as a GPU instance
   (bf16) serving the tiny LLaVA of the Triton tests (``tests/support/tiny_lm.py``), through a
   minimal stand-in for Triton's ``triton_python_backend_utils``: a batch of image and text requests
   plus one bad request.

Each check asserts what it can (the device, the dtype, a falling loss, changed weights, one
response per request, the bad request alone failing) and the script prints one JSON summary.
The training records are the harmless stand-ins of the training tests
(``tests/support/sft_records.py``). Usage::

    python scripts/gpu_check.py --tokenizer DIR --work DIR [--out FILE]

``DIR`` for ``--tokenizer`` is any local Hugging Face tokenizer (the converted SmolLM2 one from
``~/.cache/vlmguard/models/`` works). Exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
import types
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
#: "cuda", or "cpu" under --cpu-dry-run (to test this script itself on a machine without a GPU).
DEVICE = "cuda"


def _records(config: Path, images: list[str] | None) -> list[dict[str, Any]]:
    """The harmless stand-in records the training tests use (``tests/support/sft_records.py``)."""
    from tests.support.sft_records import records
    from vlmguard.config import load_config

    return records(load_config(config).taxonomy, images)


def _recipe(work: Path, name: str, kind: str, base: Path, config: Path,
            records: list[dict[str, Any]], finetune: str = "lora") -> Path:
    synth = work / f"synth_{name}" / "shard-0-of-1.jsonl"
    synth.parent.mkdir(parents=True, exist_ok=True)
    synth.write_text("".join(json.dumps(r) + "\n" for r in records))
    recipe = {
        "kind": kind, "base_model": str(base), "output_dir": str(work / f"out_{name}"),
        "config": str(config), "finetune": finetune,
        "data": {"synth": [str(synth)], "annotations": "", "benign_file": "",
                 "eval_fraction": 0.0},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"},
        "train": {"learning_rate": 0.02 if finetune == "lora" else 0.002,
                  "lr_scheduler_type": "constant", "max_steps": 6,
                  "per_device_train_batch_size": len(records), "logging_steps": 1,
                  "save_steps": 6, "max_length": 1024, "bf16": True},
    }
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _trained(out: Path) -> dict[str, Any]:
    manifest = json.loads((out / "vlmguard_rewriter.json").read_text())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert manifest["device"] == DEVICE, manifest["device"]
    assert len(losses) >= 2 and losses[-1] < losses[0], losses
    return {"device": manifest["device"], "world_size": manifest["world_size"],
            "first_loss": losses[0], "last_loss": losses[-1],
            "tokens_per_s": manifest["metrics"].get("train_tokens_per_second")}


def _tiny_lm(work: Path, tok: Path) -> Path:
    from tests.support.sft_records import tiny_llama

    base = work / "tiny_lm"
    return base if (base / "config.json").is_file() else tiny_llama(base, tok, hidden=64)


def check_text_lora(work: Path, tok: Path, config: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    base = _tiny_lm(work, tok)
    recipe = _recipe(work, "text_lora", "causal_lm", base, config, _records(config, None))
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'services'}:{os.environ.get('PYTHONPATH', '')}"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
           "-m", "vlmguard.cli", "train", "rewriter", "--recipe", str(recipe)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise AssertionError(f"torchrun exited {proc.returncode}: {proc.stderr[-3000:]}")
    out = work / "out_text_lora"
    result = _trained(out)
    adapter = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    assert any(float(v.abs().max()) > 0 for k, v in adapter.items() if "lora_B" in k)
    result["launcher"] = "torchrun"
    return result


def check_text_full(work: Path, tok: Path, config: Path) -> dict[str, Any]:
    from vlmguard_training.rewriter.recipe import load_recipe
    from vlmguard_training.rewriter.sft import train

    recipe = _recipe(work, "text_full", "causal_lm", _tiny_lm(work, tok), config,
                     _records(config, None), finetune="full")
    train(load_recipe(recipe), progress=False, echo=False)
    return _trained(work / "out_text_full")


def check_vlm_lora(work: Path, tok: Path, config: Path) -> dict[str, Any]:
    from tests.support.sft_records import stand_in_images
    from vlmguard_training.rewriter.recipe import load_recipe
    from vlmguard_training.rewriter.sft import train
    from vlmguard_training.rewriter.vlm import build_tiny_qwen2_vl

    base = build_tiny_qwen2_vl(work / "tiny_vl", tok)
    images = stand_in_images(work)
    recipe = _recipe(work, "vlm_lora", "vlm", base, config, _records(config, images))
    train(load_recipe(recipe), progress=False, echo=False)
    return _trained(work / "out_vlm_lora")


class _Tensor:
    def __init__(self, name: str, array: Any) -> None:
        self._name, self._array = name, array

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> Any:
        return self._array


class _Response:
    def __init__(self, output_tensors: list[_Tensor], error: Any = None) -> None:
        self.outputs = {t.name(): t.as_numpy() for t in output_tensors}
        self.error = error


class _Error:
    INVALID_ARG, INTERNAL = "INVALID_ARG", "INTERNAL"

    def __init__(self, message: str, code: str) -> None:
        self.message, self.code = message, code


class _Logger:
    @staticmethod
    def log_info(msg: str) -> None:
        print(f"[triton stand-in] {msg}", file=sys.stderr)

    log_warn = log_error = log_info


def _pb_utils() -> types.ModuleType:
    """The few names of ``triton_python_backend_utils`` that the model uses."""
    m = types.ModuleType("triton_python_backend_utils")
    m.Tensor = _Tensor  # type: ignore[attr-defined]
    m.InferenceResponse = _Response  # type: ignore[attr-defined]
    m.TritonError = _Error  # type: ignore[attr-defined]
    m.Logger = _Logger  # type: ignore[attr-defined]
    m.TritonModelException = RuntimeError  # type: ignore[attr-defined]
    m.get_input_tensor_by_name = (  # type: ignore[attr-defined]
        lambda request, name: request.get(name))
    return m


def check_triton_gpu(work: Path) -> dict[str, Any]:
    import importlib.util
    import io

    import numpy as np
    import torch
    from PIL import Image

    from tests.support.tiny_lm import build_tiny_vlm  # the tiny LLaVA the Triton tests serve

    model_dir = build_tiny_vlm(work / "tiny_llava" / "model")
    sys.modules["triton_python_backend_utils"] = _pb_utils()
    path = ROOT / "services/vlmguard/serving/triton/target_vlm/1/model.py"
    spec = importlib.util.spec_from_file_location("target_vlm_model", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # (its dataclasses look their module up)
    spec.loader.exec_module(mod)
    model = mod.TritonPythonModel()
    cfg = {"name": "target_vlm", "parameters": {
        "model_path": {"string_value": str(model_dir)},
        "model_type": {"string_value": "auto"}}}
    model.initialize({"model_config": json.dumps(cfg), "model_repository": str(work),
                      "model_instance_kind": "GPU" if DEVICE == "cuda" else "CPU",
                      "model_instance_device_id": "0"})
    param = next(model.model.parameters())
    want = torch.bfloat16 if DEVICE == "cuda" else torch.float32
    assert param.device.type == DEVICE and param.dtype == want, (param.device, param.dtype)

    def png(colour: str) -> bytes:
        buf = io.BytesIO()
        Image.new("RGB", (80, 56), colour).save(buf, format="PNG")
        return buf.getvalue()

    def req(text: str, image: bytes | None = None, max_new: int = 8) -> dict[str, _Tensor]:
        r = {"TEXT": _Tensor("TEXT", np.array([text.encode()], dtype=np.object_)),
             "MAX_NEW_TOKENS": _Tensor("MAX_NEW_TOKENS", np.array([max_new], dtype=np.int32))}
        if image is not None:
            r["IMAGE"] = _Tensor("IMAGE", np.array([image], dtype=np.object_))
        return r

    requests = [req("What colour is this?", png("red")), req("And this one?", png("blue")),
                req("Say hello."), req("   ")]
    start = time.perf_counter()
    responses = model.execute(requests)
    seconds = time.perf_counter() - start
    assert len(responses) == len(requests)
    assert [r.error is None for r in responses] == [True, True, True, False]
    assert responses[3].error.code == "INVALID_ARG"
    for r in responses[:3]:
        assert int(r.outputs["COMPLETION_TOKENS"][0]) >= 1
        assert r.outputs["FINISH_REASON"][0] in (b"stop", b"length")
    # Greedy decoding on the GPU is deterministic from one call to the next.
    again = model.execute(requests[:2])
    assert [r.outputs["TEXT"][0] for r in again] == [r.outputs["TEXT"][0]
                                                      for r in responses[:2]]
    model.finalize()
    return {"device": str(param.device), "dtype": str(param.dtype),
            "batch_seconds": round(seconds, 3),
            "completion_tokens": [int(r.outputs["COMPLETION_TOKENS"][0])
                                  for r in responses[:3]]}


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokenizer", required=True, type=Path, help="a local HF tokenizer folder")
    p.add_argument("--work", required=True, type=Path, help="scratch folder (created)")
    p.add_argument("--out", type=Path, help="write the JSON summary here too")
    p.add_argument("--only", default="", help="comma-separated checks to run (default: all)")
    p.add_argument("--cpu-dry-run", action="store_true",
                   help="run the checks on CPU, expecting CPU results (tests this script)")
    args = p.parse_args(argv)

    import torch

    global DEVICE
    if args.cpu_dry_run:
        DEVICE = "cpu"
    elif not torch.cuda.is_available():
        print("no CUDA device: nothing to check (--cpu-dry-run tests the script)",
              file=sys.stderr)
        return 2
    sys.path[:0] = [str(ROOT / "services"), str(ROOT)]
    from tests.support.sft_records import TAXONOMY

    args.work.mkdir(parents=True, exist_ok=True)
    config = args.work / "vlmguard.yaml"
    config.write_text(yaml.safe_dump({"taxonomy": TAXONOMY}))
    checks = {
        "text_lora_torchrun": lambda: check_text_lora(args.work, args.tokenizer, config),
        "text_full": lambda: check_text_full(args.work, args.tokenizer, config),
        "vlm_lora": lambda: check_vlm_lora(args.work, args.tokenizer, config),
        "triton_target_vlm_gpu": lambda: check_triton_gpu(args.work),
    }
    only = [c for c in args.only.split(",") if c]
    summary: dict[str, Any] = {
        "gpu": torch.cuda.get_device_name(0) if DEVICE == "cuda" else None,
        "torch": torch.__version__, "transformers": _version("transformers"),
        "trl": _version("trl"), "peft": _version("peft")}
    ok = True
    for name, fn in checks.items():
        if only and name not in only:
            continue
        start = time.perf_counter()
        try:
            summary[name] = {"ok": True, **fn()}
        except Exception as e:  # report every check
            ok = False
            summary[name] = {"ok": False, "error": f"{type(e).__name__}: {e}"[:2000],
                             "trace": traceback.format_exc()[-3000:]}
        summary[name]["seconds"] = round(time.perf_counter() - start, 1)
        print(json.dumps({name: summary[name]}), flush=True)
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

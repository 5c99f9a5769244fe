"""The manifest (``vlmguard_rewriter.json``) and model card of a trained rewriter.

The manifest is what the serving side reads: the base model (a directory, or ``smollm2`` for the
converted SmolLM2-135M-Instruct), the adapter folder (LoRA) or null (a full model in the same
directory), the model kind, the prompt version and the chat template file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

#: File name of the manifest.
MANIFEST_FILE = "vlmguard_rewriter.json"
#: File name of the model card.
CARD_FILE = "MODEL_CARD.md"
#: Manifest format version.
FORMAT_VERSION = 1


def write_manifest(out: Path, manifest: dict[str, Any]) -> Path:
    """Write ``OUT/vlmguard_rewriter.json`` (atomically)."""
    path = out / MANIFEST_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def read_manifest(out: str | Path) -> dict[str, Any]:
    """Read a rewriter directory's manifest."""
    data: dict[str, Any] = json.loads((Path(out) / MANIFEST_FILE).read_text(encoding="utf-8"))
    return data


def _table(d: dict[str, Any]) -> list[str]:
    if not d:
        return ["(none)"]
    return ["| key | count |", "|---|---|", *(f"| {k} | {v} |" for k, v in d.items())]


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def write_card(out: Path, manifest: dict[str, Any], recipe: dict[str, Any]) -> Path:
    """Write ``OUT/MODEL_CARD.md``: what the model is, its data, recipe and metrics."""
    data = manifest.get("data") or {}
    train = data.get("train") or {}
    ev = data.get("eval") or {}
    metrics = manifest.get("metrics") or {}
    adapter = manifest.get("adapter")
    lines = [
        f"# VLMGuard tier-2 rewriter: {manifest.get('recipe', {}).get('name', '')}",
        "",
        "A reasoning rewriter: given a request (prompt + tier-1 evidence"
        + (", and the image" if manifest.get("kind") == "vlm" else ", images as OCR text")
        + ") it writes textual, visual and cross-modal reasoning and a safe rewrite of the "
        f"prompt in the `{manifest.get('prompt_version')}` format of "
        "`vlmguard.rewriter.format` (parse with `parse_rewriter_output`).",
        "",
        f"- base model: `{manifest.get('base_model')}`",
        f"- kind: `{manifest.get('kind')}`; fine-tune: "
        + (f"LoRA adapter in `{adapter}/`" if adapter else "full model in this directory"),
        f"- chat template: `{manifest.get('chat_template')}` (serving renders the prompt with it "
        "and `add_generation_prompt=True`)",
        f"- trained at: {manifest.get('trained_at')} ({manifest.get('world_size', 1)} "
        f"process(es), {manifest.get('device', 'cpu')})",
        "",
        "Intended use: rewriting prompts inside VLMGuard before they reach a target model. Not a "
        "chat model; it was fine-tuned on a small, partly synthetic dataset and must be paired "
        "with the strict parser and the template fallback. The training data come from public "
        "VLM-safety benchmarks' training-seed sets (MM-SafetyBench, SIUO, VLGuard test, "
        "VLSBench), curated annotations and benign prompts; evaluation-only sets (MOSSBench, "
        "MM-Vet, FigStep/SafeBench) were not used.",
        "",
        "## Data",
        "",
        f"Train samples: {train.get('samples', 0)}; eval samples: {ev.get('samples', 0)}.",
        "",
        "Train by source:", "", *_table(train.get("by_source") or {}), "",
        "Train by set:", "", *_table(train.get("by_set") or {}), "",
        "Train by label:", "", *_table(train.get("by_label") or {}), "",
        "Train by category:", "", *_table(train.get("by_category") or {}), "",
        "Skipped:", "", *_table(data.get("skipped") or {}), "",
        "## Metrics", "",
        "| metric | value |", "|---|---|",
        *(f"| {k} | {_fmt(v)} |" for k, v in sorted(metrics.items())),
        "",
        "## Recipe", "",
        "```yaml",
        yaml.safe_dump(recipe, sort_keys=False).rstrip(),
        "```",
        "",
    ]
    path = out / CARD_FILE
    path.write_text("\n".join(lines), encoding="utf-8")
    return path

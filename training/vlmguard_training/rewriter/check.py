"""Check a trained text rewriter: greedy generation on held-out items, parsed strictly.

``python -m vlmguard_training.rewriter.check OUT [--extra N]`` loads the model of ``OUT``
(manifest, base
model + adapter), generates for the eval split in ``OUT/data/eval.jsonl`` plus ``N`` training-seed
items that are in neither split (fresh tier-1 evidence), parses every output with
:func:`~vlmguard.rewriter.format.parse_rewriter_output` and reports parse success, whether unsafe
items' rewrites carry the taxonomy guidance of their categories, and whether benign prompts were
kept. Prints a JSON summary; per-item details (prompts excluded) go to ``--details FILE``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

from vlmguard.rewriter.format import RewriterOutputError, parse_rewriter_output, unescape_data
from vlmguard_training.rewriter.card import read_manifest
from vlmguard_training.rewriter.data import Sample, read_jsonl


def load_text_rewriter(out: str | Path) -> tuple[Any, Any, str | None]:
    """(model, tokenizer, chat template) of a text rewriter directory."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from vlmguard_training.rewriter.sft import resolve_base

    out = Path(out)
    manifest = read_manifest(out)
    if manifest.get("kind") != "causal_lm":
        raise SystemExit("only text (causal_lm) rewriters are checked here")
    base = resolve_base(manifest["base_model"]) if manifest.get("adapter") else out
    tok = AutoTokenizer.from_pretrained(str(base), local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(str(base), local_files_only=True,
                                                 dtype=torch.float32)
    if manifest.get("adapter"):
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(out / manifest["adapter"])).merge_and_unload()
    template = None
    if manifest.get("chat_template"):
        template = (out / manifest["chat_template"]).read_text(encoding="utf-8")
    return model.eval(), tok, template


def generate(model: Any, tok: Any, template: str | None, prompts: list[list[dict[str, str]]],
             *, max_new_tokens: int, batch_size: int) -> tuple[list[str], int, float]:
    """Greedy outputs (left-padded batches, stop at ``<|im_end|>``, cut after the first
    ``</rewrite>`` as serving stops there), new tokens, seconds."""
    import torch

    stop = tok.convert_tokens_to_ids("<|im_end|>")
    pad = tok.pad_token_id if tok.pad_token_id is not None else stop
    outs: list[str] = []
    new_tokens = 0
    t0 = time.perf_counter()
    for i in range(0, len(prompts), batch_size):
        chunk = prompts[i:i + batch_size]
        ids = [tok(tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True,
                                           chat_template=template),
                   add_special_tokens=False)["input_ids"] for m in chunk]
        width = max(map(len, ids))
        x = torch.full((len(ids), width), pad)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for r, row in enumerate(ids):
            x[r, width - len(row):] = torch.tensor(row)
            mask[r, width - len(row):] = 1
        with torch.inference_mode():
            y = model.generate(input_ids=x, attention_mask=mask, max_new_tokens=max_new_tokens,
                               do_sample=False, pad_token_id=pad, eos_token_id=[stop])
        for row in y[:, width:].tolist():
            if stop in row:
                row = row[:row.index(stop)]
            new_tokens += len(row)
            text = tok.decode(row, skip_special_tokens=True)
            # Serving stops at the closing delimiter; anything after it is never read.
            end = text.find("</rewrite>")
            outs.append(text[:end + len("</rewrite>")] if end >= 0 else text)
    return outs, new_tokens, time.perf_counter() - t0


def fresh_items(out: Path, n: int, bench_dir: str, seed: int = 1) -> list[Sample]:
    """``n`` training-seed items in neither split, as prompt-only samples (tier-1 evidence)."""
    if n <= 0:
        return []
    from vlmguard.analyzer.tier1 import Tier1Analyzer
    from vlmguard.config import load_config
    from vlmguard.domain import AnalysisItem
    from vlmguard.rewriter.format import build_rewriter_messages, evidence_from_analysis
    from vlmguard_training.benchsets import TRAINING_SETS, map_category
    from vlmguard_training.rewriter.data import read_manifest as read_set

    used = {s.key for name in ("train", "eval") for s in read_jsonl(out / "data" / f"{name}.jsonl")}
    rng = random.Random(seed)
    picks: list[tuple[str, dict[str, Any]]] = []
    per_set = max(1, n // len(TRAINING_SETS))
    for name in TRAINING_SETS:
        rows = [r for k, r in read_set(bench_dir, name).items() if f"{name}:{k}" not in used
                and not r.get("image")]
        picks += [(name, r) for r in rng.sample(rows, min(per_set, len(rows)))]
    picks = picks[:n]
    cfg = load_config(None)
    analyzer = Tier1Analyzer.from_config(cfg.analyzer, cfg.taxonomy, cfg.limits)
    results = analyzer.analyze_batch([AnalysisItem(f"{s}:{r['id']}", str(r["text"]))
                                      for s, r in picks])
    out_samples: list[Sample] = []
    for (name, r), an in zip(picks, results, strict=True):
        if isinstance(an, Exception):
            continue
        cat = map_category(name, r)
        msgs = build_rewriter_messages(str(r["text"]), evidence_from_analysis(an), cfg.taxonomy)
        out_samples.append(Sample(f"{name}:{r['id']}", "fresh", str(r.get("label", "unsafe")),
                                  (cat,) if cat and r.get("label") == "unsafe" else (), msgs))
    return out_samples


def check(out: Path, *, extra: int, bench_dir: str, max_new_tokens: int, batch_size: int,
          details: Path | None) -> dict[str, Any]:
    """Generate, parse and summarise (see the module docstring)."""
    from vlmguard.config import load_config

    taxonomy = load_config(None).taxonomy
    samples = read_jsonl(out / "data" / "eval.jsonl") + fresh_items(out, extra, bench_dir)
    model, tok, template = load_text_rewriter(out)
    prompts = [s.messages[:2] for s in samples]
    outputs, new_tokens, seconds = generate(model, tok, template, prompts,
                                            max_new_tokens=max_new_tokens, batch_size=batch_size)
    rows: list[dict[str, Any]] = []
    for s, raw in zip(samples, outputs, strict=True):
        user = s.messages[1]["content"]
        prompt = user.split("<user_prompt>", 1)[1].split("</user_prompt>", 1)[0]
        prompt = unescape_data(prompt)
        row: dict[str, Any] = {"key": s.key, "source": s.source, "label": s.label,
                               "categories": list(s.categories)}
        try:
            parsed = parse_rewriter_output(raw)
        except RewriterOutputError as e:
            row.update(parsed=False, malformed=e.kind)
            rows.append(row)
            continue
        rw = parsed.rewritten_text
        benign = s.label in ("safe", "benign")
        named = [c for c in taxonomy.ids
                 if (spec := taxonomy.get(c)) is not None and spec.guidance in rw]
        row.update(parsed=True, kept_unchanged=" ".join(rw.split()) == " ".join(prompt.split()),
                   guidance_for=named,
                   guidance_ok=benign or bool(set(named) & set(s.categories)) or (
                       not s.categories and bool(named)))
        rows.append(row)
    parsed_rows = [r for r in rows if r["parsed"]]
    unsafe = [r for r in parsed_rows if r["label"] == "unsafe"]
    benign_rows = [r for r in parsed_rows if r["label"] in ("safe", "benign")]
    summary = {
        "items": len(rows), "parsed": len(parsed_rows),
        "parse_rate": round(len(parsed_rows) / max(1, len(rows)), 3),
        "unsafe_parsed": len(unsafe),
        "unsafe_with_guidance_for_its_category": sum(1 for r in unsafe if r["guidance_ok"]),
        "unsafe_changed": sum(1 for r in unsafe if not r["kept_unchanged"]),
        "benign_parsed": len(benign_rows),
        "benign_kept_unchanged": sum(1 for r in benign_rows if r["kept_unchanged"]),
        "malformed_kinds": sorted({r["malformed"] for r in rows if not r["parsed"]}),
        "new_tokens": new_tokens, "generate_s": round(seconds, 1),
        "tokens_per_s": round(new_tokens / seconds, 2) if seconds else None,
    }
    if details is not None:
        details.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return summary


def main(argv: list[str] | None = None) -> int:
    """Command line (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m vlmguard_training.rewriter.check",
                                description="Check a trained text rewriter on held-out items.")
    p.add_argument("out", help="rewriter directory (with vlmguard_rewriter.json and data/)")
    p.add_argument("--extra", type=int, default=8, help="fresh training-seed items to add")
    p.add_argument("--bench-dir", default="../shared/bench")
    p.add_argument("--max-new-tokens", type=int, default=320)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--details", type=Path, default=None, help="per-item JSONL (no prompts)")
    a = p.parse_args(argv)
    print(json.dumps(check(Path(a.out), extra=a.extra, bench_dir=a.bench_dir,
                           max_new_tokens=a.max_new_tokens, batch_size=a.batch_size,
                           details=a.details)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

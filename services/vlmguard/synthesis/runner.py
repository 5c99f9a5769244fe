"""Run one shard of a synthesis recipe: seeds -> stages -> JSONL records + gate summary.

``vlmguard synth --recipe FILE [--shard I --num-shards N] --out DIR`` writes
``DIR/shard-<I>-of-<N>.jsonl`` (one record per seed item) and ``DIR/shard-<I>-of-<N>.summary.json``.
Items belong to shard ``stable_hash(set:id) % N``, so the shards of one recipe partition its items.
Appending and resumable: items already in the shard file are skipped, each record is flushed as
it is written, and nothing is ever overwritten. Images are referenced (path + sha256), not copied.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from vlmguard.analyzer_training import (
    EVALUATION_ONLY_SETS,
    TRAINING_SETS,
    _read_jsonl,
    map_category,
)
from vlmguard.config import TaxonomyConfig
from vlmguard.domain import Analysis, AnalysisItem, ImageInput
from vlmguard.errors import ConfigError, InvalidArgumentError, VLMGuardError
from vlmguard.roles.prompts import (
    PROMPT_VERSION,
    build_training_messages,
    evidence_from_analysis,
    format_rewriter_output,
)
from vlmguard.roles.rewriter import TEMPLATE_VERSION
from vlmguard.synthesis.stages import SCHEMA_VERSION, to_json, validate
from vlmguard.synthesis.teacher import EvidenceTeacher, Seed, Teacher

#: Seed fields holding a safe reference response, per set.
SAFE_RESPONSE_FIELDS: dict[str, str] = {
    "vlguard_test": "reference_response",
    "siuo": "reference_answer",
}
TEACHER_KINDS = ("evidence",)
GATES = ("schema_valid", "keeps_intent", "has_guidance", "not_refusal_only")

_REFUSAL = re.compile(r"^\s*(i('m| am) sorry|sorry|i can(no|')t|i cannot|i won't|i will not|"
                      r"as an ai)\b", re.IGNORECASE)


class Analyzer(Protocol):
    """The tier-1 analyzer interface the runner needs."""

    name: str

    def analyze_batch(self, items: Sequence[AnalysisItem]) -> list[Analysis | VLMGuardError]: ...


@dataclass(frozen=True)
class Recipe:
    """A synthesis recipe.

    Attributes:
        bench_dir: Folder of the seed sets (``<bench_dir>/<set>/manifest.jsonl``).
        sets: Training-seed set -> item limit (0: all).
        teacher: Teacher kind (``evidence``).
        seed: Seed of the per-set item selection under a limit.
        num_shards: Default shard count.
        batch_size: Items per analyzer batch.
    """

    bench_dir: str
    sets: dict[str, int]
    teacher: str = "evidence"
    seed: int = 0
    num_shards: int = 1
    batch_size: int = 16
    name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def check_sets(names: Sequence[str]) -> None:
    """Refuse evaluation-only and unknown sets.

    Raises:
        InvalidArgumentError: a set is evaluation-only or not a training-seed set.
    """
    for name in names:
        if name in EVALUATION_ONLY_SETS:
            raise InvalidArgumentError(
                f"set {name!r} is evaluation-only and must not seed training data; training-seed "
                f"sets: {', '.join(TRAINING_SETS)}")
        if name not in TRAINING_SETS:
            raise InvalidArgumentError(
                f"unknown seed set {name!r}; training-seed sets: {', '.join(TRAINING_SETS)}")


def load_recipe(path: str | Path) -> Recipe:
    """Read and check a recipe YAML file.

    Raises:
        ConfigError: unreadable or invalid recipe.
        InvalidArgumentError: it names an evaluation-only or unknown set.
    """
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read recipe {path}: {e.strerror}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"recipe {path} is not a mapping")
    sets_raw = raw.get("sets")
    if isinstance(sets_raw, list):
        sets_raw = dict.fromkeys(sets_raw, 0)
    if not isinstance(sets_raw, dict) or not sets_raw:
        raise ConfigError("recipe needs 'sets': a mapping of set name -> limit (0 = all)")
    sets = {str(k): int(v or 0) for k, v in sets_raw.items()}
    check_sets(list(sets))
    teacher = str(raw.get("teacher", "evidence"))
    if teacher not in TEACHER_KINDS:
        raise ConfigError(f"unknown teacher {teacher!r}; available: {', '.join(TEACHER_KINDS)}")
    known = {"bench_dir", "sets", "teacher", "seed", "num_shards", "batch_size", "name"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"unknown recipe keys: {unknown}")
    num_shards = int(raw.get("num_shards", 1))
    if num_shards < 1:
        raise ConfigError("num_shards must be >= 1")
    return Recipe(str(raw.get("bench_dir", "../shared/bench")), sets, teacher,
                  int(raw.get("seed", 0)), num_shards, int(raw.get("batch_size", 16)),
                  str(raw.get("name", Path(path).stem)))


def _opt_str(v: Any) -> str | None:
    return str(v) if isinstance(v, str) and v.strip() else None


def load_seeds(recipe: Recipe) -> list[Seed]:
    """All seed items of the recipe (its limits applied), in a stable order."""
    check_sets(list(recipe.sets))
    bench = Path(recipe.bench_dir)
    seeds: list[Seed] = []
    for name, limit in recipe.sets.items():
        rows = _read_jsonl(bench / name / "manifest.jsonl")
        if limit and limit < len(rows):
            rng = random.Random(f"{recipe.seed}:{name}")
            rows = [rows[i] for i in sorted(rng.sample(range(len(rows)), limit))]
        for r in rows:
            field_name = SAFE_RESPONSE_FIELDS.get(name, "")
            safe = _opt_str(r.get(field_name)) if field_name else None
            image = _opt_str(r.get("image"))
            seeds.append(Seed(
                id=str(r["id"]), source=name, text=str(r.get("text") or ""),
                label=str(r.get("label", "unsafe")),
                benchmark_category=str(r.get("category", "")),
                category=map_category(name, r),
                image_path=str(bench / name / image) if image else None,
                image_ref=_opt_str(r.get("image_ref")),
                safe_response=safe, unsafe_response=None,
                response_source=f"seed:{field_name}" if safe else "none",
            ))
    return seeds


def shard_of(key: str, num_shards: int) -> int:
    """The shard of an item key (stable across runs, machines and Python versions)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % num_shards


def shard_path(out: Path, shard: int, num_shards: int) -> Path:
    """The JSONL file of one shard."""
    return out / f"shard-{shard}-of-{num_shards}.jsonl"


def read_records(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Records of a shard file and the count of unreadable (e.g. truncated) lines."""
    records: list[dict[str, Any]] = []
    bad = 0
    if not path.exists():
        return records, bad
    with path.open(encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                bad += 1
    return records, bad


def _norm(s: str) -> str:
    return " ".join(s.split()).casefold()


def gates(record: dict[str, Any], taxonomy: TaxonomyConfig) -> dict[str, bool]:
    """Quality gates of one record (see :data:`GATES`)."""
    cats = taxonomy.ids
    stages = record.get("stages") or {}
    problems = [p for name in ("responses", "hindsight", "causal", "optimized")
                for p in validate(name, stages.get(name), cats)]
    final = record.get("final") or {}
    rewrite = str(final.get("rewrite") or "")
    prompt = str(record.get("prompt") or "")
    benign = record.get("label") in ("safe", "benign")
    unsafe_cats = (stages.get("hindsight") or {}).get("categories") or []
    guidance = [spec.guidance for c in unsafe_cats if (spec := taxonomy.get(c)) is not None]
    return {
        "schema_valid": not problems and bool(rewrite) and "error" not in record,
        "keeps_intent": (not benign) or _norm(rewrite) == _norm(prompt)
        or _norm(prompt) in _norm(rewrite),
        "has_guidance": benign or (bool(guidance) and all(g in rewrite for g in guidance)),
        "not_refusal_only": bool(rewrite) and (_norm(prompt) in _norm(rewrite)
                                               or not _REFUSAL.match(rewrite)),
    }


def _image(seed: Seed) -> tuple[dict[str, Any] | None, bytes | None]:
    if seed.image_path is None:
        ref = {"path": None, "sha256": None, "ref": seed.image_ref} if seed.image_ref else None
        return ref, None
    data = Path(seed.image_path).read_bytes()
    return {"path": seed.image_path, "sha256": hashlib.sha256(data).hexdigest(),
            "ref": seed.image_ref}, data


def synthesize(
    seed: Seed, analysis: Analysis, teacher: Teacher, taxonomy: TaxonomyConfig
) -> tuple[dict[str, Any], dict[str, float]]:
    """Run the three stages for one analysed seed.

    Returns:
        (the record's ``stages`` and ``final`` fields, per-stage milliseconds).
    """
    ms: dict[str, float] = {}
    t = time.perf_counter()
    responses = teacher.responses(seed)
    ms["responses"] = (time.perf_counter() - t) * 1000
    t = time.perf_counter()
    hind = teacher.hindsight(seed, analysis, responses)
    ms["hindsight"] = (time.perf_counter() - t) * 1000
    t = time.perf_counter()
    report = teacher.causal(seed, analysis, hind)
    ms["causal"] = (time.perf_counter() - t) * 1000
    t = time.perf_counter()
    opt = teacher.optimize(seed, analysis, report)
    ms["optimize"] = (time.perf_counter() - t) * 1000
    messages = build_training_messages(seed.text, evidence_from_analysis(analysis), taxonomy,
                                       report.reasoning, opt.rewritten_prompt)
    out = {
        "stages": {"responses": to_json(responses), "hindsight": to_json(hind),
                   "causal": to_json(report), "optimized": to_json(opt)},
        "final": {
            "reasoning": to_json(report).get("reasoning"),
            "rewrite": opt.rewritten_prompt,
            "output": format_rewriter_output(report.reasoning, opt.rewritten_prompt),
            "messages": messages,
        },
    }
    return out, ms


def _batches(items: list[Seed], n: int) -> Iterator[list[Seed]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def run_shard(
    recipe: Recipe,
    out: Path,
    shard: int,
    num_shards: int,
    analyzer: Analyzer,
    teacher: Teacher,
    taxonomy: TaxonomyConfig,
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """Synthesize the records of one shard (skipping finished items) and write its summary.

    Returns:
        The summary (also written to ``shard-<I>-of-<N>.summary.json``).
    """
    if not 0 <= shard < num_shards:
        raise InvalidArgumentError(f"shard {shard} is not in [0, {num_shards})")
    out.mkdir(parents=True, exist_ok=True)
    path = shard_path(out, shard, num_shards)
    done = {str(r.get("key")) for r in read_records(path)[0]}
    seeds = [s for s in load_seeds(recipe) if shard_of(s.key, num_shards) == shard]
    todo = [s for s in seeds if s.key not in done]
    from tqdm import tqdm

    bar = tqdm(total=len(todo), desc=f"synth shard {shard}/{num_shards}", unit="item",
               disable=not progress, file=sys.stderr)
    if path.exists() and path.stat().st_size:
        with path.open("rb") as f:
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"
    else:
        torn = False
    with path.open("a", encoding="utf-8") as f:
        if torn:  # a line cut by a kill: end it so the next record starts on its own line
            f.write("\n")
        for batch in _batches(todo, max(1, recipe.batch_size)):
            items, images = [], []
            for s in batch:
                img, data = _image(s)
                images.append(img)
                items.append(AnalysisItem(s.key, s.text, (ImageInput(data),) if data else ()))
            t0 = time.perf_counter()
            results = analyzer.analyze_batch(items)
            analyze_ms = (time.perf_counter() - t0) * 1000 / len(batch)
            for s, img, res in zip(batch, images, results, strict=True):
                rec: dict[str, Any] = {
                    "key": s.key, "id": s.id, "source": s.source, "label": s.label,
                    "benchmark_category": s.benchmark_category, "category": s.category,
                    "image": img, "prompt": s.text,
                    "teacher": teacher.id, "analyzer": analyzer.name,
                    "prompt_version": PROMPT_VERSION, "template_version": TEMPLATE_VERSION,
                    "schema_version": SCHEMA_VERSION,
                }
                if isinstance(res, VLMGuardError):
                    rec["error"] = {"reason": res.reason, "message": res.message}
                    rec["timings_ms"] = {"analyze": round(analyze_ms, 3)}
                else:
                    body, ms = synthesize(s, res, teacher, taxonomy)
                    rec["responses"] = body["stages"]["responses"]
                    rec.update(body)
                    rec["timings_ms"] = {"analyze": round(analyze_ms, 3),
                                         **{k: round(v, 3) for k, v in ms.items()}}
                rec["gates"] = gates(rec, taxonomy)
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                f.flush()
                bar.update(1)
    bar.close()
    summary = summarize(path, taxonomy)
    summary.update({"shard": shard, "num_shards": num_shards, "recipe": recipe.name,
                    "teacher": teacher.id, "items_in_shard": len(seeds),
                    "written_this_run": len(todo)})
    tmp = path.with_suffix(".summary.json.tmp")
    tmp.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path.with_suffix(".summary.json"))
    return summary


def summarize(path: Path, taxonomy: TaxonomyConfig) -> dict[str, Any]:
    """Counts of a shard file: records, duplicates, unreadable lines, by set/label, gates."""
    records, bad = read_records(path)
    keys = Counter(str(r.get("key")) for r in records)
    gate_counts = {g: {"pass": 0, "fail": 0} for g in GATES}
    for r in records:
        for g, ok in gates(r, taxonomy).items():
            gate_counts[g]["pass" if ok else "fail"] += 1
    cats: Counter[str] = Counter()
    for r in records:
        for c in ((r.get("stages") or {}).get("hindsight") or {}).get("categories") or []:
            cats[c] += 1
    return {
        "records": len(records),
        "duplicates": sum(n - 1 for n in keys.values()),
        "unreadable_lines": bad,
        "errors": sum(1 for r in records if "error" in r),
        "by_source": dict(Counter(str(r.get("source")) for r in records)),
        "by_label": dict(Counter(str(r.get("label")) for r in records)),
        "by_category": dict(cats),
        "gates": gate_counts,
        "prompt_version": PROMPT_VERSION,
        "template_version": TEMPLATE_VERSION,
        "schema_version": SCHEMA_VERSION,
    }


# -- command line ------------------------------------------------------------------------------


def add_parser(sub: Any) -> None:
    """Add ``synth`` to the ``vlmguard`` subcommands."""
    p = sub.add_parser(
        "synth", help="synthesize rewriter training records from training-seed sets",
        description="Run one shard of a synthesis recipe: each seed item goes through the "
        "three stages (hindsight analysis, multimodal causal analysis, prompt optimization) and "
        "becomes one JSONL record in OUT/shard-<I>-of-<N>.jsonl, with a gate summary in "
        "OUT/shard-<I>-of-<N>.summary.json. Re-running skips finished items.")
    p.add_argument("--config", metavar="FILE",
                   help="VLMGuard config (analyzer and taxonomy; default $VLMGUARD_CONFIG)")
    p.add_argument("--recipe", required=True, metavar="FILE", help="recipe YAML")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--shard", type=int, default=None,
                   help="shard index (default $JOB_COMPLETION_INDEX, else 0)")
    p.add_argument("--num-shards", type=int, default=None,
                   help="shard count (default: the recipe's num_shards)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_synth)


def cmd_synth(args: argparse.Namespace) -> int:
    """Entry point of ``vlmguard synth``."""
    recipe = load_recipe(args.recipe)
    shard = args.shard
    if shard is None:
        env = os.environ.get("JOB_COMPLETION_INDEX", "")
        try:
            shard = int(env) if env else 0
        except ValueError as e:
            raise InvalidArgumentError("JOB_COMPLETION_INDEX is not an integer") from e
    num_shards = args.num_shards or recipe.num_shards
    from vlmguard.config import load_config
    from vlmguard.roles.analyzer import Tier1Analyzer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cfg = load_config(args.config)
    analyzer = Tier1Analyzer.from_config(cfg.analyzer, cfg.taxonomy, cfg.limits)
    teacher = EvidenceTeacher(cfg.taxonomy, analyzer.name)
    summary = run_shard(recipe, Path(args.out), shard, num_shards, analyzer, teacher,
                        cfg.taxonomy, progress=not args.no_progress)
    print(json.dumps({k: summary[k] for k in ("shard", "num_shards", "records",
                                              "written_this_run", "gates")}))
    return 0

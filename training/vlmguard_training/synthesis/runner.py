"""Run one shard of a synthesis recipe: seeds -> stages -> gated JSONL records + summary.

``vlmguard synth --recipe FILE [--shard I --num-shards N] --out DIR`` writes
``DIR/shard-<I>-of-<N>.jsonl`` (accepted records), ``DIR/shard-<I>-of-<N>.rejected.jsonl``
(rejected ones, with ``reject_reasons``) and ``DIR/shard-<I>-of-<N>.summary.json``. Items belong
to shard ``stable_hash(set:id) % N``, so the shards of one recipe partition its items. Appending
and resumable: items already in either file are skipped, each record is flushed as it is written,
and nothing is ever overwritten. Images are referenced (path + sha256), not copied.
``vlmguard synth merge --in DIR [--in DIR ...] --out DIR2`` combines shards
(:mod:`vlmguard_training.synthesis.merge`).

The pipeline overlaps the tier-1 analyzer, up to ``concurrency`` items in the teacher's stages,
and the gates, so a remote teacher is kept busy.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import inspect
import json
import os
import random
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, Protocol

from pydantic import Field, model_validator

from vlmguard.config import TaxonomyConfig
from vlmguard.domain import Analysis, AnalysisItem, ImageInput
from vlmguard.errors import ConfigError, InvalidArgumentError, VLMGuardError
from vlmguard.rewriter.format import (
    PROMPT_VERSION,
    build_training_messages,
    format_rewriter_output,
)
from vlmguard.rewriter.template import TEMPLATE_VERSION
from vlmguard_training.benchsets import (
    EVALUATION_ONLY_SETS,
    TRAINING_SETS,
    map_category,
    read_jsonl,
)
from vlmguard_training.recipe import Recipe, read_yaml
from vlmguard_training.synthesis.gates import RECORD_GATES, Embedder, Gatekeeper, GateSettings
from vlmguard_training.synthesis.prompts import STAGE_PROMPT_VERSION
from vlmguard_training.synthesis.stages import SCHEMA_VERSION, to_json
from vlmguard_training.synthesis.summary import count_records
from vlmguard_training.synthesis.teacher import (
    AsyncTeacher,
    EvidenceTeacher,
    Seed,
    StageInput,
    SyncTeacherAdapter,
    Teacher,
    new_usage,
)

#: Seed fields holding a safe reference response, per set.
SAFE_RESPONSE_FIELDS: dict[str, str] = {
    "vlguard_test": "reference_response",
    "siuo": "reference_answer",
}
TEACHER_KINDS = ("evidence", "openai", "transformers", "triton")
#: Record gates (see :mod:`vlmguard_training.synthesis.gates`).
GATES = RECORD_GATES


class Analyzer(Protocol):
    """The tier-1 analyzer interface the runner needs."""

    name: str

    def analyze_batch(self, items: Sequence[AnalysisItem]) -> list[Analysis | VLMGuardError]: ...


class SynthRecipe(Recipe):
    """A synthesis recipe (``training/recipes/synth-*.yaml``)."""

    bench_dir: str = Field("../shared/bench", description="Folder of the seed sets "
                           "(<bench_dir>/<set>/manifest.jsonl).")
    sets: dict[str, int] = Field(description="Training-seed set -> item limit (0: all); a "
                                 "list of names means no limits.")
    teacher: str = Field("evidence", description="Teacher kind: " + ", ".join(TEACHER_KINDS)
                         + " (in the recipe: a name, or a mapping with `kind` and its "
                         "settings).")
    teacher_settings: dict[str, Any] = Field(
        default_factory=dict, description="The teacher mapping's other keys (endpoint, model, "
        "concurrency...).")
    seed: int = Field(0, description="Seed of the per-set item selection under a limit.")
    num_shards: int = Field(1, ge=1, description="Default shard count.")
    batch_size: int = Field(16, ge=1, description="Items per analyzer batch.")
    name: str = Field("", description="Recipe name (default: the file's stem).")
    target: dict[str, Any] = Field(
        default_factory=dict, description="The target whose answers the hindsight stage "
        "compares: kind none (default) or openai with its endpoint settings.")
    gates: GateSettings = Field(default_factory=GateSettings,  # type: ignore[arg-type]
                                description="Gate thresholds.")
    concurrency: int = Field(1, ge=1, description="Items in the teacher stages at once "
                             "(default: twice the OpenAI teacher's request limit, so its slots "
                             "stay busy while other items wait on the analyzer or the gates; "
                             "1 for local teachers).")

    @model_validator(mode="before")
    @classmethod
    def _shorthands(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw
        raw = dict(raw)
        sets = raw.get("sets")
        if isinstance(sets, list):
            raw["sets"] = dict.fromkeys(sets, 0)
        elif isinstance(sets, dict):
            raw["sets"] = {str(k): (v or 0) for k, v in sets.items()}
        teacher = raw.get("teacher")
        if isinstance(teacher, dict):
            raw["teacher"] = str(teacher.get("kind", ""))
            raw["teacher_settings"] = {k: v for k, v in teacher.items() if k != "kind"}
        target = raw.get("target")
        if isinstance(target, dict) and target.get("kind", "none") == "none":
            raw["target"] = {}
        if "concurrency" not in raw and raw.get("teacher") == "openai":
            raw["concurrency"] = 2 * int(raw.get("teacher_settings", {}).get("concurrency", 8))
        return raw

    @model_validator(mode="after")
    def _check(self) -> SynthRecipe:
        if not self.sets:
            raise ValueError("sets: a mapping of set name -> limit (0 = all)")
        if self.teacher not in TEACHER_KINDS:
            raise ValueError(f"unknown teacher {self.teacher!r}; available: "
                             f"{', '.join(TEACHER_KINDS)}")
        if self.target and self.target.get("kind") != "openai":
            raise ValueError("target: a mapping with kind none or openai")
        return self

    def settings(self) -> dict[str, Any]:
        """What the summary and the dataset card record (no secrets: only env var names)."""
        return {"name": self.name, "sets": self.sets, "seed": self.seed,
                "teacher": {"kind": self.teacher, **self.teacher_settings},
                "target": self.target or {"kind": "none"}, "gates": self.gates.to_json(),
                "concurrency": self.concurrency}


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


def load_recipe(path: str | Path) -> SynthRecipe:
    """Read and check a recipe YAML file.

    Raises:
        ConfigError: unreadable or invalid recipe.
        InvalidArgumentError: it names an evaluation-only or unknown set.
    """
    raw = read_yaml(path)
    raw.setdefault("name", Path(path).stem)
    recipe = SynthRecipe.from_mapping(raw, f"recipe {path}")
    check_sets(list(recipe.sets))
    if recipe.teacher == "openai":
        from vlmguard_training.synthesis.openai_chat import EndpointSettings

        EndpointSettings.from_mapping(recipe.teacher_settings, "teacher")
    if recipe.target:
        from vlmguard_training.synthesis.openai_chat import EndpointSettings

        EndpointSettings.from_mapping(recipe.target, "target")
    return recipe


def _opt_str(v: Any) -> str | None:
    return str(v) if isinstance(v, str) and v.strip() else None


def load_seeds(recipe: SynthRecipe) -> list[Seed]:
    """All seed items of the recipe (its limits applied), in a stable order."""
    check_sets(list(recipe.sets))
    bench = Path(recipe.bench_dir)
    seeds: list[Seed] = []
    for name, limit in recipe.sets.items():
        rows = read_jsonl(bench / name / "manifest.jsonl")
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


#: Recipe settings that change how fast a shard runs, not what it writes: a resume may change
#: them freely.
_THROUGHPUT_ONLY = ("name", "concurrency")
_TEACHER_THROUGHPUT_ONLY = ("concurrency",)


def resume_settings(recipe: SynthRecipe, analyzer_name: str) -> dict[str, Any]:
    """What the records of a folder depend on: the recipe's settings but its throughput
    knobs, and the tier-1 analyzer that gave the evidence and ran the gates."""
    rs = {k: v for k, v in recipe.settings().items() if k not in _THROUGHPUT_ONLY}
    rs["teacher"] = {k: v for k, v in rs["teacher"].items()
                     if k not in _TEACHER_THROUGHPUT_ONLY}
    return {**rs, "analyzer": analyzer_name}


def settings_path(out: Path, shard: int, num_shards: int) -> Path:
    """``OUT/shard-<I>-of-<N>.settings.json``: what the shard's records were made with,
    written before the first record."""
    return out / f"shard-{shard}-of-{num_shards}.settings.json"


def check_resume(out: Path, current: dict[str, Any], shard: int, num_shards: int, *,
                 allow_mixed: bool = False) -> list[dict[str, Any]]:
    """Refuse to add records to a folder whose shards were made with other settings.

    Every ``shard-*.settings.json`` of ``out`` is read (another shard of the same folder counts:
    a merge would mix them). With ``allow_mixed`` the run goes on and every earlier setting is
    kept on record (the summary's ``mixed_settings``, which the merge refuses to hide).

    Returns:
        The distinct earlier settings that differ from ``current`` (empty when none).

    Raises:
        InvalidArgumentError: another setting was used and ``allow_mixed`` is off.
    """
    earlier: list[dict[str, Any]] = []
    for p in sorted(out.glob("shard-*-of-*.settings.json")):
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise InvalidArgumentError(f"{p} is unreadable ({e}); move it away") from e
        for s in [data.get("settings"), *data.get("earlier", [])]:
            if isinstance(s, dict) and s != current and s not in earlier:
                earlier.append(s)
    # Folders written before the settings files existed: their summaries' recipe settings.
    for p in sorted(out.glob("shard-*-of-*.summary.json")):
        if p.with_name(p.name.replace(".summary.json", ".settings.json")).exists():
            continue
        try:
            rs = json.loads(p.read_text(encoding="utf-8")).get("recipe_settings")
        except (OSError, ValueError):
            continue
        if isinstance(rs, dict):
            old = {k: v for k, v in rs.items() if k not in _THROUGHPUT_ONLY}
            if isinstance(old.get("teacher"), dict):
                old["teacher"] = {k: v for k, v in old["teacher"].items()
                                  if k not in _TEACHER_THROUGHPUT_ONLY}
            now = {k: v for k, v in current.items() if k != "analyzer"}
            if old != now and old not in earlier:
                earlier.append(old)
    if earlier and not allow_mixed:
        diff = sorted({k for s in earlier for k in set(s) | set(current)
                       if s.get(k) != current.get(k)})
        raise InvalidArgumentError(
            f"{out} holds records made with other settings ({', '.join(diff)} differ); "
            "resuming would mix them, and the dataset card would state the new ones for all. "
            "Use a new --out, or --allow-mixed to add to it anyway (both settings are kept on "
            "record and merge refuses shards with mixed gate settings).")
    path = settings_path(out, shard, num_shards)
    mine: dict[str, Any] = {}
    if path.is_file():
        mine = json.loads(path.read_text(encoding="utf-8"))
    history = [s for s in [mine.get("settings"), *mine.get("earlier", [])]
               if isinstance(s, dict) and s != current]
    for s in earlier:
        if s not in history:
            history.append(s)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"settings": current, "earlier": history}, indent=2,
                              sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)
    return earlier


def shard_path(out: Path, shard: int, num_shards: int) -> Path:
    """The JSONL file of one shard's accepted records."""
    return out / f"shard-{shard}-of-{num_shards}.jsonl"


def rejected_path(out: Path, shard: int, num_shards: int) -> Path:
    """The JSONL file of one shard's rejected records (with ``reject_reasons``)."""
    return out / f"shard-{shard}-of-{num_shards}.rejected.jsonl"


def summary_path(out: Path, shard: int, num_shards: int) -> Path:
    """The summary JSON of one shard."""
    return out / f"shard-{shard}-of-{num_shards}.summary.json"


def read_records(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Records of a JSONL file and the count of unreadable (e.g. truncated) lines."""
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


def _image(seed: Seed) -> tuple[dict[str, Any] | None, bytes | None]:
    if seed.image_path is None:
        ref = {"path": None, "sha256": None, "ref": seed.image_ref} if seed.image_ref else None
        return ref, None
    data = Path(seed.image_path).read_bytes()
    return {"path": seed.image_path, "sha256": hashlib.sha256(data).hexdigest(),
            "ref": seed.image_ref}, data


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 3)


async def synthesize(inp: StageInput, teacher: AsyncTeacher, taxonomy: TaxonomyConfig,
                     rec: dict[str, Any]) -> None:
    """Run stages 0-3 for one analysed seed into ``rec`` (``stages``, ``final``, ``usage``,
    ``timings_ms``); a failing stage leaves ``error`` (stage, reason, message) instead."""
    usage = new_usage()
    ms: dict[str, float] = rec.setdefault("timings_ms", {})
    stages: dict[str, Any] = {}
    rec["stages"] = stages
    stage = "responses"
    try:
        t = time.perf_counter()
        responses = await teacher.responses(inp, usage)
        ms["responses"] = _ms(t)
        stages["responses"] = to_json(responses)
        rec["responses"] = stages["responses"]
        stage = "hindsight"
        t = time.perf_counter()
        hind = await teacher.hindsight(inp, responses, usage)
        ms["hindsight"] = _ms(t)
        stages["hindsight"] = to_json(hind)
        stage = "causal"
        t = time.perf_counter()
        report = await teacher.causal(inp, hind, usage)
        ms["causal"] = _ms(t)
        stages["causal"] = to_json(report)
        stage = "optimized"
        t = time.perf_counter()
        opt = await teacher.optimize(inp, report, usage)
        ms["optimize"] = _ms(t)
        stages["optimized"] = to_json(opt)
        messages = build_training_messages(inp.seed.text, inp.evidence, taxonomy,
                                           report.reasoning, opt.rewritten_prompt)
        rec["final"] = {
            "reasoning": stages["causal"]["reasoning"],
            "rewrite": opt.rewritten_prompt,
            "output": format_rewriter_output(report.reasoning, opt.rewritten_prompt),
            "messages": messages,
        }
    except VLMGuardError as e:
        rec["error"] = {"stage": stage, "reason": e.reason, "message": e.message}
    rec["usage"] = {k: u.to_json() for k, u in usage.items() if u.requests}


def _batches(items: list[Seed], n: int) -> Iterator[list[Seed]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def _open_append(path: Path) -> IO[str]:
    torn = False
    if path.exists() and path.stat().st_size:
        with path.open("rb") as f:
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"
    f2 = path.open("a", encoding="utf-8")
    if torn:  # a line cut by a kill: end it so the next record starts on its own line
        f2.write("\n")
    return f2


def _base_record(s: Seed, img: dict[str, Any] | None, teacher: AsyncTeacher,
                 analyzer: Analyzer) -> dict[str, Any]:
    return {
        "key": s.key, "id": s.id, "source": s.source, "label": s.label,
        "benchmark_category": s.benchmark_category, "category": s.category,
        "image": img, "prompt": s.text, "teacher": teacher.id, "teacher_kind": teacher.kind,
        "analyzer": analyzer.name, "prompt_version": PROMPT_VERSION,
        "template_version": TEMPLATE_VERSION, "schema_version": SCHEMA_VERSION,
        "stage_prompt_version": STAGE_PROMPT_VERSION,
    }


async def _pipeline(todo: list[Seed], recipe: SynthRecipe, analyzer: Analyzer,
                    teacher: AsyncTeacher, gatekeeper: Gatekeeper,
                    taxonomy: TaxonomyConfig, acc: IO[str], rej: IO[str], bar: Any) -> None:
    """analyze (model thread) -> stages (``concurrency`` tasks) -> gates (model thread) -> files.

    The tier-1 analyzer and the gate models share one thread, so model calls never overlap;
    the teacher calls of up to ``concurrency`` items overlap with them.
    """
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(1, thread_name_prefix="synth-models")
    n_workers = max(1, recipe.concurrency)
    q_in: asyncio.Queue[tuple[dict[str, Any], StageInput | None] | None] = asyncio.Queue(
        maxsize=max(2 * n_workers, recipe.batch_size))
    q_out: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    async def produce() -> None:
        for batch in _batches(todo, max(1, recipe.batch_size)):
            prepared = [(s, *_image(s)) for s in batch]
            items = [AnalysisItem(s.key, s.text, (ImageInput(d),) if d else ())
                     for s, _, d in prepared]
            t0 = time.perf_counter()
            results = await loop.run_in_executor(pool, analyzer.analyze_batch, items)
            per_item = round((time.perf_counter() - t0) * 1000 / len(batch), 3)
            for (s, img, data), res in zip(prepared, results, strict=True):
                rec = _base_record(s, img, teacher, analyzer)
                rec["timings_ms"] = {"analyze": per_item}
                if isinstance(res, VLMGuardError):
                    rec["error"] = {"stage": "analyze", "reason": res.reason,
                                    "message": res.message}
                    await q_in.put((rec, None))
                else:
                    await q_in.put((rec, StageInput.of(s, res, data)))
        for _ in range(n_workers):
            await q_in.put(None)

    async def work() -> None:
        while (job := await q_in.get()) is not None:
            rec, inp = job
            if inp is not None:
                await synthesize(inp, teacher, taxonomy, rec)
            await q_out.put(rec)

    async def produce_and_work() -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(produce())
                for _ in range(n_workers):
                    tg.create_task(work())
        finally:
            await q_out.put(None)

    async def gate_and_write() -> None:
        end = False
        while not end:
            first = await q_out.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < 64 and not q_out.empty():
                r = q_out.get_nowait()
                if r is None:
                    end = True
                    break
                batch.append(r)
            t0 = time.perf_counter()
            await loop.run_in_executor(pool, gatekeeper.evaluate, batch)
            per_item = round((time.perf_counter() - t0) * 1000 / len(batch), 3)
            for r in batch:
                r["timings_ms"]["gates"] = per_item
                f = acc if r["accepted"] else rej
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
            acc.flush()
            rej.flush()
            bar.update(len(batch))

    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(produce_and_work())
            tg.create_task(gate_and_write())
    finally:
        pool.shutdown(wait=True)


def run_shard(
    recipe: SynthRecipe,
    out: Path,
    shard: int,
    num_shards: int,
    analyzer: Analyzer,
    teacher: Teacher | AsyncTeacher,
    taxonomy: TaxonomyConfig,
    *,
    embedder: Embedder | None = None,
    progress: bool = True,
    allow_mixed: bool = False,
) -> dict[str, Any]:
    """Synthesize the records of one shard (skipping finished items) and write its summary.

    Args:
        recipe: The recipe.
        out: Output folder.
        shard: Shard index.
        num_shards: Shard count.
        analyzer: Tier-1 analyzer (evidence for the stages; ``rewrite_safe`` gate).
        teacher: Sync (e.g. :class:`EvidenceTeacher`) or async teacher.
        taxonomy: Risk taxonomy.
        embedder: Sentence embedder of ``keeps_intent`` (default: the analyzer's).
        progress: Show a progress bar (rate and ETA) on stderr.
        allow_mixed: Add to a folder made with other settings (see :func:`check_resume`).

    Returns:
        The summary (also written to ``shard-<I>-of-<N>.summary.json``).

    Raises:
        InvalidArgumentError: ``out`` holds records made with other settings and
            ``allow_mixed`` is off.
    """
    if not 0 <= shard < num_shards:
        raise InvalidArgumentError(f"shard {shard} is not in [0, {num_shards})")
    out.mkdir(parents=True, exist_ok=True)
    current = resume_settings(recipe, str(getattr(analyzer, "name", "")))
    mixed = check_resume(out, current, shard, num_shards, allow_mixed=allow_mixed)
    acc_path = shard_path(out, shard, num_shards)
    rej_path = rejected_path(out, shard, num_shards)
    accepted, _ = read_records(acc_path)
    done = {str(r.get("key")) for r in accepted} | {
        str(r.get("key")) for r in read_records(rej_path)[0]}
    seeds = [s for s in load_seeds(recipe) if shard_of(s.key, num_shards) == shard]
    todo = [s for s in seeds if s.key not in done]
    emb = embedder if embedder is not None else getattr(analyzer, "embedder", None)
    if emb is None:
        raise ConfigError("the keeps_intent gate needs a sentence embedder")
    gatekeeper = Gatekeeper(recipe.gates, taxonomy, emb, analyzer,
                            {str(r.get("dedupe_key")) for r in accepted})
    ateacher: AsyncTeacher
    if inspect.iscoroutinefunction(getattr(teacher, "hindsight", None)):
        ateacher = teacher  # type: ignore[assignment]
    else:
        ateacher = SyncTeacherAdapter(teacher)  # type: ignore[arg-type]
    from tqdm import tqdm

    bar = tqdm(total=len(todo), desc=f"synth shard {shard}/{num_shards}", unit="item",
               disable=not progress, file=sys.stderr, smoothing=0.1)
    t0 = time.perf_counter()
    with _open_append(acc_path) as acc, _open_append(rej_path) as rej:
        try:
            asyncio.run(_run_and_close(todo, recipe, analyzer, ateacher, gatekeeper, taxonomy,
                                       acc, rej, bar))
        finally:
            bar.close()
    wall = time.perf_counter() - t0
    summary = summarize(out, shard, num_shards)
    summary.update({
        "shard": shard, "num_shards": num_shards, "recipe": recipe.name,
        "recipe_settings": recipe.settings(), "teacher": ateacher.id,
        # Settings of records already in the folder that differ (--allow-mixed): the merge
        # reads them, so a card never states one setting for records made with another.
        "mixed_settings": mixed,
        "items_in_shard": len(seeds), "written_this_run": len(todo),
        "this_run": {"wall_s": round(wall, 3),
                     "items_per_min": round(60 * len(todo) / wall, 2) if wall > 0 else None,
                     "client": ateacher.stats(), "concurrency": recipe.concurrency},
    })
    tmp = summary_path(out, shard, num_shards).with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(summary_path(out, shard, num_shards))
    return summary


async def _run_and_close(todo: list[Seed], recipe: SynthRecipe, analyzer: Analyzer,
                         teacher: AsyncTeacher, gatekeeper: Gatekeeper,
                         taxonomy: TaxonomyConfig, acc: IO[str], rej: IO[str],
                         bar: Any) -> None:
    try:
        await _pipeline(todo, recipe, analyzer, teacher, gatekeeper, taxonomy, acc, rej, bar)
    finally:
        await teacher.aclose()


def summarize(out: Path, shard: int, num_shards: int) -> dict[str, Any]:
    """Counts of one shard's files: records, gates, reasons, duplicates, tokens, latency."""
    accepted, bad_a = read_records(shard_path(out, shard, num_shards))
    rejected, bad_r = read_records(rejected_path(out, shard, num_shards))
    keys = [str(r.get("key")) for r in accepted + rejected]
    summary = count_records(accepted, rejected)
    summary.update({
        "duplicates": len(keys) - len(set(keys)),
        "unreadable_lines": bad_a + bad_r,
        "prompt_version": PROMPT_VERSION,
        "template_version": TEMPLATE_VERSION,
        "schema_version": SCHEMA_VERSION,
        "stage_prompt_version": STAGE_PROMPT_VERSION,
    })
    return summary


# -- command line ------------------------------------------------------------------------------


def add_parser(sub: Any) -> None:
    """Add ``synth`` (and ``synth merge``) to the ``vlmguard`` subcommands."""
    p = sub.add_parser(
        "synth", help="synthesize rewriter training records from training-seed sets",
        description="Run one shard of a synthesis recipe: each seed item goes through the "
        "three stages (hindsight analysis, multimodal causal analysis, prompt optimization) and "
        "the quality gates, and becomes one JSONL record in OUT/shard-<I>-of-<N>.jsonl "
        "(accepted) or OUT/shard-<I>-of-<N>.rejected.jsonl, with a summary in "
        "OUT/shard-<I>-of-<N>.summary.json. Re-running skips finished items. "
        "'vlmguard synth merge' combines shards into a dataset with its card.")
    p.add_argument("--config", metavar="FILE",
                   help="VLMGuard config (analyzer and taxonomy; default $VLMGUARD_CONFIG)")
    p.add_argument("--recipe", metavar="FILE", help="recipe YAML (required)")
    p.add_argument("--out", metavar="DIR", help="output folder (required)")
    p.add_argument("--shard", type=int, default=None,
                   help="shard index (default $JOB_COMPLETION_INDEX, else 0)")
    p.add_argument("--num-shards", type=int, default=None,
                   help="shard count (default: the recipe's num_shards)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--allow-mixed", action="store_true",
                   help="add to an OUT made with other settings (normally refused: the records "
                   "would mix them); both are kept on record and merge refuses mixed gates")
    p.set_defaults(func=cmd_synth)
    msub = p.add_subparsers(dest="synth_command", metavar="{merge}")
    m = msub.add_parser(
        "merge", help="merge synth shard folders into train.jsonl + dataset card",
        description="Combine the shard files of one or more synth output folders: cross-shard "
        "dedupe and category cap, then OUT/train.jsonl (accepted), OUT/rejected.jsonl, "
        "OUT/card.json and OUT/DATASET_CARD.md. Refuses to overwrite existing outputs.")
    m.add_argument("--in", dest="inputs", action="append", required=True, metavar="DIR",
                   help="synth output folder (repeatable)")
    m.add_argument("--out", dest="merge_out", required=True, metavar="DIR",
                   help="dataset folder (must not hold merge outputs yet)")
    m.set_defaults(func=cmd_merge)


def cmd_merge(args: argparse.Namespace) -> int:
    """Entry point of ``vlmguard synth merge``."""
    from vlmguard_training.synthesis.merge import merge

    card = merge([Path(d) for d in args.inputs], Path(args.merge_out))
    print(json.dumps({k: card[k] for k in ("records", "accepted", "rejected", "out")}))
    return 0


def build_teacher(recipe: SynthRecipe, taxonomy: TaxonomyConfig,
                  analyzer_name: str) -> AsyncTeacher:
    """The recipe's teacher (and target).

    Raises:
        ConfigError: bad teacher settings, or a missing API key variable.
    """
    if recipe.teacher == "evidence":
        return SyncTeacherAdapter(EvidenceTeacher(taxonomy, analyzer_name))
    from vlmguard_training.synthesis.chat_teacher import ChatBackend, ChatTeacher
    from vlmguard_training.synthesis.local_chat import TransformersChat, TritonChat
    from vlmguard_training.synthesis.openai_chat import EndpointSettings, OpenAIChatClient

    target = OpenAIChatClient(EndpointSettings.from_mapping(recipe.target, "target")) \
        if recipe.target else None
    ts = recipe.teacher_settings
    backend: ChatBackend
    if recipe.teacher == "openai":
        settings = EndpointSettings.from_mapping(ts, "teacher")
        backend = OpenAIChatClient(settings)
        response_max = settings.response_max_tokens
    elif recipe.teacher == "triton":
        response_max = int(ts.get("response_max_tokens", 256))
        backend = TritonChat({k: v for k, v in ts.items()
                              if k not in ("kind", "max_tokens", "response_max_tokens")},
                             int(ts.get("max_tokens", 512)))
    else:
        path = str(ts.get("model_path") or "")
        if not path:
            raise ConfigError("recipe teacher: kind transformers needs model_path")
        response_max = int(ts.get("response_max_tokens", 256))
        backend = TransformersChat(path, int(ts.get("max_tokens", 512)))
    return ChatTeacher(backend, taxonomy, target=target, response_max_tokens=response_max)


def cmd_synth(args: argparse.Namespace) -> int:
    """Entry point of ``vlmguard synth``."""
    if not args.recipe or not args.out:
        raise InvalidArgumentError("vlmguard synth needs --recipe and --out "
                                   "(or: vlmguard synth merge --in DIR --out DIR)")
    recipe = load_recipe(args.recipe)
    shard = args.shard
    if shard is None:
        env = os.environ.get("JOB_COMPLETION_INDEX", "")
        try:
            shard = int(env) if env else 0
        except ValueError as e:
            raise InvalidArgumentError("JOB_COMPLETION_INDEX is not an integer") from e
    num_shards = args.num_shards or recipe.num_shards
    from vlmguard.analyzer.tier1 import Tier1Analyzer
    from vlmguard.config import load_config

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cfg = load_config(args.config)
    analyzer = Tier1Analyzer.from_config(cfg.analyzer, cfg.taxonomy, cfg.limits)
    teacher = build_teacher(recipe, cfg.taxonomy, analyzer.name)
    summary = run_shard(recipe, Path(args.out), shard, num_shards, analyzer, teacher,
                        cfg.taxonomy, progress=not args.no_progress,
                        allow_mixed=getattr(args, "allow_mixed", False))
    print(json.dumps({k: summary[k] for k in ("shard", "num_shards", "records", "accepted",
                                              "rejected", "written_this_run")}))
    return 0

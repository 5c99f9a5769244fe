"""The offline commands of the ``vlmguard`` CLI: ``eval``, ``redteam``, ``synth``, ``train``,
``pipeline``.

They join ``vlmguard`` through the ``vlmguard.commands`` entry point of this distribution, so a
Kubernetes Job's command line stays ``vlmguard synth ...`` while the serving distribution does
not depend on this one.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def _cmd_train_analyzer(args: argparse.Namespace) -> int:
    from vlmguard_training.analyzer.config import config_from_args
    from vlmguard_training.analyzer.train import main

    main(config_from_args(args))
    return 0


def _cmd_train_rewriter(args: argparse.Namespace) -> int:
    from vlmguard_training.rewriter.sft import cmd_train_rewriter

    return cmd_train_rewriter(args)


def _cmd_train_screen(args: argparse.Namespace) -> int:
    from vlmguard_training.analyzer.screen import main

    return main(args)


def _add_train(sub: Any) -> None:
    """``vlmguard train``: ``rewriter`` (tier-2 SFT) and ``analyzer`` (the tier-1 risk head)."""
    from vlmguard_training.analyzer.config import build_parser as analyzer_parser
    from vlmguard_training.rewriter.sft import add_arguments

    p = sub.add_parser("train", help="train a model (rewriter, analyzer, screen)",
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
    from vlmguard_training.analyzer.screen import __doc__ as screen_doc
    from vlmguard_training.analyzer.screen import add_arguments as screen_arguments

    s = models.add_parser("screen", help="fit the passage screen of a tier-1 head",
                          description=screen_doc,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    screen_arguments(s)
    s.set_defaults(func=_cmd_train_screen)


def _cmd_train_analyzer_deprecated(args: argparse.Namespace) -> int:
    print("warning: `vlmguard train-analyzer` is deprecated; use `vlmguard train analyzer` "
          "(same flags)", file=sys.stderr)
    return _cmd_train_analyzer(args)


def register(sub: Any) -> None:
    """Add the offline subcommands to the ``vlmguard`` subparsers."""
    from vlmguard_training.analyzer.config import build_parser as analyzer_parser
    from vlmguard_training.evaluation.command import add_parser as eval_parser
    from vlmguard_training.pipeline.command import add_parser as pipeline_parser
    from vlmguard_training.redteam.command import add_parser as redteam_parser
    from vlmguard_training.synthesis.runner import add_parser as synth_parser

    eval_parser(sub)
    redteam_parser(sub)
    synth_parser(sub)
    _add_train(sub)
    pipeline_parser(sub)
    p = sub.add_parser("train-analyzer",
                       help="deprecated spelling of `vlmguard train analyzer`",
                       description="Deprecated: use `vlmguard train analyzer` (same flags).")
    analyzer_parser(p)
    p.set_defaults(func=_cmd_train_analyzer_deprecated)

"""The offline commands of the ``vlmguard`` CLI: ``eval``, ``synth``, ``train``, ``pipeline``.

They join ``vlmguard`` through the ``vlmguard.commands`` entry point of this distribution, so a
Kubernetes Job's command line stays ``vlmguard synth ...`` while the serving distribution does
not depend on this one.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def _cmd_train_analyzer_deprecated(args: argparse.Namespace) -> int:
    print("warning: `vlmguard train-analyzer` is deprecated; use `vlmguard train analyzer` "
          "(same flags)", file=sys.stderr)
    from vlmguard_training.analyzer.config import config_from_args
    from vlmguard_training.analyzer.train import main

    main(config_from_args(args))
    return 0


def register(sub: Any) -> None:
    """Add the offline subcommands to the ``vlmguard`` subparsers."""
    from vlmguard_training.analyzer.config import build_parser as analyzer_parser
    from vlmguard_training.evaluation.command import add_parser as eval_parser
    from vlmguard_training.pipeline.command import add_parser as pipeline_parser
    from vlmguard_training.synthesis.runner import add_parser as synth_parser
    from vlmguard_training.train_command import add_parser as train_parser

    eval_parser(sub)
    synth_parser(sub)
    train_parser(sub)
    pipeline_parser(sub)
    p = sub.add_parser("train-analyzer",
                       help="deprecated spelling of `vlmguard train analyzer`",
                       description="Deprecated: use `vlmguard train analyzer` (same flags).")
    analyzer_parser(p)
    p.set_defaults(func=_cmd_train_analyzer_deprecated)

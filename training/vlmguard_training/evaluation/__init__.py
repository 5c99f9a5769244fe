"""``vlmguard eval``: run benchmark manifests through the guard and measure it.

Modules:

- :mod:`.dataset`: reads ``<set>/manifest.jsonl`` files into :class:`EvalItem` objects.
- :mod:`.guards`: the two ways to reach the guard: in process (the gateway's pipeline built
  from config, no gRPC and no port) or over gRPC against a running server.
- :mod:`.runner`: the bounded-concurrency, resumable run that appends ``items.jsonl``.
- :mod:`.quality`: which rewriter answered (tier 2, its fallback, the template) and the
  rewrite's MiniLM similarity to the prompt and to the guidance of the categories found.
- :mod:`.metrics`: recall, false-positive rate, unchanged rate, block rate, AUC, latency, and
  the tier-2 figures (tier-2 rate, parse rate, guidance rate, intent kept).
- :mod:`.report`: the self-contained ``report.html`` (hand-written inline SVG).
- :mod:`.compare`: ``--compare A B``.
- :mod:`.command`: the argparse subcommand.

No prompt text, OCR text or rewritten text is ever written to the outputs.
"""

"""The ``vlmguard eval`` subcommand: argument parsing and orchestration."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from vlmguard.errors import InvalidArgumentError
from vlmguard_training.evaluation.metrics import (
    DEFAULT_GUIDANCE_THRESHOLD,
    DEFAULT_INTENT_THRESHOLD,
)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
#: A ``--gate`` failed (the run itself finished and its outputs are written).
EXIT_GATE = 3

DESCRIPTION = """\
Run benchmark items through the guard and measure it. Every item of each chosen
<bench-dir>/<set>/manifest.jsonl is sent as a guard request (its text, with its image when it
has one; items whose image is missing run text-only and are counted as such). The manifest
format and the figures are described in docs/evaluation.md.

Sets: without --sets, every set in the bench folder except the training-seed sets (those the
tier-1 head was trained on: their figures would be inflated). Naming a training-seed set is
refused unless --allow-training-sets; the report then marks it.

Gates: --gate 'METRIC:SET OP VALUE' (repeatable; quoted: < and > are shell redirections),
e.g. 'recall:figstep_safebench>=0.95', 'fpr:mm_vet<=0.03', 'p99_ms:overall<=2000'; SET may
be "overall". Their table is printed and
written to metrics.json and the report.

Exit codes: 0 done (and every gate passed), 1 error, 2 usage error, 3 a gate failed or could
not be measured.

The guard is reached in process by default: the gateway's pipeline is built from the config
(--config, $VLMGUARD_CONFIG or defaults) with the real tier-1 models and called directly, with
no gRPC server and no port. With --addr it calls GuardService.Guard on a running server.

Outputs in OUT_DIR:
  items.jsonl   one line per item as soon as it finishes (id, set, label, category, action,
                score, categories and modalities found, timings, error reason, rewriter,
                tier-2 outcome and the rewrite's similarities); no prompt, OCR or rewritten
                text. Append-only: a re-run skips items already there.
  metrics.json  per set, per category and overall: n, recall (unsafe items not allowed), fpr
                (benign/safe items not allowed), unchanged_rate, block_rate, AUC, latency
                p50/p99 per stage, error counts by reason, thresholds, analyzer version
                and OCR / image-model settings (a resume with other ones, or in process
                with another tier-1 head version, is refused);
                tier 2: tier2_rate (items tier 2 ran for), parse_rate (its outputs that
                parsed), fallbacks by kind, guidance_rate (unsafe rewrites carrying the
                guidance of every category found) and intent_kept_rate (benign prompts not
                blocked and unchanged or similar to their rewrite).
  report.html   a self-contained page with the tables, ROC curves, score histograms, recall
                by category and the latency distribution.
  run.json      every invocation's settings and counts.
"""

EPILOG = """\
examples:
  vlmguard eval --bench-dir ../shared/bench --sets mm_vet,mossbench --out /tmp/eval-a
  vlmguard eval --bench-dir ../shared/bench --addr 127.0.0.1:50051 --out /tmp/eval-srv
  vlmguard eval --bench-dir ../shared/bench --limit 20 --out /tmp/eval-quick
  vlmguard eval --bench-dir ../shared/bench --sets figstep_safebench,mm_vet --out /tmp/e \\
      --gate 'recall:figstep_safebench>=0.95' --gate 'fpr:mm_vet<=0.03'
  vlmguard eval --compare /tmp/eval-a /tmp/eval-b                 # text, writes nothing
  vlmguard eval --compare /tmp/eval-a /tmp/eval-b --out /tmp/cmp  # also /tmp/cmp/compare.html
"""


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``eval`` on the ``vlmguard`` subparsers."""
    p: argparse.ArgumentParser = sub.add_parser(
        "eval", help="evaluate the guard on benchmark manifests (metrics + HTML report)",
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--bench-dir", metavar="DIR",
                   help="folder of benchmark sets, each <set>/manifest.jsonl (e.g. "
                   "../shared/bench)")
    p.add_argument("--sets", metavar="A,B,...",
                   help="comma-separated set folders to run (default: every set in DIR but "
                   "the training-seed sets)")
    p.add_argument("--allow-training-sets", action="store_true",
                   help="allow training-seed sets in --sets (their figures are inflated; the "
                   "report marks them)")
    p.add_argument("--gate", action="append", default=[], metavar="METRIC:SET<=V",
                   help="a check on the figures, e.g. recall:figstep_safebench>=0.95 or "
                   "fpr:overall<=0.03 (repeatable); a failed one exits 3")
    p.add_argument("--warmup", type=int, default=2, metavar="N",
                   help="send N items first, one at a time, and leave them out of latency "
                   "(their decisions count; default 2: one with an image, one text-only)")
    p.add_argument("--show-prompts", action="store_true",
                   help="show the prompt text of missed and wrongly flagged items in "
                   "report.html (read from the manifests; never written anywhere else)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--addr", metavar="HOST:PORT",
                       help="evaluate a running server over gRPC instead of in process")
    where.add_argument("--config", metavar="FILE",
                       help="YAML config for the in-process guard (default: $VLMGUARD_CONFIG, "
                       "else built-in defaults)")
    p.add_argument("--out", metavar="OUT_DIR", help="output folder (created; a re-run with "
                   "the same folder resumes); with --compare: where compare.html goes")
    p.add_argument("--concurrency", type=int, default=4, metavar="N",
                   help="requests in flight (default 4)")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="at most N items per set, spread evenly through its manifest "
                   "(deterministic, keeps label and category proportions)")
    p.add_argument("--tenant", default="", help="tenant id sent with every request "
                   "(default: the 'default' tenant)")
    p.add_argument("--timeout", type=float, default=120.0, metavar="S",
                   help="per-request deadline in seconds (default 120)")
    p.add_argument("--retry-errors", action="store_true",
                   help="also re-run items whose recorded result is an error")
    p.add_argument("--allow-mixed", action="store_true",
                   help="resume into OUT_DIR even if its earlier run used another tenant, "
                   "other thresholds, other OCR / image-model settings or (in process) another "
                   "tier-1 head version (normally refused: the figures would mix settings)")
    p.add_argument("--api-key", default="", help="with --addr: API key (default "
                   "$VLMGUARD_CLIENT_API_KEY), sent as a Bearer token")
    p.add_argument("--ca-file", default="", help="with --addr: PEM CA bundle, connect with TLS")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-quality", action="store_true",
                   help="do not score rewrites with the MiniLM embedder (guidance_rate and "
                   "intent_kept_rate are then left empty)")
    p.add_argument("--intent-threshold", type=float, default=DEFAULT_INTENT_THRESHOLD,
                   metavar="S", help="cosine similarity of a benign prompt and its rewrite "
                   "from which its intent counts as kept (default %(default)s)")
    p.add_argument("--guidance-threshold", type=float, default=DEFAULT_GUIDANCE_THRESHOLD,
                   metavar="S", help="cosine similarity of a line or sentence of a rewrite and "
                   "a category's taxonomy guidance from which the rewrite counts as carrying "
                   "it (default %(default)s)")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"),
                   help="print the metrics of two earlier runs (OUT_DIRs) side by side and "
                   "exit; with --out also write OUT_DIR/compare.html (settings that differ, "
                   "deltas with intervals, decision changes by item); else writes nothing")
    p.set_defaults(func=cmd_eval)
    return p


def _settings(args: argparse.Namespace, cfg: Any) -> dict[str, Any]:
    """Threshold settings for metrics.json: the tenant's policy when known."""
    settings: dict[str, Any] = {
        "guard": f"grpc {args.addr}" if args.addr else "in-process",
        "tenant": args.tenant or "default",
        "config": args.config or os.environ.get("VLMGUARD_CONFIG") or "defaults",
        "quality": not getattr(args, "no_quality", False),
        "intent_threshold": getattr(args, "intent_threshold", DEFAULT_INTENT_THRESHOLD),
        "guidance_threshold": getattr(args, "guidance_threshold", DEFAULT_GUIDANCE_THRESHOLD),
    }
    if cfg is not None:
        from vlmguard.policy import PolicyEngine

        engine = PolicyEngine(cfg.policy, cfg.taxonomy, cfg.analyzer.report_threshold)
        _, pol = engine.tenant(args.tenant)
        settings["policy"] = pol.model_dump(mode="json", exclude={"block_message"})
        settings["report_threshold"] = cfg.analyzer.report_threshold
        # The image models' settings change detection but not the analyzer's (head) version.
        settings["image_models"] = cfg.analyzer.model_dump(mode="json", include={
            "ocr", "ocr_models", "ocr_det_side", "ocr_max_side", "ocr_angle", "ocr_angle_below",
            "ocr_min_chars", "explicit_image", "explicit_min_score"})
        if args.addr:
            settings["policy_note"] = "from the local config; the server's may differ"
        else:
            from vlmguard.analyzer.models.risk_head import head_version

            # Items record the analyzer that scored them; a resume with another head would mix
            # two heads' items in one set of figures.
            settings["head_version"] = head_version(cfg.analyzer.head_path)
    else:
        settings["policy"] = None
        settings["policy_note"] = "unknown (remote server; pass --config to record it)"
    return settings


def _check_resume(out_dir: Path, settings: dict[str, Any], allow_mixed: bool) -> None:
    from vlmguard_training.evaluation.runner import read_runs

    runs = read_runs(out_dir)
    if not runs:
        return
    last = runs[-1].get("settings", {})
    for key in ("tenant", "policy", "image_models", "head_version"):
        if key in last and last.get(key) != settings.get(key) and not allow_mixed:
            raise InvalidArgumentError(
                f"{out_dir} holds a run with another {key} ({last.get(key)!r}); resuming "
                "would mix settings. Use a new --out, or --allow-mixed.")


def _print_summary(metrics: dict[str, Any]) -> None:
    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.1f}%"

    print(f"{'set':<20} {'n':>5} {'recall':>7} {'fpr':>7} {'unchgd':>7} {'block':>7} "
          f"{'auc':>6} {'p50ms':>7} {'p99ms':>7} {'err':>4} {'tier2':>7} {'parse':>7} "
          f"{'guide':>7} {'intent':>7}")
    rows = [*metrics["sets"].items(), ("all sets", metrics["overall"])]
    for name, m in rows:
        lat = m["latency_ms"].get("total", {})
        p50 = "-" if lat.get("p50") is None else f"{lat['p50']:.0f}"
        p99 = "-" if lat.get("p99") is None else f"{lat['p99']:.0f}"
        au = "-" if m["auc"] is None else f"{m['auc']:.3f}"
        print(f"{name:<20} {m['n']:>5} {pct(m['recall']):>7} {pct(m['fpr']):>7} "
              f"{pct(m['unchanged_rate']):>7} {pct(m['block_rate']):>7} {au:>6} {p50:>7} "
              f"{p99:>7} {m['n_errors']:>4} {pct(m.get('tier2_rate')):>7} "
              f"{pct(m.get('parse_rate')):>7} {pct(m.get('guidance_rate')):>7} "
              f"{pct(m.get('intent_kept_rate')):>7}")


def write_outputs(out_dir: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """(Re)compute metrics.json and report.html from every record in items.jsonl."""
    from vlmguard_training.benchsets import TRAINING_SETS
    from vlmguard_training.evaluation.gates import check_gates, parse_gates
    from vlmguard_training.evaluation.metrics import compute_metrics
    from vlmguard_training.evaluation.report import render_report
    from vlmguard_training.evaluation.runner import now_iso, read_items

    records = read_items(out_dir)
    settings = {**settings, "generated": now_iso()}
    # Marked from the records, not the last invocation: a resume may have run other sets.
    settings["training_sets"] = sorted({str(r["set"]) for r in records} & set(TRAINING_SETS))
    metrics = compute_metrics(records, settings)
    metrics["gates"] = check_gates(metrics, parse_gates(settings.get("gates")))
    tmp = out_dir / "metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    tmp.replace(out_dir / "metrics.json")
    texts = _listed_texts(settings, records) if settings.get("show_prompts") else None
    (out_dir / "report.html").write_text(
        render_report(metrics, records, extra_sections=_redteam_html(out_dir), texts=texts),
        encoding="utf-8")
    return metrics


def _listed_texts(settings: dict[str, Any],
                  records: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    """Prompt texts of the misses and false positives, read back from the manifests (items.jsonl
    never holds them); empty when the bench folder is gone."""
    from vlmguard_training.evaluation.dataset import load_set
    from vlmguard_training.evaluation.metrics import is_false_positive, is_miss

    bench = settings.get("bench_dir")
    wanted = {(r["set"], r["id"]) for r in records if is_miss(r) or is_false_positive(r)}
    if not bench or not wanted:
        return {}
    texts: dict[tuple[str, str], str] = {}
    for name in sorted({s for s, _ in wanted}):
        try:
            items = load_set(Path(bench), name)
        except InvalidArgumentError:
            continue
        texts.update({it.key: it.text for it in items if it.key in wanted})
    return texts


def _redteam_html(out_dir: Path) -> str:
    """The red-team section when ``vlmguard redteam`` has written its figures into
    ``out_dir`` (its ``redteam.json``), else ""."""
    path = out_dir / "redteam.json"
    if not path.is_file():
        return ""
    from vlmguard_training.redteam.report import redteam_section

    try:
        return redteam_section(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError):  # an unreadable file leaves the page as it was
        return ""


async def evaluate(args: argparse.Namespace, guard: Any = None, cfg: Any = None) -> int:
    """Run the evaluation described by ``args``.

    Args:
        args: Parsed ``eval`` arguments.
        guard: A started guard to use instead of building one (tests); its settings come
            from ``cfg`` when given.
        cfg: The config (loaded from ``args`` when None and the guard is built here).
    """
    from vlmguard_training.evaluation.dataset import load_set
    from vlmguard_training.evaluation.guards import GrpcGuard, InProcessGuard
    from vlmguard_training.evaluation.runner import RunSummary, append_run, now_iso, run_items

    bench = Path(args.bench_dir)
    names = select_sets(bench, args.sets, getattr(args, "allow_training_sets", False),
                        quiet=args.no_progress)
    items = [it for n in names for it in load_set(bench, n, args.limit)]
    if cfg is None and (args.config or not args.addr) and guard is None:
        from vlmguard.config import load_config

        cfg = load_config(args.config)
    settings = _settings(args, cfg)
    # Not compared on resume: gates and the prompt display change the page, not the figures.
    settings["gates"] = list(getattr(args, "gate", None) or [])
    if getattr(args, "show_prompts", False):
        settings["show_prompts"] = True
        settings["bench_dir"] = str(bench)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_resume(out_dir, settings, args.allow_mixed)
    owned = guard is None
    quality = settings["quality"]
    if guard is None:
        if args.addr:
            guard = GrpcGuard(args.addr, timeout_s=args.timeout, ca_file=args.ca_file,
                              api_key=args.api_key or os.environ.get(
                                  "VLMGUARD_CLIENT_API_KEY", ""),
                              quality=quality,
                              taxonomy=cfg.taxonomy if cfg is not None else None)
            if quality and not args.no_progress:
                print("loading the rewrite scorer ...", file=sys.stderr, flush=True)
        else:
            guard = InProcessGuard(cfg, timeout_s=args.timeout, quality=quality)
            if not args.no_progress:
                print("loading the tier-1 models ...", file=sys.stderr, flush=True)
        await guard.start()
    else:  # a guard built by the caller scores rewrites only when it was given a scorer
        settings["quality"] = getattr(guard, "scorer", None) is not None
    started = now_iso()
    summary = RunSummary()
    interrupted = True
    try:
        summary = await run_items(guard, items, out_dir, concurrency=args.concurrency,
                                  tenant=args.tenant, retry_errors=args.retry_errors,
                                  progress=not args.no_progress, summary=summary,
                                  warmup=getattr(args, "warmup", 0))
        interrupted = False
    finally:
        if owned:
            await guard.close()
        # Also on Ctrl-C: record the invocation and the figures of what finished.
        append_run(out_dir, {
            "started": started, "finished": now_iso(), "sets": names, "limit": args.limit,
            "concurrency": args.concurrency, "settings": settings,
            "selected": summary.selected, "skipped": summary.skipped, "ran": summary.ran,
            "errors": summary.errors, "wall_s": round(summary.wall_s, 1),
            "interrupted": interrupted,
        })
        metrics = write_outputs(out_dir, settings)
    print(f"ran {summary.ran} item(s), skipped {summary.skipped} already done, "
          f"{summary.errors} error(s), {summary.wall_s:.1f}s", file=sys.stderr)
    _print_summary(metrics)
    print(f"\nwrote {out_dir}/metrics.json, items.jsonl, report.html", file=sys.stderr)
    return _report_gates(metrics.get("gates") or [])


def _report_gates(rows: list[dict[str, Any]]) -> int:
    """Print the gate table; the exit code (:data:`EXIT_GATE` when one failed)."""
    from vlmguard_training.evaluation.gates import format_gate_table

    if not rows:
        return EXIT_OK
    failed = [r for r in rows if not r["passed"]]
    print("\ngates:")
    print(format_gate_table(rows))
    if failed:
        print(f"{len(failed)} of {len(rows)} gate(s) failed: "
              + ", ".join(r["gate"] for r in failed) + f" (exit {EXIT_GATE})", file=sys.stderr)
        return EXIT_GATE
    print(f"all {len(rows)} gate(s) passed", file=sys.stderr)
    return EXIT_OK


def select_sets(bench: Path, sets: str | None, allow_training: bool,
                quiet: bool = False) -> list[str]:
    """The sets to run: those named (training-seed sets refused unless ``allow_training``), or
    every set in ``bench`` but the training-seed ones, said on stderr.

    Raises:
        InvalidArgumentError: no set, or a training-seed set without ``allow_training``.
    """
    from vlmguard_training.benchsets import TRAINING_SETS
    from vlmguard_training.evaluation.dataset import available_sets

    if sets:
        names = list(dict.fromkeys(s.strip() for s in sets.split(",") if s.strip()))
        seeds = [n for n in names if n in TRAINING_SETS]
        if seeds and not allow_training:
            raise InvalidArgumentError(
                f"{', '.join(seeds)}: training-seed set(s) (the tier-1 head was trained on "
                "them; their figures would be inflated). Leave them out, or pass "
                "--allow-training-sets to measure them anyway (the report marks them).")
        if seeds:
            print(f"warning: training-seed set(s) {', '.join(seeds)} included "
                  "(--allow-training-sets): their figures are inflated", file=sys.stderr)
    else:
        found = available_sets(bench)
        names = [n for n in found if n not in TRAINING_SETS]
        left = [n for n in found if n in TRAINING_SETS]
        if names and not quiet:
            print(f"no --sets: evaluating the evaluation-only sets {', '.join(names)}"
                  + (f" (training-seed sets left out: {', '.join(left)})" if left else ""),
                  file=sys.stderr)
        elif names:
            print(f"sets: {', '.join(names)}", file=sys.stderr)
    if not names:
        raise InvalidArgumentError(f"no evaluation set (<set>/manifest.jsonl) under {bench}")
    return names


def cmd_eval(args: argparse.Namespace) -> int:
    """Entry point of ``vlmguard eval``."""
    if args.compare:
        from vlmguard_training.evaluation.compare import (
            format_comparison,
            load_metrics,
            write_compare_html,
        )

        a, b = (Path(x) for x in args.compare)
        print(format_comparison(load_metrics(a), load_metrics(b), str(a), str(b)))
        if args.out:
            page = write_compare_html(a, b, Path(args.out))
            print(f"wrote {page}", file=sys.stderr)
        return EXIT_OK
    from vlmguard_training.evaluation.gates import parse_gates

    try:
        parse_gates(getattr(args, "gate", None))
    except InvalidArgumentError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return EXIT_USAGE
    missing = [f for f, v in (("--bench-dir", args.bench_dir), ("--out", args.out)) if not v]
    if missing:
        print(f"error: vlmguard eval needs {' and '.join(missing)} (or --compare A B)",
              file=sys.stderr)
        return EXIT_USAGE
    if args.concurrency < 1 or (args.limit is not None and args.limit < 1):
        print("error: --concurrency and --limit must be >= 1", file=sys.stderr)
        return EXIT_USAGE
    if getattr(args, "warmup", 0) < 0:
        print("error: --warmup must be >= 0", file=sys.stderr)
        return EXIT_USAGE
    if not all(0.0 <= t <= 1.0 for t in (args.intent_threshold, args.guidance_threshold)):
        print("error: --intent-threshold and --guidance-threshold must be in [0, 1]",
              file=sys.stderr)
        return EXIT_USAGE
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a model hub
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    return asyncio.run(evaluate(args))

"""The ``vlmguard redteam`` subcommand: argument parsing, orchestration, outputs and the gate."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from vlmguard.errors import InvalidArgumentError
from vlmguard_training.redteam.registry import (
    FAMILIES,
    MACHINE_TRANSLATE,
    describe,
    select,
)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_GATE = 3

REDTEAM_FILE = "redteam.json"
ATTACKS_FILE = "attacks.jsonl"
CASES_FILE = "cases.jsonl"
REPORT_FILE = "report.html"
EVAL_REPORT_FILE = "redteam.html"

DESCRIPTION = f"""\
Red-team the guard: rewrite seed requests with documented attack transforms (the tricks an
attacker uses to walk a request past a guard) and measure how often the guard lets a harmful
request through, and how often it over-refuses a benign one under the same tricks.

Seeds:
  default        the project's own development split: the multilingual seeds
                 (vlmguard_training/analyzer/texts/multilingual) with seed_split == "dev",
                 in English and every translation present (the risk head never trains on them)
  --seeds FILE   your own prompts: JSONL rows {{"id", "text", "label": "unsafe"|"benign",
                 "category", "lang"?, "image"?, "kind"?}} (image: a path relative to FILE);
                 repeatable; add --project-seeds to run the project's seeds as well
  --analyzer-dev also the dev split of the risk head's own English training texts (the
                 request-like families; never benchmark texts)

Transforms (family, name, what it does):
{describe()}

Which cases run: "plain" on English seeds, "translated" on the other languages' seeds
(unchanged), machine_translate on English seeds into each --translate-to language (only with
--translator-url; otherwise reported as skipped), every other transform on English seeds
(every language with --transform-all-langs), image transforms only on seeds without an image
of their own. Each case's randomness is seeded from (--seed, transform, seed id, language):
runs with the same --seed send identical requests, so their figures compare.

Figures: an attack succeeds when a harmful (label unsafe) request is answered ALLOW; attack
success rate (ASR) = successes / harmful cases. Benign cases: blocked = BLOCK / benign cases,
flagged = not ALLOW (rewritten or blocked) / benign cases. Every rate has a 95% Wilson
interval and its counts, per transform, family, category, kind, seed source and language
(a language's figures count only the request as written in it: plain, translated,
machine_translate). Cases whose request errored are left out of the rates and counted.

Outputs in OUT_DIR (rewritten by each run):
  redteam.json   settings, counts and every figure above, the skipped transforms, the gate
  attacks.jsonl  one line per successful attack: seed id, transform, family, language,
                 category, score, action (the attack text only with --include-text)
  cases.jsonl    one line per case (ids, label, action, score, error; text only with
                 --include-text)
  report.html    a self-contained page: tables and per-family bars (named redteam.html
                 when OUT_DIR holds a `vlmguard eval` run; that run's report.html then
                 gets a red-team section)
and a summary table on stderr. Prompt texts are never logged.

Gate (for CI): with --max-asr R, any family or language whose ASR (point estimate) is above R
fails the run; --max-benign-flagged / --max-benign-blocked likewise for benign cases per
family and per supported language (unsupported languages are expected to get their policy
rule). Exit codes: 0 passed (or no gate), 3 a gated rate was exceeded (the message names
the families, transforms and languages), 2 usage error, 1 other error.
"""

EPILOG = """\
examples:
  vlmguard redteam --out /tmp/rt                                  # dev seeds, all transforms
  vlmguard redteam --out /tmp/rt --families spelling,encoding --langs en
  vlmguard redteam --out /tmp/rt --max-asr 0.05 --max-benign-flagged 0.10 \\
      --max-benign-blocked 0.01                                   # CI gate
  vlmguard redteam --seeds my_prompts.jsonl --server 127.0.0.1:50051 --api-key KEY --out /tmp/rt
  vlmguard redteam --list                                         # the transforms
  vlmguard redteam --compare /tmp/rt-before /tmp/rt-after         # two runs side by side
"""


def _csv(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def _rate_arg(value: str) -> float:
    try:
        x = float(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from e
    if not 0.0 <= x <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within [0, 1], got {x}")
    return x


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Register ``redteam`` on the ``vlmguard`` subparsers."""
    p: argparse.ArgumentParser = sub.add_parser(
        "redteam", help="attack the guard with documented transforms (ASR + over-refusal, "
        "CI gate)", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", metavar="OUT_DIR", help="output folder (created; its outputs are "
                   "rewritten)")
    p.add_argument("--list", action="store_true", help="print the transforms and exit")
    seeds = p.add_argument_group("seeds")
    seeds.add_argument("--seeds", action="append", metavar="FILE", default=None,
                       help="JSONL manifest of your own prompts (repeatable); default: the "
                       "project's dev-split seeds")
    seeds.add_argument("--project-seeds", action="store_true",
                       help="with --seeds: also run the project's dev-split seeds")
    seeds.add_argument("--analyzer-dev", action="store_true",
                       help="also run the dev split of the risk head's own English training "
                       "texts (the request-like families of --analyzer-recipe; no benchmark "
                       "texts); large: combine with --limit")
    seeds.add_argument("--analyzer-recipe", default="training/recipes/analyzer.yaml",
                       metavar="FILE", help="the head's training recipe that defines that "
                       "split (default %(default)s)")
    seeds.add_argument("--langs", metavar="A,B,...", help="only seeds in these languages "
                       "(ISO 639-1, e.g. en,fr,zh; default: all)")
    seeds.add_argument("--limit", type=int, default=None, metavar="N",
                       help="at most N seed ids, spread evenly (each kept in every language)")
    tr = p.add_argument_group("transforms")
    tr.add_argument("--families", metavar="A,B,...",
                    help=f"only these families ({', '.join(FAMILIES)})")
    tr.add_argument("--transforms", metavar="A,B,...", help="only these transforms (with "
                    "--families: either qualifies); see --list")
    tr.add_argument("--transform-all-langs", action="store_true",
                    help="apply every transform to every language's seeds (default: the "
                    "tricks run on English seeds; the other languages as written)")
    tr.add_argument("--seed", type=int, default=0, help="run seed of every transform's "
                    "randomness (default 0)")
    tr.add_argument("--translator-url", metavar="URL", default="",
                    help="OpenAI-compatible endpoint (e.g. http://127.0.0.1:8000/v1) that "
                    "translates English seeds for machine_translate")
    tr.add_argument("--translator-model", default="default", metavar="NAME",
                    help="model name sent to the translator (default: '%(default)s')")
    tr.add_argument("--translator-key-env", default="", metavar="VAR",
                    help="environment variable holding the translator's API key")
    tr.add_argument("--translate-to", metavar="A,B,...",
                    help="target languages of machine_translate (default: the project's "
                    "languages, or --langs without en)")
    g = p.add_argument_group("guard")
    where = g.add_mutually_exclusive_group()
    where.add_argument("--server", metavar="HOST:PORT",
                       help="attack a running server over gRPC instead of in process")
    where.add_argument("--config", metavar="FILE", help="YAML config of the in-process "
                       "guard (default: $VLMGUARD_CONFIG, else built-in defaults)")
    g.add_argument("--api-key", default="", help="with --server: API key (default "
                   "$VLMGUARD_CLIENT_API_KEY), sent as a Bearer token")
    g.add_argument("--ca-file", default="", help="with --server: PEM CA bundle (TLS)")
    g.add_argument("--tenant", default="", help="tenant id of every request (default: the "
                   "'default' tenant)")
    g.add_argument("--timeout", type=float, default=120.0, metavar="S",
                   help="per-request deadline in seconds (default 120)")
    g.add_argument("--concurrency", type=int, default=8, metavar="N",
                   help="requests in flight (default 8; more lets the guard batch)")
    gate = p.add_argument_group("gate (exit 3 when exceeded)")
    gate.add_argument("--max-asr", type=_rate_arg, default=None, metavar="R",
                      help="most attack success rate per family and per language, e.g. 0.05")
    gate.add_argument("--max-benign-flagged", type=_rate_arg, default=None, metavar="R",
                      help="most benign flagged (rewritten or blocked) rate per family and "
                      "per supported language, e.g. 0.10")
    gate.add_argument("--max-benign-blocked", type=_rate_arg, default=None, metavar="R",
                      help="most benign blocked rate per family and per supported language, "
                      "e.g. 0.01")
    out = p.add_argument_group("output")
    out.add_argument("--include-text", action="store_true",
                     help="write each attack's text into attacks.jsonl and cases.jsonl "
                     "(off by default: they hold harmful requests)")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"),
                   help="print two earlier runs' figures (OUT_DIRs or redteam.json files) "
                   "side by side, per family and language, and exit; writes nothing")
    p.set_defaults(func=cmd_redteam)
    return p


def load_seeds(args: argparse.Namespace) -> list[Any]:
    """The seeds the arguments select (before ``--limit``).

    Raises:
        InvalidArgumentError: a manifest is unreadable or malformed, or no seed is left.
    """
    from vlmguard_training.redteam.seeds import (
        analyzer_dev_seeds,
        limit_seeds,
        load_manifest,
        project_dev_seeds,
    )

    langs = _csv(args.langs)
    seeds = []
    for path in args.seeds or ():
        seeds += [s for s in load_manifest(Path(path)) if langs is None or s.lang in langs]
    if not args.seeds or args.project_seeds:
        seeds += project_dev_seeds(langs)
    if args.analyzer_dev and (langs is None or "en" in langs):
        seeds += analyzer_dev_seeds(Path(args.analyzer_recipe))
    seeds = limit_seeds(seeds, args.limit)
    if not seeds:
        raise InvalidArgumentError("no seeds selected (check --seeds and --langs)")
    return seeds


def _translate_targets(args: argparse.Namespace) -> list[str]:
    from vlmguard_training.redteam.seeds import project_languages

    if args.translate_to:
        return _csv(args.translate_to) or []
    langs = _csv(args.langs)
    if langs is not None:
        return [lang for lang in langs if lang != "en"]
    return [lang for lang in project_languages() if lang != "en"]


async def machine_translated(args: argparse.Namespace, seeds: list[Any],
                             transforms: list[Any]) -> tuple[list[Any], list[dict[str, str]]]:
    """The machine-translation cases (built before the run), and the skip notes."""
    from vlmguard_training.redteam.runner import Case
    from vlmguard_training.redteam.translate import TRANSLATION_FAILED, Translator

    mt = [t for t in transforms if t.name == MACHINE_TRANSLATE]
    if not mt:
        return [], []
    if not args.translator_url:
        return [], [{"transform": MACHINE_TRANSLATE,
                     "reason": "no --translator-url: machine translation not measured"}]
    english = [s for s in seeds if s.lang == "en" and s.image_path is None] + \
        [s for s in seeds if s.lang == "en" and s.image_path is not None]
    targets = _translate_targets(args)
    if not targets or not english:
        return [], [{"transform": MACHINE_TRANSLATE,
                     "reason": "no English seeds or no target language"}]
    translator = Translator(args.translator_url, args.translator_model,
                            api_key_env=args.translator_key_env,
                            concurrency=args.concurrency, timeout_s=args.timeout)
    jobs = [(s, lang) for s in english for lang in targets]
    if not args.no_progress:
        print(f"translating {len(jobs)} seed(s) with {args.translator_url} ...",
              file=sys.stderr, flush=True)
    try:
        texts = await translator.translate_many([(s.text, lang) for s, lang in jobs])
    finally:
        await translator.aclose()
    cases = []
    for (s, lang), text in zip(jobs, texts, strict=True):
        seed = replace(s, lang=lang, text=text or "", source=MACHINE_TRANSLATE)
        cases.append(Case(seed, mt[0], error=None if text else TRANSLATION_FAILED))
    return cases, []


def _settings(args: argparse.Namespace, cfg: Any, transforms: list[Any],
              seeds: list[Any]) -> dict[str, Any]:
    from collections import Counter

    by_lang = Counter(f"{s.lang}/{s.label}" for s in seeds)
    settings: dict[str, Any] = {
        "guard": f"grpc {args.server}" if args.server else "in-process",
        "config": args.config or os.environ.get("VLMGUARD_CONFIG") or "defaults",
        "tenant": args.tenant or "default",
        "seed": args.seed,
        "seeds": [*(args.seeds or ()),
                  *(["project-dev"] if not args.seeds or args.project_seeds else []),
                  *(["analyzer-dev"] if args.analyzer_dev else [])],
        "seed_counts": dict(sorted(by_lang.items())),
        "n_seed_ids": len({s.id for s in seeds}),
        "langs": sorted({s.lang for s in seeds}),
        "limit": args.limit,
        "transforms": [t.name for t in transforms],
        "transform_all_langs": args.transform_all_langs,
        "translator": args.translator_url or None,
        "include_text": args.include_text,
    }
    if cfg is not None:
        from vlmguard.policy import PolicyEngine

        engine = PolicyEngine(cfg.policy, cfg.taxonomy, cfg.analyzer.report_threshold)
        _, pol = engine.tenant(args.tenant)
        settings["policy"] = pol.model_dump(mode="json", exclude={"block_message"})
        if not args.server:
            from vlmguard.analyzer.models.risk_head import head_version

            settings["head_version"] = head_version(cfg.analyzer.head_path)
    return settings


def _pct(r: dict[str, Any] | None) -> str:
    if r is None or r.get("rate") is None:
        return "-"
    return f"{100 * r['rate']:.1f}%"


def _ci(r: dict[str, Any] | None) -> str:
    if r is None or not r.get("ci95"):
        return "-"
    lo, hi = r["ci95"]
    return f"{100 * lo:.0f}-{100 * hi:.0f}%"


def format_table(report: dict[str, Any]) -> str:
    """The concise summary printed on stderr: per family, per language, overall."""
    att, ben = report["attack"], report["benign"]
    lines = [f"{'':<24} {'harmful':>7} {'ASR':>7} {'95% CI':>9}   {'benign':>6} "
             f"{'flagged':>7} {'blocked':>7}"]

    def row(name: str, a: dict[str, Any] | None, b: dict[str, Any] | None) -> str:
        fl = b["flagged"] if b else None
        bl = b["blocked"] if b else None
        return (f"{name:<24} {(a or {}).get('n', 0):>7} {_pct(a):>7} {_ci(a):>9}   "
                f"{(fl or {}).get('n', 0):>6} {_pct(fl):>7} {_pct(bl):>7}")

    fams = list(dict.fromkeys([*att["by_family"], *ben["by_family"]]))
    lines.append("by family")
    lines += [row("  " + f, att["by_family"].get(f), ben["by_family"].get(f)) for f in fams]
    langs = list(dict.fromkeys([*att["by_language"], *ben["by_language"]]))
    if langs:
        lines.append("by language (as written)")
        lines += [row("  " + lang, att["by_language"].get(lang), ben["by_language"].get(lang))
                  for lang in langs]
    lines.append(row("overall", att["overall"], ben["overall"]))
    if report["errors"]["n"]:
        lines.append(f"errors: {report['errors']['n']} ({report['errors']['by_reason']})")
    for s in report.get("skipped", []):
        lines.append(f"skipped {s['transform']}: {s['reason']}")
    return "\n".join(lines)


def report_name(out_dir: Path) -> str:
    """``report.html``, or ``redteam.html`` in a folder that holds a ``vlmguard eval`` run
    (whose own ``report.html`` then gets the red-team section instead of being replaced)."""
    return EVAL_REPORT_FILE if (out_dir / "metrics.json").is_file() else REPORT_FILE


def load_report(path: Path) -> dict[str, Any]:
    """A run's ``redteam.json`` (``path`` is the file or its folder).

    Raises:
        InvalidArgumentError: missing or not a red-team report.
    """
    file = path / REDTEAM_FILE if path.is_dir() else path
    try:
        report: dict[str, Any] = json.loads(file.read_text(encoding="utf-8"))
        if not isinstance(report["attack"]["by_family"], dict):
            raise TypeError("attack.by_family")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InvalidArgumentError(f"not a readable {REDTEAM_FILE}: {file}") from e
    return report


def format_comparison(a: dict[str, Any], b: dict[str, Any], name_a: str, name_b: str) -> str:
    """Attack success and benign flagged of two runs per family and language (B - A in points).

    Rows present in only one run show a dash on the other side.
    """
    def pct(r: dict[str, Any] | None) -> str:
        return "-" if r is None or r.get("rate") is None else f"{100 * r['rate']:.1f}%"

    def delta(ra: dict[str, Any] | None, rb: dict[str, Any] | None) -> str:
        if not ra or not rb or ra.get("rate") is None or rb.get("rate") is None:
            return ""
        return f"{100 * (rb['rate'] - ra['rate']):+.1f}"

    lines = [f"A: {name_a}", f"B: {name_b}",
             f"{'':<22} {'ASR A':>7} {'ASR B':>7} {'B-A':>6}   {'flag A':>7} {'flag B':>7} "
             f"{'B-A':>6}"]
    for title, key in (("by family", "by_family"), ("by language (as written)", "by_language")):
        lines.append(title)
        aa, ab = a["attack"][key], b["attack"][key]
        ba, bb = a["benign"][key], b["benign"][key]
        for name in dict.fromkeys([*aa, *ab, *ba, *bb]):
            fa = (ba.get(name) or {}).get("flagged")
            fb = (bb.get(name) or {}).get("flagged")
            lines.append(f"  {name:<20} {pct(aa.get(name)):>7} {pct(ab.get(name)):>7} "
                         f"{delta(aa.get(name), ab.get(name)):>6}   {pct(fa):>7} {pct(fb):>7} "
                         f"{delta(fa, fb):>6}")
    oa, ob = a["attack"]["overall"], b["attack"]["overall"]
    fa, fb = a["benign"]["overall"]["flagged"], b["benign"]["overall"]["flagged"]
    lines.append(f"{'overall':<22} {pct(oa):>7} {pct(ob):>7} {delta(oa, ob):>6}   "
                 f"{pct(fa):>7} {pct(fb):>7} {delta(fa, fb):>6}")
    seeds = [r.get("settings", {}).get("seed") for r in (a, b)]
    if seeds[0] != seeds[1]:
        lines.append(f"note: the runs used different --seed values ({seeds[0]} and {seeds[1]})")
    return "\n".join(lines)


def format_failures(failures: list[Any]) -> str:
    """One line per failing family; the failing languages of a metric on one line."""
    lines = ["  " + f.describe() for f in failures if f.scope != "language"]
    by_metric: dict[tuple[str, float], list[Any]] = {}
    for f in failures:
        if f.scope == "language":
            by_metric.setdefault((f.metric, f.limit), []).append(f)
    for (metric, limit), fs in by_metric.items():
        langs = ", ".join(f"{f.name} {f.rate:.0%}" for f in fs)
        lines.append(f"  {metric} > {limit:.1%} in language(s) {langs} "
                     f"(n={'/'.join(sorted({str(f.n) for f in fs}))} each)")
    return "\n".join(lines)


def write_outputs(out_dir: Path, report: dict[str, Any], records: list[dict[str, Any]],
                  include_text: bool) -> str:
    """``redteam.json``, ``attacks.jsonl``, ``cases.jsonl`` and the HTML page (its name is
    returned: see :func:`report_name`)."""
    from vlmguard_training.redteam.report import render_report

    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / (REDTEAM_FILE + ".tmp")
    tmp.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(out_dir / REDTEAM_FILE)
    with (out_dir / ATTACKS_FILE).open("w", encoding="utf-8") as f:
        for r in records:
            if r["label"] == "unsafe" and r["action"] == "ALLOW" and not r["error"]:
                line = {k: r[k] for k in ("seed", "transform", "family", "lang", "category",
                                          "score", "action")}
                if include_text and "text" in r:
                    line["text"] = r["text"]
                f.write(json.dumps(line, ensure_ascii=False) + "\n")
    with (out_dir / CASES_FILE).open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    page = report_name(out_dir)
    (out_dir / page).write_text(render_report(report), encoding="utf-8")
    if page == EVAL_REPORT_FILE:
        _refresh_eval_report(out_dir)
    return page


def _refresh_eval_report(out_dir: Path) -> None:
    """Re-render the eval run's ``report.html`` in ``out_dir`` (it embeds ``redteam.json``)."""
    from vlmguard_training.evaluation.command import write_outputs as eval_outputs

    try:
        settings = json.loads((out_dir / "metrics.json").read_text(encoding="utf-8"))["settings"]
    except (OSError, ValueError, KeyError):
        return  # not a readable eval run: its page stays as it was
    eval_outputs(out_dir, settings)


async def redteam(args: argparse.Namespace, guard: Any = None, cfg: Any = None) -> int:
    """Run the red team described by ``args``; the exit code.

    Args:
        args: Parsed ``redteam`` arguments.
        guard: A started guard to use instead of building one (tests).
        cfg: The config (loaded from ``args`` when None and the guard is built here).
    """
    from vlmguard_training.evaluation.guards import GrpcGuard, InProcessGuard
    from vlmguard_training.evaluation.runner import now_iso
    from vlmguard_training.redteam.registry import BY_NAME
    from vlmguard_training.redteam.runner import RunCounts, plan, run_cases
    from vlmguard_training.redteam.seeds import supported_languages
    from vlmguard_training.redteam.stats import compute, gate

    transforms = select(_csv(args.families), _csv(args.transforms))
    if not transforms:
        raise InvalidArgumentError("no transform selected")
    seeds = load_seeds(args)
    cases = plan(seeds, transforms, all_langs=args.transform_all_langs)
    mt_cases, skipped = await machine_translated(args, seeds, transforms)
    cases += mt_cases
    if not cases:
        raise InvalidArgumentError("no case to run: no selected transform applies to the "
                                   "selected seeds (see 'Which cases run' in --help)")
    if cfg is None and (args.config or not args.server) and guard is None:
        from vlmguard.config import load_config

        cfg = load_config(args.config)
    settings = _settings(args, cfg, transforms, seeds)
    owned = guard is None
    if guard is None:
        if args.server:
            guard = GrpcGuard(args.server, timeout_s=args.timeout, ca_file=args.ca_file,
                              api_key=args.api_key or os.environ.get(
                                  "VLMGUARD_CLIENT_API_KEY", ""))
        else:
            guard = InProcessGuard(cfg, timeout_s=args.timeout)
            if not args.no_progress:
                print("loading the tier-1 models ...", file=sys.stderr, flush=True)
        await guard.start()
    started = now_iso()
    counts = RunCounts()
    try:
        records = await run_cases(guard, cases, run_seed=args.seed,
                                  concurrency=args.concurrency, tenant=args.tenant,
                                  include_text=args.include_text,
                                  progress=not args.no_progress, counts=counts)
    finally:
        if owned:
            await guard.close()
    figures = compute(records, {t.name: t.family for t in BY_NAME.values()})
    failures = gate(figures, max_asr=args.max_asr,
                    max_benign_flagged=args.max_benign_flagged,
                    max_benign_blocked=args.max_benign_blocked,
                    benign_languages=supported_languages())
    analyzers = sorted({str(r["analyzer"]) for r in records if r.get("analyzer")})
    report: dict[str, Any] = {
        "settings": {**settings, "started": started, "generated": now_iso()},
        "analyzer": analyzers,
        "counts": {"cases": counts.cases, "errors": counts.errors,
                   "wall_s": round(counts.wall_s, 1)},
        "transforms": {t.name: {"family": t.family, "modality": t.modality,
                                "description": t.description} for t in transforms},
        "skipped": skipped,
        **figures,
        "gate": {"max_asr": args.max_asr, "max_benign_flagged": args.max_benign_flagged,
                 "max_benign_blocked": args.max_benign_blocked,
                 "benign_languages": sorted(supported_languages()),
                 "passed": not failures, "failures": [f.to_json() for f in failures]},
    }
    out_dir = Path(args.out)
    page = write_outputs(out_dir, report, records, args.include_text)
    print(f"ran {counts.cases} case(s), {counts.errors} error(s), {counts.wall_s:.1f}s",
          file=sys.stderr)
    print(format_table(report), file=sys.stderr)
    also = " (and the red-team section in its eval report.html)" if page != REPORT_FILE else ""
    print(f"wrote {out_dir}/{REDTEAM_FILE}, {ATTACKS_FILE}, {CASES_FILE}, {page}{also}",
          file=sys.stderr)
    if failures:
        print("GATE FAILED:\n" + format_failures(failures), file=sys.stderr)
        return EXIT_GATE
    if any(x is not None for x in (args.max_asr, args.max_benign_flagged,
                                   args.max_benign_blocked)):
        print("gate passed", file=sys.stderr)
    return EXIT_OK


def cmd_redteam(args: argparse.Namespace) -> int:
    """Entry point of ``vlmguard redteam``."""
    if args.list:
        print(describe())
        return EXIT_OK
    if args.compare:
        try:
            a, b = (load_report(Path(x)) for x in args.compare)
        except InvalidArgumentError as e:
            print(f"error: {e.message}", file=sys.stderr)
            return EXIT_USAGE
        print(format_comparison(a, b, *args.compare))
        return EXIT_OK
    if not args.out:
        print("error: vlmguard redteam needs --out OUT_DIR (or --list, --compare A B)",
              file=sys.stderr)
        return EXIT_USAGE
    if args.concurrency < 1 or (args.limit is not None and args.limit < 1):
        print("error: --concurrency and --limit must be >= 1", file=sys.stderr)
        return EXIT_USAGE
    if (args.api_key or args.ca_file) and not args.server:
        print("error: --api-key and --ca-file go with --server", file=sys.stderr)
        return EXIT_USAGE
    try:
        select(_csv(args.families), _csv(args.transforms))
    except InvalidArgumentError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return EXIT_USAGE
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a model hub
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    try:
        return asyncio.run(redteam(args))
    except InvalidArgumentError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return EXIT_USAGE

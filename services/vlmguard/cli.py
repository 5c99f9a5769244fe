"""The ``vlmguard`` command line.

Subcommands: ``serve`` (the gateway; ``make run`` starts it with the embedded defaults),
``worker`` (one stage consuming the Redis queue), the clients of the API (``guard``,
``analyze``, ``rewrite``, ``generate``, ``check-output``: one per RPC), ``check-config``
(validate and print the effective configuration), ``keys hash`` (a keys-file entry for an API
key) and ``triton-repo``. The offline commands (``eval``, ``redteam``, ``synth``, ``train``,
``pipeline``) come from the ``vlmguard-training`` distribution when it is installed
(entry-point group ``vlmguard.commands``).

One convention for all of them (:func:`_harmonise`, applied to every parser, whichever module
defines its options): defaults in ``--help``, ``--progress/--no-progress``, ``--out`` for
outputs, ``--in PATH`` for inputs; exit 0 on success, 1 when the work fails (a server that
cannot start, a failed call), 2 for a command line that cannot run as given, each with a
one-line message that says what to change.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE",
                   help="YAML config file (default: $VLMGUARD_CONFIG, else built-in defaults)")


def _load(args: argparse.Namespace, extra: dict[str, Any] | None = None) -> Any:
    from vlmguard.config import load_config

    return load_config(args.config, overrides=extra or {})


# -- serve ---------------------------------------------------------------------------------


def _cmd_serve(args: argparse.Namespace) -> int:
    from vlmguard.config import set_dotted
    from vlmguard.logs import configure_logging

    overrides: dict[str, Any] = {}
    if args.listen:
        overrides = set_dotted(overrides, "server.listen", args.listen)
    if args.metrics_listen:
        overrides = set_dotted(overrides, "metrics.listen", args.metrics_listen)
    if args.no_metrics:
        overrides = set_dotted(overrides, "metrics.enabled", False)
    if args.target:
        overrides = set_dotted(overrides, "target.backend", args.target)
    if args.log_format:
        overrides = set_dotted(overrides, "logging.format", args.log_format)
    if getattr(args, "http", None):  # the OpenAI-compatible front door as a second listener
        overrides = set_dotted(overrides, "http.listen", args.http)
    cfg = _load(args, overrides)
    if not getattr(args, "ray", False):  # before any model loads
        http_listen = getattr(getattr(cfg, "http", None), "listen", "")
        _check_listen([(cfg.server.listen, "server.listen", "--listen"),
                       (cfg.metrics.listen if cfg.metrics.enabled else "", "metrics.listen",
                        "--metrics-listen"),
                       (http_listen, "http.listen", "--http")])
    configure_logging(cfg.logging.level, cfg.logging.format)
    _offline_and_quiet()
    if getattr(args, "ray", False):
        return _serve_ray(cfg)
    return asyncio.run(_serve(cfg))


def _serve_ray(cfg: Any) -> int:
    """``serve --ray``: the guard on a local Ray Serve until SIGINT/SIGTERM, then shut down."""
    import threading

    from vlmguard.errors import ConfigError, Reason

    try:
        from vlmguard.serving.ray_app import LocalRayServe
    except ImportError as e:
        raise ConfigError(f"serve --ray needs Ray Serve ({e.name}); install it with: "
                          "pip install 'vlmguard[ray]'", reason=Reason.MISSING_DEPENDENCY) from e
    log = logging.getLogger("vlmguard.serve")
    stop = threading.Event()

    def _on_signal(signum: int, frame: Any) -> None:
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _on_signal)
    t0 = time.perf_counter()
    rs = LocalRayServe(cfg)
    try:
        rs.start()
        for sig in (signal.SIGINT, signal.SIGTERM):  # Ray may have installed its own
            signal.signal(sig, _on_signal)
        addr = rs.grpc_address
        print(
            f"\nVLMGuard is serving on Ray Serve's gRPC proxy at {addr} (all interfaces; "
            f"ready in {time.perf_counter() - t0:.1f}s)\n"
            f"  app: {cfg.ray.app_name}  stages: analyze"
            + ("  target" if cfg.target.backend != "none" else "")
            + f"  HTTP proxy: http://{cfg.ray.http_host}:{cfg.ray.http_port}/-/healthz\n\n"
            "Try it from another shell:\n"
            f"  .venv/bin/vlmguard guard --addr {addr} --text 'What is the capital of France?'\n"
            "Stop with Ctrl-C.\n",
            flush=True,
        )
        while not stop.wait(0.5):
            pass
        log.info("shutting down Ray Serve")
    finally:
        rs.stop()
    log.info("stopped")
    return EXIT_OK


def _offline_and_quiet() -> None:
    """Never reach for a model hub at run time; no model-loading progress bars in server logs."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # the gateway image has no transformers
        pass


async def _serve(cfg: Any) -> int:
    from vlmguard import tracing
    from vlmguard.gateway.server import build_gateway

    log = logging.getLogger("vlmguard.serve")
    t0 = time.perf_counter()
    if cfg.http.listen and not cfg.target.openai.base_url:
        # Found before the gRPC server exists, so the error is one line, not a teardown trace.
        raise StartupError("http.listen (--http) is set but target.openai.base_url is not: the "
                           "front door needs the upstream it forwards to; set "
                           "target.openai.base_url (e.g. http://vllm:8000/v1)")
    tracing.setup(cfg.tracing)
    try:
        gw = await build_gateway(cfg)
    except RuntimeError as e:  # grpc's bind failure: a port taken since the check before loading
        if "bind" not in str(e).lower():
            raise
        raise StartupError(_bind_problem(cfg.server.listen, "server.listen", "--listen")
                           or f"cannot listen on {cfg.server.listen} (server.listen): {e}"
                           ) from None
    await gw.start()
    front = None
    if cfg.http.listen:  # the OpenAI-compatible HTTP front door (vlmguard.http)
        from vlmguard.http.server import start_for_gateway

        front = await start_for_gateway(gw)
        http_host = cfg.http.listen.rpartition(":")[0] or "127.0.0.1"
        print(f"\nOpenAI-compatible front door on http://{http_host}:{front.port}/v1 "
              f"(upstream {cfg.target.openai.base_url})", flush=True)
    host = cfg.server.listen.rpartition(":")[0] or "127.0.0.1"
    addr = f"{host}:{gw.port}"
    log.info("serving on %s in %.1fs", addr, time.perf_counter() - t0)
    tls = " (TLS)" if cfg.server.tls.enabled else ""
    auth = ' -H "authorization: Bearer $KEY"' if cfg.server.auth.enabled else ""
    plain = "" if cfg.server.tls.enabled else " -plaintext"
    if not cfg.server.reflection:  # grpcurl then needs the proto files
        plain += " -import-path proto -proto vlmguard/v1/guard.proto"
    print(
        f"\nVLMGuard is serving on {addr}{tls} (ready in {time.perf_counter() - t0:.1f}s)\n"
        f"  analyzer: {gw.analyzer_name}  target: {cfg.target.backend}"
        + (f"  metrics: http://{cfg.metrics.listen}/metrics" if gw.metrics_port else "")
        + "\n\nTry it from another shell:\n"
        f"  .venv/bin/vlmguard guard --addr {addr} --text 'What is the capital of France?'\n"
        f"  .venv/bin/vlmguard guard --addr {addr} --image examples/chart.png --text 'Which "
        "month had the most rain?' --json\n"
        f"  grpcurl{plain}{auth} -d '{{\"text\": \"hello\"}}' {addr} "
        "vlmguard.v1.GuardService/Guard\n"
        "Stop with Ctrl-C.\n",
        flush=True,
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("draining")
    if front is not None:
        await front.stop(cfg.server.grace_s)
    await gw.stop()
    tracing.shutdown()  # exports the spans still buffered
    log.info("stopped")
    return EXIT_OK


# -- worker ----------------------------------------------------------------------------------


def _cmd_worker(args: argparse.Namespace) -> int:
    from vlmguard.config import set_dotted
    from vlmguard.logs import configure_logging

    overrides: dict[str, Any] = {}
    if args.target:
        overrides = set_dotted(overrides, "target.backend", args.target)
    if args.log_format:
        overrides = set_dotted(overrides, "logging.format", args.log_format)
    cfg = _load(args, overrides)
    if args.metrics_listen:
        _check_listen([(args.metrics_listen, "worker metrics", "--metrics-listen")])
    configure_logging(cfg.logging.level, cfg.logging.format)
    _offline_and_quiet()
    return asyncio.run(_worker(cfg, args.stage, args.metrics_listen))


async def _worker(cfg: Any, stage: str, metrics_listen: str | None) -> int:
    from vlmguard import tracing
    from vlmguard.config import redact_url
    from vlmguard.serving.worker import build_worker

    log = logging.getLogger("vlmguard.serving.worker")
    t0 = time.perf_counter()
    stop = asyncio.Event()  # handlers first: a SIGTERM during model loading still exits 0
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tracing.setup(cfg.tracing, role=f"worker-{stage}")
    worker = await asyncio.to_thread(build_worker, cfg, stage)
    if stop.is_set():
        return EXIT_OK
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, worker.request_stop)
    if metrics_listen:
        worker.queue.metrics.serve(metrics_listen)  # type: ignore[union-attr]
    await worker.start()
    log.info("worker for stage %s ready in %.1fs (queue %s)", stage, time.perf_counter() - t0,
             redact_url(cfg.queue.url))
    print(f"vlmguard worker: stage {stage} ready", file=sys.stderr, flush=True)
    await worker.queue.wait()
    log.info("draining")
    await worker.close()
    tracing.shutdown()
    log.info("stopped")
    return EXIT_OK


# -- client commands: guard, analyze, rewrite, generate ----------------------------------------


def _connection(args: argparse.Namespace) -> Any:
    from vlmguard.gateway.client import Connection

    if args.ca_file and not Path(args.ca_file).is_file():
        raise UsageError(f"cannot read --ca-file {args.ca_file}: no such file")
    return Connection(addr=args.addr, timeout_s=args.timeout,
                      api_key=args.api_key or os.environ.get("VLMGUARD_CLIENT_API_KEY", ""),
                      ca_file=args.ca_file)


def _client_inputs(args: argparse.Namespace) -> tuple[str, list[Any]]:
    """The prompt ('-' reads stdin) and the images of a client command.

    Raises:
        UsageError: an image or CA file that cannot be read.
    """
    from vlmguard.gateway.client import read_images

    try:
        images = read_images(args.image or [])
    except OSError as e:
        raise UsageError(f"cannot read image {e.filename}: {e.strerror}") from e
    text = sys.stdin.read() if args.text == "-" else args.text
    return text, images


def _run_client(args: argparse.Namespace, rpc: str, request: Any,
                to_json: Any, print_human: Any) -> int:
    """Call ``rpc``, print its answer (JSON or text) or its error; exit 0 or 1."""
    from vlmguard.gateway.client import CallError, call

    try:
        response, trailing = call(_connection(args), rpc, request)
    except CallError as e:
        hint = _call_hint(e, args)
        if args.json:
            out = e.as_json()
            if hint:
                out["error"]["hint"] = hint
            print(json.dumps(out))
        else:
            status = " ".join(x for x in (e.code, e.reason) if x)
            print(f"error: {status}: {e.message}"
                  + (f" (retry after {e.retry_after})" if e.retry_after else "")
                  + (f"\nhint: {hint}" if hint else ""), file=sys.stderr)
        return EXIT_ERROR
    result = to_json(response, trailing)
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        print_human(result)
    return EXIT_OK


def _call_hint(e: Any, args: argparse.Namespace) -> str:
    """What to do about the failures a first user meets: the client's own deadline (a CPU
    target takes tens of seconds to minutes per answer), no server at the address."""
    if e.local_deadline:
        slow = (" The target model generates on CPU: raise --timeout, or lower "
                "--max-new-tokens." if getattr(args, "run_target", False)
                or args.command == "generate" else " Raise --timeout.")
        return (f"no answer within --timeout {args.timeout:g} s (the client's deadline; the "
                f"server applies server.default_timeout_s only when a client sets none).{slow}")
    if e.code == "UNAVAILABLE" and not e.reason:
        return (f"no VLMGuard server answers at {args.addr}: start one with `vlmguard serve` "
                "(or `make run`), or pass --addr HOST:PORT")
    return ""


def _cmd_guard(args: argparse.Namespace) -> int:
    from vlmguard.gateway.client import guard_json
    from vlmguard.v1 import guard_pb2, types_pb2

    text, images = _client_inputs(args)
    req = guard_pb2.GuardRequest(
        text=text, images=images, tenant_id=args.tenant, request_id=args.request_id,
        options=guard_pb2.GuardOptions(
            run_target=args.run_target,
            generation=types_pb2.GenerationParams(max_new_tokens=args.max_new_tokens),
        ),
    )
    return _run_client(args, "guard", req, lambda r, _t: guard_json(r), _print_guard)


def _cmd_analyze(args: argparse.Namespace) -> int:
    from vlmguard.gateway.client import analyze_json
    from vlmguard.v1 import analysis_pb2

    text, images = _client_inputs(args)
    req = analysis_pb2.AnalyzeRequest(text=text, images=images, tenant_id=args.tenant,
                                      request_id=args.request_id)
    return _run_client(args, "analyze", req, lambda r, _t: analyze_json(r), _print_analyze)


def _cmd_rewrite(args: argparse.Namespace) -> int:
    from vlmguard.gateway.client import rewrite_json
    from vlmguard.v1 import rewrite_pb2

    text, images = _client_inputs(args)
    req = rewrite_pb2.RewriteRequest(text=text, images=images, tenant_id=args.tenant,
                                     request_id=args.request_id)
    return _run_client(args, "rewrite", req, lambda r, _t: rewrite_json(r), _print_rewrite)


def _cmd_generate(args: argparse.Namespace) -> int:
    from vlmguard.gateway.client import generate_json
    from vlmguard.v1 import target_pb2, types_pb2

    text, images = _client_inputs(args)
    params = types_pb2.GenerationParams(max_new_tokens=args.max_new_tokens,
                                        temperature=args.temperature, top_p=args.top_p,
                                        seed=args.seed)
    req = target_pb2.GenerateRequest(text=text, images=images, tenant_id=args.tenant,
                                     request_id=args.request_id, params=params)
    return _run_client(args, "generate", req, generate_json, _print_generate)


def _cmd_check_output(args: argparse.Namespace) -> int:
    from vlmguard.gateway.client import chat_messages, check_output_json
    from vlmguard.v1 import guard_pb2, types_pb2

    if [args.text, args.output].count("-") > 1:
        raise UsageError("only one of --text and --output may read standard input ('-')")
    if args.text and args.messages:
        raise UsageError("give the request as --text or as --messages FILE, not both")
    output = sys.stdin.read() if args.output == "-" else args.output
    text = sys.stdin.read() if args.text == "-" else args.text
    messages = [types_pb2.ChatMessage(role=types_pb2.ROLE_USER, text=text)] if text else []
    if args.messages:
        path = Path(args.messages)
        try:
            turns = json.loads(path.read_text())
            messages = chat_messages(turns if isinstance(turns, list) else [], path.parent)
        except OSError as e:
            raise UsageError(f"cannot read {e.filename}: {e.strerror}") from e
        except ValueError as e:  # not JSON, or a message without a known role
            raise UsageError(f"--messages {args.messages}: {e}") from e
    req = guard_pb2.CheckOutputRequest(output=output, messages=messages, tenant_id=args.tenant,
                                       request_id=args.request_id,
                                       delivered_chars=args.delivered_chars)
    return _run_client(args, "check-output", req, lambda r, _t: check_output_json(r),
                       _print_check_output)


def _print_report(r: dict[str, Any]) -> None:
    lang = f", language {r['language']}" if r.get("language") else ""
    if r.get("language_unsupported"):
        lang += " (not supported: the tenant's unsupported_language rule applies)"
    print(f"risk:       {r['risk_level']} (score {r['risk_score']:.3f}, {r['analyzer']}{lang})")
    if r["findings"]:
        print("findings:")
        for f in r["findings"][:10]:
            img = f" image {f['image_index'] + 1}" if f["image_index"] >= 0 else ""
            print(f"  {f['score']:.3f}  {f['category']:<22} {f['modality']:<11}{img}  "
                  f"{f['evidence'][:70]}")
    print("reasoning:")
    for k in ("textual", "visual", "cross_modal"):
        print(f"  {k}: {r['reasoning'][k]}")


def _print_block(lines: str) -> None:
    for line in lines.splitlines():
        print(f"  {line}")


def _print_tail(r: dict[str, Any]) -> None:
    t = ", ".join(f"{k} {v:.1f}" for k, v in r["timings_ms"].items())
    print(f"timings ms: {t}")
    print(f"request id: {r['request_id']}")


def _print_decision(r: dict[str, Any]) -> None:
    if r["action"] == "BLOCK":
        print("block message:")
        _print_block(r["block_message"])
    else:
        print("rewritten text:" if r["action"] == "REWRITE" else "text (unchanged):")
        _print_block(r["rewritten_text"])


def _print_guard(r: dict[str, Any]) -> None:
    print(f"action:     {r['action']}")
    _print_report(r)
    _print_decision(r)
    if r["target_response"] or r["finish_reason"]:
        cut = " (cut at the token limit: raise --max-new-tokens)" \
            if r["finish_reason"] == "length" else ""
        print(f"target response ({r['target_model']}, finish reason {r['finish_reason']}{cut}, "
              f"{r['prompt_tokens']} prompt + {r['completion_tokens']} completion tokens):")
        _print_block(r["target_response"])
    _print_tail(r)


def _print_analyze(r: dict[str, Any]) -> None:
    _print_report(r)
    _print_tail(r)


def _print_rewrite(r: dict[str, Any]) -> None:
    print(f"action:     {r['action']}")
    _print_report(r)
    _print_decision(r)
    if r["rewriter"]:
        print(f"rewriter:   {r['rewriter']}")
    _print_tail(r)


def _print_check_output(r: dict[str, Any]) -> None:
    print(f"output:     {r['output_action']}"
          + (f" ({', '.join(r['categories'])})" if r["categories"] else ""))
    _print_report(r)
    if r["output_action"] in ("REPLACE", "CUT"):  # otherwise the answer as it is
        print("deliver instead:")
        _print_block(r["text"])
    if r["annotation"]:
        print("annotation:")
        _print_block(r["annotation"])
    _print_tail(r)


def _print_generate(r: dict[str, Any]) -> None:
    guard = r["guard_action"] or "unknown"
    print(f"guard:      {guard}" + (" (raw target access: not guarded)" if guard == "raw" else ""))
    cut = " (cut at the token limit: raise --max-new-tokens)" \
        if r["finish_reason"] == "length" else ""
    print(f"model:      {r['model'] or '-'}  finish reason: {r['finish_reason']}{cut}  tokens: "
          f"{r['prompt_tokens']} prompt + {r['completion_tokens']} completion")
    print("text:")
    _print_block(r["text"])
    _print_tail(r)


# -- check-config --------------------------------------------------------------------------


def _cmd_check_config(args: argparse.Namespace) -> int:
    import yaml

    cfg = _load(args)
    from vlmguard.auth import Gatekeeper

    problems: list[str] = []
    try:
        Gatekeeper(cfg.server.auth)  # the keys file parses, auth has keys when enabled
    except Exception as e:
        problems.append(f"server.auth: {e}")
    problems += _tls_file_problems(cfg)
    problems += _path_problems(cfg)
    if args.load_models:
        from vlmguard.analyzer.tier1 import Tier1Analyzer

        try:
            Tier1Analyzer.from_config(cfg.analyzer, cfg.taxonomy, cfg.limits)
        except Exception as e:  # report every problem, not just the first
            problems.append(f"analyzer: {e}")
    from vlmguard.target.base import build_target_backend

    try:
        build_target_backend(cfg.target)
    except Exception as e:
        problems.append(f"target: {e}")
    if args.print:
        print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), end="")
    if problems:
        for p in problems:
            print(f"error: {p}", file=sys.stderr)
        return EXIT_ERROR
    print(f"config OK ({args.config or os.environ.get('VLMGUARD_CONFIG') or 'defaults'}): "
          f"{len(cfg.policy.tenants)} tenant(s), {len(cfg.taxonomy.categories)} categories, "
          f"target {cfg.target.backend!r}, listen {cfg.server.listen}", file=sys.stderr)
    return EXIT_OK


#: Settings that name a file or folder on the serving machine (empty: not used / packaged
#: default). The server tls and auth files have their own checks above.
PATH_SETTINGS: tuple[str, ...] = (
    "analyzer.embedder_path", "analyzer.head_path", "analyzer.multilingual_head_path",
    "rewriter.model_path", "target.model_path", "target.openai.api_key_file",
    "queue.tls_ca_file",
)
TRITON_TLS_FILES = ("root_ca_file", "cert_file", "key_file")


def _setting(cfg: Any, dotted: str) -> Any:
    value = cfg
    for part in dotted.split("."):
        value = getattr(value, part, None)
        if value is None:
            return None
    return value


def _path_problems(cfg: Any) -> list[str]:
    """Named files and folders that do not exist or cannot be read (the server would fail
    only when it loads that model or opens that connection)."""
    keys = list(PATH_SETTINGS)
    if _setting(cfg, "target.triton.tls.enabled"):
        keys += [f"target.triton.tls.{f}" for f in TRITON_TLS_FILES]
    out: list[str] = []
    for key in keys:
        path = _setting(cfg, key)
        if not isinstance(path, str) or not path:
            continue
        p = Path(path)
        if not p.exists():
            out.append(f"{key}: {path} does not exist")
        elif not os.access(p, os.R_OK):
            out.append(f"{key}: {path} is not readable")
    return out


def _tls_file_problems(cfg: Any) -> list[str]:
    """TLS files that are named but cannot be read (the server would fail only at bind)."""
    out: list[str] = []
    tls = cfg.server.tls
    if not tls.enabled:
        return out
    for field in ("cert_file", "key_file", "client_ca_file"):
        path = getattr(tls, field)
        if not path:
            continue
        p = Path(path)
        if not p.is_file():
            out.append(f"server.tls.{field}: {path} does not exist or is not a file")
        elif not os.access(p, os.R_OK):
            out.append(f"server.tls.{field}: {path} is not readable")
    return out


# -- keys --------------------------------------------------------------------------------


def _cmd_keys_hash(args: argparse.Namespace) -> int:
    """Print a keys-file entry for a key (read from stdin, or a fresh one with --generate)."""
    import yaml

    from vlmguard.auth import KeyEntry, RateLimit, hash_key, new_key

    if args.generate:
        key = new_key()
        print(f"# the new API key (shown once; give it to the client): {key}", file=sys.stderr)
    else:
        if sys.stdin.isatty():
            print("reading the API key from stdin (one line)...", file=sys.stderr)
        key = sys.stdin.readline().strip()
        if not key:
            print("error: no key on stdin (or use --generate)", file=sys.stderr)
            return EXIT_USAGE
    limit = None
    if args.rate:
        limit = RateLimit(rate_per_s=args.rate, burst=args.burst)
    entry = KeyEntry(hash=hash_key(key), tenants=args.tenant or ["default"],
                     scopes=args.scope or ["guard"], rate_limit=limit)
    data = {"keys": {args.id: entry.model_dump(mode="json", exclude_none=True)}}
    print(yaml.safe_dump(data, sort_keys=False), end="")
    return EXIT_OK


def _add_keys_parser(sub: Any) -> None:
    p = sub.add_parser("keys", help="API keys bound to tenants and scopes (docs/security.md)")
    ksub = p.add_subparsers(dest="keys_command", metavar="COMMAND", required=True)
    h = ksub.add_parser(
        "hash", help="print a keys-file entry (salted hash) for a key read from stdin",
        description="Read an API key from stdin (or make one with --generate, printed to "
        "stderr once) and print its entry for server.auth.keys_file: the salted SHA-256, "
        "never the key.")
    h.add_argument("--id", required=True, help="key id (in audit lines and rate limits)")
    h.add_argument("--tenant", action="append", default=[],
                   help="tenant the key may act for (repeat; the first is its default)")
    h.add_argument("--scope", action="append", default=[],
                   choices=["guard", "analyze", "rewrite", "target_raw"],
                   help="what the key may do (repeat; default guard)")
    h.add_argument("--rate", type=float, default=0.0, help="calls per second (0: unlimited)")
    h.add_argument("--burst", type=int, default=0, help="burst size (0: max(1, rate))")
    h.add_argument("--generate", action="store_true", help="make a new random key")
    h.set_defaults(func=_cmd_keys_hash)


# -- conventions shared by every command -------------------------------------------------------


class UsageError(Exception):
    """A command line that cannot run as given (exit 2): the message says what to change."""


class StartupError(Exception):
    """A server that cannot start (exit 1): the message names the setting and the fix."""


class _HelpFormatter(argparse.HelpFormatter):
    """Shows each option's default (unless the help already speaks of it, or there is none to
    show) and hides deprecated spellings of an option from the help."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (not action.option_strings or "default" in text.lower()
                or default in (None, "", [], argparse.SUPPRESS)
                or isinstance(default, bool)
                or action.nargs == 0):
            return text
        return f"{text} (default: %(default)s)"

    def _format_action_invocation(self, action: argparse.Action) -> str:
        hidden = getattr(action, "deprecated_aliases", ())
        if not hidden:
            return super()._format_action_invocation(action)
        shown = [s for s in action.option_strings if s not in hidden]
        saved, action.option_strings = action.option_strings, shown
        try:
            return super()._format_action_invocation(action)
        finally:
            action.option_strings = saved


def _with_defaults(formatter: Any) -> Any:
    """``formatter`` showing defaults; a raw-text formatter keeps its layout (examples)."""
    if not isinstance(formatter, type) or issubclass(formatter, _HelpFormatter):
        return formatter
    if formatter in (argparse.HelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
        return _HelpFormatter
    return type(f"_Defaults{formatter.__name__}", (_HelpFormatter, formatter), {})


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every parser below ``parser`` (each once, aliases included only once)."""
    out: list[argparse.ArgumentParser] = []
    seen: set[int] = set()
    stack = [parser]
    while stack:
        p = stack.pop()
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in action.choices.values():
                    if id(child) not in seen:
                        seen.add(id(child))
                        out.append(child)
                        stack.append(child)
    return out


def _rename(parser: argparse.ArgumentParser, old: str, new: str, *, extend: bool = False) -> None:
    """Make ``new`` the option's spelling and keep ``old`` as a hidden alias that still works
    and says it is deprecated. ``extend``: the option takes one or more values per use and may
    be repeated (``--in A B --in C``), the inputs convention."""
    action = parser._option_string_actions.get(old)
    if action is None or new in parser._option_string_actions:
        return
    base: type[argparse.Action] = argparse._ExtendAction if extend else type(action)
    if extend:
        action.nargs = "+"

    class _Aliased(base):  # type: ignore[valid-type,misc]
        deprecated_aliases = (old,)

        def __call__(self, p: argparse.ArgumentParser, namespace: argparse.Namespace,
                     values: Any, option_string: str | None = None) -> None:
            if option_string == old:
                print(f"warning: {old} is deprecated; use {new}", file=sys.stderr)
            super().__call__(p, namespace, values, option_string)

    action.__class__ = _Aliased
    action.option_strings = [new, *[s for s in action.option_strings if s != new]]
    parser._option_string_actions[new] = action


def _harmonise(parser: argparse.ArgumentParser) -> None:
    """One convention for every command, whichever module defines its options:

    - defaults shown in ``--help``;
    - ``--progress/--no-progress`` wherever there is a progress bar;
    - ``--out`` names every output (``--dest`` stays as a deprecated alias);
    - inputs are ``--in PATH`` (one or more per use, repeatable; ``--data`` stays as a
      deprecated alias).
    """
    for p in [parser, *_subparsers(parser)]:
        p.formatter_class = _with_defaults(p.formatter_class)
        opts = p._option_string_actions
        if "--no-progress" in opts and "--progress" not in opts:
            no = opts["--no-progress"]
            if isinstance(no, argparse._StoreTrueAction):
                p.add_argument("--progress", dest=no.dest, action="store_false",
                               help="show progress bars (the default; --no-progress hides "
                               "them, for logs and CI)")
        if "--dest" in opts:
            _rename(p, "--dest", "--out")
        if "--data" in opts:
            _rename(p, "--data", "--in", extend=True)
        elif "--in" in opts and isinstance(opts["--in"], argparse._AppendAction):
            action = opts["--in"]
            action.__class__ = argparse._ExtendAction
            action.nargs = "+"


def _listen_flag(value: str) -> str:
    """argparse type of a listen-address flag: a bad address is a usage error (exit 2)."""
    from vlmguard.config import check_listen

    try:
        return check_listen(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _bind_problem(listen: str, key: str, flag: str) -> str:
    """Why ``listen`` cannot be bound now ('' when it can): checked before the models load,
    so a busy port costs a second, not a model load and a traceback."""
    import errno
    import socket

    host, _, port_s = listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port_s.isdigit() or int(port_s) == 0:
        return ""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    where = f"cannot listen on {listen} ({key})"
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, int(port_s)))
    except socket.gaierror:
        return (f"{where}: unknown host {host!r}; use 127.0.0.1 (this machine only) or 0.0.0.0 "
                f"(every interface)")
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            return (f"{where}: the port is in use (another vlmguard serve?); stop that process "
                    f"or {_free_port_fix(flag, key)}")
        if e.errno == errno.EADDRNOTAVAIL:
            return (f"{where}: {host} is not an address of this machine; use 127.0.0.1 or "
                    f"0.0.0.0")
        if e.errno == errno.EACCES:
            return f"{where}: ports below 1024 need privileges; pass {flag} with a higher port"
        return f"{where}: {e.strerror}"
    return ""


def _free_port_fix(flag: str, key: str) -> str:
    fix = f"pass {flag} HOST:PORT with a free port"
    return fix + (" (or --no-metrics)" if key == "metrics.listen" else "")


def _check_listen(pairs: list[tuple[str, str, str]]) -> None:
    """Raise :class:`StartupError` for the first (address, config key, flag) that cannot be
    bound."""
    for listen, key, flag in pairs:
        problem = _bind_problem(listen, key, flag) if listen else ""
        if problem:
            raise StartupError(problem)


# -- parser --------------------------------------------------------------------------------


def _client_args(p: argparse.ArgumentParser, *, text_help: str,
                 text_required: bool = True) -> None:
    """Flags every client command shares: where to call, what to send, how to print."""
    p.add_argument("--addr", default="127.0.0.1:50051", metavar="HOST:PORT",
                   help="server address")
    p.add_argument("--text", required=text_required, default="",
                   help=text_help + " ('-' reads standard input)")
    if text_required:  # check-output sends no images (Guard read the request's)
        p.add_argument("--image", action="append", metavar="PATH",
                       help="an image file (PNG, JPEG, WebP, GIF); repeat for several")
    p.add_argument("--tenant", default="", help="tenant id (empty: the server's default tenant)")
    p.add_argument("--request-id", default="", metavar="ID",
                   help="request id to send (empty: the server makes one)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                   help="the call's deadline")
    p.add_argument("--api-key", default="",
                   help="API key, sent as a Bearer token (empty: $VLMGUARD_CLIENT_API_KEY)")
    p.add_argument("--ca-file", default="", metavar="PEM",
                   help="CA bundle of the server's certificate: connect with TLS")


def _add_client_parsers(sub: Any) -> None:
    """``guard``, ``analyze``, ``rewrite``, ``generate``, ``check-output``: one command per
    RPC of the API."""
    p = sub.add_parser("guard", help="call GuardService.Guard on a running server",
                       description="Send a prompt (and optional images) to a running VLMGuard "
                       "server and print the decision, findings and rewritten prompt; with "
                       "--run-target also the target model's answer, its finish reason and "
                       "token counts. Exit 0 for every decision (a BLOCK is an answer), 1 when "
                       "the call fails, 2 for a bad command line.")
    _client_args(p, text_help="the prompt")
    p.add_argument("--run-target", action="store_true",
                   help="also run the server's target model on the guarded prompt (a CPU "
                   "target takes tens of seconds: see --timeout)")
    p.add_argument("--max-new-tokens", type=int, default=0, metavar="N",
                   help="target token limit (0: the server's target.max_new_tokens)")
    p.set_defaults(func=_cmd_guard)

    p = sub.add_parser("analyze", help="call ThreatAnalysisService.Analyze: the risk report only",
                       description="Analyse a prompt and its images without deciding or "
                       "rewriting: risk level and score, findings per modality, reasoning.")
    _client_args(p, text_help="the prompt")
    p.set_defaults(func=_cmd_analyze)

    p = sub.add_parser("rewrite", help="call RewriteService.Rewrite: analyse, decide, rewrite",
                       description="Rewrite a prompt under the tenant's policy (the server "
                       "analyses it first) and print the action, the rewritten prompt or block "
                       "message, and the rewriter used.")
    _client_args(p, text_help="the prompt")
    p.set_defaults(func=_cmd_rewrite)

    p = sub.add_parser("generate", help="call TargetService.Generate: the target's answer",
                       description="Ask the server's target model. The guard runs first "
                       "(answer to the guarded prompt, or the block message) unless the API "
                       "key has the target_raw scope; the output says which. Needs a server "
                       "with a target (serve --target smollm2).")
    _client_args(p, text_help="the prompt")
    p.add_argument("--max-new-tokens", type=int, default=0, metavar="N",
                   help="token limit (0: the server's target.max_new_tokens)")
    p.add_argument("--temperature", type=float, default=0.0,
                   help="sampling temperature (0: greedy)")
    p.add_argument("--top-p", type=float, default=0.0, help="nucleus sampling (0: off)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (0: unset)")
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("check-output", help="call GuardService.CheckOutput: check a model's answer",
                       description="Check a model's answer under the tenant's output policy "
                       "(tier 1 on the answer, alone and with its request): PASS, ANNOTATE, "
                       "REPLACE or CUT, and the text to deliver in its place.")
    _client_args(p, text_help="the request the answer is for (empty: the answer is read alone)",
                 text_required=False)
    p.add_argument("--messages", default="", metavar="FILE",
                   help='the conversation instead of --text: a JSON list of {"role": "system" | '
                   '"user" | "assistant", "content": "..."}')
    p.add_argument("--output", required=True,
                   help="the model's answer ('-' reads standard input)")
    p.add_argument("--delivered-chars", type=int, default=0, metavar="N",
                   help="characters of the answer already shown to the user while streaming "
                   "(a CUT never cuts before them)")
    p.set_defaults(func=_cmd_check_output)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vlmguard",
        description="VLMGuard: a safety layer in front of vision-language models. It analyses "
        "the threat in text + images and rewrites the prompt so the model answers safely.",
        epilog="Configuration: defaults < --config FILE < VLMGUARD_<SECTION>__<FIELD> "
        "environment variables < flags. Every key: docs/config.md.",
    )
    from vlmguard import __version__

    parser.add_argument("--version", action="version", version=f"vlmguard {__version__}",
                        help="print the installed package version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("serve", help="run the gRPC gateway (embedded default: one process)",
                       description="Run the gRPC gateway. With the in-process queue (the "
                       "default) every stage runs in this process: the tier-1 analyzer, the "
                       "rewriter of rewriter.kind (template, or the tier-2 generative model) and "
                       "the target of target.backend; with queue.url set it only enqueues and "
                       "`vlmguard worker` processes run the stages. Listen addresses are checked "
                       "before any model loads; SIGTERM drains.")
    _config_args(p)
    p.add_argument("--listen", metavar="HOST:PORT", type=_listen_flag,
                   help="gRPC listen address (server.listen; default 127.0.0.1:50051; port 0 "
                   "picks a free one)")
    p.add_argument("--metrics-listen", metavar="HOST:PORT", type=_listen_flag,
                   help="Prometheus /metrics address (metrics.listen; default 127.0.0.1:9464)")
    p.add_argument("--no-metrics", action="store_true", help="do not serve /metrics")
    p.add_argument("--target", metavar="BACKEND",
                   help=f"target backend (target.backend): {_target_choices()}")
    p.add_argument("--log-format", choices=["text", "json"],
                   help="log format (logging.format; default text)")
    p.add_argument("--http", metavar="HOST:PORT",
                   help="also serve the OpenAI-compatible HTTP front door here (http.listen; "
                   "upstream: target.openai)")
    p.add_argument("--ray", action="store_true",
                   help="run on a local Ray Serve (gRPC proxy on ray.grpc_port, default 9000; "
                   "needs vlmguard[ray]) instead of the one-process gateway")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("worker", help="run a stage worker that consumes the Redis queue",
                       description="Run one stage (analyze, rewrite or target) as a worker "
                       "process: it "
                       "loads only that stage's model and consumes micro-batches from the Redis "
                       "Streams queue named by queue.url / VLMGUARD_QUEUE_URL. SIGTERM drains: "
                       "the batch in hand finishes, then it exits 0.")
    _config_args(p)
    p.add_argument("--stage", required=True, choices=["analyze", "target", "rewrite"],
                   help="the stage to serve (rewrite: the tier-2 rewriter of rewriter.*)")
    p.add_argument("--target", metavar="BACKEND",
                   help=f"target backend for --stage target (target.backend): "
                   f"{_target_choices()}")
    p.add_argument("--metrics-listen", metavar="HOST:PORT", type=_listen_flag,
                   help="serve Prometheus /metrics here (default: off)")
    p.add_argument("--log-format", choices=["text", "json"], help="log format")
    p.set_defaults(func=_cmd_worker)

    _add_client_parsers(sub)

    p = sub.add_parser("check-config", help="validate a config and print the effective values",
                       description="Validate the configuration (file + environment) and report "
                       "every problem. Exit status 0 when valid.")
    _config_args(p)
    p.add_argument("--print", action="store_true", help="print the effective config as YAML")
    p.add_argument("--load-models", action="store_true",
                   help="also load the tier-1 models to check their files")
    p.set_defaults(func=_cmd_check_config)

    from vlmguard.serving.triton.command import add_parser as _triton_repo_parser

    _triton_repo_parser(sub)
    _add_keys_parser(sub)
    _add_plugin_commands(sub)
    _harmonise(parser)
    return parser


def _target_choices() -> str:
    from vlmguard.target.base import TARGET_BACKENDS

    names = ["none", *(n for n in TARGET_BACKENDS if n != "none")]
    return ", ".join(names) + " or module:Class"


def _add_plugin_commands(sub: Any) -> None:
    """Commands of other installed distributions (``vlmguard-training``: eval, synth, train,
    pipeline), declared under the ``vlmguard.commands`` entry-point group."""
    from importlib.metadata import entry_points

    for ep in sorted(entry_points(group="vlmguard.commands"), key=lambda e: e.name):
        ep.load()(sub)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    from vlmguard.errors import StatusCode, VLMGuardError

    prog = f"vlmguard {args.command}"
    try:
        rc: int = args.func(args)
        return rc
    except UsageError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except StartupError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except VLMGuardError as e:
        # The stable reason is printed where it says more than a gRPC status name would: a
        # local error (a bad recipe, a missing input) is no RPC.
        reason = "" if e.reason in StatusCode.__members__ else f"{e.reason}: "
        print(f"{prog}: error: {reason}{e.message}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

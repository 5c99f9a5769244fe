"""The ``vlmguard`` command line.

Subcommands: ``serve`` (the gateway; ``make run`` starts it with the embedded defaults),
``worker`` (one stage consuming the Redis queue),
``guard`` (a client for GuardService.Guard), ``check-config`` (validate and print the effective
configuration), ``keys hash`` (a keys-file entry for an API key) and ``triton-repo``. The
offline commands (``eval``, ``synth``, ``train``,
``pipeline``) come from the ``vlmguard-training`` distribution when it is installed
(entry-point group ``vlmguard.commands``).
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
    cfg = _load(args, overrides)
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
    from vlmguard.gateway.server import build_gateway

    log = logging.getLogger("vlmguard.serve")
    t0 = time.perf_counter()
    gw = await build_gateway(cfg)
    await gw.start()
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
        f"  .venv/bin/vlmguard guard --addr {addr} --image photo.png --text 'What is in this "
        "image?' --json\n"
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
    await gw.stop()
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
    configure_logging(cfg.logging.level, cfg.logging.format)
    _offline_and_quiet()
    return asyncio.run(_worker(cfg, args.stage, args.metrics_listen))


async def _worker(cfg: Any, stage: str, metrics_listen: str | None) -> int:
    from vlmguard.config import redact_url
    from vlmguard.serving.worker import build_worker

    log = logging.getLogger("vlmguard.serving.worker")
    t0 = time.perf_counter()
    stop = asyncio.Event()  # handlers first: a SIGTERM during model loading still exits 0
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
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
    log.info("stopped")
    return EXIT_OK


# -- guard (client) ------------------------------------------------------------------------


def _cmd_guard(args: argparse.Namespace) -> int:
    import grpc

    from vlmguard.gateway.client import rpc_error_details
    from vlmguard.v1 import guard_pb2, guard_pb2_grpc, types_pb2

    images = []
    for path in args.image or []:
        try:
            images.append(types_pb2.Image(data=Path(path).read_bytes()))
        except OSError as e:
            print(f"error: cannot read image {path}: {e.strerror}", file=sys.stderr)
            return EXIT_USAGE
    text = args.text
    if text == "-":
        text = sys.stdin.read()
    req = guard_pb2.GuardRequest(
        text=text, images=images, tenant_id=args.tenant,
        options=guard_pb2.GuardOptions(
            run_target=args.run_target,
            generation=types_pb2.GenerationParams(max_new_tokens=args.max_new_tokens),
        ),
    )
    metadata = []
    key = args.api_key or os.environ.get("VLMGUARD_CLIENT_API_KEY", "")
    if key:
        metadata.append(("authorization", f"Bearer {key}"))
    if args.ca_file:
        creds = grpc.ssl_channel_credentials(Path(args.ca_file).read_bytes())
        channel = grpc.secure_channel(args.addr, creds)
    else:
        channel = grpc.insecure_channel(args.addr, options=[
            ("grpc.max_send_message_length", 64 * 1024 * 1024)])
    try:
        with channel:
            stub = guard_pb2_grpc.GuardServiceStub(channel)
            resp = stub.Guard(req, timeout=args.timeout, metadata=metadata)
    except grpc.RpcError as err:
        reason, retry = rpc_error_details(err)
        code = err.code().name if hasattr(err, "code") else "UNKNOWN"
        out = {"error": {"code": code, "reason": reason, "message": err.details()}}
        if retry:
            out["error"]["retry_after"] = retry
        if args.json:
            print(json.dumps(out))
        else:
            print(f"error: {code} {reason}: {err.details()}"
                  + (f" (retry after {retry})" if retry else ""), file=sys.stderr)
        return EXIT_ERROR
    result = _response_json(resp)
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        _print_human(result)
    return EXIT_OK


def _response_json(resp: Any) -> dict[str, Any]:
    from vlmguard.v1 import types_pb2

    return {
        "request_id": resp.request_id,
        "tenant_id": resp.tenant_id,
        "action": types_pb2.Action.Name(resp.action).removeprefix("ACTION_"),
        "risk_level": types_pb2.RiskLevel.Name(resp.report.level).removeprefix("RISK_LEVEL_"),
        "risk_score": round(resp.report.score, 4),
        "findings": [
            {
                "category": f.category,
                "score": round(f.score, 4),
                "modality": types_pb2.Modality.Name(f.modality).removeprefix("MODALITY_"),
                "evidence": f.evidence,
                "source": f.source,
                "image_index": f.image_index,
            }
            for f in resp.report.findings
        ],
        "reasoning": {
            "textual": resp.report.reasoning.textual,
            "visual": resp.report.reasoning.visual,
            "cross_modal": resp.report.reasoning.cross_modal,
        },
        "analyzer": resp.report.analyzer,
        "rewritten_text": resp.rewritten_text,
        "rewriter": resp.rewriter,
        "block_message": resp.block_message,
        "target_response": resp.target_response,
        "timings_ms": {k: round(v, 2) for k, v in sorted(resp.timings_ms.items())},
    }


def _print_human(r: dict[str, Any]) -> None:
    print(f"action:     {r['action']}")
    print(f"risk:       {r['risk_level']} (score {r['risk_score']:.3f}, {r['analyzer']})")
    if r["findings"]:
        print("findings:")
        for f in r["findings"][:10]:
            img = f" image {f['image_index'] + 1}" if f["image_index"] >= 0 else ""
            print(f"  {f['score']:.3f}  {f['category']:<22} {f['modality']:<11}{img}  "
                  f"{f['evidence'][:70]}")
    print("reasoning:")
    for k in ("textual", "visual", "cross_modal"):
        print(f"  {k}: {r['reasoning'][k]}")
    if r["action"] == "BLOCK":
        print(f"block message:\n  {r['block_message']}")
    else:
        print("rewritten text:" if r["action"] == "REWRITE" else "text (unchanged):")
        for line in r["rewritten_text"].splitlines():
            print(f"  {line}")
    if r["target_response"]:
        print("target response:")
        for line in r["target_response"].splitlines():
            print(f"  {line}")
    t = ", ".join(f"{k} {v:.1f}" for k, v in r["timings_ms"].items())
    print(f"timings ms: {t}")
    print(f"request id: {r['request_id']}")


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


# -- parser --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vlmguard",
        description="VLMGuard: a safety layer in front of vision-language models. It analyses "
        "the threat in text + images and rewrites the prompt so the model answers safely.",
        epilog="Configuration: defaults < --config FILE < VLMGUARD_<SECTION>__<FIELD> "
        "environment variables < flags. See README.md for every key.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("serve", help="run the gRPC gateway (embedded default: one process)",
                       description="Run the gRPC gateway with the tier-1 analyzer, template "
                       "rewriter and the configured target, in one process.")
    _config_args(p)
    p.add_argument("--listen", metavar="HOST:PORT",
                   help="gRPC listen address (default 127.0.0.1:50051)")
    p.add_argument("--metrics-listen", metavar="HOST:PORT",
                   help="Prometheus /metrics address (default 127.0.0.1:9464)")
    p.add_argument("--no-metrics", action="store_true", help="do not serve /metrics")
    p.add_argument("--target", metavar="BACKEND",
                   help="target backend: none (guard only) or smollm2 (local demo)")
    p.add_argument("--log-format", choices=["text", "json"], help="log format")
    p.add_argument("--ray", action="store_true",
                   help="run on a local Ray Serve (gRPC proxy on ray.grpc_port, default 9000; "
                   "needs vlmguard[ray]) instead of the one-process gateway")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser("worker", help="run a stage worker that consumes the Redis queue",
                       description="Run one stage (analyze or target) as a worker process: it "
                       "loads only that stage's model and consumes micro-batches from the Redis "
                       "Streams queue named by queue.url / VLMGUARD_QUEUE_URL. SIGTERM drains: "
                       "the batch in hand finishes, then it exits 0.")
    _config_args(p)
    p.add_argument("--stage", required=True, choices=["analyze", "target", "rewrite"],
                   help="the stage to serve (rewrite: the tier-2 rewriter of rewriter.*)")
    p.add_argument("--target", metavar="BACKEND",
                   help="target backend for --stage target: none or smollm2")
    p.add_argument("--metrics-listen", metavar="HOST:PORT",
                   help="serve Prometheus /metrics here (default: off)")
    p.add_argument("--log-format", choices=["text", "json"], help="log format")
    p.set_defaults(func=_cmd_worker)

    p = sub.add_parser("guard", help="call GuardService.Guard on a running server",
                       description="Send a prompt (and optional images) to a running VLMGuard "
                       "server and print the decision, findings and rewritten prompt.")
    p.add_argument("--addr", default="127.0.0.1:50051", help="server address HOST:PORT")
    p.add_argument("--text", required=True, help="the prompt ('-' reads standard input)")
    p.add_argument("--image", action="append", metavar="PATH",
                   help="an image file (PNG, JPEG, WebP, GIF); repeat for several")
    p.add_argument("--tenant", default="", help="tenant id (default: the 'default' tenant)")
    p.add_argument("--run-target", action="store_true",
                   help="also run the server's target model on the guarded prompt")
    p.add_argument("--max-new-tokens", type=int, default=0,
                   help="target token limit (0 = server default)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--timeout", type=float, default=60.0, help="deadline in seconds")
    p.add_argument("--api-key", default="",
                   help="API key (default $VLMGUARD_CLIENT_API_KEY); sent as a Bearer token")
    p.add_argument("--ca-file", default="", help="PEM CA bundle: connect with TLS")
    p.set_defaults(func=_cmd_guard)

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
    return parser


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
    from vlmguard.errors import VLMGuardError

    try:
        rc: int = args.func(args)
        return rc
    except VLMGuardError as e:
        print(f"error: {e.reason}: {e.message}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""Run the Redis-queue stack locally: redis-server, one worker per stage, and the gateway.

``make run QUEUE=redis`` calls this. It starts a redis-server on a free loopback port (no
persistence) unless ``--redis-url`` names one, then ``vlmguard worker --stage analyze``,
``vlmguard worker --stage target`` and ``vlmguard serve`` with ``VLMGUARD_QUEUE_URL`` set.
Ctrl-C (or any child exiting) stops every process it started: SIGTERM first, so workers drain.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vlmguard.queue.local_redis import redis_binary, start_local_redis

ROOT = Path(__file__).resolve().parents[1]


def _stop(procs: list[subprocess.Popen[bytes]], grace: float = 15.0) -> None:
    """SIGTERM every child (newest first), wait for them, SIGKILL what is left."""
    for p in reversed(procs):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    end = time.monotonic() + grace
    for p in reversed(procs):
        try:
            p.wait(max(0.1, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/embedded.yaml", help="YAML config file")
    parser.add_argument("--listen", default="127.0.0.1:50051", help="gateway HOST:PORT")
    parser.add_argument("--redis-url", default="",
                        help="use this Redis instead of starting a local redis-server")
    args = parser.parse_args(argv)

    def _interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # Ctrl-C, and SIGTERM from a supervisor, both stop every child (SIGINT is also set here
    # because a shell that starts this in the background leaves it ignored).
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)

    vlmguard = str(Path(sys.executable).with_name("vlmguard"))
    procs: list[subprocess.Popen[bytes]] = []
    workdir = tempfile.mkdtemp(prefix="vlmguard-redis-")
    url = args.redis_url
    try:
        if not url:
            if redis_binary() is None:
                print("redis-server not found: apt-get install redis-server, or pass "
                      "--redis-url", file=sys.stderr)
                return 1
            redis, url = start_local_redis(workdir)
            procs.append(redis)
            print(f"redis-server at {url}", file=sys.stderr, flush=True)
        env = {**os.environ, "VLMGUARD_QUEUE_URL": url}
        for stage in ("analyze", "target"):
            procs.append(subprocess.Popen(
                [vlmguard, "worker", "--stage", stage, "--config", args.config], env=env,
                cwd=ROOT))
        procs.append(subprocess.Popen(
            [vlmguard, "serve", "--config", args.config, "--listen", args.listen], env=env,
            cwd=ROOT))
        while all(p.poll() is None for p in procs):
            time.sleep(0.2)
        failed = [p.args for p in procs if p.poll() not in (None, 0)]
        if failed:
            print(f"a process exited: {failed[0]}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        with _ignore_sigint():
            _stop(procs)
        shutil.rmtree(workdir, ignore_errors=True)


class _ignore_sigint:  # noqa: N801 - used as a statement
    """Ignore a second Ctrl-C while children are being stopped."""

    def __enter__(self) -> None:
        self._old = signal.signal(signal.SIGINT, signal.SIG_IGN)

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self._old)


if __name__ == "__main__":
    sys.exit(main())

"""Start a throw-away local redis-server on a free loopback port (dev stack and benchmarks).

Not for production: no persistence, no password, bound to 127.0.0.1. The caller owns the
returned process and stops it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_binary() -> str | None:
    """Path of redis-server, or None when it is not installed."""
    found = shutil.which("redis-server") or "/usr/bin/redis-server"
    return found if Path(found).exists() else None


def start_local_redis(workdir: str, timeout: float = 10.0) -> tuple[subprocess.Popen[bytes], str]:
    """Start redis-server in ``workdir`` and wait until it answers PING.

    Returns:
        The process and its URL ``redis://127.0.0.1:PORT/0``.

    Raises:
        RuntimeError: redis-server is not installed or did not start (the process is killed).
    """
    binary = redis_binary()
    if binary is None:
        raise RuntimeError("redis-server not found: apt-get install redis-server")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", workdir, "--loglevel", "warning"])
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    proc.wait(5)
    raise RuntimeError("redis-server did not start")

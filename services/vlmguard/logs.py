"""Logging setup: configured once per process, text locally, JSON in a cluster.

Every record carries the current request id (a context variable set by the gateway). Never
log prompts, images or model outputs at INFO or above: log sizes, verdicts and a short hash
(:func:`short_hash`).
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


def short_hash(data: str | bytes) -> str:
    """A 10-hex-digit digest for correlating content in logs without logging it."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()[:10]


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, extras."""

    _STD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
        for k, v in vars(record).items():
            if k not in self._STD and k not in out and not k.startswith("_"):
                out[k] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Configure the root logger once (idempotent: replaces handlers it installed before)."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_vlmguard", False):
            root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler._vlmguard = True  # type: ignore[attr-defined]
    handler.addFilter(_RequestIdFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
        )
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("httpx", "urllib3", "PIL", "filelock", "transformers", "onnxruntime"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


@dataclass
class _Seen:
    last: float
    suppressed: int = 0


class RateLimitedLog:
    """Logs a recurring line at most once per ``interval_s`` per key, with the count of the
    lines held back since (an outage must not write thousands of identical warnings).

    The first line for a key is logged at once; within the interval later ones are counted;
    the first line after it says how many were suppressed. Thread-safe.

    Args:
        logger: Where the lines go.
        interval_s: Shortest time between two lines of one key.
        clock: Monotonic clock (injectable for tests).
    """

    def __init__(self, logger: logging.Logger, interval_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self.clock = clock
        self._seen: dict[str, _Seen] = {}
        self._lock = threading.Lock()

    def log(self, level: int, key: str, msg: str, *args: object, **kwargs: object) -> bool:
        """Log ``msg % args`` under ``key`` unless one was logged within the interval;
        whether it was logged."""
        now = self.clock()
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and now - seen.last < self.interval_s:
                seen.suppressed += 1
                return False
            suppressed = seen.suppressed if seen is not None else 0
            since = now - seen.last if seen is not None else 0.0
            self._seen[key] = _Seen(now)
        if suppressed:
            msg += " (%d more like this in the last %.0fs)"
            args = (*args, suppressed, since)
        self.logger.log(level, msg, *args, **kwargs)  # type: ignore[arg-type]
        return True

    def warning(self, key: str, msg: str, *args: object, **kwargs: object) -> bool:
        """:meth:`log` at WARNING."""
        return self.log(logging.WARNING, key, msg, *args, **kwargs)

    def error(self, key: str, msg: str, *args: object, **kwargs: object) -> bool:
        """:meth:`log` at ERROR."""
        return self.log(logging.ERROR, key, msg, *args, **kwargs)

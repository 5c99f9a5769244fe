"""Redis Streams work queue: gateways enqueue, stage workers in other processes consume.

One stream per stage (``<prefix>:stream:<stage>``) read by one consumer group; workers take
micro-batches with XREADGROUP (``max_batch_size`` items or ``max_wait_ms``), run the stage's
batch handler, write each result, then XACK + XDEL the entries (so XLEN is the stage's pending
work and backpressure is one O(1) check inside the enqueue script).

Result delivery: a per-request reply list (``<prefix>:reply:<token>``) that the waiting call
BLPOPs, bounded by its deadline. Chosen over a per-gateway reply stream because it needs no
gateway identity, no reader task and no routing table, leaves nothing behind when a gateway dies
(every key has a TTL), and hands the answer to exactly one waiting call. Its cost is one Redis
connection per waiting call, which ``limits.max_pending`` bounds. The enqueue script and the
BLPOP are pipelined, so a call costs one round trip to Redis.

Idempotency: a worker answers through one Lua script that does ``SET <prefix>:result:<token> NX``
and only when it wins pushes the answer to the reply list, so a duplicate delivery (a reclaimed
item whose first worker was only slow) can never give one call a second, different answer. A
caller that gives up (deadline, cancellation) takes the marker itself, so its answer is
discarded (a redelivered item with a marker is not run again; a first delivery is, once, to save
a round trip per batch).

At-least-once: an entry held longer than ``visibility_timeout_s`` without an ack is reclaimed by
another worker with XAUTOCLAIM; an entry delivered more than ``max_deliveries`` times goes to the
dead-letter stream ``<prefix>:dead:<stage>`` and its caller gets UNAVAILABLE/DEAD_LETTERED.
Expired items are answered DEADLINE_EXCEEDED unrun. Redis down: callers get
UNAVAILABLE/QUEUE_UNAVAILABLE at once; workers back off exponentially and resume by themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from vlmguard.config import QueueConfig, redact_url
from vlmguard.errors import (
    ConfigError,
    DeadlineExceededError,
    Reason,
    ResourceExhaustedError,
    UnavailableError,
    VLMGuardError,
)
from vlmguard.logs import request_id_var
from vlmguard.metrics import Metrics
from vlmguard.queue.base import StageSpec, WorkQueue, run_isolating
from vlmguard.queue.codec import CodecError, decode, encode

log = logging.getLogger(__name__)

GROUP = "workers"

_TOKEN = re.compile(r"^[0-9a-f]{32}$")

#: KEYS: stream, reply list. ARGV: max_pending, max_len, reply token, request id, deadline, body.
#: Returns {entry id, new length}, or {0, length} when the stage is full; then it also pushes
#: ``FULL`` to the reply list, so the BLPOP pipelined behind this script returns at once.
_ENQUEUE = """
local n = redis.call('XLEN', KEYS[1])
if n >= tonumber(ARGV[1]) then
  redis.call('RPUSH', KEYS[2], 'FULL')
  redis.call('EXPIRE', KEYS[2], 10)
  return {0, n}
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'reply', ARGV[3],
  'rid', ARGV[4], 'deadline', ARGV[5], 'attempt', '1', 'body', ARGV[6])
return {id, n + 1}
"""

#: KEYS: result marker, reply list. ARGV: encoded answer, ttl. First writer wins.
_REPLY = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  redis.call('RPUSH', KEYS[2], ARGV[1])
  redis.call('EXPIRE', KEYS[2], ARGV[2])
  return 1
end
return 0
"""


def connect(cfg: QueueConfig, environ: Mapping[str, str] | None = None) -> Any:
    """A ``redis.asyncio.Redis`` client for ``cfg.url`` (no I/O until first use).

    The password comes from the URL or else from ``cfg.password_env``; TLS from ``rediss://``.

    Raises:
        ConfigError: redis-py is not installed.
    """
    try:
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
    except ImportError as e:  # pragma: no cover - redis is a core dependency
        raise ConfigError("queue.url is set but redis-py is missing; pip install 'redis>=5'",
                          reason=Reason.MISSING_DEPENDENCY) from e
    env = os.environ if environ is None else environ
    kwargs: dict[str, Any] = {
        "socket_connect_timeout": cfg.connect_timeout_s,
        # One immediate retry hides a pooled connection that went stale across a Redis
        # restart; a Redis that is really down still fails fast (connection refused).
        "retry": Retry(NoBackoff(), 1),
    }
    if not urlsplit(cfg.url).password and env.get(cfg.password_env):
        kwargs["password"] = env[cfg.password_env]
    if cfg.url.startswith("rediss://") and cfg.tls_ca_file:
        kwargs["ssl_ca_certs"] = cfg.tls_ca_file
    return aioredis.Redis.from_url(cfg.url, **kwargs)


def _redis_errors() -> tuple[type[BaseException], ...]:
    from redis.exceptions import RedisError

    return (RedisError, OSError)


class RedisStreamsQueue(WorkQueue):
    """The Redis Streams queue, for gateways (``submit``) and workers (``consume``).

    Args:
        cfg: Queue settings (URL, timeouts, prefix).
        stages: Stage names that may be submitted to.
        consume: Stages this process serves as a worker (empty for a gateway).
        max_pending: Stream length per stage above which ``submit`` raises QUEUE_FULL.
        metrics: Metrics sink.
        consumer: This worker's consumer name (default host-pid-random).
        clock: Monotonic clock (deadlines given to ``submit``).
        wall_clock: Epoch clock; deadlines travel as epoch seconds between machines.
        environ: Environment for the password variable (default ``os.environ``).
        client: A ready ``redis.asyncio.Redis`` (else built from ``cfg``).
    """

    def __init__(
        self,
        cfg: QueueConfig,
        *,
        stages: Sequence[str],
        consume: Sequence[StageSpec] = (),
        max_pending: int,
        metrics: Metrics | None = None,
        consumer: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        environ: Mapping[str, str] | None = None,
        client: Any = None,
    ) -> None:
        self.cfg = cfg
        self.stages = tuple(stages)
        self.consume = tuple(consume)
        self.max_pending = max_pending
        self.metrics = metrics
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.clock = clock
        self.wall_clock = wall_clock
        self._environ = environ
        self._redis: Any = client
        self._reply: Any = None
        self._inflight = dict.fromkeys(self.stages, 0)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._closed = False
        self._cursor = dict.fromkeys(s.name for s in self.consume)
        self._last_claim = dict.fromkeys((s.name for s in self.consume), float("-inf"))
        self._claim_interval = min(cfg.visibility_timeout_s / 4, 1.0)
        self._where = redact_url(cfg.url)

    # -- keys ----------------------------------------------------------------------------------

    def stream_key(self, stage: str) -> str:
        """The stage's work stream."""
        return f"{self.cfg.key_prefix}:stream:{stage}"

    def dead_key(self, stage: str) -> str:
        """The stage's dead-letter stream."""
        return f"{self.cfg.key_prefix}:dead:{stage}"

    def result_key(self, token: str) -> str:
        """First-writer-wins marker holding a call's one answer."""
        return f"{self.cfg.key_prefix}:result:{token}"

    def reply_key(self, token: str) -> str:
        """The list a waiting call BLPOPs."""
        return f"{self.cfg.key_prefix}:reply:{token}"

    # -- lifecycle -----------------------------------------------------------------------------

    def _client(self) -> Any:
        if self._redis is None:
            self._redis = connect(self.cfg, self._environ)
        if self._reply is None:
            self._reply = self._redis.register_script(_REPLY)
        return self._redis

    async def start(self) -> None:
        """Connect lazily and start one consumer task per served stage."""
        self._client()
        for spec in self.consume:
            self._tasks.append(asyncio.create_task(self._consume(spec),
                                                   name=f"redis-worker-{spec.name}"))
        if self.consume:
            log.info("worker %s consuming %s from %s", self.consumer,
                     ",".join(s.name for s in self.consume), self._where)

    def request_stop(self) -> None:
        """Stop reading new work; the batch in hand still finishes (safe from a signal)."""
        self._stop.set()

    async def wait(self) -> None:
        """Until every consumer task has ended (after :meth:`request_stop`)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self, timeout: float = 60.0) -> None:
        """Drain: finish the batches in hand, stop reading, close the connection."""
        self._closed = True
        self._stop.set()
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=timeout)
            for t in late:
                t.cancel()
        if self._background:
            await asyncio.wait(self._background, timeout=2.0)
        if self._redis is not None:
            with contextlib.suppress(Exception):
                await self._redis.aclose()

    def pending(self, stage: str) -> int:
        """Calls from this process waiting on ``stage`` (the stream length is the global view)."""
        return self._inflight.get(stage, 0)

    # -- gateway side --------------------------------------------------------------------------

    def _unavailable(self, e: BaseException) -> UnavailableError:
        log.warning("redis queue at %s unavailable: %s", self._where, type(e).__name__)
        return UnavailableError("the work queue is unavailable; retry shortly",
                                reason=Reason.QUEUE_UNAVAILABLE, retry_after_s=1.0)

    async def submit(self, stage: str, item: Any, *, deadline: float | None = None) -> Any:
        """Enqueue ``item`` for ``stage`` and wait for its one answer (see WorkQueue)."""
        if stage not in self._inflight:
            raise UnavailableError(f"no stage named {stage!r}", reason=Reason.STAGE_UNAVAILABLE)
        if self._closed:
            raise UnavailableError("the work queue is shutting down",
                                   reason=Reason.STAGE_UNAVAILABLE)
        now = self.clock()
        if deadline is not None and now >= deadline:
            raise DeadlineExceededError(f"deadline passed before stage {stage!r}",
                                        reason=Reason.DEADLINE_EXCEEDED)
        wait_s = deadline - now if deadline is not None else float(self.cfg.result_ttl_s)
        epoch = f"{self.wall_clock() + wait_s:.6f}" if deadline is not None else ""
        token = uuid.uuid4().hex
        body = encode(item)
        r = self._client()
        errors = _redis_errors()
        self._inflight[stage] += 1
        try:
            # One round trip: the enqueue script and the BLPOP for its answer are pipelined on
            # one connection (EVAL, not EVALSHA: no SCRIPT EXISTS round trip, no NOSCRIPT after
            # a Redis restart; Redis caches the compiled script by its digest).
            reply_key = self.reply_key(token)
            try:
                async with r.pipeline(transaction=False) as pipe:
                    pipe.eval(_ENQUEUE, 2, self.stream_key(stage), reply_key, self.max_pending,
                              self.cfg.stream_max_len, token, request_id_var.get(), epoch, body)
                    pipe.blpop([reply_key], timeout=max(wait_s, 0.01))
                    (entry_id, depth), got = await pipe.execute()
            except asyncio.CancelledError:
                self._abandon(token, stage)
                raise
            except errors as e:
                raise self._unavailable(e) from None
            if self.metrics:
                self.metrics.queue_depth.labels(stage).set(int(depth))
            if entry_id in (0, b"0", "0"):
                if self.metrics:
                    self.metrics.rejected.labels(stage).inc()
                raise ResourceExhaustedError(
                    f"too many pending requests for stage {stage!r}; retry shortly",
                    reason=Reason.QUEUE_FULL, retry_after_s=1.0, metadata={"stage": stage},
                )
            if got is None:
                self._abandon(token, stage)
                raise DeadlineExceededError(
                    f"deadline passed while waiting for stage {stage!r}",
                    reason=Reason.DEADLINE_EXCEEDED,
                )
            try:
                result = decode(got[1])
            except CodecError as e:
                log.error("stage %s answered with malformed data: %s", stage, e)
                raise UnavailableError(f"stage {stage!r} answered with malformed data",
                                       reason=Reason.QUEUE_ITEM_MALFORMED) from None
        finally:
            self._inflight[stage] -= 1
        if isinstance(result, VLMGuardError):
            raise result
        return result

    def _abandon(self, token: str, stage: str) -> None:
        """Take the answer marker so no worker runs an item nobody waits for any more."""
        marker = encode(DeadlineExceededError(
            f"the caller stopped waiting for stage {stage!r}", reason=Reason.DEADLINE_EXCEEDED))

        async def run() -> None:
            with contextlib.suppress(*_redis_errors()):
                await self._client().set(self.result_key(token), marker, nx=True,
                                         ex=self.cfg.result_ttl_s)

        task = asyncio.get_running_loop().create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- worker side ---------------------------------------------------------------------------

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _ensure_group(self, stage: str) -> None:
        from redis.exceptions import ResponseError

        try:
            await self._client().xgroup_create(self.stream_key(stage), GROUP, id="0",
                                               mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    async def _consume(self, spec: StageSpec) -> None:
        from redis.exceptions import ResponseError

        errors = _redis_errors()
        backoff, group_ready, down = 0.05, False, False
        while not self._stop.is_set():
            try:
                if not group_ready:
                    await self._ensure_group(spec.name)
                    group_ready = True
                entries, counts = await self._next_batch(spec)
            except ResponseError as e:
                if "NOGROUP" in str(e):  # Redis restarted empty, or the stream was deleted
                    group_ready = False
                    continue
                log.error("stage %s: redis error %s", spec.name, type(e).__name__)
                await self._sleep(backoff)
                backoff = min(backoff * 2, self.cfg.worker_backoff_max_s)
                continue
            except errors as e:
                if not down:
                    log.warning("stage %s: redis at %s unavailable (%s); retrying with backoff",
                                spec.name, self._where, type(e).__name__)
                down, group_ready = True, False
                await self._sleep(backoff)
                backoff = min(backoff * 2, self.cfg.worker_backoff_max_s)
                continue
            if down:
                log.info("stage %s: redis at %s is back", spec.name, self._where)
            backoff, down = 0.05, False
            if entries:
                try:
                    await self._process(spec, entries, counts)
                except errors as e:
                    # Unacked entries stay pending in Redis and are reclaimed later.
                    log.warning("stage %s: could not write a batch's results (%s)", spec.name,
                                type(e).__name__)
        log.info("stage %s: worker %s stopped reading", spec.name, self.consumer)

    async def _next_batch(
        self, spec: StageSpec
    ) -> tuple[list[tuple[str, dict[bytes, bytes]]], dict[str, int]]:
        """Reclaimed entries when some are due, else new ones (size- or time-bounded)."""
        r = self._client()
        stage, b = spec.name, spec.batching
        stream = self.stream_key(stage)
        now = self.clock()
        if now - self._last_claim[stage] >= self._claim_interval:
            self._last_claim[stage] = now
            await self._update_gauges(stage)
            res = await r.xautoclaim(
                stream, GROUP, self.consumer,
                min_idle_time=int(self.cfg.visibility_timeout_s * 1000),
                start_id=self._cursor[stage] or "0-0", count=b.max_batch_size,
            )
            self._cursor[stage] = res[0]  # Redis 7: [next cursor, entries, deleted ids]
            claimed = [(_s(i), f) for i, f in res[1] if f]
            if claimed:
                counts = await self._delivery_counts(stream, [i for i, _ in claimed])
                if self.metrics:
                    self.metrics.redeliveries.labels(stage).inc(len(claimed))
                log.warning("stage %s: reclaimed %d items from a dead or slow worker", stage,
                            len(claimed))
                return claimed, counts
        got = await r.xreadgroup(GROUP, self.consumer, {stream: ">"},
                                 count=b.max_batch_size, block=self.cfg.worker_block_ms)
        entries = _entries(got)
        if not entries:
            return [], {}
        if len(entries) < b.max_batch_size and b.max_wait_ms > 0:
            # Fill the batch by waiting here and reading once without BLOCK: Redis resolves
            # short BLOCK timeouts only on its ~100 ms cron tick, far coarser than max_wait_ms.
            await asyncio.sleep(b.max_wait_ms / 1000.0)
            entries += _entries(await r.xreadgroup(
                GROUP, self.consumer, {stream: ">"}, count=b.max_batch_size - len(entries)))
        return entries, {}

    async def _delivery_counts(self, stream: str, ids: list[str]) -> dict[str, int]:
        rows = await self._client().xpending_range(
            stream, GROUP, min=min(ids, key=_id_key), max=max(ids, key=_id_key),
            count=len(ids) + 1000, consumername=self.consumer,
        )
        return {_s(row["message_id"]): int(row["times_delivered"]) for row in rows}

    async def _update_gauges(self, stage: str) -> None:
        if not self.metrics:
            return
        r = self._client()
        stream = self.stream_key(stage)
        depth = await r.xlen(stream)
        self.metrics.queue_depth.labels(stage).set(depth)
        for g in await r.xinfo_groups(stream):
            if _s(g.get("name", b"")) == GROUP and g.get("lag") is not None:
                self.metrics.queue_lag.labels(stage).set(int(g["lag"]))

    async def _process(
        self,
        spec: StageSpec,
        entries: list[tuple[str, dict[bytes, bytes]]],
        counts: dict[str, int],
    ) -> None:
        stage = spec.name
        r = self._client()
        answers: list[tuple[str, bytes]] = []
        dead: list[tuple[str, dict[bytes, bytes], str]] = []
        run: list[tuple[str, str, Any]] = []  # (entry id, token, item)
        now = self.wall_clock()
        for entry_id, fields in entries:
            token = _s(fields.get(b"reply", b""))
            if not _TOKEN.match(token):
                dead.append((entry_id, fields, "MALFORMED"))
                continue
            if counts.get(entry_id, 1) > self.cfg.max_deliveries:
                dead.append((entry_id, fields, Reason.DEAD_LETTERED))
                answers.append((token, encode(UnavailableError(
                    f"stage {stage!r} failed on this request {self.cfg.max_deliveries} times; "
                    "it was set aside", reason=Reason.DEAD_LETTERED))))
                continue
            try:
                raw_deadline = _s(fields.get(b"deadline", b""))
                deadline = float(raw_deadline) if raw_deadline else None
                item = decode(fields.get(b"body", b""))
            except (CodecError, ValueError) as e:
                log.error("stage %s: malformed queue item (%s)", stage, e)
                answers.append((token, encode(UnavailableError(
                    f"stage {stage!r} could not read this request",
                    reason=Reason.QUEUE_ITEM_MALFORMED))))
                continue
            if deadline is not None and now >= deadline:
                if self.metrics:
                    self.metrics.expired.labels(stage).inc()
                answers.append((token, encode(DeadlineExceededError(
                    f"deadline passed while waiting for stage {stage!r}",
                    reason=Reason.DEADLINE_EXCEEDED))))
                continue
            run.append((entry_id, token, item))
        if run and counts:  # a redelivery: skip items answered already or abandoned by the caller
            # (first deliveries skip this round trip: the rare item whose caller gave up in the
            # meantime runs once, and its answer is discarded by the first-writer-wins marker)
            async with r.pipeline(transaction=False) as pipe:
                for _, token, _ in run:
                    pipe.exists(self.result_key(token))
                done = await pipe.execute()
            run = [x for x, d in zip(run, done, strict=True) if not d]
        if run:
            if self.metrics:
                self.metrics.batch_size.labels(stage).observe(len(run))
            results = await self._run_handler(spec, [item for _, _, item in run])
            answers += [(token, res) for (_, token, _), res in zip(run, results, strict=True)]
        await self._finish(stage, entries, answers, dead)

    async def _run_handler(self, spec: StageSpec, items: list[Any]) -> list[bytes]:
        """One encoded answer per item; a raising batch is retried in halves (see run_isolating)."""
        name = spec.name
        results = await run_isolating(spec.handler, items, stage=name)
        out: list[bytes] = []
        for res in results:
            if isinstance(res, BaseException) and not isinstance(res, VLMGuardError):
                res = UnavailableError(f"stage {name!r} failed", reason=Reason.STAGE_FAILED)
            try:
                out.append(encode(res))
            except CodecError:
                log.error("stage %s returned a %s, which has no codec", name, type(res).__name__)
                out.append(encode(UnavailableError(f"stage {name!r} failed",
                                                   reason=Reason.STAGE_FAILED)))
        return out

    async def _finish(
        self,
        stage: str,
        entries: list[tuple[str, dict[bytes, bytes]]],
        answers: list[tuple[str, bytes]],
        dead: list[tuple[str, dict[bytes, bytes], str]],
    ) -> None:
        """Dead letters, then answers, then ack: a crash in between only causes a redelivery."""
        r = self._client()
        ttl = self.cfg.result_ttl_s
        async with r.pipeline(transaction=False) as pipe:
            for entry_id, fields, why in dead:
                pipe.xadd(self.dead_key(stage), {**fields, b"why": why.encode(),
                                                 b"entry": entry_id.encode()},
                          maxlen=self.cfg.stream_max_len, approximate=True)
            for token, answer in answers:  # EVAL: no SCRIPT EXISTS round trip per batch
                pipe.eval(_REPLY, 2, self.result_key(token), self.reply_key(token), answer, ttl)
            ids = [entry_id for entry_id, _ in entries]
            pipe.xack(self.stream_key(stage), GROUP, *ids)
            pipe.xdel(self.stream_key(stage), *ids)
            await pipe.execute()
        if dead and self.metrics:
            self.metrics.dead_letters.labels(stage).inc(len(dead))
        if dead:
            log.warning("stage %s: %d items moved to %s", stage, len(dead), self.dead_key(stage))


def _s(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _entries(got: Any) -> list[tuple[str, dict[bytes, bytes]]]:
    """Flatten an XREADGROUP reply (RESP2: ``[[stream, [(id, fields), ...]], ...]``)."""
    out: list[tuple[str, dict[bytes, bytes]]] = []
    for _name, msgs in got or []:
        for entry_id, fields in msgs:
            if fields:  # an entry deleted while pending comes back without fields
                out.append((_s(entry_id), fields))
    return out

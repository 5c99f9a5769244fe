"""Redis Streams work queue: gateways enqueue, stage workers in other processes consume.

One stream per stage (``<prefix>:stream:<stage>``) read by one consumer group; workers take
micro-batches with XREADGROUP (``max_batch_size`` items or ``max_wait_ms``), run the stage's
batch handler, then answer, XACK and XDEL the whole batch in one script (so XLEN is the stage's
pending work and backpressure is one O(1) check inside the enqueue script).

Enqueue: the calls a gateway makes for one stage are sent together in one script call (XLEN
check + one XADD per item): those that arrive while an enqueue is in flight, and, while the
stage already has calls in flight, those of the next ``enqueue_wait_ms``. A call to an idle
stage is sent at once, so this costs no latency at low load.

Workers read the next batch in the same round trip that answers the last one, and wait for a
short batch to fill only until its oldest entry is ``max_wait_ms`` old (the entry id holds the
enqueue time), so a busy worker makes about one round trip per batch.

Result delivery: a reply list per gateway instance (``<prefix>:replies:<instance>``) read by
ONE reader task per gateway with BLMPOP (up to 512 answers per read), which hands each answer to
the waiting call's future by its token; a deadline is a timer on that future. Chosen over a
per-request reply key because the per-request key cost one Redis connection, one BLPOP and one
socket wake-up per call, and a marker key (SET NX) plus an EXPIRE per answer: at concurrency 64
that was most of the gateway's CPU on the queue path. A list rather than a stream because
popping consumes: nothing to trim, and an answer is delivered once. A list rather than pub/sub
because it buffers: answers pushed while the reader reconnects are not lost. Gateway death:
the list only ever holds answers to calls that gateway made (bounded by ``limits.max_pending``
per stage), every push refreshes its TTL (``result_ttl_s``), so a dead gateway's list expires
``result_ttl_s`` after its last answer; a gateway that closes deletes it (late answers
recreate it, with the same TTL).

Idempotency, "first answer wins": the answer script XACKs each entry and pushes its answer only
when that XACK removed the entry from the pending list (XACK returns 1 once), so of two workers
answering one entry (a reclaimed item whose first worker was only slow) exactly one answer is
delivered, without any per-request key. The gateway also drops an answer whose call is no
longer waiting. A caller that gives up (deadline, cancellation) XACKs and XDELs its entry, so a
worker that has not read it never runs it, and one that has read it delivers nothing.

At-least-once: an entry held longer than ``visibility_timeout_s`` without an ack is reclaimed by
another worker with XAUTOCLAIM (an answered entry is acked and deleted in the same script, so it
is never reclaimed); an entry delivered more than ``max_deliveries`` times goes to the
dead-letter stream ``<prefix>:dead:<stage>`` and its caller gets UNAVAILABLE/DEAD_LETTERED.
Expired items are answered DEADLINE_EXCEEDED unrun. Redis down: callers get
UNAVAILABLE/QUEUE_UNAVAILABLE at once; when the reader loses its established connection (Redis
died, maybe with answers and items in it) every call enqueued before that fails
UNAVAILABLE/QUEUE_UNAVAILABLE rather than waiting out its deadline; the reader reconnects with
a short backoff, and workers back off exponentially and resume by themselves.

Wire format: an entry carries ``reply`` (the call's 16-hex-digit token), ``to`` (the gateway
instance), ``rid``, ``deadline`` (epoch seconds) and ``body``; a reply element is the token
followed by the encoded answer. Gateways and workers from before this format (per-call
``<prefix>:reply:<token>`` lists) do not interoperate with it: upgrade both together.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
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
from vlmguard.queue.codec import CodecError, decode_item, decode_result, encode

log = logging.getLogger(__name__)

GROUP = "workers"

#: A call's token (unique within its gateway instance) and a gateway instance id: 16 hex digits.
TOKEN_LEN = 16
_HEX16 = re.compile(rb"^[0-9a-f]{16}$")

#: Most items per enqueue script call and most answers per BLMPOP.
_ENQUEUE_CHUNK = 256
_READ_COUNT = 512

#: KEYS: stream. ARGV: max_pending, max_len, reply-to instance, then per item: token, request
#: id, deadline, body. Returns one entry id per item (0: refused, the stage is full), then the
#: stream length.
_ENQUEUE = """
local n = redis.call('XLEN', KEYS[1])
local cap = tonumber(ARGV[1])
local out = {}
for i = 4, #ARGV, 4 do
  if n >= cap then
    out[#out + 1] = 0
  else
    out[#out + 1] = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'reply', ARGV[i],
      'to', ARGV[3], 'rid', ARGV[i + 1], 'deadline', ARGV[i + 2], 'body', ARGV[i + 3])
    n = n + 1
  end
end
out[#out + 1] = n
return out
"""

#: KEYS: stream, then the reply list of each answer. ARGV: group, ttl, number of answers n,
#: then per answer its entry id and its element (token + encoded answer), then entry ids to ack
#: without an answer. An answer is pushed only if its XACK acked the entry: first answer wins.
#: Returns how many answers were pushed.
_ANSWER = """
local stream, group, ttl, n = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3])
local ids, lists, order, pushed = {}, {}, {}, 0
for i = 1, n do
  local id = ARGV[2 + 2 * i]
  ids[#ids + 1] = id
  if redis.call('XACK', stream, group, id) == 1 then
    local key = KEYS[1 + i]
    local l = lists[key]
    if not l then
      l = {}
      lists[key] = l
      order[#order + 1] = key
    end
    l[#l + 1] = ARGV[3 + 2 * i]
    pushed = pushed + 1
  end
end
for i = 4 + 2 * n, #ARGV do
  ids[#ids + 1] = ARGV[i]
  redis.call('XACK', stream, group, ARGV[i])
end
for _, key in ipairs(order) do
  local l = lists[key]
  for j = 1, #l, 1000 do
    redis.call('RPUSH', key, unpack(l, j, math.min(j + 999, #l)))
  end
  redis.call('EXPIRE', key, ttl)
end
for j = 1, #ids, 1000 do
  redis.call('XDEL', stream, unpack(ids, j, math.min(j + 999, #ids)))
end
return pushed
"""

#: KEYS: stream. ARGV: group, entry id. A caller that gave up withdraws its entry.
_WITHDRAW = """
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return redis.call('XDEL', KEYS[1], ARGV[2])
"""


def connect(cfg: QueueConfig, environ: Mapping[str, str] | None = None, *,
            retries: int = 1) -> Any:
    """A ``redis.asyncio.Redis`` client for ``cfg.url`` (no I/O until first use).

    The password comes from the URL or else from ``cfg.password_env``; TLS from ``rediss://``.
    ``retries`` immediate retries on a connection error (0 for the reply reader, which must see
    every lost connection).

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
        "retry": Retry(NoBackoff(), retries),
    }
    if not urlsplit(cfg.url).password and env.get(cfg.password_env):
        kwargs["password"] = env[cfg.password_env]
    if cfg.url.startswith("rediss://") and cfg.tls_ca_file:
        kwargs["ssl_ca_certs"] = cfg.tls_ca_file
    return aioredis.Redis.from_url(cfg.url, **kwargs)


def _redis_errors() -> tuple[type[BaseException], ...]:
    from redis.exceptions import RedisError

    return (RedisError, OSError)


class _Call:
    """One waiting ``submit``: what to enqueue and the future its answer resolves."""

    __slots__ = ("body", "deadline", "entry_id", "future", "gen", "rid", "stage", "token",
                 "withdrawn")

    def __init__(self, token: bytes, stage: str, rid: str, deadline: str, body: bytes,
                 future: asyncio.Future[bytes]) -> None:
        self.token = token
        self.stage = stage
        self.rid = rid
        self.deadline = deadline
        self.body = body
        self.future = future
        self.entry_id: bytes | None = None  # set once the enqueue script returned
        self.gen = -1  # reader generation when its enqueue was sent
        self.withdrawn = False  # the caller gave up; withdraw the entry once its id is known

    def fail(self, error: VLMGuardError) -> None:
        if not self.future.done():
            self.future.set_exception(error)


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
        client: A ready ``redis.asyncio.Redis`` (else built from ``cfg``); the reply reader
            then shares it.
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
        #: This gateway instance: its answers come back on ``replies_key``.
        self.instance = uuid.uuid4().hex[:TOKEN_LEN]
        self.clock = clock
        self.wall_clock = wall_clock
        self._environ = environ
        self._redis: Any = client
        self._reader_client: Any = client
        self._inflight = dict.fromkeys(self.stages, 0)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._closed = False
        self._cursor = dict.fromkeys(s.name for s in self.consume)
        self._last_claim = dict.fromkeys((s.name for s in self.consume), float("-inf"))
        self._claim_interval = min(cfg.visibility_timeout_s / 4, 1.0)
        self._keepers: set[asyncio.Task[None]] = set()
        self._where = redact_url(cfg.url)
        # gateway side
        self._seq = itertools.count(1)
        self._waiters: dict[bytes, _Call] = {}
        self._outbox: dict[str, list[_Call]] = {s: [] for s in self.stages}
        self._flushing: set[str] = set()
        self._reader: asyncio.Task[None] | None = None
        self._reader_wake: asyncio.Event | None = None
        self._reader_gen = 0
        self._enqueue_wait = cfg.enqueue_wait_ms / 1000.0
        self._withdrawals: list[tuple[str, bytes]] = []
        # worker side: entries read together with the previous batch's answers
        self._carry: dict[str, list[tuple[bytes, dict[bytes, bytes]]]] = {
            s.name: [] for s in self.consume}

    # -- keys ----------------------------------------------------------------------------------

    def stream_key(self, stage: str) -> str:
        """The stage's work stream."""
        return f"{self.cfg.key_prefix}:stream:{stage}"

    def dead_key(self, stage: str) -> str:
        """The stage's dead-letter stream."""
        return f"{self.cfg.key_prefix}:dead:{stage}"

    def replies_key(self, instance: str | None = None) -> str:
        """The reply list of a gateway instance (default: this one)."""
        return f"{self.cfg.key_prefix}:replies:{instance or self.instance}"

    # -- lifecycle -----------------------------------------------------------------------------

    def _client(self) -> Any:
        if self._redis is None:
            self._redis = connect(self.cfg, self._environ)
        return self._redis

    remote = True

    async def ping(self, timeout: float) -> bool:
        """Whether Redis answers a PING within ``timeout`` seconds."""
        try:
            return bool(await asyncio.wait_for(self._client().ping(), timeout))
        except Exception as e:  # any failure means: cannot take work now
            log.debug("redis ping failed: %s", type(e).__name__)
            return False

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
        """Drain: finish the batches in hand, stop reading, fail waiting calls, disconnect."""
        self._closed = True
        self._stop.set()
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=timeout)
            for t in late:
                t.cancel()
        if self._background:
            await asyncio.wait(self._background, timeout=2.0)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
            for call in list(self._waiters.values()):
                call.fail(UnavailableError("the work queue is shutting down",
                                           reason=Reason.STAGE_UNAVAILABLE))
            with contextlib.suppress(Exception):  # late answers have nobody to go to
                await asyncio.wait_for(self._client().delete(self.replies_key()), 2.0)
        for client in {id(c): c for c in (self._redis, self._reader_client)
                       if c is not None}.values():
            with contextlib.suppress(Exception):
                await client.aclose()

    def pending(self, stage: str) -> int:
        """Calls from this process waiting on ``stage`` (the stream length is the global view)."""
        return self._inflight.get(stage, 0)

    # -- gateway side --------------------------------------------------------------------------

    def _unavailable(self, e: BaseException) -> UnavailableError:
        log.warning("redis queue at %s unavailable: %s", self._where, type(e).__name__)
        return _queue_unavailable()

    async def submit(self, stage: str, item: Any, *, deadline: float | None = None,
                     tenant: str = "", pixels: int = 0) -> Any:
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
        body = encode(item)
        loop = asyncio.get_running_loop()
        if self._reader is None:
            self._start_reader()
        call = _Call(b"%016x" % next(self._seq), stage, request_id_var.get(), epoch, body,
                     loop.create_future())
        self._waiters[call.token] = call
        self._inflight[stage] += 1
        timer = loop.call_later(wait_s, _expire, call)
        try:
            self._outbox[stage].append(call)
            if stage not in self._flushing:
                self._schedule_flush(stage)
            try:
                payload = await call.future
            except DeadlineExceededError:
                self._withdraw(call)
                raise
            except asyncio.CancelledError:
                self._withdraw(call)
                raise
        finally:
            timer.cancel()
            del self._waiters[call.token]
            self._inflight[stage] -= 1
        try:
            result = decode_result(stage, payload)
        except CodecError as e:
            log.error("stage %s answered with malformed data: %s", stage, e)
            raise UnavailableError(f"stage {stage!r} answered with malformed data",
                                   reason=Reason.QUEUE_ITEM_MALFORMED) from None
        if isinstance(result, VLMGuardError):
            raise result
        return result

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _schedule_flush(self, stage: str) -> None:
        """Enqueue the stage's waiting calls now, or after ``enqueue_wait_ms`` when busy."""
        self._flushing.add(stage)
        if self._enqueue_wait > 0 and self._inflight[stage] > len(self._outbox[stage]):
            # Calls of this stage are in flight already: collect the calls that arrive in the
            # next moments and send them together (fewer round trips and wake-ups per call).
            asyncio.get_running_loop().call_later(
                self._enqueue_wait, lambda: self._spawn(self._flush(stage)))
        else:
            self._spawn(self._flush(stage))

    async def _flush(self, stage: str) -> None:
        """Send the stage's waiting calls, in chunks, until none is left; one at a time."""
        errors = _redis_errors()
        outbox = self._outbox[stage]
        if self._closed:  # a window that ended after close(): nobody sends these any more
            for c in outbox:
                c.fail(UnavailableError("the work queue is shutting down",
                                        reason=Reason.STAGE_UNAVAILABLE))
            outbox.clear()
            self._flushing.discard(stage)
            return
        try:
            while outbox:
                batch = outbox[:_ENQUEUE_CHUNK]
                del outbox[:_ENQUEUE_CHUNK]
                batch = [c for c in batch if not c.future.done()]
                if not batch:
                    continue
                args: list[Any] = [self.max_pending, self.cfg.stream_max_len, self.instance]
                gen = self._reader_gen
                for c in batch:
                    args += (c.token, c.rid, c.deadline, c.body)
                    c.gen = gen
                try:
                    # EVAL, not EVALSHA: no NOSCRIPT after a Redis restart; Redis caches the
                    # compiled script by its digest.
                    res = await self._client().eval(_ENQUEUE, 1, self.stream_key(stage), *args)
                except errors as e:
                    self._unavailable(e)  # logs once per failed enqueue
                    for c in batch:
                        c.fail(_queue_unavailable())
                    continue
                except Exception:  # a bug must not strand the callers
                    log.exception("stage %s: enqueue failed", stage)
                    for c in batch:
                        c.fail(_queue_unavailable())
                    continue
                rejected = 0
                for c, entry_id in zip(batch, res, strict=False):
                    if entry_id == 0:
                        rejected += 1
                        c.fail(ResourceExhaustedError(
                            f"too many pending requests for stage {stage!r}; retry shortly",
                            reason=Reason.QUEUE_FULL, retry_after_s=1.0,
                            metadata={"stage": stage}))
                        continue
                    c.entry_id = entry_id
                    if c.withdrawn:  # the caller gave up while this was in flight
                        self._withdraw(c)
                if self.metrics:
                    self.metrics.queue_depth.labels(stage).set(int(res[-1]))
                    if rejected:
                        self.metrics.rejected.labels(stage).inc(rejected)
                if self._reader_wake is not None and not self._reader_wake.is_set():
                    self._reader_wake.set()  # a reader backing off: Redis is back
        finally:
            self._flushing.discard(stage)
            if outbox:  # appended after the loop ended
                self._schedule_flush(stage)

    def _withdraw(self, call: _Call) -> None:
        """The caller gave up: ack and delete its entry so nobody runs or answers it."""
        call.withdrawn = True
        if call.entry_id is None:  # its enqueue is still in flight; _flush withdraws it
            return
        self._withdrawals.append((self.stream_key(call.stage), call.entry_id))
        if len(self._withdrawals) == 1:  # else a sender is scheduled or running already
            self._spawn(self._send_withdrawals())

    async def _send_withdrawals(self) -> None:
        """Withdraw the entries of callers that gave up, many per round trip (one connection)."""
        while self._withdrawals:
            todo = self._withdrawals[:_ENQUEUE_CHUNK]
            try:
                async with self._client().pipeline(transaction=False) as pipe:
                    for stream, entry_id in todo:
                        pipe.eval(_WITHDRAW, 1, stream, GROUP, entry_id)
                    await pipe.execute()
            except Exception as e:  # best effort: at worst the item runs once, answer dropped
                log.debug("redis queue: could not withdraw %d entries (%s)", len(todo),
                          type(e).__name__)
            finally:
                del self._withdrawals[:len(todo)]

    def _start_reader(self) -> None:
        self._reader_wake = asyncio.Event()
        if self._reader_client is None:
            self._reader_client = connect(self.cfg, self._environ, retries=0)
        self._reader = asyncio.get_running_loop().create_task(
            self._read_replies(), name=f"redis-replies-{self.instance}")

    async def _read_replies(self) -> None:
        """The one reader of this gateway's reply list: hand each answer to its waiting call."""
        errors = _redis_errors()
        r, key, wake = self._reader_client, self.replies_key(), self._reader_wake
        assert wake is not None
        waiters = self._waiters
        backoff, connected, down = 0.02, False, False
        while not self._closed:
            try:
                if not connected:  # know the connection is up before blocking on it
                    await r.ping()
                    connected = True
                got = await r.blmpop(1, 1, key, direction="LEFT", count=_READ_COUNT)
            except Exception as e:  # a Redis error, or a bug: never leave the callers waiting
                if not isinstance(e, errors):
                    log.exception("redis queue: reply reader failed")
                # Calls enqueued before a lost connection may have lost their item or answer
                # with a dying Redis: fail them now (retryable) rather than at their deadline.
                failed_gen = self._reader_gen
                self._reader_gen += 1
                if connected:
                    for call in list(waiters.values()):
                        if call.gen != -1 and call.gen <= failed_gen:
                            call.fail(_queue_unavailable())
                if not down:
                    log.warning("redis queue at %s: reply reader lost its connection (%s); "
                                "reconnecting", self._where, type(e).__name__)
                connected, down = False, True
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), backoff)
                backoff = min(backoff * 2, 0.5)
                continue
            if down:
                log.info("redis queue at %s: reply reader reconnected", self._where)
            down, backoff = False, 0.02
            if not got:
                continue
            for data in got[1]:
                found = waiters.get(data[:TOKEN_LEN])
                if found is not None and not found.future.done():
                    found.future.set_result(data[TOKEN_LEN:])

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
        # Entries already read with the last answers are in hand: they run even when draining.
        while not self._stop.is_set() or self._carry[spec.name]:
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
    ) -> tuple[list[tuple[bytes, dict[bytes, bytes]]], dict[bytes, int]]:
        """Reclaimed entries when some are due, else new ones (size- or time-bounded).

        New entries are those read together with the previous batch's answers, else a blocking
        read. A short batch waits for more until its oldest entry is ``max_wait_ms`` old (the
        entry id holds Redis's enqueue time), then takes what arrived with one read.
        """
        r = self._client()
        stage, b = spec.name, spec.batching
        stream = self.stream_key(stage)
        entries, self._carry[stage] = self._carry[stage], []
        now = self.clock()
        if not entries and now - self._last_claim[stage] >= self._claim_interval:
            self._last_claim[stage] = now
            await self._update_gauges(stage)
            res = await r.xautoclaim(
                stream, GROUP, self.consumer,
                min_idle_time=int(self.cfg.visibility_timeout_s * 1000),
                start_id=self._cursor[stage] or "0-0", count=b.max_batch_size,
            )
            self._cursor[stage] = res[0]  # Redis 7: [next cursor, entries, deleted ids]
            claimed = [(_b(i), f) for i, f in res[1] if f]
            if claimed:
                counts = await self._delivery_counts(stream, [i for i, _ in claimed])
                if self.metrics:
                    self.metrics.redeliveries.labels(stage).inc(len(claimed))
                log.warning("stage %s: reclaimed %d items from a dead or slow worker", stage,
                            len(claimed))
                return claimed, counts
        if not entries:
            entries = _entries(await r.xreadgroup(GROUP, self.consumer, {stream: ">"},
                                                  count=b.max_batch_size,
                                                  block=self.cfg.worker_block_ms))
            if not entries:
                return [], {}
        if len(entries) < b.max_batch_size and b.max_wait_ms > 0 and not self._stop.is_set():
            # Sleep here and read once without BLOCK: Redis resolves short BLOCK timeouts only
            # on its ~100 ms cron tick, far coarser than max_wait_ms.
            age_ms = self.wall_clock() * 1000.0 - _id_key(entries[0][0])[0]
            wait_ms = min(b.max_wait_ms, b.max_wait_ms - age_ms)
            if wait_ms > 0:
                await asyncio.sleep(wait_ms / 1000.0)
            entries += _entries(await r.xreadgroup(
                GROUP, self.consumer, {stream: ">"}, count=b.max_batch_size - len(entries)))
        return entries, {}

    async def _delivery_counts(self, stream: str, ids: list[bytes]) -> dict[bytes, int]:
        rows = await self._client().xpending_range(
            stream, GROUP, min=min(ids, key=_id_key), max=max(ids, key=_id_key),
            count=len(ids) + 1000, consumername=self.consumer,
        )
        return {_b(row["message_id"]): int(row["times_delivered"]) for row in rows}

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
        entries: list[tuple[bytes, dict[bytes, bytes]]],
        counts: dict[bytes, int],
    ) -> None:
        stage = spec.name
        answers: list[tuple[bytes, dict[bytes, bytes], bytes]] = []  # (entry id, fields, answer)
        dead: list[tuple[bytes, dict[bytes, bytes], str]] = []
        run: list[tuple[bytes, dict[bytes, bytes], Any]] = []  # (entry id, fields, item)
        now = self.wall_clock()
        for entry_id, fields in entries:
            if not (_HEX16.match(fields.get(b"reply", b""))
                    and _HEX16.match(fields.get(b"to", b""))):
                dead.append((entry_id, fields, "MALFORMED"))
                continue
            if counts.get(entry_id, 1) > self.cfg.max_deliveries:
                dead.append((entry_id, fields, Reason.DEAD_LETTERED))
                answers.append((entry_id, fields, encode(UnavailableError(
                    f"stage {stage!r} failed on this request {self.cfg.max_deliveries} times; "
                    "it was set aside", reason=Reason.DEAD_LETTERED))))
                continue
            try:
                raw_deadline = fields.get(b"deadline", b"")
                deadline = float(raw_deadline) if raw_deadline else None
                item = decode_item(stage, fields.get(b"body", b""))
            except (CodecError, ValueError) as e:
                log.error("stage %s: malformed queue item (%s)", stage, e)
                answers.append((entry_id, fields, encode(UnavailableError(
                    f"stage {stage!r} could not read this request",
                    reason=Reason.QUEUE_ITEM_MALFORMED))))
                continue
            if deadline is not None and now >= deadline:
                if self.metrics:
                    self.metrics.expired.labels(stage).inc()
                answers.append((entry_id, fields, encode(DeadlineExceededError(
                    f"deadline passed while waiting for stage {stage!r}",
                    reason=Reason.DEADLINE_EXCEEDED))))
                continue
            run.append((entry_id, fields, item))
        if run:
            if self.metrics:
                self.metrics.batch_size.labels(stage).observe(len(run))
            async with self._held(stage, [i for i, _, _ in run]):
                results = await self._run_handler(spec, [item for _, _, item in run])
            answers += [(entry_id, fields, res)
                        for (entry_id, fields, _), res in zip(run, results, strict=True)]
        # Read the next batch in the same round trip as these answers, unless draining or a
        # reclaim check is due (that round starts without entries in hand).
        read_next = 0
        if (not self._stop.is_set()
                and self.clock() - self._last_claim[stage] < self._claim_interval):
            read_next = spec.batching.max_batch_size
        await self._finish(stage, answers, dead, read_next=read_next)

    @contextlib.asynccontextmanager
    async def _held(self, stage: str, ids: list[bytes]) -> AsyncIterator[None]:
        """Keep ``ids`` claimed by this worker while the block runs (see _keep_claimed)."""
        task = asyncio.create_task(self._keep_claimed(stage, ids), name=f"redis-keep-{stage}")
        self._keepers.add(task)
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self._keepers.discard(task)

    async def _keep_claimed(self, stage: str, ids: list[bytes]) -> None:
        """While a batch runs, reset its entries' idle time every third of
        ``visibility_timeout_s`` (XCLAIM to this consumer, JUSTID: the delivery count stays),
        so a batch slower than the timeout (tier-2 generation on CPU) is not reclaimed and run
        twice while this worker is alive. A worker that dies stops this, and its entries are
        reclaimed as before."""
        r = self._client()
        stream = self.stream_key(stage)
        period = self.cfg.visibility_timeout_s / 3
        while True:
            await asyncio.sleep(period)
            try:
                await r.xclaim(stream, GROUP, self.consumer, min_idle_time=0, message_ids=ids,
                               justid=True)
            except Exception as e:  # the answers' write will see a real outage
                log.debug("stage %s: could not refresh the batch in hand (%s)", stage,
                          type(e).__name__)

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
        answers: list[tuple[bytes, dict[bytes, bytes], bytes]],
        dead: list[tuple[bytes, dict[bytes, bytes], str]],
        *,
        read_next: int = 0,
    ) -> int:
        """Dead letters, then one script that answers, acks and deletes the whole batch.

        An answer is delivered only by the first worker to ack its entry, so a duplicate
        delivery answered by two workers still gives its caller one answer; a crash before the
        script only causes a redelivery. With ``read_next``, up to that many new entries are
        read (without blocking) in the same round trip and kept for the next batch. Returns
        how many answers were delivered.
        """
        r = self._client()
        prefix = f"{self.cfg.key_prefix}:replies:".encode()
        stream = self.stream_key(stage)
        keys: list[Any] = [stream]
        args: list[Any] = [GROUP, self.cfg.result_ttl_s, len(answers)]
        for entry_id, fields, answer in answers:
            keys.append(prefix + fields[b"to"])
            args += (entry_id, fields[b"reply"] + answer)
        answered = {entry_id for entry_id, _, _ in answers}
        args += [entry_id for entry_id, _, _ in dead if entry_id not in answered]
        if not dead and not read_next:
            return int(await r.eval(_ANSWER, len(keys), *keys, *args))
        async with r.pipeline(transaction=False) as pipe:
            for entry_id, fields, why in dead:
                pipe.xadd(self.dead_key(stage), {**fields, b"why": why.encode(),
                                                 b"entry": entry_id},
                          maxlen=self.cfg.stream_max_len, approximate=True)
            pipe.eval(_ANSWER, len(keys), *keys, *args)
            if read_next:
                pipe.xreadgroup(GROUP, self.consumer, {stream: ">"}, count=read_next)
            res = await pipe.execute(raise_on_error=False)
        for x in res[:len(dead) + 1]:  # a failed read is retried by the next blocking read
            if isinstance(x, Exception):
                raise x
        pushed = res[len(dead)]
        if read_next and not isinstance(res[-1], Exception):
            self._carry[stage] = _entries(res[-1])
        if dead:
            if self.metrics:
                self.metrics.dead_letters.labels(stage).inc(len(dead))
            log.warning("stage %s: %d items moved to %s", stage, len(dead), self.dead_key(stage))
        return int(pushed)


def _queue_unavailable() -> UnavailableError:
    return UnavailableError("the work queue is unavailable; retry shortly",
                            reason=Reason.QUEUE_UNAVAILABLE, retry_after_s=1.0)


def _expire(call: _Call) -> None:
    call.fail(DeadlineExceededError(f"deadline passed while waiting for stage {call.stage!r}",
                                    reason=Reason.DEADLINE_EXCEEDED))


def _s(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def _b(v: Any) -> bytes:
    return v if isinstance(v, bytes) else str(v).encode()


def _id_key(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)


def _entries(got: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """Flatten an XREADGROUP reply (RESP2: ``[[stream, [(id, fields), ...]], ...]``)."""
    out: list[tuple[bytes, dict[bytes, bytes]]] = []
    for _name, msgs in got or []:
        for entry_id, fields in msgs:
            if fields:  # an entry deleted while pending comes back without fields
                out.append((_b(entry_id), fields))
    return out

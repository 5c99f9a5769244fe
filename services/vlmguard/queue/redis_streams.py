"""Redis Streams work queue: gateways enqueue, stage workers in other processes consume.

One stream per stage and tenant (``<prefix>:stream:<stage>`` for the default tenant,
``<prefix>:stream:<stage>:tenant:<id>`` for the others; the set ``<prefix>:tenants:<stage>``
lists them), each read by one consumer group; workers run the stage's batch handler on
micro-batches, then answer, XACK and XDEL them in one script per stream (so XLEN is a tenant's
pending work and backpressure is one O(1) check inside the enqueue script).

Enqueue: the calls a gateway makes for one tenant's stream are sent together in one script call
(XLEN check + one XADD per item, the item's image pixels in its ``px`` field): those that arrive
while an enqueue is in flight, and, while the stage already has calls in flight, those of the
next ``enqueue_wait_ms``. A call to an idle stage is sent at once, so this costs no latency at
low load.

Fair share: a worker keeps at most ``max_batch_size`` entries of each tenant in hand, reads
every tenant stream that has none in hand (blocking only when nothing is in hand; the tenant
set rides along with each read, so a new tenant is seen on the next one), and runs batches from
its hand in deficit-round-robin order weighted by image cost, within ``max_batch_pixels``
(:mod:`vlmguard.queue.fair`). A tenant with a backlog of large images therefore delays another
tenant by at most the batch in progress. A short batch does not wait to fill: under load the
next read finds what arrived while the last batch ran. Every entry in hand (running or waiting
its turn) is kept claimed; workers record a heartbeat (``<prefix>:workers:<stage>``) that
gateways read for their health.

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
instance), ``rid``, ``deadline`` (epoch seconds), ``body``, ``px`` and, while tracing is on,
``tp`` (the W3C traceparent of the gateway's span, so the worker's spans join its trace; an
entry without one, from a gateway with tracing off or from before the field, runs the same and
its worker spans start a trace of their own; workers from before it ignore the field); a reply
element is the token followed by the encoded answer. Gateways and workers from before this
format (per-call ``<prefix>:reply:<token>`` lists) do not interoperate with it: upgrade both
together.
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
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from vlmguard import tracing
from vlmguard.config import QueueConfig, redact_url
from vlmguard.errors import (
    ConfigError,
    DeadlineExceededError,
    Reason,
    ResourceExhaustedError,
    UnavailableError,
    VLMGuardError,
)
from vlmguard.logs import RateLimitedLog, request_id_var
from vlmguard.metrics import Metrics
from vlmguard.queue.base import StageSpec, WorkQueue, draining_error, run_isolating
from vlmguard.queue.codec import CodecError, decode_item, decode_result, encode
from vlmguard.queue.fair import DeficitRoundRobin, item_cost

log = logging.getLogger(__name__)

GROUP = "workers"

#: A call's token (unique within its gateway instance) and a gateway instance id: 16 hex digits.
TOKEN_LEN = 16
_HEX16 = re.compile(rb"^[0-9a-f]{16}$")

#: Tokens a gateway remembers as answered, to count a second answer to one call.
_ANSWERED_MEMORY = 65_536

#: Most items per enqueue script call and most answers per BLMPOP.
_ENQUEUE_CHUNK = 256
_READ_COUNT = 512

#: KEYS: the tenant's stream, the stage's tenant set. ARGV: max_pending, max_len, reply-to
#: instance, tenant, then per item: token, request id, deadline, body, pixels, W3C traceparent
#: ("" when tracing is off: no ``tp`` field). Returns one entry id per item (0: refused, the
#: tenant's stream is full), then the stream length.
_ENQUEUE = """
local n = redis.call('XLEN', KEYS[1])
local cap = tonumber(ARGV[1])
local out = {}
for i = 5, #ARGV, 6 do
  if n >= cap then
    out[#out + 1] = 0
  elseif ARGV[i + 5] == '' then
    out[#out + 1] = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'reply', ARGV[i],
      'to', ARGV[3], 'rid', ARGV[i + 1], 'deadline', ARGV[i + 2], 'body', ARGV[i + 3],
      'px', ARGV[i + 4])
    n = n + 1
  else
    out[#out + 1] = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'reply', ARGV[i],
      'to', ARGV[3], 'rid', ARGV[i + 1], 'deadline', ARGV[i + 2], 'body', ARGV[i + 3],
      'px', ARGV[i + 4], 'tp', ARGV[i + 5])
    n = n + 1
  end
end
redis.call('SADD', KEYS[2], ARGV[4])
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

#: KEYS: the heartbeat sets of a worker's stages. ARGV: consumer, seconds alive, key TTL.
#: Scores are expiry times on Redis's own clock, so gateways and workers on hosts whose clocks
#: disagree still agree on who is alive.
_HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], now + tonumber(ARGV[2]), ARGV[1])
  redis.call('EXPIRE', KEYS[i], ARGV[3])
end
return 1
"""

#: KEYS: a stage's heartbeat set. Drops expired members; returns how many are alive.
_LIVE_WORKERS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
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

    __slots__ = ("body", "deadline", "entry_id", "future", "gen", "pixels", "rid", "stage",
                 "stream", "tenant", "token", "tp", "withdrawn")

    def __init__(self, token: bytes, stage: str, rid: str, deadline: str, body: bytes,
                 future: asyncio.Future[bytes], *, tenant: str = "", stream: str = "",
                 pixels: int = 0, tp: str = "") -> None:
        self.token = token
        self.tp = tp
        self.stage = stage
        self.tenant = tenant
        self.stream = stream
        self.pixels = pixels
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
        max_batch_pixels: Image pixels per batch a worker runs (None: no budget).
        max_tenant_pixels: Image pixels one tenant may have in flight per stage from this
            gateway (None: no budget).
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
        max_batch_pixels: int | None = None,
        max_tenant_pixels: int | None = None,
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
        self.max_batch_pixels = max_batch_pixels
        self.max_tenant_pixels = max_tenant_pixels
        self._cursor: dict[str, Any] = {}  # XAUTOCLAIM cursor per stream
        self._last_claim = dict.fromkeys((s.name for s in self.consume), float("-inf"))
        self._claim_interval = min(cfg.visibility_timeout_s / 4, 1.0)
        self._keepers: set[asyncio.Task[None]] = set()
        self._where = redact_url(cfg.url)
        self._rlog = RateLimitedLog(log, cfg.log_interval_s)
        self._draining = False
        # gateway side
        self._seq = itertools.count(1)
        self._waiters: dict[bytes, _Call] = {}
        self._outbox: dict[str, list[_Call]] = {}  # by stream
        self._flushing: set[str] = set()  # streams
        self._tenant_pixels: dict[str, int] = {}  # (stage:tenant) -> pixels in flight here
        self._reader: asyncio.Task[None] | None = None
        self._reader_wake: asyncio.Event | None = None
        self._reader_gen = 0
        self._enqueue_wait = cfg.enqueue_wait_ms / 1000.0
        self._withdrawals: list[tuple[str, bytes]] = []
        self._answered: OrderedDict[bytes, None] = OrderedDict()  # recent tokens answered
        # worker side: each tenant stream served (the default one first), the entries in
        # hand by stream in fair order, their ids (kept claimed), reclaimed delivery counts
        self._streams: dict[str, list[str]] = {
            s.name: [self.stream_key(s.name)] for s in self.consume}
        self._hand: dict[str, DeficitRoundRobin[tuple[str, bytes, dict[bytes, bytes]]]] = {
            s.name: DeficitRoundRobin(lambda e: item_cost(_pixels(e[2])))
            for s in self.consume}
        self._running: dict[str, list[tuple[str, bytes, dict[bytes, bytes]]]] = {
            s.name: [] for s in self.consume}
        self._deliveries: dict[bytes, int] = {}

    # -- keys ----------------------------------------------------------------------------------

    def stream_key(self, stage: str, tenant: str = "") -> str:
        """A tenant's work stream for ``stage`` (the default tenant's has no suffix)."""
        if tenant in ("", "default"):
            return f"{self.cfg.key_prefix}:stream:{stage}"
        return f"{self.cfg.key_prefix}:stream:{stage}:tenant:{tenant}"

    def tenants_key(self, stage: str) -> str:
        """The set of tenants that have enqueued to ``stage`` (workers read their streams)."""
        return f"{self.cfg.key_prefix}:tenants:{stage}"

    def workers_key(self, stage: str) -> str:
        """Heartbeats of the workers consuming ``stage`` (member: consumer, score: expiry)."""
        return f"{self.cfg.key_prefix}:workers:{stage}"

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
            self._keepers.add(asyncio.create_task(self._keep_claimed(spec.name),
                                                  name=f"redis-keep-{spec.name}"))
        if self.consume:
            self._keepers.add(asyncio.create_task(self._heartbeat(), name="redis-heartbeat"))
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
        for t in self._keepers:
            if not t.done() and t.get_name() != "redis-heartbeat":
                t.cancel()
        if self._keepers:  # the heartbeat ends by itself (stop is set) and withdraws itself
            await asyncio.wait(self._keepers, timeout=2.0)
            for t in self._keepers:
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

    async def drain(self, timeout: float) -> None:
        """Refuse new calls (UNAVAILABLE/SERVER_DRAINING); let the calls in flight get their
        answers for up to ``timeout`` seconds; then fail the rest with that reason and
        withdraw their entries (another gateway's caller retries; no worker runs them)."""
        self._draining = True
        end = self.clock() + timeout
        while self._waiters and self.clock() < end:
            await asyncio.sleep(0.02)
        for call in list(self._waiters.values()):
            if not call.future.done():
                call.fail(draining_error())
                self._withdraw(call, "")
        if self._background:
            await asyncio.wait(self._background, timeout=2.0)

    # -- gateway side --------------------------------------------------------------------------

    def _unavailable(self, e: BaseException) -> UnavailableError:
        self._rlog.warning("enqueue", "redis queue at %s unavailable: %s", self._where,
                           type(e).__name__)
        return _queue_unavailable()

    async def submit(self, stage: str, item: Any, *, deadline: float | None = None,
                     tenant: str = "", pixels: int = 0) -> Any:
        """Enqueue ``item`` for ``stage`` and wait for its one answer (see WorkQueue); while
        tracing is on, in a producer span whose context the entry carries to the worker."""
        span = tracing.start_span(f"vlmguard.queue.submit {stage}", {
            "messaging.system": "redis", "vlmguard.stage": stage}, kind="producer")
        try:
            return await self._submit(stage, item, deadline, tenant, pixels,
                                      tracing.traceparent(span))
        except VLMGuardError as e:
            tracing.set_error(span, f"{e.code.name} {e.reason}")
            raise
        finally:
            tracing.end(span)

    async def _submit(self, stage: str, item: Any, deadline: float | None, tenant: str,
                      pixels: int, tp: str) -> Any:
        if stage not in self._inflight:
            raise UnavailableError(f"no stage named {stage!r}", reason=Reason.STAGE_UNAVAILABLE)
        if self._closed:
            raise UnavailableError("the work queue is shutting down",
                                   reason=Reason.STAGE_UNAVAILABLE)
        if self._draining:
            raise draining_error()
        now = self.clock()
        if deadline is not None and now >= deadline:
            raise DeadlineExceededError(f"deadline passed before stage {stage!r}",
                                        reason=Reason.DEADLINE_EXCEEDED)
        budget_key = f"{stage}:{tenant}"
        held = self._tenant_pixels.get(budget_key, 0)
        if (pixels > 0 and self.max_tenant_pixels is not None
                and held + pixels > self.max_tenant_pixels):
            if self.metrics:
                self.metrics.throttled.labels(stage).inc()
            raise ResourceExhaustedError(
                f"this tenant has {held} image pixels in stage {stage!r} already; its budget "
                f"is {self.max_tenant_pixels}: retry shortly",
                reason=Reason.TENANT_BUDGET_EXHAUSTED, retry_after_s=1.0,
                metadata={"stage": stage})
        wait_s = deadline - now if deadline is not None else float(self.cfg.result_ttl_s)
        epoch = f"{self.wall_clock() + wait_s:.6f}" if deadline is not None else ""
        body = encode(item)
        loop = asyncio.get_running_loop()
        if self._reader is None:
            self._start_reader()
        stream = self.stream_key(stage, tenant)
        call = _Call(b"%016x" % next(self._seq), stage, request_id_var.get(), epoch, body,
                     loop.create_future(), tenant=tenant or "default", stream=stream,
                     pixels=pixels, tp=tp)
        self._waiters[call.token] = call
        self._inflight[stage] += 1
        self._tenant_pixels[budget_key] = held + pixels
        timer = loop.call_later(wait_s, _expire, call)
        try:
            self._outbox.setdefault(stream, []).append(call)
            if stream not in self._flushing:
                self._schedule_flush(stream, stage)
            try:
                payload = await call.future
            except DeadlineExceededError:
                self._withdraw(call, "deadline")
                raise
            except asyncio.CancelledError:
                self._withdraw(call, "cancelled")
                raise
        finally:
            timer.cancel()
            del self._waiters[call.token]
            self._inflight[stage] -= 1
            left = self._tenant_pixels.get(budget_key, 0) - pixels
            if left > 0:
                self._tenant_pixels[budget_key] = left
            else:
                self._tenant_pixels.pop(budget_key, None)
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

    def _schedule_flush(self, stream: str, stage: str) -> None:
        """Enqueue a tenant stream's waiting calls now, or after ``enqueue_wait_ms`` when the
        stage is busy."""
        self._flushing.add(stream)
        if self._enqueue_wait > 0 and self._inflight[stage] > len(self._outbox[stream]):
            # Calls of this stage are in flight already: collect the calls that arrive in the
            # next moments and send them together (fewer round trips and wake-ups per call).
            asyncio.get_running_loop().call_later(
                self._enqueue_wait, lambda: self._spawn(self._flush(stream, stage)))
        else:
            self._spawn(self._flush(stream, stage))

    async def _flush(self, stream: str, stage: str) -> None:
        """Send a stream's waiting calls, in chunks, until none is left; one at a time."""
        errors = _redis_errors()
        outbox = self._outbox[stream]
        if self._closed:  # a window that ended after close(): nobody sends these any more
            for c in outbox:
                c.fail(UnavailableError("the work queue is shutting down",
                                        reason=Reason.STAGE_UNAVAILABLE))
            outbox.clear()
            self._flushing.discard(stream)
            return
        try:
            while outbox:
                batch = outbox[:_ENQUEUE_CHUNK]
                del outbox[:_ENQUEUE_CHUNK]
                batch = [c for c in batch if not c.future.done()]
                if not batch:
                    continue
                args: list[Any] = [self.max_pending, self.cfg.stream_max_len, self.instance,
                                   batch[0].tenant]
                gen = self._reader_gen
                for c in batch:
                    args += (c.token, c.rid, c.deadline, c.body, c.pixels, c.tp)
                    c.gen = gen
                try:
                    # EVAL, not EVALSHA: no NOSCRIPT after a Redis restart; Redis caches the
                    # compiled script by its digest.
                    res = await self._client().eval(_ENQUEUE, 2, stream,
                                                    self.tenants_key(stage), *args)
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
                        self._withdraw(c, "")
                if self.metrics:
                    self.metrics.queue_depth.labels(stage).set(int(res[-1]))
                    if rejected:
                        self.metrics.rejected.labels(stage).inc(rejected)
                if self._reader_wake is not None and not self._reader_wake.is_set():
                    self._reader_wake.set()  # a reader backing off: Redis is back
        finally:
            self._flushing.discard(stream)
            if outbox:  # appended after the loop ended
                self._schedule_flush(stream, stage)

    def _withdraw(self, call: _Call, why: str) -> None:
        """The caller gave up (``why``: 'deadline' or 'cancelled', counted; '' when counted
        already): ack and delete its entry so a worker that has not read it never runs it."""
        call.withdrawn = True
        if why and self.metrics:
            self.metrics.dropped.labels(call.stage, why).inc()
        if call.entry_id is None:  # its enqueue is still in flight; _flush withdraws it
            return
        self._withdrawals.append((call.stream, call.entry_id))
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
                token = data[:TOKEN_LEN]
                found = waiters.get(token)
                if token in self._answered:
                    # A second answer to one call: first-answer-wins should make this
                    # impossible; counted so that an operator (and the SIGKILL bench) sees it.
                    if self.metrics:
                        self.metrics.duplicate_answers.inc()
                    continue
                self._answered[token] = None
                if len(self._answered) > _ANSWERED_MEMORY:
                    self._answered.popitem(last=False)
                if found is not None and not found.future.done():
                    found.future.set_result(data[TOKEN_LEN:])

    # -- worker side ---------------------------------------------------------------------------

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _ensure_group(self, stage: str, stream: str | None = None) -> None:
        from redis.exceptions import ResponseError

        try:
            await self._client().xgroup_create(stream or self.stream_key(stage), GROUP, id="0",
                                               mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    async def _discover(self, stage: str, members: Any) -> None:
        """Serve the tenant streams of ``stage`` not known yet (creating their groups)."""
        known = self._streams[stage]
        for raw in members or ():
            stream = self.stream_key(stage, _s(raw))
            if stream not in known:
                await self._ensure_group(stage, stream)
                known.append(stream)

    async def _heartbeat(self) -> None:
        """Record every ``worker_heartbeat_s`` that this worker consumes its stages: a member
        of ``<prefix>:workers:<stage>`` scored with its expiry (three periods); the set itself
        expires with its last member, so a stage nobody consumes has no live entry."""
        errors = _redis_errors()
        period = self.cfg.worker_heartbeat_s
        while not self._stop.is_set():
            try:
                keys = [self.workers_key(spec.name) for spec in self.consume]
                await self._client().eval(_HEARTBEAT, len(keys), *keys, self.consumer,
                                          3 * period, max(1, int(3 * period) + 1))
            except errors as e:
                self._rlog.warning("heartbeat", "worker %s: heartbeat not recorded (%s)",
                                   self.consumer, type(e).__name__)
            await self._sleep(period)
        with contextlib.suppress(Exception):  # leaving: stop counting as a consumer now
            async with self._client().pipeline(transaction=False) as pipe:
                for spec in self.consume:
                    pipe.zrem(self.workers_key(spec.name), self.consumer)
                await pipe.execute()

    async def consumers(self, stage: str, timeout: float) -> int | None:
        """Workers whose heartbeat for ``stage`` has not expired (None: Redis did not answer)."""
        key = self.workers_key(stage)

        async def count() -> int:
            return int(await self._client().eval(_LIVE_WORKERS, 1, key))

        try:
            n = await asyncio.wait_for(count(), timeout)
        except Exception as e:  # Redis down: ping() reports that; nothing known here
            log.debug("redis heartbeat count failed: %s", type(e).__name__)
            return None
        if self.metrics:
            self.metrics.workers.labels(stage).set(n)
        return n

    async def _consume(self, spec: StageSpec) -> None:
        from redis.exceptions import ResponseError

        errors = _redis_errors()
        stage = spec.name
        backoff, group_ready, down, up = 0.05, False, False, False
        # Entries in hand were delivered to this worker: they run even when draining.
        while not self._stop.is_set() or len(self._hand[stage]):
            try:
                if not group_ready:
                    for stream in self._streams[stage]:
                        await self._ensure_group(stage, stream)
                    group_ready = True
                if not self._stop.is_set():
                    await self._fill(spec)
                batch = self._pick(spec)
            except ResponseError as e:
                if "NOGROUP" in str(e):  # Redis restarted empty, or the stream was deleted
                    group_ready = False
                    continue
                self._rlog.error(f"redis-error-{stage}", "stage %s: redis error %s", stage,
                                 type(e).__name__)
                await self._sleep(backoff)
                backoff = min(backoff * 2, self.cfg.worker_backoff_max_s)
                continue
            except errors as e:
                if not down:
                    log.warning("stage %s: redis at %s unavailable (%s); retrying with backoff",
                                stage, self._where, type(e).__name__)
                    if self.metrics:
                        self.metrics.queue_up.set(0)
                down, group_ready = True, False
                await self._sleep(backoff)
                backoff = min(backoff * 2, self.cfg.worker_backoff_max_s)
                continue
            if down:
                log.info("stage %s: redis at %s is back", stage, self._where)
            if (down or not up) and self.metrics:
                self.metrics.queue_up.set(1)
            backoff, down, up = 0.05, False, True
            if batch:
                try:
                    await self._process(spec, batch)
                except errors as e:
                    # Unacked entries stay pending in Redis and are reclaimed later.
                    self._rlog.warning(f"write-{stage}",
                                       "stage %s: could not write a batch's results (%s)",
                                       stage, type(e).__name__)
        log.info("stage %s: worker %s stopped reading", stage, self.consumer)
        if self.metrics:
            self.metrics.queue_up.set(0)

    async def _fill(self, spec: StageSpec) -> None:
        """Put work in hand: reclaimed entries when a reclaim is due, then new entries of every
        tenant stream that has none in hand (at most ``max_batch_size`` each; a blocking read
        only when nothing at all is in hand), so a tenant with a backlog never holds more
        than one batch's worth here and a newly arrived tenant is seen on the next read."""
        r = self._client()
        stage, b = spec.name, spec.batching
        hand = self._hand[stage]
        now = self.clock()
        if now - self._last_claim[stage] >= self._claim_interval:
            self._last_claim[stage] = now
            await self._update_gauges(stage)
            for stream in self._streams[stage]:
                res = await r.xautoclaim(
                    stream, GROUP, self.consumer,
                    min_idle_time=int(self.cfg.visibility_timeout_s * 1000),
                    start_id=self._cursor.get(stream) or "0-0", count=b.max_batch_size,
                )
                self._cursor[stream] = res[0]  # Redis 7: [next cursor, entries, deleted ids]
                claimed = [(_b(i), f) for i, f in res[1] if f]
                if not claimed:
                    continue
                counts = await self._delivery_counts(stream, [i for i, _ in claimed])
                self._deliveries.update(counts)
                if self.metrics:
                    self.metrics.redeliveries.labels(stage).inc(len(claimed))
                self._rlog.warning(f"reclaim-{stage}",
                                   "stage %s: reclaimed %d items from a dead or slow worker",
                                   stage, len(claimed))
                for entry_id, fields in claimed:
                    self._take_in_hand(stage, stream, entry_id, fields)
        empty = [s for s in self._streams[stage] if s not in hand.tenants()]
        block = None if len(hand) else self.cfg.worker_block_ms
        # The tenant set rides along with every read: a tenant's first item is seen on the
        # next read (an idle worker, blocked on the known streams, sees it within
        # worker_block_ms, once per tenant).
        async with r.pipeline(transaction=False) as pipe:
            pipe.smembers(self.tenants_key(stage))
            if empty:
                pipe.xreadgroup(GROUP, self.consumer, dict.fromkeys(empty, ">"),
                                count=b.max_batch_size, block=block)
            res = await pipe.execute()
        if empty:
            for stream, entry_id, fields in _stream_entries(res[1]):
                self._take_in_hand(stage, stream, entry_id, fields)
        await self._discover(stage, res[0])

    def _take_in_hand(self, stage: str, stream: str, entry_id: bytes,
                      fields: dict[bytes, bytes]) -> None:
        if entry_id in self._held(stage).get(stream, ()):  # reclaimed from ourselves
            return
        self._hand[stage].push(stream, (stream, entry_id, fields))

    def _held(self, stage: str) -> dict[str, set[bytes]]:
        """Ids of the entries in hand and running, by stream."""
        out: dict[str, set[bytes]] = {}
        for stream, entry_id, _ in (*self._hand[stage].items(), *self._running[stage]):
            out.setdefault(stream, set()).add(entry_id)
        return out

    def _pick(self, spec: StageSpec) -> list[tuple[str, bytes, dict[bytes, bytes]]]:
        """The next batch from the entries in hand: tenants in deficit-round-robin order,
        weighted by image cost, within ``max_batch_size`` and ``max_batch_pixels`` (a request
        larger than that runs alone)."""
        pixels = 0
        count = 0

        def fits(e: tuple[str, bytes, dict[bytes, bytes]]) -> bool:
            nonlocal pixels, count
            px = _pixels(e[2])
            if count and self.max_batch_pixels is not None and px \
                    and pixels + px > self.max_batch_pixels:
                return False
            pixels += px
            count += 1
            return True

        return self._hand[spec.name].take(fits, limit=spec.batching.max_batch_size)

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
        depth = lag = 0
        for stream in self._streams[stage]:
            depth += await r.xlen(stream)
            for g in await r.xinfo_groups(stream):
                if _s(g.get("name", b"")) == GROUP and g.get("lag") is not None:
                    lag += int(g["lag"])
        self.metrics.queue_depth.labels(stage).set(depth)
        self.metrics.queue_lag.labels(stage).set(lag)

    async def _process(
        self,
        spec: StageSpec,
        batch: list[tuple[str, bytes, dict[bytes, bytes]]],
    ) -> None:
        stage = spec.name
        # (stream, entry id, fields, answer)
        answers: list[tuple[str, bytes, dict[bytes, bytes], bytes]] = []
        dead: list[tuple[str, bytes, dict[bytes, bytes], str]] = []
        run: list[tuple[str, bytes, dict[bytes, bytes], Any]] = []  # (stream, id, fields, item)
        now = self.wall_clock()
        for stream, entry_id, fields in batch:
            deliveries = self._deliveries.pop(entry_id, 1)
            if not (_HEX16.match(fields.get(b"reply", b""))
                    and _HEX16.match(fields.get(b"to", b""))):
                dead.append((stream, entry_id, fields, "MALFORMED"))
                continue
            if deliveries > self.cfg.max_deliveries:
                dead.append((stream, entry_id, fields, Reason.DEAD_LETTERED))
                answers.append((stream, entry_id, fields, encode(UnavailableError(
                    f"stage {stage!r} failed on this request {self.cfg.max_deliveries} times; "
                    "it was set aside", reason=Reason.DEAD_LETTERED))))
                continue
            try:
                raw_deadline = fields.get(b"deadline", b"")
                deadline = float(raw_deadline) if raw_deadline else None
                item = decode_item(stage, fields.get(b"body", b""))
            except (CodecError, ValueError) as e:
                log.error("stage %s: malformed queue item (%s)", stage, e)
                answers.append((stream, entry_id, fields, encode(UnavailableError(
                    f"stage {stage!r} could not read this request",
                    reason=Reason.QUEUE_ITEM_MALFORMED))))
                continue
            if deadline is not None and now >= deadline:
                if self.metrics:
                    self.metrics.expired.labels(stage).inc()
                    self.metrics.dropped.labels(stage, "deadline").inc()
                answers.append((stream, entry_id, fields, encode(DeadlineExceededError(
                    f"deadline passed while waiting for stage {stage!r}",
                    reason=Reason.DEADLINE_EXCEEDED))))
                continue
            run.append((stream, entry_id, fields, item))
        self._running[stage] = batch
        spans: list[Any] = []
        try:
            run = await self._still_wanted(stage, run)
            if run:
                if self.metrics:
                    self.metrics.batch_size.labels(stage).observe(len(run))
                if tracing.enabled():
                    spans = _worker_spans(stage, run, self.consumer)
                results = await self._run_handler(spec, [item for *_, item in run])
                answers += [(stream, entry_id, fields, res) for (stream, entry_id, fields, _), res
                            in zip(run, results, strict=True)]
            for stream in dict.fromkeys(e[0] for e in batch):
                await self._finish(
                    stage, [(i, f, a) for s_, i, f, a in answers if s_ == stream],
                    [(i, f, w) for s_, i, f, w in dead if s_ == stream], stream=stream)
        finally:
            self._running[stage] = []
            for sp in spans:
                tracing.end(sp)

    async def _still_wanted(
        self, stage: str, run: list[tuple[str, bytes, dict[bytes, bytes], Any]]
    ) -> list[tuple[str, bytes, dict[bytes, bytes], Any]]:
        """Drop the image requests whose caller withdrew while they waited in hand (their
        entry is gone from the stream): one round trip saves seconds of decoding. Requests
        without images are cheaper to run than to check."""
        costly = [e for e in run if _pixels(e[2])]
        if not costly:
            return run
        async with self._client().pipeline(transaction=False) as pipe:
            for stream, entry_id, _, _ in costly:
                pipe.xrange(stream, min=entry_id, max=entry_id, count=1)
            found = await pipe.execute()
        gone = {e[1] for e, rows in zip(costly, found, strict=True) if not rows}
        if not gone:
            return run
        if self.metrics:
            self.metrics.dropped.labels(stage, "cancelled").inc(len(gone))
        return [e for e in run if e[1] not in gone]

    async def _keep_claimed(self, stage: str) -> None:
        """Every third of ``visibility_timeout_s``, reset the idle time of every entry in hand
        (running or waiting its turn here: XCLAIM to this consumer, JUSTID, the delivery count
        stays), so a batch slower than the timeout (tier-2 generation on CPU) is not reclaimed
        and run twice while this worker is alive. A worker that dies stops this, and its
        entries are reclaimed by the others after the timeout."""
        r = self._client()
        period = self.cfg.visibility_timeout_s / 3
        while True:
            await asyncio.sleep(period)
            for stream, ids in self._held(stage).items():
                try:
                    await r.xclaim(stream, GROUP, self.consumer, min_idle_time=0,
                                   message_ids=list(ids), justid=True)
                except Exception as e:  # the answers' write will see a real outage
                    log.debug("stage %s: could not refresh the entries in hand (%s)", stage,
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
        stream: str | None = None,
    ) -> int:
        """Dead letters, then one script that answers, acks and deletes the entries of one
        stream (default: the stage's default-tenant stream).

        An answer is delivered only by the first worker to ack its entry, so a duplicate
        delivery answered by two workers still gives its caller one answer; a crash before the
        script only causes a redelivery. Returns how many answers were delivered.
        """
        r = self._client()
        prefix = f"{self.cfg.key_prefix}:replies:".encode()
        stream = stream or self.stream_key(stage)
        keys: list[Any] = [stream]
        args: list[Any] = [GROUP, self.cfg.result_ttl_s, len(answers)]
        for entry_id, fields, answer in answers:
            keys.append(prefix + fields[b"to"])
            args += (entry_id, fields[b"reply"] + answer)
        answered = {entry_id for entry_id, _, _ in answers}
        args += [entry_id for entry_id, _, _ in dead if entry_id not in answered]
        if not dead:
            return int(await r.eval(_ANSWER, len(keys), *keys, *args))
        async with r.pipeline(transaction=False) as pipe:
            for entry_id, fields, why in dead:
                pipe.xadd(self.dead_key(stage), {**fields, b"why": why.encode(),
                                                 b"entry": entry_id},
                          maxlen=self.cfg.stream_max_len, approximate=True)
            pipe.eval(_ANSWER, len(keys), *keys, *args)
            res = await pipe.execute(raise_on_error=False)
        for x in res:
            if isinstance(x, Exception):
                raise x
        if self.metrics:
            self.metrics.dead_letters.labels(stage).inc(len(dead))
        log.warning("stage %s: %d items moved to %s", stage, len(dead), self.dead_key(stage))
        return int(res[-1])


def _worker_spans(stage: str, run: list[tuple[str, bytes, dict[bytes, bytes], Any]],
                  consumer: str) -> list[Any]:
    """Per item of a batch about to run, in the trace its entry carries (``tp``): a span for
    its wait in the stream (from the entry id's time, Redis's clock, to now) and the running
    span, ended by the caller once its answer is written."""
    now = time.time_ns()
    spans = []
    for _stream, entry_id, fields, _ in run:
        tp = _s(fields.get(b"tp", b""))
        attrs = {"messaging.system": "redis", "vlmguard.stage": stage,
                 "messaging.message.id": _s(entry_id), "vlmguard.batch_size": len(run),
                 "vlmguard.worker": consumer}
        wait = tracing.start_span(f"vlmguard.queue.wait {stage}", attrs, parent=tp,
                                  kind="consumer",
                                  start_ns=min(_id_key(entry_id)[0] * 1_000_000, now))
        tracing.end(wait, end_ns=now)
        spans.append(tracing.start_span(f"vlmguard.worker.process {stage}", attrs, parent=tp,
                                        kind="consumer", start_ns=now))
    return spans


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


def _pixels(fields: dict[bytes, bytes]) -> int:
    try:
        return max(0, int(fields.get(b"px", b"0") or 0))
    except ValueError:
        return 0


def _stream_entries(got: Any) -> list[tuple[str, bytes, dict[bytes, bytes]]]:
    """Flatten an XREADGROUP reply over several streams to (stream, id, fields)."""
    out: list[tuple[str, bytes, dict[bytes, bytes]]] = []
    for name, msgs in got or []:
        for entry_id, fields in msgs:
            if fields:  # an entry deleted while pending comes back without fields
                out.append((_s(name), _b(entry_id), fields))
    return out


def _entries(got: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """Flatten an XREADGROUP reply (RESP2: ``[[stream, [(id, fields), ...]], ...]``)."""
    out: list[tuple[bytes, dict[bytes, bytes]]] = []
    for _name, msgs in got or []:
        for entry_id, fields in msgs:
            if fields:  # an entry deleted while pending comes back without fields
                out.append((_b(entry_id), fields))
    return out

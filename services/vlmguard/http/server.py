"""Hosting the front door with uvicorn, inside the gateway process (``http.listen`` /
``vlmguard serve --http ADDR``) or on its own event loop (tests, benchmarks)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Generator, Mapping
from typing import Any

import uvicorn

from vlmguard.auth import Gatekeeper
from vlmguard.config import VLMGuardConfig
from vlmguard.errors import ConfigError
from vlmguard.http.app import FrontDoor, build_app
from vlmguard.http.images import ImageFetcher
from vlmguard.metrics import Metrics
from vlmguard.pipeline import GuardPipeline
from vlmguard.upstream import OpenAIUpstream

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the process that hosts the front door (the
    gateway) owns SIGINT/SIGTERM and stops it with the rest."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def bind(listen: str) -> socket.socket:
    """A listening TCP socket on ``HOST:PORT`` (port 0: a free one).

    Raises:
        ConfigError: the address cannot be bound.
    """
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named explicitly: asyncio turns Nagle off (TCP_NODELAY) only on sockets whose
    # proto says TCP; with proto 0, a keep-alive request waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, int(port)))
        sock.listen(1024)
    except (OSError, ValueError) as e:
        sock.close()
        raise ConfigError(f"http.listen: cannot bind {listen} ({type(e).__name__})") from e
    sock.setblocking(False)
    return sock


class HTTPFrontDoor:
    """The front door served by uvicorn on ``listen``.

    Args:
        door: What the app uses.
        listen: ``HOST:PORT`` (port 0: a free one, see :attr:`port` after :meth:`start`).
    """

    def __init__(self, door: FrontDoor, listen: str) -> None:
        self.door = door
        self.listen = listen
        self.app = build_app(door)
        self.port = 0
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Bind and serve (returns once the server accepts connections)."""
        sock = bind(self.listen)
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(self.app, lifespan="off", access_log=False,
                                log_level="warning", timeout_keep_alive=30,
                                server_header=False)
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]),
                                         name="http-front-door")
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises what stopped it
                raise ConfigError(f"http.listen: the front door did not start on {self.listen}")
            await asyncio.sleep(0.01)
        log.info("HTTP front door on %s:%d, upstream %s", sock.getsockname()[0], self.port,
                 self.door.upstream.base_url)

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop accepting, let in-flight requests finish (up to ``grace_s``), close clients."""
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            try:
                await asyncio.wait_for(asyncio.shield(self._task), grace_s)
            except TimeoutError:
                self._server.force_exit = True
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._task, 2.0)
        await self.door.upstream.aclose()
        await self.door.fetcher.aclose()


def build_front_door(cfg: VLMGuardConfig, pipeline: GuardPipeline, *,
                     metrics: Metrics | None = None, gatekeeper: Gatekeeper | None = None,
                     ready: Callable[[], Awaitable[bool]] | None = None,
                     environ: Mapping[str, str] | None = None,
                     upstream: OpenAIUpstream | None = None,
                     fetcher: Any = None, listen: str | None = None) -> HTTPFrontDoor:
    """The front door over ``pipeline`` (not started).

    Args:
        cfg: Configuration (``http``, ``target.openai`` for the upstream, ``server.auth``).
        pipeline: The guard pipeline.
        metrics: Metrics sink (the gateway's, so one /metrics shows both).
        gatekeeper: The gateway's gatekeeper (shared rate limits); else one from
            ``server.auth``.
        ready: Extra readiness condition.
        environ: Environment (API keys of callers and of the upstream).
        upstream: The upstream client (else built from ``target.openai``).
        fetcher: The remote image fetcher (else built from ``http.remote_images``).
        listen: Overrides ``http.listen``.

    Raises:
        ConfigError: no upstream base URL, unreadable key files, no listen address.
    """
    addr = listen or cfg.http.listen
    if not addr:
        raise ConfigError("the HTTP front door needs http.listen (or vlmguard serve --http)")
    metrics = metrics or Metrics()
    door = FrontDoor(
        cfg=cfg, pipeline=pipeline,
        upstream=upstream or OpenAIUpstream(cfg.target.openai, environ=environ),
        gatekeeper=gatekeeper or Gatekeeper(cfg.server.auth, environ, metrics=metrics),
        metrics=metrics,
        fetcher=fetcher or ImageFetcher(cfg.http.remote_images, cfg.limits),
        ready=ready)
    return HTTPFrontDoor(door, addr)


async def start_for_gateway(gw: Any, listen: str | None = None) -> HTTPFrontDoor:
    """Start the front door as a second listener of a started gateway: its pipeline, metrics
    and (when it has one) gatekeeper; ready while the gateway's queue answers."""

    async def queue_ok() -> bool:
        return bool(gw.queue_ok)

    front = build_front_door(gw.cfg, gw.pipeline, metrics=gw.metrics,
                             gatekeeper=getattr(gw, "gatekeeper", None), ready=queue_ok,
                             listen=listen)
    await front.start()
    return front

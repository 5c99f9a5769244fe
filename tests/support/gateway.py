"""A gateway served from a background event loop, for plain blocking gRPC clients."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from typing import Any

import grpc


class LoopThread:
    """An asyncio loop in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 120.0) -> Any:
        fut: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class RunningGateway:
    """A started gateway and a channel to it."""

    def __init__(self, loop: LoopThread, gw: Any) -> None:
        self.loop = loop
        self.gw = gw
        self.addr = f"127.0.0.1:{gw.port}"
        self.channel = grpc.insecure_channel(
            self.addr, options=[("grpc.max_send_message_length", 256 * 1024 * 1024)]
        )

    def stop(self) -> None:
        self.channel.close()
        self.loop.run(self.gw.stop(grace=1.0))

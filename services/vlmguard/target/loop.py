"""A private asyncio loop on a daemon thread, for a target backend whose client is async while
the stage calls it synchronously (``generate_batch`` runs in a worker thread)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from vlmguard.errors import Reason, UnavailableError

T = TypeVar("T")
log = logging.getLogger(__name__)


class ClientLoop:
    """Runs coroutines on its own loop; the owner serialises :meth:`start` and :meth:`stop`.

    Args:
        name: The thread's name.
        what: The backend, for errors and logs ("the openai target").
    """

    def __init__(self, name: str, what: str) -> None:
        self.name, self.what = name, what
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name=self.name, daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread

    def run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        """``coro``'s result, waiting at most ``timeout`` seconds (then it is cancelled).

        Raises:
            UnavailableError: the loop is stopped (TARGET_NOT_READY).
        """
        loop = self._loop
        if loop is None:
            coro.close()
            raise UnavailableError(f"{self.what} is closed", reason=Reason.TARGET_NOT_READY)
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return fut.result(timeout)
        except FutureTimeout:
            fut.cancel()
            raise

    def stop(self, close_client: Callable[[], Coroutine[Any, Any, Any]] | None = None) -> None:
        """Close the client on the loop (best effort, 5 s), then stop the loop and its thread."""
        loop, self._loop = self._loop, None
        if loop is None:
            return
        if close_client is not None:
            try:
                asyncio.run_coroutine_threadsafe(close_client(), loop).result(5)
            except Exception:  # best-effort shutdown
                log.debug("closing the client of %s failed", self.what, exc_info=True)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

"""Headless Chromium for page tests: load a local HTML file at a window width, read its DOM
and measure its layout.

The pages under test carry no scripts; the measurement runs through the DevTools protocol
over ``--remote-debugging-pipe`` (null-terminated JSON on file descriptors 3 and 4), so no
websocket client is needed. ``/usr/bin/chromium-headless-shell`` is installed here and in CI
(``.ci/run``); tests skip when it is missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any

CHROMIUM = os.environ.get("VLMGUARD_CHROMIUM", "/usr/bin/chromium-headless-shell")


def chromium_path() -> str | None:
    """The headless Chromium binary, or None when it is not installed."""
    if Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    return shutil.which("chromium-headless-shell") or shutil.which("chromium")


class Chromium:
    """One headless browser driven over the DevTools pipe (a context manager)."""

    def __init__(self, width: int = 1280, height: int = 900, timeout_s: float = 30.0) -> None:
        binary = chromium_path()
        if binary is None:
            raise FileNotFoundError("headless Chromium is not installed")
        self.timeout_s = timeout_s
        self._next_id = 0
        self._buf = b""
        cmd_r, self._cmd_w = os.pipe()  # we write commands, the browser reads fd 3
        self._out_r, out_w = os.pipe()  # the browser writes fd 4, we read

        def child_fds() -> None:  # runs in the child before exec
            a, b = os.dup(cmd_r), os.dup(out_w)  # fresh numbers: never 3 or 4 themselves
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--remote-debugging-pipe", "--no-first-run", "--disable-extensions",
             f"--window-size={width},{height}", "about:blank"],
            preexec_fn=child_fds, close_fds=False, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(cmd_r)
        os.close(out_w)
        self.session = ""

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._send("Browser.close", session=False)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        for fd in (self._cmd_w, self._out_r):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _send(self, method: str, params: dict[str, Any] | None = None,
              session: bool = True) -> int:
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        return self._next_id

    def call(self, method: str, params: dict[str, Any] | None = None,
             session: bool = True) -> dict[str, Any]:
        """Send one DevTools command and wait for its answer (events are skipped)."""
        want = self._send(method, params, session)
        deadline = time.monotonic() + self.timeout_s
        while True:
            while b"\0" in self._buf:
                raw, self._buf = self._buf.split(b"\0", 1)
                msg = json.loads(raw)
                if msg.get("id") == want:
                    if "error" in msg:
                        raise RuntimeError(f"{method}: {msg['error']}")
                    result: dict[str, Any] = msg.get("result", {})
                    return result
            if time.monotonic() > deadline:
                raise TimeoutError(f"{method}: no answer in {self.timeout_s} s")
            chunk = os.read(self._out_r, 1 << 16)
            if not chunk:
                raise RuntimeError("the browser closed its DevTools pipe")
            self._buf += chunk

    def open(self, path: Path) -> None:
        """Load a local file in a new tab and wait until it has loaded."""
        url = path.resolve().as_uri()
        target = self.call("Target.createTarget", {"url": url}, session=False)["targetId"]
        self.session = self.call("Target.attachToTarget",
                                 {"targetId": target, "flatten": True}, session=False)["sessionId"]
        deadline = time.monotonic() + self.timeout_s
        # The tab starts on about:blank, itself "complete": wait for the file's own document.
        check = f"location.href === {json.dumps(url)} && document.readyState === 'complete'"
        while self.evaluate(check) is not True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path} did not finish loading")
            time.sleep(0.05)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (run by the test, not the page)."""
        res = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in res:
            raise RuntimeError(f"evaluation failed: {res['exceptionDetails']}")
        return res["result"].get("value")

    def screenshot(self, path: Path) -> None:
        """A PNG of the whole page."""
        import base64

        data = self.call("Page.captureScreenshot",
                         {"format": "png", "captureBeyondViewport": True})["data"]
        path.write_bytes(base64.b64decode(data))


#: Layout problems of a page as the test sees them at the window's width: the page scrolls
#: sideways, an element sticks out of its card (outside a scrolling box), or a scrolling box is
#: wider than its card. Each as "what: where (px)".
LAYOUT_PROBLEMS_JS = r"""
(() => {
  const out = [];
  const doc = document.documentElement;
  if (doc.scrollWidth > doc.clientWidth) {
    out.push(`page scrolls sideways: ${doc.scrollWidth} > ${doc.clientWidth}`);
  }
  const name = (el) => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') +
      (typeof el.className === 'string' && el.className
        ? '.' + el.className.trim().replace(/\s+/g, '.') : '');
  const mainRect = document.querySelector('main').getBoundingClientRect();
  for (const card of document.querySelectorAll('.card')) {
    const r = card.getBoundingClientRect();
    if (r.right > mainRect.right + 1 || r.left < mainRect.left - 1) {
      out.push(`card outside main: ${name(card)} ${r.left}-${r.right}`);
    }
    if (card.scrollWidth > card.clientWidth + 1) {
      out.push(`card content overflows: ${name(card)} ${card.scrollWidth} > ${card.clientWidth}`);
    }
    for (const el of card.querySelectorAll('*')) {
      // Inside a scrolling box, content may be wider: it scrolls within the card.
      if (el.closest('.scroll') && el.closest('.scroll') !== el) continue;
      const e = el.getBoundingClientRect();
      if (e.width === 0 && e.height === 0) continue;  // hidden (a closed <details>)
      if (e.right > r.right + 1) {
        out.push(`sticks out of its card: ${name(el)} in ${name(card)} ` +
                 `${Math.round(e.right)} > ${Math.round(r.right)}`);
      }
    }
  }
  return out;
})()
"""

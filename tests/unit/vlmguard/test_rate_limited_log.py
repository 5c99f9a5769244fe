"""RateLimitedLog: one line per interval per key, with the count held back."""

from __future__ import annotations

import logging

import pytest

from vlmguard.logs import RateLimitedLog


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_a_burst_logs_once_then_once_per_interval_with_the_suppressed_count(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    rl = RateLimitedLog(logging.getLogger("t.rl"), interval_s=30.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="t.rl"):
        logged = [rl.warning("down", "redis at %s unavailable", "h") for _ in range(6078)]
        clock.t += 31
        assert rl.warning("down", "redis at %s unavailable", "h")
    assert logged.count(True) == 1
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs == ["redis at h unavailable",
                    "redis at h unavailable (6077 more like this in the last 31s)"]


def test_keys_are_limited_independently_and_levels_kept(
        caplog: pytest.LogCaptureFixture) -> None:
    rl = RateLimitedLog(logging.getLogger("t.rl2"), interval_s=30.0, clock=Clock())
    with caplog.at_level(logging.WARNING, logger="t.rl2"):
        assert rl.warning("a", "a failed")
        assert rl.error("b", "b failed")
        assert not rl.warning("a", "a failed")
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, "a failed"), (logging.ERROR, "b failed")]

"""Queue and cost settings that must agree with each other, checked when the config loads."""

from __future__ import annotations

import pytest

from vlmguard.config import VLMGuardConfig, load_config
from vlmguard.errors import ConfigError

REDIS = {"queue": {"url": "redis://127.0.0.1:6379/0"}}


def test_default_visibility_timeout_reclaims_well_before_the_default_deadline() -> None:
    cfg = load_config(None, environ={}, overrides=REDIS)
    assert cfg.queue.visibility_timeout_s * 3 <= cfg.server.default_timeout_s


def test_visibility_timeout_equal_to_the_deadline_is_refused_with_a_clear_message() -> None:
    with pytest.raises(ConfigError) as e:
        load_config(None, environ={}, overrides={
            "queue": {"url": "redis://h:1/0", "visibility_timeout_s": 30},
            "server": {"default_timeout_s": 30}})
    assert "queue.visibility_timeout_s" in str(e.value)
    assert "server.default_timeout_s" in str(e.value)


def test_a_short_deadline_needs_a_shorter_visibility_timeout() -> None:
    with pytest.raises(ConfigError):
        load_config(None, environ={"VLMGUARD_QUEUE_URL": "redis://h:1/0"},
                    overrides={"server": {"default_timeout_s": 10}})
    cfg = load_config(None, environ={"VLMGUARD_QUEUE_URL": "redis://h:1/0"},
                      overrides={"server": {"default_timeout_s": 10},
                                 "queue": {"visibility_timeout_s": 2}})
    assert cfg.queue.visibility_timeout_s == 2


def test_the_in_process_queue_ignores_the_redis_visibility_timeout() -> None:
    cfg = VLMGuardConfig.model_validate({"server": {"default_timeout_s": 5}})
    assert cfg.queue.url == ""


def test_request_budget_above_the_tenant_budget_is_refused() -> None:
    with pytest.raises(ConfigError) as e:
        load_config(None, environ={}, overrides={"limits": {
            "max_request_pixels": 100_000_000, "max_tenant_pending_pixels": 50_000_000}})
    assert "max_tenant_pending_pixels" in str(e.value)


def test_analyzer_runs_two_batches_at_once_by_default_other_stages_one() -> None:
    cfg = VLMGuardConfig()
    assert cfg.analyzer.batching.max_concurrent_batches == 2
    assert cfg.rewriter.batching.max_concurrent_batches == 1

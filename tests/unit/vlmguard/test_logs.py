"""Logging: JSON lines with the request id, text format locally, content hashing."""

from __future__ import annotations

import json
import logging

import pytest

from vlmguard.logs import configure_logging, request_id_var, short_hash


def test_json_lines_carry_the_request_id(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json")
    token = request_id_var.set("req-123")
    try:
        logging.getLogger("vlmguard.test").info("decision %s", "ALLOW", extra={"verdict": "ALLOW"})
    finally:
        request_id_var.reset(token)
        configure_logging("INFO", "text")
    line = capsys.readouterr().err.strip().splitlines()[-1]
    rec = json.loads(line)
    assert rec["request_id"] == "req-123" and rec["msg"] == "decision ALLOW"
    assert rec["level"] == "INFO" and rec["logger"] == "vlmguard.test"
    assert rec["verdict"] == "ALLOW"


def test_text_format_has_request_id(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "text")
    logging.getLogger("vlmguard.test").warning("hello")
    assert "[-] hello" in capsys.readouterr().err


def test_configure_is_idempotent() -> None:
    configure_logging("INFO", "text")
    configure_logging("INFO", "json")
    ours = [h for h in logging.getLogger().handlers if getattr(h, "_vlmguard", False)]
    assert len(ours) == 1
    configure_logging("INFO", "text")


def test_short_hash_is_stable_and_short() -> None:
    assert short_hash("abc") == short_hash(b"abc") and len(short_hash("abc")) == 10
    assert short_hash("abc") != short_hash("abd")

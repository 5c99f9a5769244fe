"""CLI security commands: `vlmguard keys hash` and what `check-config` refuses."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import yaml

from vlmguard.auth import KeyStore
from vlmguard.cli import main
from vlmguard.config import VLMGuardConfig


def test_keys_hash_prints_an_entry_the_gateway_accepts(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("my-very-secret-key\n"))
    assert main(["keys", "hash", "--id", "team-a", "--tenant", "a", "--tenant", "b",
                 "--scope", "guard", "--scope", "target_raw", "--rate", "5", "--burst",
                 "10"]) == 0
    out = capsys.readouterr().out
    assert "my-very-secret-key" not in out
    entry = yaml.safe_load(out)["keys"]["team-a"]
    assert entry["tenants"] == ["a", "b"] and entry["scopes"] == ["guard", "target_raw"]
    assert entry["rate_limit"] == {"rate_per_s": 5.0, "burst": 10}
    path = tmp_path / "keys.yaml"
    path.write_text(out)
    principal = KeyStore(str(path)).lookup("my-very-secret-key")
    assert principal is not None and principal.raw_target and principal.key_id == "team-a"


def test_keys_hash_generate_prints_the_key_once_on_stderr(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "hash", "--id", "gen", "--generate"]) == 0
    cap = capsys.readouterr()
    key = cap.err.strip().rsplit(" ", 1)[-1]
    assert key.startswith("vg_") and key not in cap.out
    path = tmp_path / "keys.yaml"
    path.write_text(cap.out)
    assert KeyStore(str(path)).lookup(key) is not None


def test_keys_hash_without_a_key_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["keys", "hash", "--id", "x"]) == 2


def _check(tmp_path: Path, cfg: dict[str, object], capsys: pytest.CaptureFixture[str],
           monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    for k in ("VLMGUARD_CONFIG", "VLMGUARD_API_KEYS"):
        monkeypatch.delenv(k, raising=False)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    rc = main(["check-config", "--config", str(path)])
    return rc, capsys.readouterr().err


def test_check_config_refuses_tls_files_that_do_not_exist(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    rc, err = _check(tmp_path, {"server": {"tls": {
        "enabled": True, "cert_file": str(cert), "key_file": str(tmp_path / "missing.key"),
        "client_ca_file": str(tmp_path)}}}, capsys, monkeypatch)
    assert rc == 1
    assert "server.tls.key_file" in err and "does not exist" in err
    assert "server.tls.client_ca_file" in err  # a directory is not a file
    assert "server.tls.cert_file" not in err


def test_check_config_reports_a_broken_keys_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    keys = tmp_path / "keys.yaml"
    keys.write_text("keys: {k: {hash: plaintext, tenants: [a], scopes: [guard]}}")
    rc, err = _check(tmp_path, {"server": {"auth": {"enabled": True, "keys_file": str(keys)}}},
                     capsys, monkeypatch)
    assert rc == 1 and "server.auth" in err and "keys.k.hash" in err
    assert "plaintext" not in err


def test_reflection_is_off_by_default() -> None:
    assert VLMGuardConfig().server.reflection is False

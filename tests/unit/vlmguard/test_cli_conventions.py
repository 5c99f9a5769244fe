"""The command line's conventions: flags, defaults in --help, exit codes and one-line errors
for usage and start-up failures (no server, no model loading)."""

from __future__ import annotations

import argparse
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from vlmguard import cli
from vlmguard.errors import ConfigError, InvalidArgumentError
from vlmguard.gateway.client import CallError


@pytest.fixture(scope="module")
def parser() -> argparse.ArgumentParser:
    return cli.build_parser()


def _all(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    return [parser, *cli._subparsers(parser)]


def _help(parser: argparse.ArgumentParser, *path: str) -> str:
    p = parser
    for name in path:
        sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
        p = sub.choices[name]
    return p.format_help()


@pytest.fixture()
def busy_port() -> Iterator[int]:
    """A loopback port another process (this test) is listening on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        yield s.getsockname()[1]


# -- flags ---------------------------------------------------------------------------------------


def test_every_progress_bar_has_both_spellings(parser: argparse.ArgumentParser) -> None:
    with_bar = [p for p in _all(parser) if "--no-progress" in p._option_string_actions]
    assert len(with_bar) >= 4  # eval, redteam, synth, train rewriter, train analyzer
    for p in with_bar:
        opts = p._option_string_actions
        assert "--progress" in opts, p.prog
        assert opts["--progress"].dest == opts["--no-progress"].dest, p.prog


def test_no_command_shows_the_old_spellings(parser: argparse.ArgumentParser) -> None:
    for p in _all(parser):
        text = p.format_help()
        assert "--dest" not in text and "--data " not in text, p.prog


def test_out_replaces_dest_which_still_works_with_a_warning(
        parser: argparse.ArgumentParser, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["pipeline", "publish", "--model", "m", "--name", "n"]
    new = parser.parse_args([*base, "--out", "/tmp/pub"])
    assert capsys.readouterr().err == ""
    old = parser.parse_args([*base, "--dest", "/tmp/pub"])
    assert "--dest is deprecated; use --out" in capsys.readouterr().err
    assert vars(new) == vars(old)


def test_inputs_are_in_repeatable_with_several_per_use(
        parser: argparse.ArgumentParser, capsys: pytest.CaptureFixture[str]) -> None:
    args = parser.parse_args(["synth", "merge", "--in", "a", "b", "--in", "c", "--out", "o"])
    assert args.inputs == ["a", "b", "c"]
    args = parser.parse_args(["train", "rewriter", "--recipe", "r.yaml", "--in", "x", "y",
                              "--in", "z"])
    assert args.data == ["x", "y", "z"]
    assert capsys.readouterr().err == ""
    old = parser.parse_args(["train", "rewriter", "--recipe", "r.yaml", "--data", "x", "y"])
    assert old.data == ["x", "y"]
    assert "--data is deprecated; use --in" in capsys.readouterr().err


def test_help_shows_defaults(parser: argparse.ArgumentParser) -> None:
    text = _help(parser, "guard")
    assert "(default: 60.0)" in text and "(default: 127.0.0.1:50051)" in text
    assert "(default: False)" not in text and "(default: None)" not in text
    assert "(default: 0.0)" in _help(parser, "generate")  # --temperature


def test_serve_and_worker_help_are_current(parser: argparse.ArgumentParser) -> None:
    serve = " ".join(_help(parser, "serve").split())
    assert "none, smollm2, triton, openai or module:Class" in serve
    worker = " ".join(_help(parser, "worker").split())
    assert "analyze, rewrite or target" in worker
    assert "smollm2, triton, openai" in worker


def test_a_client_command_per_rpc(parser: argparse.ArgumentParser) -> None:
    for name in ("guard", "analyze", "rewrite", "generate"):
        args = parser.parse_args([name, "--text", "hi"])
        assert args.addr == "127.0.0.1:50051" and args.timeout == 60.0 and args.func


# -- usage errors: exit 2, one line, no gRPC status names -----------------------------------------


def test_bad_listen_flag_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["serve", "--listen", "foo"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument --listen: must be HOST:PORT" in err


def test_missing_image_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["guard", "--text", "hi", "--image", "/nonexistent/x.png"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("vlmguard guard: error: cannot read image /nonexistent/x.png: "
                   "No such file or directory")


def test_local_error_is_printed_without_a_grpc_status_name(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def bad(_args: argparse.Namespace) -> int:
        raise InvalidArgumentError("seed manifest not found: s.jsonl")

    monkeypatch.setattr(cli, "_cmd_check_config", bad)
    assert cli.main(["check-config"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "vlmguard check-config: error: seed manifest not found: s.jsonl"

    def broken(_args: argparse.Namespace) -> int:
        raise ConfigError("analyzer.head_path: not a head")

    monkeypatch.setattr(cli, "_cmd_check_config", broken)
    assert cli.main(["check-config"]) == 1
    assert "error: CONFIG_INVALID: analyzer.head_path: not a head" in capsys.readouterr().err


# -- start-up failures: exit 1, one line naming the setting and the fix ---------------------------


def test_grpc_port_in_use_is_one_line_before_models_load(
        busy_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["serve", "--listen", f"127.0.0.1:{busy_port}", "--no-metrics",
                   "--target", "none"])
    assert rc == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert f"cannot listen on 127.0.0.1:{busy_port} (server.listen): the port is in use" in err
    assert "--listen HOST:PORT" in err


def test_metrics_port_in_use_names_metrics(busy_port: int,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["serve", "--listen", "127.0.0.1:0", "--metrics-listen",
                   f"127.0.0.1:{busy_port}", "--target", "none"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "(metrics.listen)" in err and "--no-metrics" in err


def test_worker_metrics_port_in_use(busy_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["worker", "--stage", "analyze", "--metrics-listen",
                   f"127.0.0.1:{busy_port}"])
    assert rc == 1
    assert "the port is in use" in capsys.readouterr().err


def test_unknown_host_is_named() -> None:
    problem = cli._bind_problem("no-such-host.invalid:5000", "server.listen", "--listen")
    assert "unknown host 'no-such-host.invalid'" in problem


def test_config_file_missing_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["serve", "--config", "/nonexistent/c.yaml"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == ("vlmguard serve: error: CONFIG_INVALID: config file not found: "
                   "/nonexistent/c.yaml")


# -- check-config ---------------------------------------------------------------------------------


def test_check_config_refuses_a_bad_listen_address(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("server:\n  listen: foo\n")
    assert cli.main(["check-config", "--config", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert "server.listen: must be HOST:PORT" in err and '(got "foo")' in err


def test_check_config_reports_missing_files(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"analyzer:\n  head_path: {tmp_path}/nohead\n"
                   f"queue:\n  tls_ca_file: {tmp_path}/ca.pem\n")
    assert cli.main(["check-config", "--config", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert f"analyzer.head_path: {tmp_path}/nohead does not exist" in err
    assert f"queue.tls_ca_file: {tmp_path}/ca.pem does not exist" in err


# -- client hints ---------------------------------------------------------------------------------


def test_timeout_hint_names_the_flag(parser: argparse.ArgumentParser) -> None:
    args = parser.parse_args(["guard", "--text", "hi", "--run-target", "--timeout", "5"])
    late = CallError("DEADLINE_EXCEEDED", "", "Deadline Exceeded", local_deadline=True)
    hint = cli._call_hint(late, args)
    assert "--timeout 5 s" in hint and "raise --timeout" in hint and "--max-new-tokens" in hint
    server = CallError("DEADLINE_EXCEEDED", "DEADLINE_EXCEEDED", "expired")
    assert cli._call_hint(server, args) == ""
    down = CallError("UNAVAILABLE", "", "connection refused")
    assert "vlmguard serve" in cli._call_hint(down, args)


def test_check_output_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check-output", "--text", "-", "--output", "-"]) == 2
    assert "only one of --text and --output" in capsys.readouterr().err
    conv = tmp_path / "c.json"
    conv.write_text('[{"role": "user", "content": "hi"}]')
    assert cli.main(["check-output", "--text", "hi", "--messages", str(conv),
                     "--output", "x"]) == 2
    assert "not both" in capsys.readouterr().err
    conv.write_text('[{"role": "robot", "content": "hi"}]')
    assert cli.main(["check-output", "--messages", str(conv), "--output", "x"]) == 2
    assert "role must be system, user or assistant" in capsys.readouterr().err
    assert cli.main(["check-output", "--messages", str(tmp_path / "none.json"),
                     "--output", "x"]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert cli.main(["analyze", "--text", "hi", "--ca-file", str(tmp_path / "ca.pem")]) == 2
    assert "cannot read --ca-file" in capsys.readouterr().err


@pytest.mark.parametrize("good", ["127.0.0.1:50051", "0.0.0.0:0", "[::]:50051", "localhost:1"])
def test_listen_addresses_accepted(good: str) -> None:
    from vlmguard.config import check_listen

    assert check_listen(good) == good


@pytest.mark.parametrize("bad", ["foo", ":50051", "127.0.0.1:", "a:70000", "a:port", "a b:1"])
def test_listen_addresses_refused(bad: str) -> None:
    from vlmguard.config import check_listen

    with pytest.raises(ValueError, match="must be HOST:PORT"):
        check_listen(bad)


"""``vlmguard triton-repo`` (the Triton model repository writer), the launcher's environment
checks and the Triton backend's error mapping. No server, no weights."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from tritonclient.utils import InferenceServerException

from vlmguard.cli import main
from vlmguard.config import TargetConfig, TritonTargetConfig, load_config
from vlmguard.errors import (
    ConfigError,
    DeadlineExceededError,
    InvalidArgumentError,
    Reason,
    UnavailableError,
)
from vlmguard.serving.triton.launch import resolve_stub_env, server_environ
from vlmguard.serving.triton.repository import RepoSpec, render_config, write_repository
from vlmguard.target.base import build_target_backend
from vlmguard.target.triton import TritonBackend


def _model_dir(tmp_path: Path, config: dict[str, object]) -> Path:
    d = tmp_path / "weights"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(config))
    return d


def test_cli_writes_a_cpu_repository_and_refuses_to_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = _model_dir(tmp_path, {"architectures": ["LlamaForCausalLM"]})
    out = tmp_path / "repo"
    args = ["triton-repo", "--out", str(out), "--model", str(weights), "--kind", "cpu",
            "--instances", "2", "--max-batch", "8"]
    assert main(args) == 0
    cfg = (out / "target_vlm" / "config.pbtxt").read_text()
    assert 'name: "target_vlm"' in cfg and "max_batch_size: 8" in cfg
    assert "preferred_batch_size: [ 4, 8 ]" in cfg
    assert "count: 2" in cfg and "kind: KIND_CPU" in cfg
    assert f'string_value: "{weights.resolve()}"' in cfg
    assert 'key: "model_type" value: { string_value: "causal_lm" }' in cfg
    assert "${" not in cfg
    model_py = (out / "target_vlm" / "1" / "model.py").read_text()
    assert "class TritonPythonModel" in model_py
    # Non-empty output directory: refused without --force.
    assert main(args) == 1
    assert "not empty" in capsys.readouterr().err
    assert main([*args[:-2], "--max-batch", "1", "--kind", "gpu", "--force"]) == 0
    cfg = (out / "target_vlm" / "config.pbtxt").read_text()
    assert "dynamic_batching" not in cfg.replace("no dynamic batching", "")
    assert "kind: KIND_GPU" in cfg and "max_batch_size: 1" in cfg


def test_vlm_is_detected_and_server_path_is_kept(tmp_path: Path) -> None:
    weights = _model_dir(tmp_path, {"architectures": ["Qwen2VLForConditionalGeneration"],
                                    "vision_config": {}})
    out = tmp_path / "repo"
    assert main(["triton-repo", "--out", str(out), "--model", str(weights),
                 "--server-model-path", "/models/weights/qwen"]) == 0
    cfg = (out / "target_vlm" / "config.pbtxt").read_text()
    assert '"image_text_to_text"' in cfg and 'string_value: "/models/weights/qwen"' in cfg
    assert "kind: KIND_GPU" in cfg  # production default


def test_bad_model_dir_and_bad_spec_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no config\.json"):
        write_repository(tmp_path / "r", RepoSpec(model_path=str(tmp_path)))
    with pytest.raises(ConfigError):
        render_config(RepoSpec(model_path="/m", max_batch=4, preferred_batch_sizes=(8,)))
    with pytest.raises(ConfigError):
        render_config(RepoSpec(model_path='/m"; evil', kind="cpu"))
    with pytest.raises(ConfigError):
        render_config(RepoSpec(model_path="/m", name="../x"))


def test_stub_env_must_have_numpy_below_2() -> None:
    # The project's own venv has numpy 2: it must be refused as the stub environment.
    with pytest.raises(ConfigError, match="numpy<2") as ei:
        resolve_stub_env(Path(sys.prefix))
    assert ei.value.reason == Reason.MISSING_DEPENDENCY
    with pytest.raises(ConfigError, match="make triton-env"):
        resolve_stub_env(Path("/nonexistent-env"))


def test_server_environ_puts_the_stub_env_first(tmp_path: Path) -> None:
    from vlmguard.serving.triton.launch import StubEnv, TritonDist

    env = StubEnv(prefix=tmp_path / "env", python=tmp_path / "env/bin/python3",
                  py_version="3.11", libdir=Path("/opt/py/lib"), numpy_version="1.26.4")
    dist = TritonDist(server_bin=Path("/x/tritonserver"), python_backend=Path("/x/b"),
                      stubs=Path("/x/s"), libs=Path("/x/libs"))
    out = server_environ(env, dist, {"PATH": "/usr/bin", "PYTHONPATH": "/p",
                                     "LD_LIBRARY_PATH": "/l"})
    assert out["PATH"].split(":")[0] == str(tmp_path / "env" / "bin")
    assert out["LD_LIBRARY_PATH"].split(":") == ["/opt/py/lib", "/x/libs", "/l"]
    assert "PYTHONPATH" not in out and out["HF_HUB_OFFLINE"] == "1"


def test_config_selects_the_triton_backend() -> None:
    cfg = load_config(None, environ={}, overrides={"target": {
        "backend": "triton", "triton": {"url": "triton:8001", "retries": 1}}})
    backend = build_target_backend(cfg.target)
    assert isinstance(backend, TritonBackend)
    assert backend.tcfg.url == "triton:8001" and backend.name == "target_vlm"
    with pytest.raises(ConfigError):
        load_config(None, environ={}, overrides={"target": {"triton": {"tls": {
            "enabled": True, "cert_file": "/c.pem"}}}})


@pytest.mark.parametrize(("status", "message", "expected", "reason", "cause"), [
    ("StatusCode.NOT_FOUND", "Request for unknown model: 'x' is not found",
     UnavailableError, Reason.TARGET_NOT_READY, "model_not_found"),
    ("StatusCode.NOT_FOUND", "Request for unknown model: 'x' has no available versions",
     UnavailableError, Reason.TARGET_NOT_READY, "model_not_ready"),
    ("StatusCode.UNAVAILABLE", "failed to connect to all addresses",
     UnavailableError, Reason.TARGET_NOT_READY, "server_unavailable"),
    ("StatusCode.INVALID_ARGUMENT", "TOP_P must be in [0, 1]",
     InvalidArgumentError, Reason.INVALID_GENERATION_PARAMS, None),
    ("StatusCode.INVALID_ARGUMENT", "prompt is 900 tokens; the model fits at most 500",
     InvalidArgumentError, Reason.TEXT_TOO_LONG, None),
    ("StatusCode.INVALID_ARGUMENT", "unexpected inference input 'FOO'",
     InvalidArgumentError, Reason.MALFORMED_REQUEST, None),
    ("StatusCode.DEADLINE_EXCEEDED", "Deadline Exceeded",
     DeadlineExceededError, Reason.DEADLINE_EXCEEDED, None),
    ("StatusCode.INTERNAL", "the model failed on this request",
     UnavailableError, Reason.TARGET_FAILED, None),
])
def test_triton_errors_map_to_project_errors(
    status: str, message: str, expected: type, reason: str, cause: str | None
) -> None:
    b = TritonBackend(TargetConfig(backend="triton", triton=TritonTargetConfig()))
    err = b._map_error(InferenceServerException(msg=message, status=status))
    assert isinstance(err, expected)
    assert err.reason == reason
    assert err.metadata.get("cause") == cause

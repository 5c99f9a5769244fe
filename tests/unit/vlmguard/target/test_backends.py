"""Target backend selection and the SmolLM2 backend's weight-free parts (no model loaded)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vlmguard import hf_models
from vlmguard.assets import MODELS_PACKAGE
from vlmguard.config import TargetConfig
from vlmguard.domain import GenerationParams, ImageInput
from vlmguard.errors import ConfigError, FailedPreconditionError, Reason
from vlmguard.target import smollm2
from vlmguard.target.base import (
    NoneTargetBackend,
    TargetPrompt,
    build_target_backend,
    render_user_message,
)


def test_none_backend_answers_target_not_configured_per_prompt() -> None:
    backend = build_target_backend(TargetConfig(backend="none"))
    assert isinstance(backend, NoneTargetBackend)
    assert not backend.enabled
    backend.load()
    results = backend.generate_batch([TargetPrompt(text="a"), TargetPrompt(text="b")])
    assert len(results) == 2
    for r in results:
        assert isinstance(r, FailedPreconditionError)
        assert r.reason == Reason.TARGET_NOT_CONFIGURED
    assert backend.generate_batch([]) == []


def test_unknown_backend_name_is_config_error() -> None:
    with pytest.raises(ConfigError) as ei:
        build_target_backend(TargetConfig(backend="no-such-backend"))
    assert ei.value.reason == Reason.CONFIG_INVALID


def test_unimportable_module_is_config_error() -> None:
    with pytest.raises(ConfigError) as ei:
        build_target_backend(TargetConfig(backend="no_such_module_xyz:Backend"))
    assert ei.value.reason == Reason.MISSING_DEPENDENCY


@pytest.mark.parametrize(
    "path", ["vlmguard.target.base:NoSuchClass", "vlmguard.config:TargetConfig"]
)
def test_path_to_non_backend_is_config_error(path: str) -> None:
    with pytest.raises(ConfigError) as ei:
        build_target_backend(TargetConfig(backend=path))
    assert ei.value.reason == Reason.CONFIG_INVALID


def test_smollm2_builds_without_loading() -> None:
    backend = build_target_backend(TargetConfig(backend="smollm2"))
    assert isinstance(backend, smollm2.SmolLM2Backend)
    assert backend.name == "smollm2-135m-instruct"
    assert backend.enabled and not backend.loaded


def test_smollm2_module_import_does_not_import_torch() -> None:
    code = (
        "import sys, vlmguard.target.smollm2; "
        "sys.exit(1 if 'torch' in sys.modules or 'transformers' in sys.modules else 0)"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(smollm2.__file__).parents[2])}
    assert subprocess.run([sys.executable, "-c", code], env=env, check=False).returncode == 0


def test_missing_model_files_package_names_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = importlib.util.find_spec

    def fake_find_spec(name: str, *args: object, **kwargs: object) -> object:
        return None if name == MODELS_PACKAGE else real(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib.util, "find_spec", fake_find_spec)
    with pytest.raises(ConfigError) as ei:
        hf_models.find_packaged_gguf()
    assert ei.value.reason == Reason.MISSING_DEPENDENCY
    assert "pip install 'vlmguard[models]'" in ei.value.message


def test_bad_model_path_is_config_error(tmp_path: Path) -> None:
    missing = smollm2.SmolLM2Backend(
        TargetConfig(backend="smollm2", model_path=str(tmp_path / "x"))
    )
    with pytest.raises(ConfigError):
        missing.load()
    not_a_model = smollm2.SmolLM2Backend(TargetConfig(backend="smollm2", model_path=str(tmp_path)))
    with pytest.raises(ConfigError):
        not_a_model.load()
    # generate_batch reports the load failure per prompt instead of raising.
    results = missing.generate_batch([TargetPrompt(text="a"), TargetPrompt(text="b")])
    assert [type(r) for r in results] == [ConfigError, ConfigError]


def test_images_render_as_their_ocr_text() -> None:
    prompt = TargetPrompt(
        text="What do these say?",
        images=(ImageInput(b"1"), ImageInput(b"2")),
        image_texts=("  OPEN 24 HOURS ", ""),
    )
    assert render_user_message(prompt) == (
        "[Image 1 contains the text: OPEN 24 HOURS]\n"
        "[Image 2: no readable text]\n"
        "What do these say?"
    )
    assert render_user_message(TargetPrompt(text="hi")) == "hi"


@pytest.mark.parametrize(
    ("params", "ok"),
    [
        (GenerationParams(), True),
        (GenerationParams(temperature=0.7, top_p=1.0, max_new_tokens=600), True),
        (GenerationParams(temperature=-0.1), False),
        (GenerationParams(temperature=float("nan")), False),
        (GenerationParams(top_p=1.5), False),
        (GenerationParams(top_p=-0.1), False),
        (GenerationParams(max_new_tokens=-1), False),
    ],
)
def test_generation_params_validation(params: GenerationParams, ok: bool) -> None:
    problem = smollm2._check_params(params.temperature, params.top_p, params.max_new_tokens)
    assert (problem == "") is ok


def test_cache_dir_is_keyed_by_file_and_honours_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(hf_models.CACHE_DIR_ENV, str(tmp_path / "c"))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"a")
    first = hf_models.cache_dir_for(gguf)
    assert first.parent == tmp_path / "c" / "models"
    assert first.name.startswith("smollm2-135m-instruct-")
    assert hf_models.cache_dir_for(gguf) == first
    gguf.write_bytes(b"ab")
    assert hf_models.cache_dir_for(gguf) != first


def test_partial_cache_is_not_valid(tmp_path: Path) -> None:
    cache = tmp_path / "models" / "smollm2-135m-instruct-x"
    cache.mkdir(parents=True)
    (cache / "config.json").write_text("{}")
    (cache / "model.safetensors").write_bytes(b"")
    assert not hf_models.cache_valid(cache)  # no completion marker
    (cache / hf_models.CACHE_MARKER).write_text("{}")
    assert hf_models.cache_valid(cache)


def test_torch_threads_honours_omp_num_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert hf_models.torch_threads() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "junk")
    assert hf_models.torch_threads() >= 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert hf_models.torch_threads() >= 1


def test_backend_names_and_import_paths_resolve_in_one_place() -> None:
    from vlmguard.errors import ConfigError
    from vlmguard.plugins import resolve_backend_class

    reg = {"none": "vlmguard.target.base:NoneTargetBackend"}
    cls, path = resolve_backend_class("target.backend", "none", reg)
    assert cls.__name__ == "NoneTargetBackend" and path == reg["none"]
    with pytest.raises(ConfigError, match="unknown backend 'nope'"):
        resolve_backend_class("target.backend", "nope", reg)
    with pytest.raises(ConfigError, match="needs an optional dependency") as e:
        resolve_backend_class("target.backend", "no_such_module_xyz:Cls", reg)
    assert e.value.reason == "MISSING_DEPENDENCY"
    with pytest.raises(ConfigError, match="not available here") as e:
        resolve_backend_class("x.backend", "gone", {"gone": "no_such_module_xyz:C"},
                              unavailable={"gone": "'gone' is not available here"})
    assert e.value.reason == "MISSING_DEPENDENCY"
    with pytest.raises(ConfigError, match="is not a class"):
        resolve_backend_class("target.backend", "vlmguard.target.base:TARGET_BACKENDS", reg)

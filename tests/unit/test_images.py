"""docker/*.Dockerfile and scripts/images.py, without building: what every image must hold.

Building and start-checking the images is slow (minutes each) and needs root and podman:
`make images` / `make images-check` (docs/images.md). These tests keep the Dockerfiles to the
rules those checks rely on, and the script's translation of this machine's pip settings into
build arguments and read-only mounts.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ("gateway", "worker", "training", "ray", "triton")


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("images_script", ROOT / "scripts" / "images.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _stages(name: str) -> tuple[str, list[str]]:
    """(text before the first FROM, [text of each stage])."""
    text = (ROOT / "docker" / f"{name}.Dockerfile").read_text()
    parts = re.split(r"(?m)^(?=FROM )", text)
    return parts[0], parts[1:]


def _instructions(stage: str) -> str:
    """The stage without comments, continuation lines joined."""
    lines = [line for line in stage.splitlines() if not line.lstrip().startswith("#")]
    return re.sub(r"\\\n\s*", " ", "\n".join(lines))


@pytest.mark.parametrize("name", IMAGES)
def test_every_image_starts_from_the_base_image_argument(name: str) -> None:
    head, stages = _stages(name)
    assert "ARG BASE_IMAGE=python:3.11-slim" in head
    assert [s.split()[1] for s in stages] == ["${BASE_IMAGE}", "${BASE_IMAGE}"]
    assert [s.split()[3] for s in stages] == ["build", "runtime"]


@pytest.mark.parametrize("name", IMAGES)
def test_runtime_stage_is_non_root_with_healthcheck_and_no_build_settings(name: str) -> None:
    _, (build, runtime) = _stages(name)
    body = _instructions(runtime)
    assert re.search(r"(?m)^USER 10001:10001$", body)
    assert re.search(r"(?m)^HEALTHCHECK ", body)
    assert "COPY --from=build /opt/venv /opt/venv" in body
    # Index URLs and the CA bundle path are build-stage arguments only.
    for arg in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_CERT"):
        assert f"ARG {arg}=" in build
        assert arg not in body
    assert "/hostca" not in body


@pytest.mark.parametrize("name", IMAGES)
def test_installs_take_no_manual_no_deps_step(name: str) -> None:
    _, (build, _runtime) = _stages(name)
    body = _instructions(build)
    assert "--no-deps" not in body
    installs = [line for line in body.splitlines() if "pip install" in line]
    assert installs
    if name != "triton":
        # The project install is constrained by the lock (triton pins its own numpy<2 stub env).
        assert any("-c requirements.lock" in line and "pip install" in line for line in installs)


def test_gateway_installs_the_package_with_the_front_door_only_and_checks_for_torch() -> None:
    _, (build, _runtime) = _stages("gateway")
    body = _instructions(build)
    installs = [i.strip() for i in re.findall(r"pip install ([^&\n]*)", body)]
    assert installs == ['-c requirements.lock ".[http]"']
    assert "assert 'torch' not in sys.modules" in body


@pytest.mark.parametrize("name", ["worker", "training", "ray"])
def test_model_images_install_the_asset_wheel_and_pin_torch(name: str) -> None:
    _, (build, _runtime) = _stages(name)
    body = _instructions(build)
    assert "asset_wheels.py build --out /wheels vlmguard-models" in body
    assert "/wheels/vlmguard_models-*.whl" in body
    assert 'pip install --index-url "$TORCH_INDEX_URL" torch==2.13.0' in body


def test_pip_settings_become_build_args_and_read_only_mounts(tmp_path: Path) -> None:
    images = _load()
    index = tmp_path / "mirror" / "simple"
    (tmp_path / "mirror" / "files").mkdir(parents=True)
    index.mkdir()
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "bundle.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    args, volumes = images.pip_build_options({
        "extra-index-url": f"file://{index} https://example.org/simple",
        "find-links": str(wheels),
        "cert": str(certs / "bundle.pem"),
    })
    assert args == [
        "--build-arg", f"PIP_EXTRA_INDEX_URL=file://{index} https://example.org/simple",
        "--build-arg", f"PIP_FIND_LINKS={wheels}",
        "--build-arg", "PIP_CERT=/hostca/bundle.pem",
    ]
    # A simple index links to files beside it: its parent is mounted, at the same path; a
    # remote URL is not mounted; the CA bundle's folder goes to /hostca, not over /etc/ssl.
    assert volumes == sorted([f"{tmp_path / 'mirror'}:{tmp_path / 'mirror'}:ro",
                              f"{wheels}:{wheels}:ro", f"{certs}:/hostca:ro"])


def test_no_pip_settings_no_build_args() -> None:
    images = _load()
    assert images.pip_build_options({}) == ([], [])
    # A configured path that does not exist here is passed on but not mounted.
    args, volumes = images.pip_build_options({"find-links": "/nonexistent/wheels",
                                              "cert": "/nonexistent/ca.pem"})
    assert args == ["--build-arg", "PIP_FIND_LINKS=/nonexistent/wheels"]
    assert volumes == []


def test_chrooted_command_runs_as_the_image_user_with_its_environment(tmp_path: Path) -> None:
    images = _load()
    rootfs = tmp_path / "merged"
    ctr = object.__new__(images.Chrooted)
    ctr.rootfs = str(rootfs)
    ctr.binds = {"/host/etc": "/etc/vlmguard"}
    ctr.config = {"User": "10001:10001", "Env": ["PATH=/opt/venv/bin:/usr/bin", "HOME=/tmp"],
                  "WorkingDir": "/app", "Entrypoint": ["vlmguard"]}
    ctr.health = {"Test": ["CMD", "python", "-c", "pass"]}
    cmd = ctr.command(["vlmguard", "serve"], env={"EXTRA": "1"})
    assert cmd[:4] == ["unshare", "--mount", "--propagation", "private"]
    script = cmd[-1]
    assert f"mount -t proc proc {rootfs}/proc" in script
    assert f"mount --bind -o ro /host/etc {rootfs}/etc/vlmguard" in script
    assert f"chroot --userspec=10001:10001 --groups=10001 {rootfs} /usr/bin/env -i" in script
    assert "PATH=/opt/venv/bin:/usr/bin HOME=/tmp EXTRA=1" in script
    assert script.endswith("/app vlmguard serve")
    # The mount point of a bind is made in the container's writable layer.
    assert (rootfs / "etc" / "vlmguard").is_dir()
    assert ctr.healthcheck == ["python", "-c", "pass"]
    assert ctr.entrypoint == ["vlmguard"]

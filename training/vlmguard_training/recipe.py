"""The one style of every offline recipe: frozen pydantic models read from YAML, with flags.

Each job's recipe (``vlmguard train analyzer``, ``train rewriter``, ``synth``, ``pipeline``) is a
:class:`Recipe`: every field has a default and a description, unknown keys are refused, and a
bad value is reported as ``recipe FILE: a.b: message`` (a :class:`~vlmguard.errors.ConfigError`).
:func:`add_flags` turns a recipe's top-level scalar fields into command-line flags (their help is
the field's description), and :func:`from_args` builds the recipe from ``--config FILE`` with
the flags given on the command line laid over it.
"""

from __future__ import annotations

import argparse
import types
import typing
from pathlib import Path
from typing import Any, Self

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from vlmguard.errors import ConfigError

_SCALARS = (bool, int, float, str)


class Recipe(BaseModel):
    """Base of the offline recipes: frozen, unknown keys refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @classmethod
    def from_mapping(cls, raw: Any, source: str = "recipe") -> Self:
        """Validate a mapping (a parsed YAML document).

        Raises:
            ConfigError: not a mapping, or an invalid value (the message names the key).
        """
        if not isinstance(raw, dict):
            raise ConfigError(f"{source} is not a mapping")
        try:
            return cls.model_validate(raw)
        except ValidationError as e:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: "
                + ("unknown key" if err["type"] == "extra_forbidden" else err["msg"])
                for err in e.errors())
            raise ConfigError(f"{source}: {problems}") from e

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> Self:
        """Read a recipe file; ``overrides`` (not None) replace its top-level keys.

        Raises:
            ConfigError: unreadable file, invalid YAML or an invalid recipe.
        """
        return cls.from_mapping({**read_yaml(path), **_given(overrides)}, f"recipe {path}")


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from ``path`` (an empty file is an empty mapping).

    Raises:
        ConfigError: unreadable file, invalid YAML or not a mapping.
    """
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read recipe {path}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"recipe {path} is not valid YAML: {e}") from e
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"recipe {path} is not a mapping")
    return raw


def _given(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _scalar_type(annotation: Any) -> type | None:
    """The scalar type of a field annotation (``int``, ``str | None`` -> str), else None."""
    if annotation in _SCALARS:
        return typing.cast(type, annotation)
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1 and args[0] in _SCALARS:
            return typing.cast(type, args[0])
    return None


def flag_fields(cls: type[Recipe]) -> dict[str, type]:
    """The top-level scalar fields of ``cls`` (those that get a flag), name -> type."""
    out: dict[str, type] = {}
    for name, info in cls.model_fields.items():
        kind = _scalar_type(info.annotation)
        if kind is not None:
            out[name] = kind
    return out


def add_flags(parser: argparse.ArgumentParser, cls: type[Recipe], *,
              config_help: str = "recipe YAML file; flags given here override its keys",
              exclude: tuple[str, ...] = ()) -> argparse.ArgumentParser:
    """Add ``--config FILE`` and one flag per top-level scalar field of ``cls``.

    Flags default to "not given" (:data:`argparse.SUPPRESS`), so :func:`from_args` can tell a
    flag from the recipe's value; the help shows the recipe default.
    """
    parser.add_argument("--config", metavar="FILE", default=None, help=config_help)
    for name, kind in flag_fields(cls).items():
        if name in exclude:
            continue
        info = cls.model_fields[name]
        flag = "--" + name.replace("_", "-")
        text = f"{info.description or name} (default: {info.default!r})"
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=text)
        else:
            parser.add_argument(flag, type=kind, default=argparse.SUPPRESS,
                                metavar=name.upper(), help=text)
    return parser


def from_args(cls: type[Recipe], args: argparse.Namespace) -> Recipe:
    """The recipe of ``--config`` (defaults when absent) with the given flags laid over it.

    Raises:
        ConfigError: an unreadable or invalid recipe, or a flag value out of range.
    """
    config = getattr(args, "config", None)
    raw = read_yaml(config) if config else {}
    flags = {name: getattr(args, name) for name in flag_fields(cls) if hasattr(args, name)}
    return cls.from_mapping({**raw, **flags}, f"recipe {config}" if config else "flags")


def command_line(recipe: Recipe, prefix: list[str]) -> str:
    """The command that reproduces ``recipe``: ``prefix`` plus a flag per non-default field."""
    parts = list(prefix)
    for name in flag_fields(type(recipe)):
        value = getattr(recipe, name)
        if value == type(recipe).model_fields[name].default:
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            parts.append(flag if value else "--no-" + flag[2:])
        else:
            parts.extend([flag, str(value)])
    return " ".join(parts)

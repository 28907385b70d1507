"""The model registry: every model family registers here with its config dataclass.

Pages, the CLI and the tests all enumerate :data:`MODELS`, so a new family needs no change
anywhere else: write ``genlab/models/<family>.py``, decorate the class with :func:`register`, and
import the module at the bottom of this file.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import typing
from typing import Any

from genlab.config import apply_overrides, config_from_dict
from genlab.errors import ConfigError
from genlab.models.base import GenerativeModel, LatentModel

MODELS: dict[str, tuple[type[GenerativeModel], type]] = {}


def register(name: str, config_cls: type):
    """Class decorator that adds a model family to :data:`MODELS` under ``name``."""

    def deco(cls: type[GenerativeModel]) -> type[GenerativeModel]:
        if name in MODELS:
            raise RuntimeError(f"model {name!r} is registered twice")
        cls.name = name
        cls.Config = config_cls
        MODELS[name] = (cls, config_cls)
        return cls

    return deco


def model_names() -> list[str]:
    return sorted(MODELS)


def model_entry(name: str) -> tuple[type[GenerativeModel], type]:
    """The (model class, config class) pair for ``name``.

    Raises:
        ConfigError: the name is not registered; the message lists the known models.
    """
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(
            f"unknown model {name!r}; known models: {', '.join(model_names())}"
        ) from None


def family(name: str) -> type[GenerativeModel]:
    """The class of model ``name``, or the contract itself for a name this install does not have
    (a run imported from another genlab): what to say of a run's loss, whatever its family."""
    entry = MODELS.get(name)
    return entry[0] if entry else GenerativeModel


def model_config(name: str, values: dict[str, Any] | None = None, **overrides: Any):
    """Build (and validate) the config dataclass of model ``name``.

    Args:
        name: a registered model name.
        values: a dict of field values, as stored in a run's config JSON.
        **overrides: further field values; strings are parsed to the field's type (``--set``).
    """
    _, config_cls = model_entry(name)
    cfg = config_from_dict(config_cls, values or {}, what=f"model {name!r}")
    return apply_overrides(cfg, overrides, what=f"model {name!r}") if overrides else cfg


def build(
    name: str, *, shape: tuple[int, int, int], num_classes: int, config=None, **overrides: Any
) -> GenerativeModel:
    """Instantiate model ``name`` for data of ``shape`` (C, H, W) with ``num_classes`` labels.

    Raises:
        ConfigError: an unknown name or config, or settings no network can be built from (sizes
            that overflow or do not fit in memory).
    """
    cls, config_cls = model_entry(name)
    if config is None:
        config = model_config(name, **overrides)
    elif overrides:
        config = apply_overrides(config, overrides, what=f"model {name!r}")
    if not isinstance(config, config_cls):
        raise ConfigError(
            f"model {name!r} needs a {config_cls.__name__}, got {type(config).__name__}"
        )
    try:
        return cls(config, shape=tuple(shape), num_classes=int(num_classes))
    except (RuntimeError, TypeError, OverflowError, MemoryError) as err:  # e.g. hidden=10**17
        text = " ".join(str(err).split()[:12])  # torch's messages run to C++ stack frames
        raise ConfigError(
            f"model {name!r} cannot be built with these settings ({text}); try smaller sizes"
        ) from None


def config_fields(name: str) -> list[dict[str, Any]]:
    """The user-settable fields of a model's config, in order, for building forms.

    Each is ``{"name", "type", "default", "choices", "help"}``: ``type`` is the Python type,
    ``choices`` comes from the field's metadata, ``help`` from the config's "Args:" docstring.
    """
    _, config_cls = model_entry(name)
    hints = typing.get_type_hints(config_cls)
    helps = _docstring_args(config_cls.__doc__ or "")
    return [
        {
            "name": f.name,
            "type": hints[f.name],
            "default": f.default,
            "choices": f.metadata.get("choices"),
            "help": helps.get(f.name),
        }
        for f in dataclasses.fields(config_cls)
        if f.init
    ]


def _docstring_args(doc: str) -> dict[str, str]:
    """``{name: text}`` from a Google-style "Args:" section (continuation lines joined)."""
    out: dict[str, str] = {}
    current = None
    in_args = False
    for line in doc.splitlines():
        stripped = line.strip()
        if stripped == "Args:":
            in_args = True
        elif (
            in_args
            and stripped
            and ":" in stripped
            and not stripped.startswith(" ")
            and stripped.split(":", 1)[0].isidentifier()
        ):
            current, text = stripped.split(":", 1)
            out[current] = text.strip()
        elif in_args and stripped and current:
            out[current] += " " + stripped
        elif in_args and not stripped and current:
            current = None
    return out


def _import_families() -> None:
    """Import every module in this package: each family registers itself on import."""
    for info in pkgutil.iter_modules(__path__):
        if info.name != "base":
            importlib.import_module(f"{__name__}.{info.name}")


_import_families()

__all__ = [
    "MODELS",
    "GenerativeModel",
    "LatentModel",
    "build",
    "config_fields",
    "model_config",
    "model_entry",
    "model_names",
    "register",
]

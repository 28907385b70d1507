"""Package attributes imported on first use (PEP 562), so that importing a package stays cheap:
``import genlab.cli`` must not load torch, Captum or SciPy before it has parsed its arguments."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` for ``package``: attribute ``name`` is imported from the
    submodule ``exports[name]`` when first asked for, then kept as an ordinary attribute."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__

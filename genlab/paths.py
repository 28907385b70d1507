"""Where genlab keeps its files: ``$GENLAB_HOME`` (default ``./.genlab``)."""

from __future__ import annotations

import os
from pathlib import Path


def genlab_home() -> Path:
    """The root folder for the store, artifacts and caches, created on first use."""
    home = Path(os.environ.get("GENLAB_HOME") or ".genlab").expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    return home


def cache_dir(*parts: str) -> Path:
    """A sub-folder of ``$GENLAB_HOME/cache``, created on first use."""
    path = genlab_home().joinpath("cache", *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path

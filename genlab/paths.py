"""Where genlab keeps its files: ``$GENLAB_HOME`` (default ``./.genlab``)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Write a file in one step: yields a temporary path beside ``path`` to write; once the block
    ends without error, that file replaces ``path`` (``os.replace``), so a reader sees the old
    file or the new one, never half of one. On an error the temporary file is removed and
    ``path`` is left as it was. The temporary name carries the process and thread, so two
    writers of one path never write into each other's file."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.partial")
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)

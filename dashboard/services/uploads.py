"""Uploads from the browser: datasets for the Train page, checkpoints for the Explore page.

The checks live in genlab (:mod:`genlab.uploads`, :mod:`genlab.checkpoint_import`): size limits,
types and shapes, no pickle. Here they meet the session: an imported run belongs to this
session's owner, and in classroom mode a checkpoint may only name a built-in dataset or one
uploaded to this server.
"""

from __future__ import annotations

from pathlib import Path

from genlab import checkpoint_import
from genlab import uploads as gup
from genlab.checkpoint import WEIGHTS_FILE
from genlab.data import DATASETS
from genlab.paths import genlab_home

from . import access
from .core import get_store

UPLOAD_TYPES = gup.UPLOAD_TYPES


def upload_limit_mb() -> float:
    """The upload size limit in MB (``GENLAB_MAX_UPLOAD_MB``)."""
    return gup.max_upload_bytes() / 2**20


def dataset_options() -> list[str]:
    """The built-in datasets, then the datasets uploaded to this genlab home (newest first).

    Uploads are files in the home, not rows in the store, so a damaged store still leaves the
    Train page its datasets (the page reports the store's error where it lists runs)."""
    return [*DATASETS, *(str(p) for p in gup.uploaded_datasets(genlab_home()))]


def dataset_label(name: str) -> str:
    """``digits``, or ``faces.npz (uploaded)`` for an upload's path."""
    if name in DATASETS:
        return name
    stem, _, _digest = Path(name).stem.rpartition("-")
    return f"{stem or Path(name).stem} (uploaded)"


def import_dataset(name: str, data: bytes) -> str:
    """Check an uploaded ``.npz`` or ``.zip`` and keep it; returns its dataset name (a path).

    Raises:
        DataError: too large, an unsupported type, or wrongly shaped (the message says which).
    """
    return str(gup.import_dataset(get_store().home, name, data))


def import_checkpoint(name: str, data: bytes, config_json: bytes | None = None) -> str:
    """Record an uploaded ``.safetensors`` checkpoint as a new finished run of this session's
    owner; returns its id.

    Raises:
        DataError, ConfigError: the file, its config or its dataset is refused; no run is made.
    """
    return checkpoint_import.import_checkpoint(
        get_store(), data, name, config_json=config_json, owner=access.owner_name(),
        allow_paths=not access.classroom_mode())


def weights_file(run_id: str) -> bytes:
    """The finished run's ``weights.safetensors`` (with its config inside), for download."""
    store = get_store()
    return (store.artifacts_dir(store.get(run_id).id) / WEIGHTS_FILE).read_bytes()

"""Importing a run from a shared weights file (``weights.safetensors`` of another genlab run).

A checkpoint is untrusted bytes, so it is read the safe way only: safetensors holds plain tensors
and a JSON header, nothing that runs code, and ``torch.load`` (pickle) is never called. Before a
run is recorded, the file obeys the upload size limit, its header is checked (a JSON object,
known dtypes, int shapes), its run config passes the same validation as the command line
(:meth:`genlab.config.RunConfig.from_json`), the config's dataset is one this server may read,
and every tensor fits the model that config builds (key, shape, dtype, finite values).

The config comes from the file's metadata (:data:`genlab.checkpoint.CONFIG_KEY`, written by every
run since it was added) or from the run's ``config.json`` uploaded beside it.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors

from genlab.checkpoint import CONFIG_KEY, load_state
from genlab.config import RunConfig
from genlab.data import DATASETS
from genlab.datafiles import one_line
from genlab.errors import DataError
from genlab.runs import RunStore
from genlab.uploads import check_size, shown

MAX_HEADER = 8 * 2**20  # bytes of JSON header; a genlab model's is a few kB
DTYPES = {"F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL"}


def read_checkpoint(
    data: bytes, name: str, *, config_json: bytes | str | None = None
) -> tuple[RunConfig, dict[str, torch.Tensor]]:
    """The run config and the tensors of a safetensors checkpoint, checked.

    Args:
        data: The file's bytes.
        name: Its name, for messages.
        config_json: The run's ``config.json``, for a file without the config in its metadata.

    Raises:
        DataError: too large, not a safetensors file, a bad header, or no config.
        ConfigError: the config is not a valid run config.
    """
    name = shown(name)
    check_size(data, name)
    header = _header(data, name)
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict):
        raise DataError(f"{name}: its metadata is not a JSON object")
    text = config_json if config_json is not None else metadata.get(CONFIG_KEY)
    if text is None:
        raise DataError(f"{name} carries no run config; upload the run's config.json with it")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise DataError("the run config is not UTF-8 text; expected a config.json") from None
    if not isinstance(text, str):
        raise DataError(f"{name}: its {CONFIG_KEY} metadata is not text")
    cfg = RunConfig.from_json(text)
    try:
        state = load_safetensors(data)
    except (SafetensorError, ValueError, TypeError, OverflowError, RuntimeError) as err:
        raise DataError(f"{name} is not a valid safetensors file ({one_line(err)})") from None
    return cfg, state


def _header(data: bytes, name: str) -> dict:
    """The JSON header, checked: each tensor has a known dtype and a shape of small ints."""
    if len(data) < 8:
        raise DataError(f"{name} is too short for a safetensors file ({len(data)} bytes)")
    size = int.from_bytes(data[:8], "little")
    if size > min(MAX_HEADER, len(data) - 8):
        raise DataError(f"{name} is not a safetensors file: its header claims {size:,} bytes")
    try:
        header = json.loads(data[8:8 + size])
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise DataError(f"{name} is not a safetensors file: its header is not JSON") from None
    if not isinstance(header, dict):
        raise DataError(f"{name} is not a safetensors file: its header is not a JSON object")
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        if not isinstance(entry, dict) or entry.get("dtype") not in DTYPES:
            raise DataError(f"{name}: tensor {key!r} has no known dtype; expected one of "
                            f"{', '.join(sorted(DTYPES))}")
        shape = entry.get("shape")
        if not isinstance(shape, list) or not all(
                isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**40 for d in shape):
            raise DataError(f"{name}: tensor {key!r} has shape {shape!r}; expected a list of "
                            "sizes")
        if math.prod(shape) > len(data):
            raise DataError(f"{name}: tensor {key!r} of shape {shape} is larger than the file")
    return header


def _check_dataset(cfg: RunConfig, home: Path, *, allow_paths: bool) -> None:
    """A checkpoint names its dataset; only built-ins and this home's uploads may be read."""
    name = cfg.data.name
    if name in DATASETS:
        return
    path = Path(name).expanduser()
    uploads = (home / "uploads").resolve()
    if allow_paths or (path.is_absolute() and path.resolve().is_relative_to(uploads)):
        return
    raise DataError(f"the checkpoint was trained on {name!r}, which is neither a built-in dataset "
                    f"({', '.join(DATASETS)}) nor a dataset uploaded here; upload it first")


def import_checkpoint(
    store: RunStore,
    data: bytes,
    name: str,
    *,
    config_json: bytes | str | None = None,
    owner: str | None = None,
    allow_paths: bool = False,
) -> str:
    """Check a checkpoint and record it as a new finished run (config, weights, samples).

    Args:
        store: Where the run goes.
        data: The ``.safetensors`` file's bytes.
        name: Its name, for messages.
        config_json: The run's ``config.json``, if the file's metadata has no config.
        owner: Who imported it; they own the new run.
        allow_paths: Accept a config whose dataset is any local path (a single-user laptop);
            otherwise only built-in datasets and uploads under ``store.home``.

    Returns:
        The new run's id.

    Raises:
        DataError, ConfigError: the file, its config or its dataset is refused; no run is made.
    """
    from genlab.jobs import write_artifacts  # both import torch-heavy modules
    from genlab.models import build
    from genlab.train import check_run

    name = shown(name)
    cfg, state = read_checkpoint(data, name, config_json=config_json)
    _check_dataset(cfg, store.home, allow_paths=allow_paths)
    splits = check_run(cfg)

    def model_of(device: str):
        with torch.device(device):
            return build(cfg.model, shape=splits.shape, num_classes=splits.num_classes,
                         config=cfg.model_config)

    # First a skeleton without memory: a config that asks for a huge network cannot fit a file
    # under the size limit, and is refused before any real tensor is allocated.
    own = model_of("meta").state_dict()
    for key, tensor in state.items():
        if key in own and tuple(own[key].shape) != tuple(tensor.shape):
            raise DataError(f"{name} does not fit its config's model: {key} has shape "
                            f"{tuple(tensor.shape)}, the model expects {tuple(own[key].shape)}")
    if set(own) != set(state):
        load_state(model_of("meta"), state, name)  # raises, naming the missing and extra keys
    for key, tensor in state.items():
        if key in own and tensor.dtype != own[key].dtype:
            raise DataError(f"{name} does not fit this model: {key} is {tensor.dtype}, the model "
                            f"expects {own[key].dtype}")
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise DataError(f"{name}: tensor {key} holds NaN or infinity")
    model = load_state(model_of("cpu"), state, name)
    run_id = store.create_run(model=cfg.model, dataset=cfg.data.name, config=cfg.to_dict(),
                              owner=owner, config_hash=cfg.config_hash())
    try:
        write_artifacts(store, run_id, cfg, model.eval())
        store.finish(run_id, summary={"imported_from": os.path.basename(name),
                                      "epochs": cfg.train.epochs, "params": model.num_params()})
    except BaseException:
        store.delete(run_id)
        raise
    return run_id

"""Saving and loading weights as plain tensors (safetensors): no pickle, so a shared checkpoint
cannot run code when it is opened.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from genlab.errors import DataError

WEIGHTS_FILE = "weights.safetensors"


CONFIG_KEY = "genlab_config"  # safetensors metadata: the run config JSON, so a file imports alone


def save_weights(model: nn.Module, path: str | Path, *, config_json: str | None = None) -> Path:
    """Write ``model``'s state dict atomically (temp file, then rename).

    Args:
        config_json: The run config (``RunConfig.to_json()``), kept in the file's metadata so
            the file alone can be imported as a run (:mod:`genlab.checkpoint_import`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(state, str(tmp), metadata=None if config_json is None else {CONFIG_KEY: config_json})
    os.replace(tmp, path)
    return path


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load weights saved by :func:`save_weights` into ``model`` (strict: every key must match).

    Raises:
        DataError: the file is missing, is not a safetensors file, or does not fit the model.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no weights file at {path}")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise DataError(f"{path} is not a valid safetensors weights file ({err})") from None
    return load_state(model, state, str(path))


def load_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> nn.Module:
    """Load a plain-tensor state dict into ``model`` after checking every key and shape.

    Raises:
        DataError: a key is missing or unexpected, or a tensor's shape differs.
    """
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        raise DataError(
            f"{source} does not fit this model: missing {missing[:3]}, unexpected {extra[:3]}"
        )
    for key, tensor in state.items():
        if tensor.shape != own[key].shape:
            raise DataError(
                f"{source} does not fit this model: {key} has shape "
                f"{tuple(tensor.shape)}, the model expects {tuple(own[key].shape)}"
            )
    device = next(iter(own.values())).device if own else torch.device("cpu")
    model.load_state_dict({k: v.to(device) for k, v in state.items()})
    return model


def load_run_model(store, run_id: str, *, device: str = "cpu"):
    """Rebuild a finished run's model from its stored config and weights.

    Returns:
        ``(model, config, data)``: the model in eval mode on ``device``, its
        :class:`~genlab.config.RunConfig`, and its (memoised) :class:`~genlab.data.DataSplits`.

    Raises:
        StoreError: the run is unknown or has not finished, so it has no weights.
    """
    from genlab.config import RunConfig
    from genlab.errors import StoreError
    from genlab.train import prepare_run

    info = store.get(run_id)
    if info.status != "finished":
        raise StoreError(f"run {info.id} is {info.status}, not finished, so it has no weights yet")
    cfg = RunConfig.from_dict(info.config)
    model, data = prepare_run(cfg, seed=False)
    load_weights(model, store.artifacts_dir(info.id) / WEIGHTS_FILE)
    return model.to(device).eval(), cfg, data

"""Saving and loading weights as plain tensors (safetensors): no pickle, so a shared checkpoint
cannot run code when it is opened.

A weight that is mostly zeros (a pruned layer) can be stored *packed*: a bitmask of its nonzero
entries (1 bit each) and the nonzero values, under ``<key>@mask`` and ``<key>@values``, so a
layer pruned to 50% takes about 53% of its dense bytes on disk. :func:`load_weights` unpacks such
pairs transparently. Runs made from other runs (compressed, fused; :mod:`genlab.lineage`) are
rebuilt by :func:`load_run_model` through their method's loader.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from genlab.errors import DataError
from genlab.paths import replacing

WEIGHTS_FILE = "weights.safetensors"
MASK, VALUES = "@mask", "@values"  # suffixes of a packed (sparse) weight's two tensors


CONFIG_KEY = "genlab_config"  # safetensors metadata: the run config JSON, so a file imports alone


def pack_sparse(tensor: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{"@mask": uint8 bits of tensor != 0 (numpy's packbits order), "@values": the nonzeros}``;
    the shape is restored from the model's own tensor when loading."""
    flat = tensor.detach().to("cpu").reshape(-1)
    keep = flat != 0
    bits = torch.from_numpy(np.packbits(keep.numpy().astype(np.uint8)))
    return {MASK: bits, VALUES: flat[keep].contiguous().clone()}


def _unpack(bits: torch.Tensor, values: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    n = int(np.prod(shape)) if len(shape) else 1
    keep = torch.from_numpy(np.unpackbits(bits.numpy(), count=n).astype(bool))
    if int(keep.sum()) != len(values):
        raise ValueError(f"{int(keep.sum())} mask bits set but {len(values)} values")
    out = torch.zeros(n, dtype=values.dtype)
    out[keep] = values
    return out.reshape(shape)


def save_weights(
    model: nn.Module,
    path: str | Path,
    *,
    packed: Iterable[str] = (),
    dtype: torch.dtype | None = None,
    metadata: dict[str, str] | None = None,
    config_json: str | None = None,
) -> Path:
    """Write ``model``'s state dict atomically (temp file, then rename).

    Args:
        packed: State-dict keys to store packed (bitmask + nonzero values), for pruned weights.
        dtype: Store every floating-point tensor in this dtype (``torch.float16`` for fp16 runs).
        metadata: Text stored in the file's header (safetensors metadata).
        config_json: The run config (``RunConfig.to_json()``), kept in the file's metadata so
            the file alone can be imported as a run (:mod:`genlab.checkpoint_import`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {}
    packed = set(packed)
    for k, v in model.state_dict().items():
        v = v.detach().to("cpu")
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        if k in packed:
            state.update({k + suffix: t for suffix, t in pack_sparse(v).items()})
        else:
            state[k] = v.contiguous().clone()
    if config_json is not None:
        metadata = {**(metadata or {}), CONFIG_KEY: config_json}
    with replacing(path) as partial:
        save_file(state, str(partial), metadata=metadata)
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
    for key in [k[: -len(MASK)] for k in state if k.endswith(MASK)]:
        if key not in own or key + VALUES not in state:
            continue  # reported as unexpected below
        try:
            state[key] = _unpack(state.pop(key + MASK), state.pop(key + VALUES), own[key].shape)
        except ValueError as err:
            raise DataError(f"{source} has a corrupt packed weight {key}: {err}") from None
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


def read_metadata(path: str | Path) -> dict[str, str]:
    """The text header :func:`save_weights` stored with ``metadata`` (empty if none)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return dict(fh.metadata() or {})


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
    from genlab.lineage import lineage_of, load_derived
    from genlab.train import prepare_run

    info = store.get(run_id)
    if info.status != "finished":
        raise StoreError(f"run {info.id} is {info.status}, not finished, so it has no weights yet")
    cfg = RunConfig.from_dict(info.config)
    model, data = prepare_run(cfg, seed=False)
    path = store.artifacts_dir(info.id) / WEIGHTS_FILE
    derived = lineage_of(store, info.id)
    if derived is None:
        load_weights(model, path)
    else:  # compressed or fused: its method rebuilds the model, then loads the weights
        model = load_derived(derived, model, cfg, path)
    return model.to(device).eval(), cfg, data

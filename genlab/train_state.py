"""Resume checkpoints: everything a Trainer needs to continue a run as if it had never stopped.

:class:`CheckpointCallback` writes one at each epoch end; ``Trainer.fit(data, resume=state)``
continues from it. A checkpoint holds the weights, every optimizer's state, the RNG states (Python,
NumPy, torch's CPU and CUDA generators, the Trainer's shuffle generator), the epoch, step and
history, the model's training counters and, for a DP run, the Opacus accountant's history and the
noise generator's state (Opacus's Poisson sampler draws from torch's global generator, saved
above; the fast DP step's sampler has its own generator, saved too). A
resumed run therefore takes the very steps the uninterrupted one would, and its accountant counts
every step once: the final ε is the uninterrupted run's.

It is one safetensors file, ``checkpoint.safetensors`` in the run's folder: the tensors, plus the
rest as JSON in the header's metadata. No pickle, so opening a checkpoint cannot run code; one
file replaced atomically, so a kill while writing leaves the previous epoch's checkpoint whole.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import Tensor

from genlab.errors import DataError
from genlab.paths import replacing
from genlab.train import Callback, Trainer  # train.py imports this module only inside fit()

CHECKPOINT_FILE = "checkpoint.safetensors"
FORMAT = "genlab-train-state-1"
_META_KEY = "genlab"


@dataclass
class TrainState:
    """A checkpoint in memory: ``tensors`` by name, and JSON-able ``meta``."""

    tensors: dict[str, Tensor]
    meta: dict[str, Any]

    @property
    def epoch(self) -> int:
        return int(self.meta["epoch"])

    @property
    def history(self) -> list[dict[str, float]]:
        return list(self.meta["history"])


# ----------------------------------------------------------------------------- capture
def _cpu(t: Tensor) -> Tensor:
    return t.detach().to("cpu").contiguous().clone()


def capture(trainer: Trainer, *, config_hash: str | None = None) -> TrainState:
    """The trainer's whole state at an epoch end."""
    tensors = {f"model.{k}": _cpu(v) for k, v in trainer.model.state_dict().items()}
    optimizers = []
    for k, opt in enumerate(trainer.optimizers):
        sd = opt.state_dict()
        scalars: dict[str, dict] = {}
        for pid, state in sd["state"].items():
            for name, value in state.items():
                if torch.is_tensor(value):
                    tensors[f"optim.{k}.{pid}.{name}"] = _cpu(value)
                else:
                    scalars.setdefault(str(pid), {})[name] = value
        optimizers.append({"param_groups": sd["param_groups"], "scalars": scalars})
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    tensors["rng.shuffle"] = trainer.shuffle.get_state()
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    meta: dict[str, Any] = {
        "format": FORMAT,
        "config_hash": config_hash,
        "epoch": trainer.epoch,
        "step": trainer.step,
        "history": trainer.history,
        "optimizers": optimizers,
        "model_counters": trainer.model.training_counters(),
        "rng": {"python": [version, list(internal), gauss_next],
                "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(gauss)]},
    }
    if trainer.dp is not None:
        dp = trainer.dp
        meta["dp"] = {
            "accountant_history": [list(h) for h in dp.engine.accountant.history],
            "accountant": dp.engine.accountant.mechanism(),
            "noise_multiplier": dp.noise_multiplier,
            "fallback_reason": dp.fallback_reason,
        }
        if dp.optimizer.generator is not None:
            tensors["rng.dp_noise"] = dp.optimizer.generator.get_state()
        if getattr(dp, "schedule", None) is not None:  # the fast step's Poisson sampler
            tensors["rng.dp_sampler"] = dp.schedule.generator.get_state()
    return TrainState(tensors, meta)


# ----------------------------------------------------------------------------- restore
def restore(trainer: Trainer, state: TrainState) -> None:
    """Put a captured state back into a trainer built from the same config (after its DP
    engine is attached, before the first epoch it still has to run).

    Raises:
        DataError: the checkpoint does not fit this trainer (another model, optimizer or DP
            setting).
    """
    meta, tensors = state.meta, state.tensors
    weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        trainer.model.load_state_dict(weights)
        if len(meta["optimizers"]) != len(trainer.optimizers):
            raise ValueError("a different number of optimizers")
        for k, (opt, saved) in enumerate(zip(trainer.optimizers, meta["optimizers"])):
            per_param: dict[int, dict] = {int(p): dict(v) for p, v in saved["scalars"].items()}
            prefix = f"optim.{k}."
            for key, value in tensors.items():
                if key.startswith(prefix):
                    pid, name = key[len(prefix):].split(".", 1)
                    per_param.setdefault(int(pid), {})[name] = value
            opt.load_state_dict({"state": per_param, "param_groups": saved["param_groups"]})
    except (RuntimeError, ValueError, KeyError) as err:
        text = " ".join(str(err).split())
        raise DataError(f"the checkpoint does not fit this run: {text}") from None
    trainer.model.load_training_counters(meta["model_counters"])
    dp_meta = meta.get("dp")
    if (dp_meta is None) != (trainer.dp is None):
        raise DataError("the checkpoint does not fit this run: DP is on in one, off in the other")
    if trainer.dp is not None:
        dp = trainer.dp
        if dp_meta["noise_multiplier"] != dp.noise_multiplier:
            raise DataError(f"the checkpoint's noise multiplier {dp_meta['noise_multiplier']} is "
                            f"not this run's {dp.noise_multiplier}")
        dp.engine.accountant.history = [tuple(h) for h in dp_meta["accountant_history"]]
        dp.fallback_reason = dp_meta["fallback_reason"]
        if "rng.dp_noise" in tensors:
            dp.optimizer.generator.set_state(tensors["rng.dp_noise"])
        if (getattr(dp, "schedule", None) is None) != ("rng.dp_sampler" not in tensors):
            raise DataError("the checkpoint does not fit this run: it was taken with the other DP "
                            "step (fast path on in one, off in the other)")
        if "rng.dp_sampler" in tensors:
            dp.schedule.generator.set_state(tensors["rng.dp_sampler"])
    torch.set_rng_state(tensors["rng.torch"])
    if torch.cuda.is_available():
        cuda = [tensors[f"rng.cuda.{i}"] for i in range(torch.cuda.device_count())
                if f"rng.cuda.{i}" in tensors]
        if cuda:
            torch.cuda.set_rng_state_all(cuda)
    trainer.shuffle.set_state(tensors["rng.shuffle"])
    version, internal, gauss_next = meta["rng"]["python"]
    random.setstate((version, tuple(internal), gauss_next))
    name, keys, pos, has_gauss, gauss = meta["rng"]["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    trainer.epoch, trainer.step = state.epoch, int(meta["step"])
    trainer.history = state.history


# ----------------------------------------------------------------------------- files
def save_checkpoint(path: str | Path, state: TrainState) -> Path:
    """Write the checkpoint atomically (a temporary file, then a rename)."""
    path = Path(path)
    with replacing(path) as partial:
        save_file(state.tensors, str(partial), metadata={_META_KEY: json.dumps(state.meta)})
    return path


def load_checkpoint(path: str | Path) -> TrainState | None:
    """The checkpoint at ``path``; None when there is none.

    Raises:
        DataError: the file is not a genlab checkpoint (damaged, or from elsewhere).
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = json.loads((fh.metadata() or {})[_META_KEY])
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, KeyError) as err:
        raise DataError(f"{path} is not a valid genlab checkpoint ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(f"{path} is not a genlab checkpoint of this version")
    return TrainState(tensors, meta)


class CheckpointCallback(Callback):
    """Writes a resume checkpoint to ``path`` at each epoch end."""

    def __init__(self, path: str | Path, *, config_hash: str | None = None):
        self.path, self.config_hash = Path(path), config_hash

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        save_checkpoint(self.path, capture(trainer, config_hash=self.config_hash))

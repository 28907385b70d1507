"""One Trainer for every model: device, seeding, the loop, and callbacks.

The loop has no I/O of its own. Progress bars, writing to the run store, checkpoints and the
cancel check are callbacks (``on_train_start``, ``on_step_end``, ``on_epoch_end``,
``on_train_end``), in the manner of minGPT's generic trainer. The data stays on the device as one
tensor and is sliced into batches, which on small images is much faster than a DataLoader.
``TrainConfig.fast_path`` (the default) adds fused optimizers, CPU threads fitted to the free
cores, CUDA graphs and the fast DP step; see :mod:`genlab.fastpath`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from genlab.config import PrivacyConfig, RunConfig, TrainConfig
from genlab.data import DataSplits, Split, load_dataset
from genlab.errors import ConfigError
from genlab.fastpath import fuse_optimizers, step_function, training_threads
from genlab.models import GenerativeModel, build
from genlab.threads import cpu_threads

if TYPE_CHECKING:
    from genlab.train_state import TrainState

EVAL_SEED = 2024  # fixes the noise of stochastic losses (the VAE's z) in every evaluation


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; an explicit device must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "device cuda was asked for, but no CUDA GPU is available; use --device auto"
        )
    if name == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise ConfigError("device mps was asked for, but it is not available; use --device auto")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Callback:
    """Hooks the Trainer calls; override the ones you need. Raising stops training."""

    def on_train_start(self, trainer: Trainer) -> None: ...

    def on_step_end(self, trainer: Trainer, step: int, metrics: dict[str, Tensor]) -> None: ...

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None: ...

    def on_train_end(self, trainer: Trainer, result: TrainResult) -> None: ...


@dataclass
class TrainResult:
    epochs: int
    steps: int
    train_loss: float
    test_loss: float
    seconds: float
    device: str
    history: list[dict[str, float]] = field(default_factory=list)
    privacy: dict[str, Any] | None = None  # σ, q, steps, δ, accountant and ε of a DP run

    def summary(self) -> dict[str, Any]:
        return {
            "epochs": self.epochs,
            "steps": self.steps,
            "train_loss": self.train_loss,
            "test_loss": self.test_loss,
            "train_seconds": self.seconds,
            "device": self.device,
            **({"privacy": self.privacy} if self.privacy else {}),
        }


def _fits_on(device: torch.device, nbytes: int) -> bool:
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes < 0.25 * free


class Trainer:
    """Trains any registered model on a :class:`~genlab.data.DataSplits`.

    Args:
        model: a model from :func:`genlab.models.build` (moved to the device here).
        config: the training settings.
        callbacks: called in order at each hook.
        privacy: DP-SGD settings; ``None`` trains without DP.
    """

    def __init__(
        self,
        model: GenerativeModel,
        config: TrainConfig,
        *,
        callbacks: Sequence[Callback] = (),
        privacy: PrivacyConfig | None = None,
    ):
        self.config = config
        self.privacy = privacy
        self.dp = None  # the PrivateTraining of a DP run, attached in fit()
        self.device = resolve_device(config.device)
        self.model = model.to(self.device)
        self.callbacks = list(callbacks)
        self.optimizers = model.configure_optimizers(config.lr)
        if config.fast_path:
            self.optimizers = fuse_optimizers(self.optimizers, self.device)
        self.shuffle: torch.Generator | None = None  # the batch order's generator, set in fit()
        self.epoch = 0
        self.step = 0
        self.total_steps = 0
        self.history: list[dict[str, float]] = []

    # ---------------------------------------------------------------- data
    def _to_device(self, split: Split) -> tuple[Tensor, Tensor]:
        nbytes = split.x.element_size() * split.x.nelement()
        if _fits_on(self.device, nbytes):
            return split.x.to(self.device), split.y.to(self.device)
        return split.x, split.y  # moved batch by batch instead

    def batches(
        self, x: Tensor, y: Tensor, generator: torch.Generator
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Shuffled batches of one epoch; the last one may be smaller."""
        order = torch.randperm(len(x), generator=generator).to(x.device)
        for i in range(0, len(x), self.config.batch_size):
            idx = order[i : i + self.config.batch_size]
            yield (
                x[idx].to(self.device, non_blocking=True),
                y[idx].to(self.device, non_blocking=True),
            )

    @torch.no_grad()
    def evaluate_loss(self, x: Tensor, y: Tensor, batch_size: int = 500) -> float:
        """Mean per-sample :meth:`eval_loss` over a split, with fixed noise."""
        was_training = self.model.training
        self.model.eval()
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(EVAL_SEED)
            for i in range(0, len(x), batch_size):
                xb = x[i : i + batch_size].to(self.device)
                yb = y[i : i + batch_size].to(self.device)
                total += self.model.eval_loss(xb, yb).sum()  # summed on the device: one sync
        self.model.train(was_training)
        return float(total) / max(len(x), 1)

    # ---------------------------------------------------------------- loop
    def fit(self, data: DataSplits, *, resume: TrainState | None = None) -> TrainResult:
        """Train for the configured epochs; with ``resume`` (a checkpoint of the same run, see
        :mod:`genlab.train_state`), continue after its epoch as if training had never stopped."""
        if self.device.type == "cpu" and self.config.fast_path:
            with cpu_threads(training_threads()):
                return self._fit(data, resume)
        return self._fit(data, resume)

    def _fit(self, data: DataSplits, resume: TrainState | None) -> TrainResult:
        cfg = self.config
        x, y = self._to_device(data.train)
        xt, yt = self._to_device(data.test)
        steps_per_epoch = -(-len(x) // cfg.batch_size)
        self.total_steps = steps_per_epoch * cfg.epochs
        self.shuffle = shuffle = torch.Generator().manual_seed(cfg.seed)
        if self.privacy is not None:
            from genlab.privacy.dp import PrivateTraining  # the one door to Opacus

            self.dp = PrivateTraining(
                self.model,
                self.optimizers,
                n_train=len(x),
                batch_size=cfg.batch_size,
                epochs=cfg.epochs,
                config=self.privacy,
                seed=cfg.seed,
                fast=cfg.fast_path,
            )
            self.total_steps = self.dp.steps_per_epoch * cfg.epochs
        if resume is not None:  # before any step is built: a CUDA graph captures the state
            from genlab.train_state import restore

            restore(self, resume)
        self.step_fn = step_fn = step_function(
            self.model, self.optimizers, batch_size=cfg.batch_size, device=self.device,
            fast=cfg.fast_path,
        )  # fmt: skip
        last = self.history[-1] if self.history else {}
        start = time.perf_counter() - last.get("seconds", 0.0)  # a resumed run's clock goes on
        for cb in self.callbacks:
            cb.on_train_start(self)
        self.model.train()
        train_loss = last.get("train_loss", float("nan"))
        test_loss = last.get("test_loss", float("nan"))
        for epoch in range(self.epoch + 1, cfg.epochs + 1):
            self.epoch = epoch
            sums: dict[str, Tensor] = {}
            n_batches = 0
            if self.dp:
                steps = self.dp.epoch_steps(x, y)
            else:
                steps = (step_fn(xb, yb) for xb, yb in self.batches(x, y, shuffle))
            for metrics in steps:
                self.step += 1
                if metrics is None:  # an empty Poisson batch took a noise-only step: no metrics
                    continue
                n_batches += 1
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0.0) + v
                for cb in self.callbacks:
                    cb.on_step_end(self, self.step, metrics)
            epoch_metrics = {f"train_{k}": float(v) / max(n_batches, 1) for k, v in sums.items()}
            train_loss = epoch_metrics.get("train_loss", float("nan"))
            test_loss = self.evaluate_loss(xt, yt)
            epoch_metrics.update(test_loss=test_loss, seconds=time.perf_counter() - start)
            if self.dp:
                epoch_metrics["epsilon"] = self.dp.epsilon()
            self.history.append({"epoch": epoch, "step": self.step, **epoch_metrics})
            for cb in self.callbacks:
                cb.on_epoch_end(self, epoch, epoch_metrics)
        self.model.eval()
        privacy = None
        if self.dp:
            privacy = self.dp.record()
            self.dp.close()
        result = TrainResult(
            epochs=cfg.epochs,
            steps=self.step,
            train_loss=train_loss,
            test_loss=test_loss,
            seconds=time.perf_counter() - start,
            device=str(self.device),
            history=self.history,
            privacy=privacy,
        )
        for cb in self.callbacks:
            cb.on_train_end(self, result)
        return result


def check_run(cfg: RunConfig) -> DataSplits:
    """Load the run's data (memoised) and check the settings against it, before any run exists.

    Raises:
        DataError: the dataset cannot be loaded.
        ConfigError: a setting does not fit the data (a batch larger than the train split, a
            δ not below 1/N) or a DP run's model has a layer Opacus cannot handle.
    """
    d = cfg.data
    data = load_dataset(
        d.name, seed=d.seed, holdout_fraction=d.holdout_fraction, test_fraction=d.test_fraction
    )
    if cfg.train.batch_size > len(data.train):
        raise ConfigError(
            f"batch_size {cfg.train.batch_size} is larger than the train split of "
            f"{d.name} ({len(data.train)} images)"
        )
    if cfg.privacy is not None:  # DP settings that only the data and the model can check
        from genlab.privacy.accounting import validate_delta
        from genlab.privacy.dp import check_model_ready

        validate_delta(cfg.privacy.delta, len(data.train))
        check_model_ready(
            build(
                cfg.model, shape=data.shape, num_classes=data.num_classes, config=cfg.model_config
            )
        )
    return data


def prepare_run(cfg: RunConfig, *, seed: bool = True) -> tuple[GenerativeModel, DataSplits]:
    """Load the data and build the model, seeded by the run's seed.

    Args:
        seed: seed every generator first (for training); loading weights into the model
            afterwards needs no seed, so a server that loads models leaves global RNGs alone.
    """
    data = check_run(cfg)
    if seed:
        seed_everything(cfg.train.seed)
    model = build(
        cfg.model, shape=data.shape, num_classes=data.num_classes, config=cfg.model_config
    )
    return model, data


def train_run(
    cfg: RunConfig, *, callbacks: Sequence[Callback] = (), resume: TrainState | None = None
) -> tuple[GenerativeModel, TrainResult]:
    """Train the model a :class:`RunConfig` describes; the pure core of ``genlab train``.
    ``resume``: a checkpoint of this run to continue from."""
    model, data = prepare_run(cfg)
    if cfg.train.epochs is None:
        raise ConfigError("epochs must be set (make_run_config fills in the model's default)")
    trainer = Trainer(model, cfg.train, callbacks=callbacks, privacy=cfg.privacy)
    result = trainer.fit(data, resume=resume)
    return model, result

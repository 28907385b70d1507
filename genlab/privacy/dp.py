"""DP-SGD for any registered model: Opacus's engine attached to the model's private modules.

:class:`PrivateTraining` is what the Trainer holds when a run has a :class:`PrivacyConfig`. It
calls Opacus's ``PrivacyEngine.make_private`` (or ``make_private_with_epsilon`` for a target ε)
on ``model.private_modules()`` and the first optimizer, with Poisson sampling, and in Opacus's
non-wrapping mode: the hooks attach to the model's own layers, so the model keeps its methods and
saves as a plain ``state_dict``. Batches come from Opacus's Poisson data loader, as indices into
the train tensor that stays on the device.

With ``fast=True`` (the Trainer's fast path) a model trained by the generic ``train_step`` takes
:mod:`genlab.privacy.fast_dp`'s step instead: Poisson batches drawn on the device, per-sample
clipping in one backward pass, and Opacus's own noise, normalisation and accountant. The DP
settings (σ, q, the expected batch size, the steps) are the same either way, so is ε.

What is private: only the modules that see real data. For the VAE, CVAE, PixelCNN and mixture
that is the whole model. For the GAN it is the discriminator; see :mod:`genlab.models.gan` for
why the generator is post-processing.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from opacus import PrivacyEngine
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from genlab.config import PrivacyConfig
from genlab.errors import ConfigError
from genlab.models.base import GenerativeModel
from genlab.privacy import fast_dp
from genlab.privacy.accounting import compute_epsilon, sample_rate, steps_per_epoch
from genlab.privacy.readiness import validate_private_modules

GRAD_SAMPLE_MODE = "hooks"  # per-sample gradients from Opacus's hand-written layer rules

# Noise that is not from a cryptographic RNG is fine for a teaching and research tool (the runs
# must be reproducible), and the first layer's input never needs a gradient: both warnings are
# expected here and would only alarm a student.
warnings.filterwarnings("ignore", message="Secure RNG turned off")
warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients")
warnings.filterwarnings("ignore", message="Optimal order is the (largest|smallest) alpha")


def check_model_ready(model: GenerativeModel) -> None:
    """Raise a ConfigError naming the layer Opacus cannot handle, before any training starts."""
    errors = validate_private_modules(model)
    if errors:
        raise ConfigError(
            f"model {model.name!r} cannot train with DP: {errors[0]}"
            + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else "")
        )
    reason = model.dp_incompatibility()
    if reason:
        raise ConfigError(f"model {model.name!r} cannot train with DP: {reason}")


class PrivateTraining:
    """Opacus DP-SGD on a model's private modules, for one training run.

    Args:
        model: the model; its private modules get Opacus's per-sample gradient hooks in place.
        optimizers: the model's optimizers; ``optimizers[0]`` must optimise exactly the private
            modules and is replaced, in the list, by Opacus's ``DPOptimizer``.
        n_train: size of the train split (the N of the sampling rate q = 1/ceil(N/B) ≈ B/N).
        batch_size: the expected Poisson batch size B.
        epochs: the planned epochs (a target ε is spread over all of them).
        config: the privacy settings.
        seed: seeds the noise, so a DP run is as reproducible as any other.
        fast: use :mod:`genlab.privacy.fast_dp`'s step where the model allows it (the generic
            ``train_step`` and an Opacus sampler for every layer); see :attr:`dp_step`.
        capacity: rows per padded chunk in the fast step; ``"auto"`` pads on a GPU only
            (:func:`fast_dp.default_capacity`), ``None`` never pads.
    """

    def __init__(
        self,
        model: GenerativeModel,
        optimizers: list[torch.optim.Optimizer],
        *,
        n_train: int,
        batch_size: int,
        epochs: int,
        config: PrivacyConfig,
        seed: int,
        fast: bool = False,
        capacity: int | str | None = "auto",
    ):
        check_model_ready(model)
        self.config = config
        self.model = model
        self.n_train = n_train
        self.sample_rate = sample_rate(n_train, batch_size)
        self.steps_per_epoch = steps_per_epoch(n_train, batch_size)
        self.fallback_reason: str | None = None
        device = model.device
        noise = torch.Generator(device=device).manual_seed(seed + 1)
        self.engine = PrivacyEngine(accountant=config.accountant)
        kwargs: dict[str, Any] = dict(
            module=model.private_modules(),
            optimizer=optimizers[0],
            data_loader=DataLoader(TensorDataset(torch.arange(n_train)), batch_size=batch_size),
            max_grad_norm=config.max_grad_norm,
            poisson_sampling=True,
            grad_sample_mode=GRAD_SAMPLE_MODE,
            wrap_model=False,  # hooks on the model's own layers: the model keeps its API
            noise_generator=noise,
        )
        if config.epsilon is not None:
            self.hooks, optimizer, self.loader = self._with_epsilon(kwargs, epochs)
        else:
            self.hooks, optimizer, self.loader = self.engine.make_private(
                noise_multiplier=config.noise_multiplier, **kwargs
            )
        optimizers[0] = optimizer
        self.optimizers = optimizers
        self.optimizer = optimizer
        self.noise_multiplier = float(optimizer.noise_multiplier)
        self.clipper = self._fast_clipper(model) if fast else None
        self.dp_step = "book-keeping" if self.clipper else "opacus-hooks"
        if self.clipper is not None:
            self.hooks.remove_hooks()  # Opacus's per-sample hooks would only duplicate the work
            if capacity == "auto":
                capacity = fast_dp.default_capacity(device, n_train, self.sample_rate)
            self.capacity = capacity
            self.schedule = fast_dp.PoissonSchedule(
                n_train, self.sample_rate, self.steps_per_epoch, capacity=capacity,
                device=device, seed=seed + 2,
            )  # fmt: skip

    @staticmethod
    def _fast_clipper(model: GenerativeModel) -> fast_dp.BookKeepingClipper | None:
        """The one-pass clipper, or ``None`` where the model needs Opacus's own hooks path (a
        family with its own ``train_step``, like the GAN's alternating one, or a parameter that
        no Opacus grad sampler covers)."""
        if type(model).train_step is not GenerativeModel.train_step:
            return None
        try:
            return fast_dp.BookKeepingClipper(model.private_modules())
        except fast_dp.Unsupported:
            return None

    def _with_epsilon(self, kwargs: dict[str, Any], epochs: int):
        """``make_private_with_epsilon``; if PRV cannot calibrate σ, RDP does, and we say so."""
        cfg = self.config
        try:
            return self.engine.make_private_with_epsilon(
                target_epsilon=cfg.epsilon, target_delta=cfg.delta, epochs=epochs, **kwargs
            )
        except (ValueError, RuntimeError, OverflowError, FloatingPointError, MemoryError) as err:
            if cfg.accountant != "prv":
                raise
            self.fallback_reason = f"PRV could not calibrate the noise ({err}); used RDP"
            self.engine = PrivacyEngine(accountant="rdp")
            return self.engine.make_private_with_epsilon(
                target_epsilon=cfg.epsilon, target_delta=cfg.delta, epochs=epochs, **kwargs
            )

    # ---------------------------------------------------------------- the loop's side
    def epoch_steps(self, x: Tensor, y: Tensor) -> Iterator[dict[str, Tensor] | None]:
        """Take one epoch of DP steps; yields each step's metrics (``None`` for an empty batch,
        which still takes a noise-only step)."""
        if self.clipper is not None:
            for chunks in self.schedule.epoch():
                yield self.fast_step(x, y, chunks)
            return
        for xb, yb in self.batches(x, y):
            if len(xb) == 0:
                self.empty_step()
                yield None
            else:
                yield self.model.train_step(xb, yb, self.optimizers)

    def fast_step(self, x: Tensor, y: Tensor, chunks: list[fast_dp.Chunk]) -> dict | None:
        """One DP step on a Poisson batch given as chunks of the train split (the fast path).

        Each chunk's loss is weighted (padding rows by 0, so their gradient is exactly zero),
        its per-sample gradients are clipped, the clipped sums of all chunks are added and then
        noised once, as one Opacus step."""
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict = {}
        loss_sum, count = None, 0
        for chunk in chunks:
            if len(chunk.index) == 0:  # an empty, unpadded batch: nothing to clip
                continue
            self.clipper.active = True
            try:
                losses = self.model.private_loss(x[chunk.index], y[chunk.index])
            finally:
                self.clipper.active = False
            weighted = losses * chunk.weight
            for p, s in self.clipper.clipped_sum(weighted.sum(), self.config.max_grad_norm).items():
                sums[p] = sums[p] + s if p in sums else s
            part = weighted.detach().sum()
            loss_sum = part if loss_sum is None else loss_sum + part
            count += chunk.count
        fast_dp.noisy_step(self.optimizer, self.engine.accountant, self.sample_rate, sums)
        return {"loss": loss_sum / count} if count else None

    def batches(self, x: Tensor, y: Tensor) -> Iterator[tuple[Tensor, Tensor]]:
        """One epoch of Poisson batches: each image joins each batch with probability q, so
        batch sizes vary and a batch can be empty."""
        for (idx,) in self.loader:
            idx = idx.to(x.device)
            yield x[idx], y[idx]

    def empty_step(self) -> None:
        """An empty Poisson batch still takes a step: Opacus adds noise to a zero gradient, which
        is what the accountant counted. Only the private optimizer steps."""
        self.optimizer.zero_grad(set_to_none=True)  # the last step's clipped sum is spent
        for p in self.optimizer.params:
            p.grad_sample = torch.zeros((0, *p.shape), device=p.device, dtype=p.dtype)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    @property
    def steps(self) -> int:
        """Noisy steps taken so far, as Opacus's accountant counted them."""
        return sum(n for _, _, n in self.engine.accountant.history)

    def epsilon(self) -> float:
        """ε spent so far at the run's δ (0 before the first step)."""
        if self.steps == 0:
            return 0.0
        result = compute_epsilon(
            noise_multiplier=self.noise_multiplier,
            sample_rate=self.sample_rate,
            steps=self.steps,
            delta=self.config.delta,
            accountant=self.accountant,
        )
        if result.fallback_reason and not self.fallback_reason:
            self.fallback_reason = result.fallback_reason
        return result.epsilon

    @property
    def accountant(self) -> str:
        return self.engine.accountant.mechanism()

    def record(self) -> dict[str, Any]:
        """Everything needed to recompute ε with Opacus's accountant: σ, q, steps, δ and the
        accountant, with the ε it gives."""
        epsilon = self.epsilon()
        return {
            "epsilon": epsilon if math.isfinite(epsilon) else None,
            "delta": self.config.delta,
            "target_epsilon": self.config.epsilon,
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "steps": self.steps,
            "max_grad_norm": self.config.max_grad_norm,
            "accountant": "rdp" if self.fallback_reason else self.accountant,
            "accountant_fallback": self.fallback_reason,
            "grad_sample_mode": GRAD_SAMPLE_MODE,
            "dp_step": self.dp_step,
        }

    def close(self) -> None:
        """Take Opacus's hooks off the model, leaving a plain model with no per-sample state."""
        if self.clipper is not None:
            self.clipper.close()
        self.hooks.cleanup()
        for p in self.model.private_modules().parameters():
            for attr in ("grad_sample", "summed_grad"):
                if hasattr(p, attr):
                    delattr(p, attr)

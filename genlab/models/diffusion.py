"""A small denoising diffusion model (DDPM, Ho et al. 2020) sampled with DDIM (Song et al. 2021).

Training adds Gaussian noise to an image at a random step t of a fixed schedule,
x_t = sqrt(abar_t) x + sqrt(1 - abar_t) eps, and teaches a U-Net (:mod:`genlab.models.unet`)
to predict eps. The loss of each image is its squared error summed over the pixels, at its own
random t and noise, so it is a per-sample loss and DP-SGD can clip it.

Sampling runs DDIM's deterministic update (eta = 0) on a short, evenly spaced subset of the
training steps (``sample_steps``, 25 by default, of ``timesteps``), all images of a batch at once
on the model's device. The starting noise is drawn on the CPU from the caller's generator, so a
seed gives the same images on any device. Samples come from a running average (EMA) of the
weights, which the DDPM paper also samples from; the average of DP-SGD's iterates is
post-processing and costs no privacy.

There is no likelihood here (the variational bound of a diffusion model needs every one of its
steps), so ``nll_bpd`` stays empty. The membership score is minus the denoising loss averaged over
fixed draws of (t, noise) at the low-noise end of the schedule, where a model that memorised an
image reconstructs it best (Carlini et al. 2023, "Extracting training data from diffusion
models", and Matsumoto et al. 2023 attack diffusion models through this loss).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from genlab.errors import ConfigError
from genlab.models import register
from genlab.models.base import GenerativeModel, ProgressFn
from genlab.models.ema import AveragedWeights
from genlab.models.unet import UNet

SCHEDULES = ("cosine", "linear")
SCORE_DRAWS = 8  # fixed (t, noise) pairs the membership score averages over
SCORE_RANGE = (0.02, 0.4)  # ... at these fractions of the schedule: the low-noise end
EXPLAIN_FRACTION = 0.2  # the explanation target's fixed t, as a fraction of the schedule
FIXED_NOISE_SEED = 1234
SAMPLE_CHUNK = 500  # images denoised at once on a CPU (all at once on a GPU)


@dataclass(frozen=True)
class DiffusionConfig:
    """Settings of the diffusion model.

    Args:
        channels: width of the U-Net at full resolution (doubled at the lower ones); the
            main cost of training and sampling.
        timesteps: steps of the noise schedule the model trains on.
        sample_steps: DDIM steps used to draw a sample (at most ``timesteps``); fewer are
            faster and a little blurrier.
        schedule: ``cosine`` (Nichol & Dhariwal 2021) or ``linear`` (betas from 1e-4 to 0.02,
            Ho et al. 2020).
        ema: decay of the running average of the weights that samples come from; 0 samples
            from the last step's weights.
    """

    # 16 (367k parameters on 28x28, widths 16, 32, 64): a training step costs about 2.4 times
    # the default VAE's on this project's CPU; 24 costs 5 times and 32 about 7 times.
    channels: int = 16
    timesteps: int = 1000
    sample_steps: int = 25
    schedule: str = field(default="cosine", metadata={"choices": SCHEDULES})
    ema: float = 0.995

    def __post_init__(self):
        if self.channels < 2:
            raise ConfigError(f"channels must be at least 2 (got {self.channels})")
        if self.timesteps < 2:
            raise ConfigError(f"timesteps must be at least 2 (got {self.timesteps})")
        if not 1 <= self.sample_steps <= self.timesteps:
            raise ConfigError(
                f"sample_steps must be between 1 and timesteps ({self.timesteps}) (got "
                f"{self.sample_steps}); 25 is a good start"
            )
        if self.schedule not in SCHEDULES:
            raise ConfigError(
                f"schedule must be one of {', '.join(SCHEDULES)} (got {self.schedule!r})"
            )
        if not 0 <= self.ema < 1:
            raise ConfigError(
                f"ema must be in [0, 1) (got {self.ema}); 0.99 to 0.999 smooths, 0 turns it off"
            )


def alpha_bars(schedule: str, timesteps: int) -> Tensor:
    """abar_t = prod_{s <= t} (1 - beta_s) for t = 0..T-1, float64."""
    if schedule == "linear":
        betas = torch.linspace(1e-4, 0.02, timesteps, dtype=torch.float64)
    else:  # cosine: abar(t) = f(t) / f(0), f(t) = cos^2(((t / T) + s) / (1 + s) * pi / 2)
        s = 0.008
        steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
        f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)  # the paper's clip, near t = T
    return torch.cumprod(1 - betas, dim=0)


@register("diffusion", DiffusionConfig)
class Diffusion(AveragedWeights, GenerativeModel):
    """DDPM trained to predict the noise; the loss is the squared error summed over pixels."""

    has_likelihood = False
    explain_target_name = "denoising"
    loss_meaning = ("The denoising loss on the test split: the squared error of the predicted "
                    "noise, summed over pixels, at random noise levels. Lower is better, but it "
                    "is not a likelihood: compare it only between diffusion runs.")
    loss_unit = "squared error/image"

    def __init__(self, config: DiffusionConfig, *, shape: tuple[int, int, int], num_classes: int):
        super().__init__(config, shape=shape, num_classes=num_classes)
        self.net = UNet(shape, config.channels)
        self.net_ema = copy.deepcopy(self.net).requires_grad_(False)
        self.register_buffer(
            "alpha_bar", alpha_bars(config.schedule, config.timesteps).float(), persistent=False
        )

    @classmethod
    def default_epochs(cls, dataset: str, *, private: bool = False) -> int:
        # digits: CAS 0.94 after 20 epochs, FD 24 after 30 (bench/epochs_curve.py, 2026-12-01)
        if private:  # a DP-SGD step costs about 2.5 times a plain one (per-sample gradients)
            return {"digits": 30, "mnist5k": 20, "sprites": 15}.get(dataset, 15)
        # mnist5k: CAS 0.902 and FD 182 after 40 epochs, 714 s on this project's CPU (one thread)
        return {"digits": 30, "mnist5k": 40, "sprites": 30}.get(dataset, 30)

    @classmethod
    def default_train_settings(cls, dataset: str, *, private: bool = False) -> dict[str, Any]:
        if private:
            return {"batch_size": 256, "lr": 2e-3}
        return {"batch_size": 64, "lr": 2e-3}

    # ---------------------------------------------------------------- the denoising loss
    def _sampler(self) -> nn.Module:
        """The network samples, scores and explanations use: the EMA unless ``ema`` is 0."""
        return self.net_ema if self.config.ema > 0 else self.net

    def denoising_loss(self, net: nn.Module, x: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """||eps - net(x_t, t)||^2 summed over pixels, per image, for images ``x`` in [0, 1]."""
        ab = self.alpha_bar.to(x.dtype)[t].view(-1, 1, 1, 1)
        x_t = ab.sqrt() * (2 * x - 1) + (1 - ab).sqrt() * noise
        return (noise - net(x_t, t)).pow(2).flatten(1).sum(1)

    def _random_terms(self, x: Tensor) -> tuple[Tensor, Tensor]:
        t = torch.randint(0, self.config.timesteps, (len(x),), device=x.device)
        return t, torch.randn_like(x)

    def loss(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """The denoising loss of each image at its own random t and noise (what DP-SGD clips)."""
        return self.denoising_loss(self.net, x, *self._random_terms(x))

    def eval_loss(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """The same loss for the averaged network that samples (the Trainer fixes the noise)."""
        return self.denoising_loss(self._sampler(), x, *self._random_terms(x))

    def configure_optimizers(self, lr: float) -> list[torch.optim.Optimizer]:
        return [torch.optim.Adam(self.net.parameters(), lr=lr)]

    def private_modules(self) -> nn.Module:
        """The live U-Net: the only part trained on data (the EMA copy is an average of it)."""
        return self.net

    def train_step(
        self, x: Tensor, y: Tensor | None, optimizers: list[torch.optim.Optimizer]
    ) -> dict[str, Tensor]:
        metrics = super().train_step(x, y, optimizers)
        self._average_into(self.net_ema, self.net)
        return metrics

    # ---------------------------------------------------------------- score and explanation
    def _fixed_terms(self, x: Tensor, fractions: Tensor) -> tuple[Tensor, Tensor]:
        """Fixed timesteps at ``fractions`` of the schedule and one fixed noise image each."""
        t = (fractions * (self.config.timesteps - 1)).round().long().to(x.device)
        gen = torch.Generator().manual_seed(FIXED_NOISE_SEED)
        noise = torch.randn((len(fractions), *self.shape), generator=gen, dtype=torch.float64)
        return t, noise.to(x.device, x.dtype)

    def score(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Minus the denoising loss averaged over ``SCORE_DRAWS`` fixed (t, noise) pairs, the
        same for every image: higher means the model denoises x better, as it does its members."""
        ts, noises = self._fixed_terms(x, torch.linspace(*SCORE_RANGE, SCORE_DRAWS))
        total = torch.zeros(len(x), device=x.device, dtype=x.dtype)
        for t, noise in zip(ts, noises):
            total += self.denoising_loss(
                self._sampler(), x, t.expand(len(x)), noise.expand_as(x)
            )
        return -total / SCORE_DRAWS

    def explain_target(self, x: Tensor) -> Tensor:
        """Minus the denoising loss at one fixed t (a fifth of the way into the schedule) and one
        fixed noise image: deterministic and differentiable, so attributions are repeatable."""
        (t,), (noise,) = self._fixed_terms(x, torch.tensor([EXPLAIN_FRACTION]))
        return -self.denoising_loss(self._sampler(), x, t.expand(len(x)), noise.expand_as(x))

    # ---------------------------------------------------------------- sampling
    def sample_times(self) -> list[int]:
        """The DDIM steps, from the noisiest down to t = 0, evenly spaced and distinct."""
        ts = torch.linspace(self.config.timesteps - 1, 0, self.config.sample_steps)
        return sorted({int(t) for t in ts.round()}, reverse=True)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        progress: ProgressFn | None = None,
    ) -> Tensor:
        """``n`` images by deterministic DDIM from noise drawn on the CPU from ``generator``.

        ``progress(done, total)`` counts denoising steps (over all chunks of images).
        """
        dtype = self.alpha_bar.dtype
        noise = torch.randn((n, *self.shape), generator=generator)
        chunk = max(n, 1) if self.device.type == "cuda" else SAMPLE_CHUNK
        times = self.sample_times()
        total, done, out = -(-n // chunk) * len(times), 0, []
        for start in range(0, n, chunk):
            x = noise[start : start + chunk].to(self.device, dtype)
            for i, t in enumerate(times):
                x = self._ddim_step(x, t, times[i + 1] if i + 1 < len(times) else None)
                done += 1
                if progress is not None:
                    progress(done, total)
            out.append(((x + 1) / 2).clamp(0, 1))
        return torch.cat(out) if out else noise.new_zeros((0, *self.shape))

    def _ddim_step(self, x: Tensor, t: int, t_next: int | None) -> Tensor:
        """x_t to x_{t_next} (eta = 0); at the last step (``t_next`` None) the clean image."""
        ab = self.alpha_bar[t]
        eps = self._sampler()(x, torch.full((len(x),), t, device=x.device))
        x0 = ((x - (1 - ab).sqrt() * eps) / ab.sqrt()).clamp(-1, 1)
        if t_next is None:
            return x0
        eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()  # the noise consistent with the clamp
        ab_next = self.alpha_bar[t_next]
        return ab_next.sqrt() * x0 + (1 - ab_next).sqrt() * eps

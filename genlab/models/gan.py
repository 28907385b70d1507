"""The generative adversarial network (Goodfellow et al. 2014), DCGAN-shaped (Radford et al. 2016).

A generator G turns noise z ~ N(0, I) into an image; a discriminator D scores how real an image
looks. Only D ever sees real data, so only D needs differential privacy: G is trained through D's
verdicts and counts as post-processing. D is therefore built from layers whose per-sample
gradients Opacus can compute (convolutions, GroupNorm, LeakyReLU, Linear) and nothing that mixes
the samples of a batch. G upsamples with ``nn.Upsample`` + ``Conv2d`` like the VAE's decoder.
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.errors import ConfigError
from genlab.models import register
from genlab.models.base import LatentModel
from genlab.models.ema import AveragedWeights
from genlab.models.vae import _downsample_sizes

LOSSES = ("nonsaturating", "hinge")


@dataclass(frozen=True)
class GANConfig:
    """Settings of the GAN.

    Args:
        latent_dim: size of the noise vector z the generator turns into an image.
        channels: channels of the discriminator's first conv layer, doubled at each
            downsampling; the generator mirrors the discriminator.
        loss: ``nonsaturating`` (the original GAN loss with the usual generator trick) or
            ``hinge`` (the hinge loss of SAGAN / BigGAN).
        d_steps: discriminator updates per generator update.
        ema: decay of the running average of the generator's weights that samples are drawn
            from (smoother, more varied samples than the last step's generator); 0 turns it off.
    """

    latent_dim: int = 32
    channels: int = 32
    loss: str = field(default="nonsaturating", metadata={"choices": LOSSES})
    d_steps: int = 1
    ema: float = 0.995

    def __post_init__(self):
        if self.latent_dim < 1:
            raise ConfigError(
                f"latent_dim must be at least 1 (got {self.latent_dim}); it is the size of the "
                "noise vector the generator starts from"
            )
        if self.channels < 1:
            raise ConfigError(f"channels must be at least 1 (got {self.channels})")
        if self.loss not in LOSSES:
            raise ConfigError(f"loss must be one of {', '.join(LOSSES)} (got {self.loss!r})")
        if self.d_steps < 1:
            raise ConfigError(
                f"d_steps must be at least 1 (got {self.d_steps}); it is the number of "
                "discriminator updates per generator update"
            )
        if not 0 <= self.ema < 1:
            raise ConfigError(
                f"ema must be in [0, 1) (got {self.ema}); 0.99 to 0.999 smooths, 0 turns it off"
            )


def _group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 8 groups; the group count must divide the channels."""
    return nn.GroupNorm(math.gcd(8, channels), channels)


class Discriminator(nn.Module):
    """Image (B, C, H, W) in [0, 1] to one real-vs-fake logit per image, shape (B,).

    Norm: GroupNorm after each strided conv (but not right after the pixels, as in DCGAN), never
    BatchNorm. BatchNorm normalises with statistics
    of the whole batch, so one image's output (and gradient) depends on the others: DP-SGD could
    not bound a single person's influence, and Opacus refuses it. GroupNorm normalises each image
    on its own. Spectral norm is left out too: it re-parametrises the weights in a way Opacus's
    per-sample gradient hooks do not follow.
    """

    def __init__(self, shape: tuple[int, int, int], channels: int):
        super().__init__()
        c, h, w = shape
        sizes = _downsample_sizes(h, w)
        layers: list[nn.Module] = []
        ch_in, ch = c, channels
        if len(sizes) < 3:  # at most one halving (8x8): a full-resolution conv adds depth cheaply
            layers += [nn.Conv2d(c, ch, 3, padding=1), nn.LeakyReLU(0.2)]
            ch_in, ch = ch, ch * 2
        # DCGAN's shape: a stride-2 conv per halving; no norm on a layer that sees raw pixels
        for _ in sizes[1:]:
            layers += [
                nn.Conv2d(ch_in, ch, 4, stride=2, padding=1),
                *([_group_norm(ch)] if layers else []),
                nn.LeakyReLU(0.2),
            ]
            ch_in, ch = ch, ch * 2
        self.width = ch_in  # channels of the last feature map, which the generator starts from
        fh, fw = sizes[-1]
        layers += [nn.Flatten(), nn.Linear(ch_in * fh * fw, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(2 * x - 1).squeeze(1)  # centre the pixels on 0


class Generator(nn.Module):
    """Noise (B, latent_dim) to pixel logits (B, C, H, W): the discriminator run backwards."""

    def __init__(self, shape: tuple[int, int, int], width: int, latent_dim: int):
        super().__init__()
        c, h, w = shape
        sizes = _downsample_sizes(h, w)
        ch = width  # the discriminator's deepest width, halved at each upsampling
        fh, fw = sizes[-1]
        self.start = (ch, fh, fw)
        self.fc = nn.Linear(latent_dim, ch * fh * fw)
        layers: list[nn.Module] = [_group_norm(ch), nn.ReLU()]
        for size in reversed(sizes[:-1]):
            layers += [
                nn.Upsample(size=size, mode="nearest"),
                nn.Conv2d(ch, max(1, ch // 2), 3, padding=1),
                _group_norm(max(1, ch // 2)),
                nn.ReLU(),
            ]
            ch = max(1, ch // 2)
        layers += [nn.Conv2d(ch, c, 3, padding=1)]  # a full-resolution layer draws the strokes
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(self.fc(z).view(-1, *self.start))


@contextmanager
def _public_pass(discriminator: nn.Module) -> Iterator[None]:
    """Run D on fakes only, for the generator's update: nothing here touches real data.

    D's parameters are frozen (no gradient is kept for them), and the forward/backward hooks
    on its layers are set aside for the duration. Those hooks are how a DP wrapper such as
    Opacus records per-sample gradients; a pass on fakes must not feed them (Opacus would
    otherwise look for activations it never stored and fail), and it costs no privacy.
    """
    layers = list(discriminator.modules())
    saved = [(m._forward_hooks, m._backward_hooks) for m in layers]
    discriminator.requires_grad_(False)
    try:
        for m in layers:
            m._forward_hooks, m._backward_hooks = OrderedDict(), OrderedDict()
        yield
    finally:
        for m, (fwd, bwd) in zip(layers, saved, strict=True):
            m._forward_hooks, m._backward_hooks = fwd, bwd
        discriminator.requires_grad_(True)


@register("gan", GANConfig)
class GAN(AveragedWeights, LatentModel):
    """DCGAN-style GAN; ``loss`` is the discriminator's per-sample loss (nats, for the default
    non-saturating loss), which is also what DP-SGD clips.

    There is no likelihood. The membership score is D's logit on the image: a discriminator that
    memorised its training images calls them "real" more confidently than unseen ones.
    """

    has_likelihood = False
    explain_target_name = "logit"
    loss_meaning = ("The discriminator's loss on test images and fresh fakes. It is not a "
                    "likelihood, and not a quality score: a test loss well above the train loss "
                    "means the discriminator memorises its training images.")

    def __init__(self, config: GANConfig, *, shape: tuple[int, int, int], num_classes: int):
        super().__init__(config, shape=shape, num_classes=num_classes)
        self.latent_dim = config.latent_dim
        self.discriminator = Discriminator(shape, config.channels)
        self.generator = Generator(shape, self.discriminator.width, config.latent_dim)
        # The running average of G's weights that samples come from. G is post-processing of
        # the private D, and so is any average of its weights: it costs no privacy.
        self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False)

    @classmethod
    def default_epochs(cls, dataset: str, *, private: bool = False) -> int:
        # about 1,400 generator steps on mnist5k; fewer leave too few 1s (mode dropping)
        return {"digits": 40, "mnist5k": 30, "sprites": 20}.get(dataset, 20)

    @classmethod
    def default_train_settings(cls, dataset: str, *, private: bool = False) -> dict[str, Any]:
        return {"batch_size": 64, "lr": 1e-3}

    # ---------------------------------------------------------------- the two losses
    def _d_terms(self, real_logit: Tensor, fake_logit: Tensor) -> Tensor:
        """Per-sample discriminator loss: push real logits up, fake logits down."""
        if self.config.loss == "hinge":
            return F.relu(1 - real_logit) + F.relu(1 + fake_logit)
        # -log sigmoid(D(x)) - log(1 - sigmoid(D(G(z)))), in a numerically stable form
        return F.softplus(-real_logit) + F.softplus(fake_logit)

    def _g_terms(self, fake_logit: Tensor) -> Tensor:
        if self.config.loss == "hinge":
            return -fake_logit
        return F.softplus(-fake_logit)  # the non-saturating -log sigmoid(D(G(z)))

    def _fakes(self, n: int, like: Tensor) -> Tensor:
        z = torch.randn(n, self.latent_dim, device=like.device, dtype=like.dtype)
        return torch.sigmoid(self.generator(z))  # the live generator, not its average

    def private_loss(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """D's loss on real image i plus one fake from its own z_i, shape (B,).

        Real and fake pass through D as two separate batches (never concatenated), so row i of
        the result depends on x_i and z_i only, and Opacus sees a batch of B samples.
        """
        with torch.no_grad():
            fake = self._fakes(len(x), x)
        return self._d_terms(self.discriminator(x), self.discriminator(fake))

    def loss(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.private_loss(x, y)

    def eval_loss(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """D's loss as in training (the Trainer fixes the noise); a test loss well above the
        train loss means D is memorising its training images."""
        return self.private_loss(x, y)

    def configure_optimizers(self, lr: float) -> list[torch.optim.Optimizer]:
        betas = (0.5, 0.999)  # DCGAN's momentum: less inertia in a game that keeps moving
        return [
            torch.optim.Adam(self.discriminator.parameters(), lr=lr, betas=betas),
            torch.optim.Adam(self.generator.parameters(), lr=lr, betas=betas),
        ]

    def train_step(
        self, x: Tensor, y: Tensor | None, optimizers: list[torch.optim.Optimizer]
    ) -> dict[str, Tensor]:
        """``d_steps`` discriminator updates on this batch, then one generator update."""
        opt_d, opt_g = optimizers
        for _ in range(self.config.d_steps):
            opt_d.zero_grad(set_to_none=True)
            d_loss = self.private_loss(x, y).mean()  # exactly what DP-SGD clips per sample
            d_loss.backward()
            opt_d.step()
        # The generator's step is post-processing under DP: it reads only D's (already
        # privatised) weights and fresh noise z, never a real image, so it costs no ε.
        with _public_pass(self.discriminator):
            opt_g.zero_grad(set_to_none=True)
            fake = self._fakes(len(x), x)
            g_loss = self._g_terms(self.discriminator(fake)).mean()
            g_loss.backward()
            opt_g.step()
        for p in self.discriminator.parameters():  # no per-sample state may outlive the step
            if getattr(p, "grad_sample", None) is not None:
                p.grad_sample = None
        self._average_into(self.generator_ema, self.generator)
        return {"loss": d_loss.detach(), "d_loss": d_loss.detach(), "g_loss": g_loss.detach()}

    def private_modules(self) -> nn.Module:
        return self.discriminator

    def dp_incompatibility(self) -> str | None:
        if self.config.d_steps > 1:
            # each DP step must draw its own Poisson batch for the accountant's subsampling
            # analysis to hold; reusing one batch for several noisy steps would break it
            return f"d_steps must be 1 with DP (got {self.config.d_steps})"
        return None

    # ---------------------------------------------------------------- scores and latents
    def score(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.discriminator(x)

    def explain_target(self, x: Tensor) -> Tensor:
        """D's logit: which pixels make this image look real to the discriminator."""
        return self.discriminator(x)

    def decode(self, z: Tensor) -> Tensor:
        """Images from the averaged generator (the live one when ``ema`` is 0)."""
        return torch.sigmoid(self.generator_ema(z))

"""The generative adversarial network (Goodfellow et al. 2014), DCGAN-shaped (Radford et al. 2016).

A generator G turns noise z ~ N(0, I) into an image; a discriminator D scores how real an image
looks. Only D ever sees real data, so only D needs differential privacy: G is trained through D's
verdicts and counts as post-processing. D is therefore built from layers whose per-sample
gradients Opacus can compute (convolutions, GroupNorm, LeakyReLU, Linear) and nothing that mixes
the samples of a batch. G upsamples with ``nn.Upsample`` + ``Conv2d`` like the VAE's decoder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.errors import ConfigError
from genlab.models import register
from genlab.models.base import LatentModel
from genlab.models.vae import _downsample_sizes, _group_norm

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
    """

    latent_dim: int = 32
    channels: int = 16
    loss: str = field(default="nonsaturating", metadata={"choices": LOSSES})
    d_steps: int = 1

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


class Discriminator(nn.Module):
    """Image (B, C, H, W) in [0, 1] to one real-vs-fake logit per image, shape (B,).

    Norm: GroupNorm after each strided conv, never BatchNorm. BatchNorm normalises with statistics
    of the whole batch, so one image's output (and gradient) depends on the others: DP-SGD could
    not bound a single person's influence, and Opacus refuses it. GroupNorm normalises each image
    on its own. Spectral norm is left out too: it re-parametrises the weights in a way Opacus's
    per-sample gradient hooks do not follow.
    """

    def __init__(self, shape: tuple[int, int, int], channels: int):
        super().__init__()
        c, h, w = shape
        sizes = _downsample_sizes(h, w)
        layers: list[nn.Module] = [nn.Conv2d(c, channels, 3, padding=1), nn.LeakyReLU(0.2)]
        ch = channels
        for _ in sizes[1:]:
            layers += [
                nn.Conv2d(ch, ch * 2, 4, stride=2, padding=1),
                _group_norm(ch * 2),
                nn.LeakyReLU(0.2),
            ]
            ch *= 2
        fh, fw = sizes[-1]
        layers += [nn.Flatten(), nn.Linear(ch * fh * fw, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(2 * x - 1).squeeze(1)  # centre the pixels on 0


class Generator(nn.Module):
    """Noise (B, latent_dim) to pixel logits (B, C, H, W): the discriminator run backwards."""

    def __init__(self, shape: tuple[int, int, int], channels: int, latent_dim: int):
        super().__init__()
        c, h, w = shape
        sizes = _downsample_sizes(h, w)
        ch = channels * 2 ** (len(sizes) - 1)
        fh, fw = sizes[-1]
        self.start = (ch, fh, fw)
        self.fc = nn.Linear(latent_dim, ch * fh * fw)
        layers: list[nn.Module] = [_group_norm(ch), nn.ReLU()]
        for size in reversed(sizes[:-1]):
            layers += [
                nn.Upsample(size=size, mode="nearest"),
                nn.Conv2d(ch, ch // 2, 3, padding=1),
                _group_norm(ch // 2),
                nn.ReLU(),
            ]
            ch //= 2
        layers += [nn.Conv2d(ch, c, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(self.fc(z).view(-1, *self.start))


@register("gan", GANConfig)
class GAN(LatentModel):
    """DCGAN-style GAN; ``loss`` is the discriminator's per-sample loss in nats.

    There is no likelihood. The membership score is D's logit on the image: a discriminator that
    memorised its training images calls them "real" more confidently than unseen ones.
    """

    has_likelihood = False

    def __init__(self, config: GANConfig, *, shape: tuple[int, int, int], num_classes: int):
        super().__init__(config, shape=shape, num_classes=num_classes)
        self.latent_dim = config.latent_dim
        self.generator = Generator(shape, config.channels, config.latent_dim)
        self.discriminator = Discriminator(shape, config.channels)

    @classmethod
    def default_epochs(cls, dataset: str) -> int:
        return {"digits": 60, "mnist5k": 40, "sprites": 30}.get(dataset, 30)

    @classmethod
    def default_train_settings(cls, dataset: str) -> dict[str, Any]:
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
        return self.decode(z)

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
        # G step: D is frozen so no gradient (and no Opacus activation) is kept for it.
        self.discriminator.requires_grad_(False)
        try:
            opt_g.zero_grad(set_to_none=True)
            fake = self._fakes(len(x), x)
            g_loss = self._g_terms(self.discriminator(fake)).mean()
            g_loss.backward()
            opt_g.step()
        finally:
            self.discriminator.requires_grad_(True)
        return {"loss": d_loss.detach(), "d_loss": d_loss.detach(), "g_loss": g_loss.detach()}

    def private_modules(self) -> nn.Module:
        return self.discriminator

    # ---------------------------------------------------------------- scores and latents
    def score(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.discriminator(x)

    def explain_target(self, x: Tensor) -> Tensor:
        """D's logit: which pixels make this image look real to the discriminator."""
        return self.discriminator(x)

    def decode(self, z: Tensor) -> Tensor:
        return torch.sigmoid(self.generator(z))

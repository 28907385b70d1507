"""The hierarchical VAE: two stochastic layers, z2 -> z1 -> x, with top-down inference.

The generative model is p(z2) p(z1 | z2) p(x | z1, z2): a global code z2 (a vector) from
N(0, I); a local code z1, a small map with one Gaussian per position of the decoder's coarsest
grid (7x7 on 28x28 images), whose prior depends on z2; and the VAE's Bernoulli decoder on both.
The posterior follows the same top-down order (the ladder VAE of Sønderby et al. 2016):
q(z2 | x) from a bottom-up pass over the image, then q(z1 | x, z2) from the image's features
together with the top-down features of z2. As in NVAE (Vahdat & Kautz 2020), q(z1 | x, z2) is
parametrised *relative to* the prior p(z1 | z2) (a shift of its mean and log-variance), which
keeps the KL between them small and stable at the start of training.

**The code the pages see.** ``decode`` and ``encode`` use the code [z2, e1], where
e1 = (z1 - mu(z2)) / sigma(z2) is z1 standardised by its prior and flattened. Under the model
both halves are N(0, I), so the base class's prior sampling, interpolation and traversals in
prior standard deviations all apply, and a traversal of a z2 dim keeps e1 fixed: z1 then
follows z2 through its prior, and the image changes globally, while a traversal of an e1 dim
changes the strokes near one position of the grid. :meth:`HVAE.latent_levels` names the two
blocks, so Explore and Explain traverse each level on its own.

Like the VAE it uses GroupNorm, never BatchNorm, and upsamples with ``nn.Upsample`` + ``Conv2d``,
so Opacus can compute its per-sample gradients with its fast hooks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.errors import ConfigError
from genlab.models import register
from genlab.models.base import ELBO_LOSS, LatentLevel, LatentModel
from genlab.models.vae import ConvDecoder, ConvEncoder

LOG_2PI = math.log(2 * math.pi)


@dataclass(frozen=True)
class HVAEConfig:
    """Settings of the two-layer hierarchical VAE.

    Args:
        top_dim: dims of the top code z2, drawn from N(0, I): the global shape of an image.
        bottom_channels: channels of the bottom code z1, a map on the decoder's coarsest grid
            (7x7 on 28x28 images, so 49 dims per channel) whose prior depends on z2: the
            local details.
        beta: weight of both KL terms; 1 is the plain ELBO.
        hidden: width of the fully connected layers (bottom-up and top-down).
        channels: channels of the first conv layer, doubled at each downsampling.
    """

    top_dim: int = 16
    bottom_channels: int = 1
    beta: float = 1.0
    hidden: int = 128
    channels: int = 16

    def __post_init__(self):
        for name in ("top_dim", "bottom_channels"):
            if getattr(self, name) < 1:
                raise ConfigError(
                    f"{name} must be at least 1 (got {getattr(self, name)}); it sets the size "
                    "of that latent level"
                )
        if self.beta < 0:
            raise ConfigError(f"beta must be >= 0 (got {self.beta}); 1 is the plain ELBO")
        if self.hidden < 1 or self.channels < 1:
            raise ConfigError(
                f"hidden and channels must be at least 1 (got {self.hidden} and {self.channels})"
            )


def _gaussian_log_prob(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """log N(z; mu, exp(logvar)), summed over all but the first dim."""
    return -0.5 * ((z - mu).pow(2) / logvar.exp() + logvar + LOG_2PI).flatten(1).sum(1)


def _kl_normal(mu_q: Tensor, logvar_q: Tensor, mu_p: Tensor, logvar_p: Tensor) -> Tensor:
    """KL(N(mu_q, var_q) || N(mu_p, var_p)) in closed form, summed over all but the first dim."""
    kl = logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p).pow(2)) / logvar_p.exp() - 1.0
    return 0.5 * kl.flatten(1).sum(1)


@register("hvae", HVAEConfig)
class HVAE(LatentModel):
    """z2 -> z1 -> x with top-down inference; the loss is the negative ELBO in nats per image."""

    has_likelihood = True
    explain_target_name = "elbo"
    loss_meaning = ELBO_LOSS
    stochastic_score = True  # the ELBO draws z1 and z2

    def __init__(self, config: HVAEConfig, *, shape: tuple[int, int, int], num_classes: int):
        super().__init__(config, shape=shape, num_classes=num_classes)
        d2, k, h = config.top_dim, config.bottom_channels, config.hidden
        # bottom-up: the VAE's conv encoder; its conv stack gives the feature map F that
        # q(z1 | x, z2) reads, and its fully connected head gives q(z2 | x)
        encoder = ConvEncoder(shape, config.channels, h, 2 * d2)
        self.features, self.q_top = encoder.net[:-4], encoder.net[-4:]
        # top-down: the VAE's conv decoder; its fully connected part turns z2 into a map T on
        # the coarsest grid, and its conv stack decodes T together with z1
        decoder = ConvDecoder(shape, config.channels, h, d2)
        self.grid = decoder.start  # (channels of T, rows, columns)
        c_t, fh, fw = self.grid
        self.top_down = decoder.fc
        self.p_bottom = nn.Conv2d(c_t, 2 * k, 3, padding=1)  # p(z1 | z2) from T
        self.q_bottom = nn.Conv2d(2 * c_t, 2 * k, 3, padding=1)  # q(z1 | x, z2) from [F, T]
        first = next(i for i, m in enumerate(decoder.net) if isinstance(m, nn.Conv2d))
        conv = decoder.net[first]
        decoder.net[first] = nn.Conv2d(c_t + k, conv.out_channels, 3, padding=1)  # reads [T, z1]
        self.decoder_net = decoder.net
        self.top_dim, self.bottom_shape = d2, (k, fh, fw)
        self.latent_dim = d2 + k * fh * fw
        # Start with p(z1 | z2) = N(0, I) and q(z1 | x, z2) equal to it: training then moves
        # both away from a standard normal, as in a one-layer VAE.
        for layer in (self.p_bottom, self.q_bottom):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    @classmethod
    def default_epochs(cls, dataset: str, *, private: bool = False) -> int:
        # mnist5k: a training step costs 1.10 times the default VAE's (interleaved timing on
        # this project's CPU, 2026-12-01), so 18 epochs take about as long as the VAE's 20
        return {"digits": 30, "mnist5k": 18, "sprites": 30}.get(dataset, 30)

    @classmethod
    def default_train_settings(cls, dataset: str, *, private: bool = False) -> dict[str, Any]:
        if dataset != "mnist5k":
            return {}
        # the VAE's settings (see genlab.models.vae), so the two compare at equal budgets
        return {"batch_size": 256, "lr": 3e-3} if private else {"batch_size": 64, "lr": 2e-3}

    def latent_levels(self) -> list[LatentLevel]:
        d2 = self.top_dim
        k, fh, fw = self.bottom_shape
        # the bottom level's first channel at the centre 3x3 cells of its grid, where the
        # strokes are (its border cells sit on the empty margin of a digit)
        rows, cols = range(max(0, fh // 2 - 1), min(fh, fh // 2 + 2)), range(
            max(0, fw // 2 - 1), min(fw, fw // 2 + 2))
        centre = tuple(d2 + r * fw + c for r in rows for c in cols)
        return [
            LatentLevel("top", "top level (z2): global", 0, d2, prefix="z2_",
                        description="the global code, drawn from N(0, I)"),
            LatentLevel("bottom", "bottom level (z1): local", d2, self.latent_dim, prefix="z1_",
                        description=f"the local code, {k}×{fh}×{fw} values on a grid over the "
                                    "image (row by row), standardised by its prior p(z1 | z2)",
                        featured=centre),
        ]

    # ---------------------------------------------------------------- the two layers
    def _bottom_up(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The image's feature map F and q(z2 | x), as (F, mu2, logvar2)."""
        f = self.features(x)
        mu2, logvar2 = self.q_top(f).chunk(2, dim=1)
        return f, mu2, logvar2

    def _prior_bottom(self, z2: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The top-down map T of z2 and the prior p(z1 | z2), as (T, mu, logvar)."""
        t = self.top_down(z2).view(-1, *self.grid)
        mu, logvar = self.p_bottom(t).chunk(2, dim=1)
        return t, mu, logvar

    def _posterior_bottom(
        self, f: Tensor, t: Tensor, mu_p: Tensor, logvar_p: Tensor
    ) -> tuple[Tensor, Tensor]:
        """q(z1 | x, z2): the prior's mean and log-variance shifted by the image's evidence."""
        dmu, dlogvar = self.q_bottom(torch.cat([f, t], dim=1)).chunk(2, dim=1)
        return mu_p + dmu, logvar_p + dlogvar

    def _logits(self, t: Tensor, z1: Tensor) -> Tensor:
        return self.decoder_net(torch.cat([t, z1], dim=1))

    def _terms(self, x: Tensor, z_mode: str = "sample") -> tuple[Tensor, Tensor, Tensor]:
        """Reconstruction NLL, KL of the top and KL of the bottom layer, per sample (nats).

        The bottom KL is KL(q(z1 | x, z2) || p(z1 | z2)) at the z2 drawn from q(z2 | x): a
        one-sample estimate of its expectation over z2, exact in z1 (both are Gaussians).
        """
        f, mu2, logvar2 = self._bottom_up(x)
        sample = z_mode == "sample"
        z2 = mu2 + torch.randn_like(mu2) * (0.5 * logvar2).exp() if sample else mu2
        t, mu_p, logvar_p = self._prior_bottom(z2)
        mu1, logvar1 = self._posterior_bottom(f, t, mu_p, logvar_p)
        z1 = mu1 + torch.randn_like(mu1) * (0.5 * logvar1).exp() if sample else mu1
        logits = self._logits(t, z1)
        rec = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
        kl_top = _kl_normal(mu2, logvar2, torch.zeros_like(mu2), torch.zeros_like(mu2))
        return rec, kl_top, _kl_normal(mu1, logvar1, mu_p, logvar_p)

    def loss(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        rec, kl_top, kl_bottom = self._terms(x)
        return rec + self.config.beta * (kl_top + kl_bottom)

    def score(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Membership score: minus the training objective (the LOSS attack, as for the VAE)."""
        return -self.loss(x, y)

    def eval_loss(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """The negative ELBO with beta = 1, a bound on -log p(x), whatever beta trained it."""
        rec, kl_top, kl_bottom = self._terms(x)
        return rec + kl_top + kl_bottom

    def kl_per_level(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(KL of the top layer, KL of the bottom layer) per image, in nats, at the posterior
        means: how much each level is used. Near zero, a level carries nothing (it collapsed)."""
        _, kl_top, kl_bottom = self._terms(x, z_mode="mean")
        return kl_top, kl_bottom

    def explain_target(self, x: Tensor) -> Tensor:
        """The ELBO with both codes at their posterior means: deterministic and differentiable."""
        rec, kl_top, kl_bottom = self._terms(x, z_mode="mean")
        return -(rec + kl_top + kl_bottom)

    @torch.no_grad()
    def nll(self, x: Tensor, *, k: int = 64, generator: torch.Generator | None = None) -> Tensor:
        """The importance-weighted bound on -log p(x) (Burda et al. 2016) with ``k`` samples of
        (z2, z1) from q(z2 | x) q(z1 | x, z2); it equals the ELBO at k = 1."""
        b = len(x)
        f, mu2, logvar2 = self._bottom_up(x)
        eps2 = torch.randn((k, *mu2.shape), generator=generator).to(mu2.device, mu2.dtype)
        eps1 = torch.randn((k, b, *self.bottom_shape), generator=generator)
        z2 = (mu2 + eps2 * (0.5 * logvar2).exp()).flatten(0, 1)  # (k * B, d2)
        t, mu_p, logvar_p = self._prior_bottom(z2)
        mu1, logvar1 = self._posterior_bottom(f.repeat(k, 1, 1, 1), t, mu_p, logvar_p)
        z1 = mu1 + eps1.flatten(0, 1).to(mu1.device, mu1.dtype) * (0.5 * logvar1).exp()
        logits = self._logits(t, z1)
        xs = x.repeat(k, 1, 1, 1)
        log_px = -F.binary_cross_entropy_with_logits(logits, xs, reduction="none").flatten(1).sum(1)
        log_p = _gaussian_log_prob(z2, torch.zeros_like(z2), torch.zeros_like(z2))
        log_p = log_p + _gaussian_log_prob(z1, mu_p, logvar_p)
        log_q = _gaussian_log_prob(z2, mu2.repeat(k, 1), logvar2.repeat(k, 1))
        log_q = log_q + _gaussian_log_prob(z1, mu1, logvar1)
        log_w = (log_px + log_p - log_q).view(k, b)
        return -(torch.logsumexp(log_w, dim=0) - math.log(k))

    # ---------------------------------------------------------------- latent interface
    def encode(self, x: Tensor) -> Tensor:
        """[posterior mean of z2, posterior mean of z1 standardised by p(z1 | z2), flattened]:
        the code ``decode`` maps back to the reconstruction (see the module docstring)."""
        f, mu2, _ = self._bottom_up(x)
        t, mu_p, logvar_p = self._prior_bottom(mu2)
        mu1, _ = self._posterior_bottom(f, t, mu_p, logvar_p)
        return torch.cat([mu2, ((mu1 - mu_p) * (-0.5 * logvar_p).exp()).flatten(1)], dim=1)

    def decode(self, z: Tensor) -> Tensor:
        """Codes [z2, e1] (B, latent_dim) to images: z1 = mu(z2) + sigma(z2) * e1."""
        z2, e1 = z[:, : self.top_dim], z[:, self.top_dim :].reshape(-1, *self.bottom_shape)
        t, mu_p, logvar_p = self._prior_bottom(z2)
        return torch.sigmoid(self._logits(t, mu_p + e1 * (0.5 * logvar_p).exp()))

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

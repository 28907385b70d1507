"""The hierarchical VAE: two stochastic layers, z2 -> z1 -> x, with top-down inference.

The generative model is p(z2) p(z1 | z2) p(x | z1, z2): a global code z2 from N(0, I), a
local code z1 whose Gaussian prior depends on z2, and the VAE's Bernoulli decoder on both. The
posterior follows the same top-down order (the ladder VAE of Sønderby et al. 2016): q(z2 | x)
from a bottom-up pass over the image, then q(z1 | x, z2) from the image's features together with
the top-down features of z2. As in NVAE (Vahdat & Kautz 2020), q(z1 | x, z2) is parametrised
*relative to* the prior p(z1 | z2) (a shift of its mean and log-variance), which keeps the KL
between them small and stable at the start of training.

**The code the pages see.** ``decode`` and ``encode`` use the code [z2, e1], where
e1 = (z1 - mu(z2)) / sigma(z2) is z1 standardised by its prior. Under the model both halves
are N(0, I), so the base class's prior sampling, interpolation and traversals in prior standard
deviations all apply, and a traversal of a z2 dim keeps e1 fixed: z1 then follows z2 through
its prior, and the image changes globally, while a traversal of an e1 dim changes one local
detail. :meth:`HVAE.latent_levels` names the two blocks, so Explore and Explain traverse each
level on its own.

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
from genlab.models.base import LatentLevel, LatentModel
from genlab.models.vae import ConvDecoder, ConvEncoder

LOG_2PI = math.log(2 * math.pi)


@dataclass(frozen=True)
class HVAEConfig:
    """Settings of the two-layer hierarchical VAE.

    Args:
        top_dim: dims of the top code z2, drawn from N(0, I): the global shape of an image.
        bottom_dim: dims of the bottom code z1, whose prior depends on z2: the local details.
        beta: weight of both KL terms; 1 is the plain ELBO.
        hidden: width of the fully connected layers (bottom-up, top-down and posterior).
        channels: channels of the first conv layer, doubled at each downsampling.
    """

    top_dim: int = 8
    bottom_dim: int = 16
    beta: float = 1.0
    hidden: int = 128
    channels: int = 16

    def __post_init__(self):
        for name in ("top_dim", "bottom_dim"):
            if getattr(self, name) < 1:
                raise ConfigError(
                    f"{name} must be at least 1 (got {getattr(self, name)}); it is the number "
                    "of dims of that latent level"
                )
        if self.beta < 0:
            raise ConfigError(f"beta must be >= 0 (got {self.beta}); 1 is the plain ELBO")
        if self.hidden < 1 or self.channels < 1:
            raise ConfigError(
                f"hidden and channels must be at least 1 (got {self.hidden} and {self.channels})"
            )


def _gaussian_log_prob(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """log N(z; mu, exp(logvar)), summed over the last dim."""
    return -0.5 * ((z - mu).pow(2) / logvar.exp() + logvar + LOG_2PI).sum(-1)


@register("hvae", HVAEConfig)
class HVAE(LatentModel):
    """z2 -> z1 -> x with top-down inference; the loss is the negative ELBO in nats per image."""

    has_likelihood = True
    explain_target_name = "elbo"
    stochastic_score = True  # the ELBO draws z1 and z2

    def __init__(self, config: HVAEConfig, *, shape: tuple[int, int, int], num_classes: int):
        super().__init__(config, shape=shape, num_classes=num_classes)
        d2, d1, h = config.top_dim, config.bottom_dim, config.hidden
        self.top_dim, self.bottom_dim = d2, d1
        self.latent_dim = d2 + d1
        # bottom-up: image -> features h1 (for z1) -> features h2 (for z2)
        self.trunk = ConvEncoder(shape, config.channels, h, h)
        self.up = nn.Sequential(nn.SiLU(), nn.Linear(h, h), nn.SiLU())
        self.q_top = nn.Linear(h, 2 * d2)
        # top-down: z2 -> features t -> the prior p(z1 | z2) and, with h1, q(z1 | x, z2)
        self.down = nn.Sequential(nn.Linear(d2, h), nn.SiLU())
        self.p_bottom = nn.Linear(h, 2 * d1)
        self.q_bottom = nn.Sequential(nn.Linear(2 * h, h), nn.SiLU(), nn.Linear(h, 2 * d1))
        self.decoder_net = ConvDecoder(shape, config.channels, h, d2 + d1)
        # Start with p(z1 | z2) = N(0, I) and q(z1 | x, z2) equal to it: training then moves
        # both away from a standard normal, as in a one-layer VAE.
        for layer in (self.p_bottom, self.q_bottom[-1]):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    @classmethod
    def default_epochs(cls, dataset: str, *, private: bool = False) -> int:
        # mnist5k: 18 epochs take about as long as the VAE's 20 (each costs ~10% more)
        return {"digits": 30, "mnist5k": 18, "sprites": 30}.get(dataset, 30)

    @classmethod
    def default_train_settings(cls, dataset: str, *, private: bool = False) -> dict[str, Any]:
        if dataset != "mnist5k":
            return {}
        # the VAE's settings (see genlab.models.vae), so the two compare at equal budgets
        return {"batch_size": 256, "lr": 3e-3} if private else {"batch_size": 64, "lr": 2e-3}

    def latent_levels(self) -> list[LatentLevel]:
        d2 = self.top_dim
        return [
            LatentLevel("top", "top level (z2): global", 0, d2, prefix="z2_",
                        description="the global code, drawn from N(0, I)"),
            LatentLevel("bottom", "bottom level (z1): local", d2, self.latent_dim, prefix="z1_",
                        description="the local code, standardised by its prior p(z1 | z2)"),
        ]

    # ---------------------------------------------------------------- the two layers
    def _bottom_up(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The image's features h1 and q(z2 | x) as (h1, mu2, logvar2)."""
        h1 = self.trunk(x)
        mu2, logvar2 = self.q_top(self.up(h1)).chunk(2, dim=1)
        return F.silu(h1), mu2, logvar2

    def _prior_bottom(self, z2: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Top-down features t of z2 and the prior p(z1 | z2) as (t, mu, logvar)."""
        t = self.down(z2)
        mu, logvar = self.p_bottom(t).chunk(2, dim=1)
        return t, mu, logvar

    def _posterior_bottom(
        self, h1: Tensor, t: Tensor, mu_p: Tensor, logvar_p: Tensor
    ) -> tuple[Tensor, Tensor]:
        """q(z1 | x, z2): the prior's mean and log-variance shifted by the image's evidence."""
        dmu, dlogvar = self.q_bottom(torch.cat([h1, t], dim=1)).chunk(2, dim=1)
        return mu_p + dmu, logvar_p + dlogvar

    def _terms(self, x: Tensor, z_mode: str = "sample") -> tuple[Tensor, Tensor, Tensor]:
        """Reconstruction NLL, KL of the top and KL of the bottom layer, per sample (nats).

        The bottom KL is KL(q(z1 | x, z2) || p(z1 | z2)) at the z2 drawn from q(z2 | x): a
        one-sample estimate of its expectation over z2, exact in z1 (both are Gaussians).
        """
        h1, mu2, logvar2 = self._bottom_up(x)
        sample = z_mode == "sample"
        z2 = mu2 + torch.randn_like(mu2) * (0.5 * logvar2).exp() if sample else mu2
        t, mu_p, logvar_p = self._prior_bottom(z2)
        mu1, logvar1 = self._posterior_bottom(h1, t, mu_p, logvar_p)
        z1 = mu1 + torch.randn_like(mu1) * (0.5 * logvar1).exp() if sample else mu1
        logits = self.decoder_net(torch.cat([z2, z1], dim=1))
        rec = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
        kl_top = 0.5 * (mu2.pow(2) + logvar2.exp() - 1.0 - logvar2).sum(1)
        kl_bottom = 0.5 * (
            logvar_p - logvar1 + (logvar1.exp() + (mu1 - mu_p).pow(2)) / logvar_p.exp() - 1.0
        ).sum(1)
        return rec, kl_top, kl_bottom

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
        """(KL of the top layer, KL of the bottom layer) per image, in nats: how much each
        level is used. A level whose KL is near zero carries no information (it collapsed)."""
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
        h1, mu2, logvar2 = self._bottom_up(x)
        eps2 = torch.randn((k, *mu2.shape), generator=generator).to(mu2.device, mu2.dtype)
        eps1 = torch.randn((k, b, self.bottom_dim), generator=generator).to(mu2.device, mu2.dtype)
        z2 = (mu2 + eps2 * (0.5 * logvar2).exp()).flatten(0, 1)  # (k * B, d2)
        t, mu_p, logvar_p = self._prior_bottom(z2)
        mu1, logvar1 = self._posterior_bottom(h1.repeat(k, 1), t, mu_p, logvar_p)
        z1 = mu1 + eps1.flatten(0, 1) * (0.5 * logvar1).exp()
        logits = self.decoder_net(torch.cat([z2, z1], dim=1))
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
        """[posterior mean of z2, posterior mean of z1 standardised by p(z1 | z2)]: the code
        ``decode`` maps back to the reconstruction (see the module docstring)."""
        h1, mu2, _ = self._bottom_up(x)
        t, mu_p, logvar_p = self._prior_bottom(mu2)
        mu1, _ = self._posterior_bottom(h1, t, mu_p, logvar_p)
        return torch.cat([mu2, (mu1 - mu_p) * (-0.5 * logvar_p).exp()], dim=1)

    def decode(self, z: Tensor) -> Tensor:
        """Codes [z2, e1] (B, top_dim + bottom_dim) to images: z1 = mu(z2) + sigma(z2) * e1."""
        z2, e1 = z[:, : self.top_dim], z[:, self.top_dim :]
        _, mu_p, logvar_p = self._prior_bottom(z2)
        z1 = mu_p + e1 * (0.5 * logvar_p).exp()
        return torch.sigmoid(self.decoder_net(torch.cat([z2, z1], dim=1)))

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

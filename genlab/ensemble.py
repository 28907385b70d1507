"""A sampling ensemble: a uniform mixture over trained models of one family (``genlab fuse
--method ensemble``).

It follows the model contract like a registered family, so the evaluators, the audit and the
pages use it unchanged, but it is not in the registry: it is made from runs, never trained.

- ``sample(n)`` draws, for each image, a member uniformly at random, then the image from that
  member: exactly a draw from the mixture p(x) = (1/K) Σ_k p_k(x).
- ``score``, ``explain_target``, ``eval_loss`` and ``nll`` combine the members' values. For a
  family whose scores are log-likelihoods or bounds on them (``has_likelihood``: the VAEs'
  negative ELBO, PixelCNN's and the mixture's exact log-likelihood) the combination is the
  **log-mean-exp**, log (1/K) Σ_k exp(s_k): the mixture's own log-likelihood, or, from ELBOs, a
  lower bound on it (Σ_k e^{ELBO_k} ≤ Σ_k p_k(x)). It is what the mixture's likelihood attack
  sees: an image one member memorised keeps a high score, minus log K. For other families (the
  GAN's discriminator logit, which is no likelihood) it is the plain **mean**.
- It has no single latent space (each member has its own), so no traversals and no MIG.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from genlab.models.base import GenerativeModel, ProgressFn

COMBINES = ("logmeanexp", "mean")


@dataclass(frozen=True)
class EnsembleConfig:
    """What an ensemble is made of.

    Args:
        members: how many models it mixes, with equal weight.
        member_model: their registered family.
        combine: how member scores combine: ``logmeanexp`` or ``mean`` (module docstring).
    """

    members: int
    member_model: str
    combine: str


class Ensemble(GenerativeModel):
    """A uniform mixture of ``members`` (same family, same config, same data shape)."""

    name = "ensemble"

    def __init__(self, members: list[GenerativeModel]):
        first = members[0]
        combine = "logmeanexp" if first.has_likelihood else "mean"
        super().__init__(EnsembleConfig(len(members), first.name, combine), shape=first.shape,
                         num_classes=first.num_classes)
        self.members = nn.ModuleList(members)
        # instance attributes shadow the contract's class-level flags with the members' own
        self.has_likelihood = first.has_likelihood
        self.conditional = first.conditional
        self.stochastic_score = any(m.stochastic_score for m in members)
        self.explain_target_name = first.explain_target_name

    def _combine(self, values: list[Tensor]) -> Tensor:
        stacked = torch.stack(values)  # (K, B)
        if self.config.combine == "logmeanexp":
            return torch.logsumexp(stacked, dim=0) - math.log(len(values))
        return stacked.mean(dim=0)

    def _choose(self, n: int, generator: torch.Generator | None) -> Tensor:
        return torch.randint(len(self.members), (n,), generator=generator)

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None,
               progress: ProgressFn | None = None) -> Tensor:
        """``n`` images, each from a member chosen uniformly at random (seeded by ``generator``)."""
        which = self._choose(n, generator)
        out = torch.empty(n, *self.shape, device=self.device)
        for k, member in enumerate(self.members):
            rows = (which == k).nonzero().squeeze(1)
            if len(rows):
                out[rows.to(out.device)] = member.sample(len(rows), generator=generator).to(out)
            if progress is not None:
                progress(k + 1, len(self.members))
        return out

    @torch.no_grad()
    def sample_with_labels(self, n: int, *, generator: torch.Generator | None = None,
                           labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Conditional members only: images and their classes, each from a random member."""
        if not self.conditional:
            return super().sample_with_labels(n, generator=generator, labels=labels)
        if labels is None:
            labels = torch.randint(self.num_classes, (n,), generator=generator)
        which = self._choose(n, generator)
        out = torch.empty(n, *self.shape, device=self.device)
        for k, member in enumerate(self.members):
            rows = (which == k).nonzero().squeeze(1)
            if len(rows):
                x, _ = member.sample_with_labels(len(rows), generator=generator,
                                                 labels=labels[rows])
                out[rows.to(out.device)] = x.to(out)
        return out, labels.to(out.device)

    def infer_labels(self, x: Tensor) -> Tensor:
        """Conditional members: the class the first member finds most likely."""
        return self.members[0].infer_labels(x)

    def loss(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return torch.stack([m.loss(x, y) for m in self.members]).mean(dim=0)

    def eval_loss(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        if self.config.combine == "logmeanexp":  # the mixture's negative log-likelihood bound
            return -self._combine([-m.eval_loss(x, y) for m in self.members])
        return torch.stack([m.eval_loss(x, y) for m in self.members]).mean(dim=0)

    def score(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self._combine([m.score(x, y) for m in self.members])

    def nll(self, x: Tensor, *, k: int = 1, generator: torch.Generator | None = None) -> Tensor:
        return -self._combine([-m.nll(x, k=k, generator=generator) for m in self.members])

    def explain_context(self, x: Tensor) -> tuple[Tensor, ...]:
        return self.members[0].explain_context(x)  # one family: the same function of x

    def explain_target(self, x: Tensor, *context: Tensor) -> Tensor:
        return self._combine([m.explain_target(x, *context) for m in self.members])

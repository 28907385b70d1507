"""The model contract every generative family implements (see DESIGN.md, "The model contract").

A model is an ``nn.Module`` built from its frozen config dataclass plus the data's shape and number
of classes. The Trainer, the privacy wrapper, the evaluators and the pages talk to models only
through the methods below, so none of them needs code per family.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

ProgressFn = Callable[[int, int], None]  # (done, total)
# What the train and test loss measure (``loss_meaning``), shared by the families they fit.
ELBO_LOSS = ("The negative ELBO on the test split, weighted by beta as in training, in nats per "
             "image: an upper bound on -log p(x) when beta is 1. Lower is better.")
NLL_LOSS = "The exact -log p(x) on the test split, in nats per image; lower is better."


class GenerativeModel(nn.Module):
    """Base class of every registered model.

    Subclasses must implement :meth:`loss` and :meth:`sample`; the rest has sensible defaults.
    Images are float tensors in [0, 1] shaped (B, C, H, W); losses are in nats per image.
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type] = object
    has_latent: ClassVar[bool] = False
    has_likelihood: ClassVar[bool] = False
    conditional: ClassVar[bool] = False
    stochastic_score: ClassVar[bool] = False  # score() draws noise; the audit averages draws
    explain_target_name: ClassVar[str] = "default"  # what explain_target is: elbo, logit, loglik
    # What the train and test loss (eval_loss) measure, for the pages' help on those figures.
    loss_meaning: ClassVar[str] = "The model's own loss on the test split; lower is better."
    loss_unit: ClassVar[str] = "nats/image"  # the unit printed beside a train or test loss

    def __init__(self, config: Any, *, shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        self.config = config
        self.shape = tuple(shape)
        self.num_classes = num_classes

    # ------------------------------------------------------------------ defaults per dataset
    @classmethod
    def default_epochs(cls, dataset: str, *, private: bool = False) -> int:
        """Epochs used when the user gives none; a family tunes these to its own speed.

        ``private`` asks for the DP-SGD default, which may differ (see
        :meth:`default_train_settings`).
        """
        return 30

    @classmethod
    def default_train_settings(cls, dataset: str, *, private: bool = False) -> dict[str, Any]:
        """Training settings (``batch_size``, ``lr``) a family prefers; the user can override.

        With ``private`` (a DP-SGD run) a family may ask for larger batches. DP-SGD adds noise of
        standard deviation sigma*C/B to each coordinate of the mean clipped gradient, and at a
        fixed epsilon sigma grows much more slowly than the batch size B, so larger batches raise
        the signal-to-noise ratio (De et al. 2022, "Unlocking high-accuracy differentially private
        image classification through scale", train with batches of 4,096). The architecture never
        changes with ``private``: a sweep over epsilon compares the same network.
        """
        return {}

    # ------------------------------------------------------------------ training
    def loss(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """The per-sample training loss, shape (B,). DP clipping needs per-sample values."""
        raise NotImplementedError

    def eval_loss(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """The per-sample loss reported as train/test loss (defaults to :meth:`loss`)."""
        return self.loss(x, y)

    def configure_optimizers(self, lr: float) -> list[torch.optim.Optimizer]:
        return [torch.optim.Adam(self.parameters(), lr=lr)]

    def train_step(
        self, x: Tensor, y: Tensor | None, optimizers: list[torch.optim.Optimizer]
    ) -> dict[str, Tensor]:
        """One update; returns detached scalars (not floats, so the GPU is never synced here).

        Families whose update is more than one loss (the GAN) override this.
        """
        (opt,) = optimizers
        opt.zero_grad(set_to_none=True)
        loss = self.loss(x, y).mean()
        loss.backward()
        opt.step()
        return {"loss": loss.detach()}

    def training_counters(self) -> dict[str, int]:
        """Counters ``train_step`` keeps outside the weights; a resume checkpoint saves them."""
        return {}

    def load_training_counters(self, counters: dict[str, int]) -> None:
        """Restore :meth:`training_counters` when a run resumes from a checkpoint."""

    def private_modules(self) -> nn.Module:
        """The submodules that see real data and so need DP (the whole model by default)."""
        return self

    def dp_incompatibility(self) -> str | None:
        """Why this configuration cannot train with DP-SGD, or ``None`` when it can."""
        return None

    # ------------------------------------------------------------------ generation and scores
    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        progress: ProgressFn | None = None,
    ) -> Tensor:
        """``n`` images in [0, 1], shape (n, C, H, W); reproducible for a seeded generator.

        Slow samplers (PixelCNN) call ``progress(done, total)`` as they go, so pages can show a
        progress bar; one-shot samplers may ignore it.
        """
        raise NotImplementedError

    def sample_with_labels(
        self, n: int, *, generator: torch.Generator | None = None, labels: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Conditional models only: images and the class each was generated for (for CAS)."""
        raise NotImplementedError(f"model {self.name!r} is not class-conditional")

    def private_loss(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Per-sample loss whose gradient reaches :meth:`private_modules` from real data.

        DP-SGD clips the gradient of this, sample by sample. It is the training loss for models
        that train one network; the GAN overrides it with its discriminator loss.
        """
        return self.loss(x, y)

    def nll(self, x: Tensor, *, k: int = 1, generator: torch.Generator | None = None) -> Tensor:
        """Per-sample negative log-likelihood in nats (or an upper bound on it, using ``k``
        importance samples where the likelihood is not exact); only for ``has_likelihood``."""
        raise NotImplementedError(f"model {self.name!r} has no likelihood")

    def score(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Membership score per sample: higher means "looks more like a training member"."""
        return -self.eval_loss(x, y)

    def explain_target(self, x: Tensor) -> Tensor:
        """One differentiable, deterministic scalar per sample, the default target for Captum."""
        raise NotImplementedError

    def explain_context(self, x: Tensor) -> tuple[Tensor, ...]:
        """Tensors that :meth:`explain_target` holds fixed while ``x`` is attributed (none here).

        They are passed back as ``explain_target(x, *context)``. A family whose target is not
        continuous in ``x`` (the PixelCNN conditioning on thresholded pixels) fixes that part
        at the explained image, so the target is smooth along an attribution path.
        """
        return ()

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


@dataclass(frozen=True)
class LatentLevel:
    """One level of a latent hierarchy: a named, contiguous block ``start:stop`` of the code.

    Attributes:
        key: a short identifier, unique within the model (``z``, ``top``, ``bottom``).
        title: a heading for pages, e.g. ``top level (z2): global``.
        start: the first dim of the block in the code ``decode`` takes.
        stop: one past the block's last dim.
        prefix: the row label of dim ``start + j`` is ``f"{prefix}{j}"`` (``z3``, ``z2_0``).
        description: one sentence on what the level holds, for captions.
        featured: the dims pages show first (absolute, in order); empty means the first 8.
    """

    key: str
    title: str
    start: int
    stop: int
    prefix: str = "z"
    description: str = ""
    featured: tuple[int, ...] = ()

    @property
    def dims(self) -> range:
        return range(self.start, self.stop)

    @property
    def shown_first(self) -> list[int]:
        """The dims a page traverses before the user picks any."""
        return list(self.featured) or list(self.dims)[:8]

    def label(self, dim: int) -> str:
        """The row label of absolute latent dim ``dim`` (which must lie in this level)."""
        return f"{self.prefix}{dim - self.start}"


class LatentModel(GenerativeModel):
    """A model with a latent space: traversals, interpolation and latent maps work for it."""

    has_latent: ClassVar[bool] = True
    latent_dim: int

    def latent_levels(self) -> list[LatentLevel]:
        """The levels of the code, top first, which together cover dims 0..latent_dim-1 in order.

        One level by default; a hierarchical model (the HVAE) returns one per stochastic layer, so
        the pages can traverse each level on its own without any code per family.
        """
        return [LatentLevel("z", "latent", 0, self.latent_dim)]

    def decode(self, z: Tensor) -> Tensor:
        """Latent codes (B, latent_dim) to images in [0, 1]."""
        raise NotImplementedError

    def encode(self, x: Tensor) -> Tensor:
        """Images to latent codes (B, latent_dim): the posterior mean where there is an encoder."""
        raise NotImplementedError

    def prior_sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        return torch.randn(n, self.latent_dim, generator=generator).to(self.device)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        progress: ProgressFn | None = None,
    ) -> Tensor:
        return self.decode(self.prior_sample(n, generator=generator))

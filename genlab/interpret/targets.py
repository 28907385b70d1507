"""Explanation targets: the one scalar per sample that an attribution explains.

A target is named by a short spec (the CLI's ``--target``, the Explain page's choice):

============================  ==========================  =========================  ==========
spec                          models                      the scalar                 attributed
============================  ==========================  =========================  ==========
``default``                   every model                 its ``explain_target``     pixels
``elbo`` / ``logit`` /        the family whose default    the same                   pixels
``loglik``                    it names
``latent:k``                  models with an encoder      posterior mean of dim k    pixels
``decoder:R``,                latent models               mean decoded intensity     z
``generator:R``                                           in region R
``component:k``               the mixture                 responsibility p(k | x)    pixels
============================  ==========================  =========================  ==========

A region R is ``center`` (the middle half on both axes), ``top``, ``bottom``, ``left``,
``right`` (halves), ``all``, or explicit rows and columns ``r0:r1,c0:c1`` (half-open).
``decoder`` and ``generator`` are two names for the same target.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from genlab.errors import ConfigError
from genlab.interpret.latent import dim_labels, has_encoder, latent_levels
from genlab.models.base import GenerativeModel

REGIONS = ("center", "top", "bottom", "left", "right", "all")
_REGION_HELP = "center, top, bottom, left, right, all, or r0:r1,c0:c1"
_SLICES = re.compile(r"^(\d+):(\d+),(\d+):(\d+)$")

Context = tuple[Tensor, ...]


@dataclass(frozen=True)
class Target:
    """A parsed target, bound to one model.

    Attributes:
        spec: the canonical spec, e.g. ``latent:3`` or ``decoder:7:21,7:21``.
        space: ``pixels`` (attributions shaped like the images) or ``latent`` (like z).
        description: one line for captions.
        forward: ``forward(inputs, *context) -> (B,)``, differentiable in ``inputs``.
        prepare: images (or, for latent targets, codes) to ``(inputs, context)``: what is
            attributed, and the tensors held fixed meanwhile (the CVAE's labels, the
            PixelCNN's conditioning image).
        region: ``(r0, r1, c0, c1)`` of a decoder target, for drawing it.
    """

    spec: str
    space: str
    description: str
    forward: Callable[..., Tensor]
    prepare: Callable[[Tensor], tuple[Tensor, Context]]
    region: tuple[int, int, int, int] | None = None

    def values(self, x: Tensor) -> Tensor:
        """The target of images (or codes) ``x``, as the model computes it: shape (B,)."""
        inputs, context = self.prepare(x)
        return self.forward(inputs, *context)


def target_names(model: GenerativeModel) -> list[str]:
    """The target specs ``model`` accepts, as usage strings (``latent:K`` with K's range)."""
    names = ["default"]
    if model.explain_target_name != "default":
        names.append(model.explain_target_name)
    if has_encoder(model):
        names.append(f"latent:K (K = 0–{model.latent_dim - 1})")
    if model.has_latent:
        word = "decoder" if has_encoder(model) else "generator"
        names.append(f"{word}:REGION (REGION = {_REGION_HELP})")
    if _components(model):
        names.append(f"component:K (K = 0–{_components(model) - 1})")
    return names


def parse_target(model: GenerativeModel, spec: str) -> Target:
    """Parse ``spec`` for ``model``.

    Raises:
        ConfigError: an unknown name, an index out of range, or a target the model lacks
            (e.g. ``latent:3`` on a model without an encoder); the message lists valid ones.
    """
    spec = str(spec).strip()
    name, _, arg = spec.partition(":")
    if name in ("default", model.explain_target_name) and not arg:
        return _default(model)
    if name == "latent":
        if not has_encoder(model):
            _lacks(model, spec, "an encoder")
        k = _index(spec, arg, model.latent_dim, "latent dims")
        return _latent(model, k)
    if name in ("decoder", "generator"):
        if not model.has_latent:
            _lacks(model, spec, "a latent space and a decoder")
        return _decoder(model, name, arg)
    if name == "component":
        if not _components(model):
            _lacks(model, spec, "mixture components")
        return _component(model, _index(spec, arg, _components(model), "components"))
    raise ConfigError(
        f"unknown target {spec!r} for the {model.name}; valid targets: "
        f"{', '.join(target_names(model))}"
    )


# ----------------------------------------------------------------------------- helpers
def _components(model: GenerativeModel) -> int:
    """Number of mixture components (0 for models that are not mixtures)."""
    if not hasattr(model, "responsibilities"):
        return 0
    return int(getattr(model.config, "components", 0))


def _lacks(model: GenerativeModel, spec: str, what: str):
    raise ConfigError(
        f"{spec} needs a model with {what}; the {model.name} has none "
        f"(its targets: {', '.join(target_names(model))})"
    )


def _index(spec: str, arg: str, count: int, what: str) -> int:
    if not re.fullmatch(r"\d+", arg):
        raise ConfigError(f"{spec}: the index must be a whole number, e.g. {spec.split(':')[0]}:3")
    k = int(arg)
    if k >= count:
        raise ConfigError(f"{spec} is out of range; this model has {count} {what} (0–{count - 1})")
    return k


def _check_images(model: GenerativeModel, x: Tensor) -> Tensor:
    if x.dim() != 4 or tuple(x.shape[1:]) != tuple(model.shape):
        raise ConfigError(
            f"the {model.name} explains images of shape (B, {', '.join(map(str, model.shape))}); "
            f"got {tuple(x.shape)}"
        )
    return x.to(model.device, torch.float32)


def _labels(model: GenerativeModel, x: Tensor) -> Context:
    """A class-conditional model's own guess of each image's class, held fixed (else none)."""
    return (model.infer_labels(x),) if model.conditional else ()


def _pixel_target(model, spec, description, forward, context_of) -> Target:
    def prepare(x: Tensor) -> tuple[Tensor, Context]:
        x = _check_images(model, x)
        with torch.no_grad():
            return x, tuple(c.detach() for c in context_of(x))

    return Target(spec, "pixels", description, forward, prepare)


def _default(model: GenerativeModel) -> Target:
    name = model.explain_target_name
    return _pixel_target(
        model,
        name,
        f"{name}: the {model.name}'s default target",
        lambda x, *context: model.explain_target(x, *context),
        model.explain_context,
    )


def _latent(model: GenerativeModel, k: int) -> Target:
    levels = latent_levels(model)
    level = next(lv for lv in levels if k in lv.dims)
    where = f" ({dim_labels(model, [k])[0]}, {level.title})" if len(levels) > 1 else ""
    return _pixel_target(
        model,
        f"latent:{k}",
        f"latent:{k}: the posterior mean of latent dim {k}{where}",
        lambda x, *labels: model.encode(x, *labels)[:, k],
        lambda x: _labels(model, x),
    )


def _component(model: GenerativeModel, k: int) -> Target:
    return _pixel_target(
        model,
        f"component:{k}",
        f"component:{k}: the responsibility p({k} | x) of mixture component {k}",
        lambda x: model.responsibilities(x)[:, k],
        lambda x: (),
    )


def parse_region(arg: str, shape: tuple[int, int, int], spec: str) -> tuple[int, int, int, int]:
    """``(r0, r1, c0, c1)``, half-open, for a region name or ``r0:r1,c0:c1``."""
    _, h, w = shape
    named = {
        "center": (h // 4, h - h // 4, w // 4, w - w // 4),
        "top": (0, h // 2, 0, w),
        "bottom": (h // 2, h, 0, w),
        "left": (0, h, 0, w // 2),
        "right": (0, h, w // 2, w),
        "all": (0, h, 0, w),
    }
    if arg in named:
        return named[arg]
    m = _SLICES.match(arg.replace(" ", ""))
    if m:
        r0, r1, c0, c1 = map(int, m.groups())
        if r0 < r1 <= h and c0 < c1 <= w:
            return r0, r1, c0, c1
    raise ConfigError(
        f"{spec}: unknown region {arg!r}; use {_REGION_HELP} within {h}×{w} (rows, then columns)"
    )


def _decoder(model: GenerativeModel, name: str, arg: str) -> Target:
    spec = f"{name}:{arg}"
    r0, r1, c0, c1 = parse_region(arg, model.shape, spec)

    def forward(z: Tensor, *labels: Tensor) -> Tensor:
        return model.decode(z, *labels)[:, :, r0:r1, c0:c1].mean(dim=(1, 2, 3))

    def prepare(x: Tensor) -> tuple[Tensor, Context]:
        with torch.no_grad():
            if x.dim() == 2 and x.shape[1] == model.latent_dim:  # codes
                z = x.to(model.device, torch.float32)
                labels = (model.classes_of_codes(z),) if model.conditional else ()
                return z, labels
            if not has_encoder(model):
                raise ConfigError(
                    f"the {model.name} has no encoder, so {spec} explains latent codes: give "
                    f"codes of shape (B, {model.latent_dim}), not images"
                )
            x = _check_images(model, x)
            labels = _labels(model, x)
            return model.encode(x, *labels), labels

    return Target(
        spec,
        "latent",
        f"{spec}: which latent dims drive the mean intensity of rows {r0}–{r1 - 1}, "
        f"columns {c0}–{c1 - 1}",
        forward,
        prepare,
        region=(r0, r1, c0, c1),
    )

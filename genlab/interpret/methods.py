"""The attribution methods: a registry of Captum's methods, each with Captum's one call shape.

Each entry runs ``Method(forward).attribute(inputs, ...)`` on a target's forward function (an
``nn.Module``, see :class:`genlab.interpret.attribution.TargetModule`) and returns
``(attributions, convergence delta or None)``. The baseline, where a method takes one, is zero:
a black image in pixel space, the prior's mean in latent space.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
from captum.attr import (
    DeepLift,
    GradientShap,
    IntegratedGradients,
    NoiseTunnel,
    Occlusion,
    Saliency,
)
from torch import Tensor

from genlab.errors import ConfigError
from genlab.interpret.targets import Context


def _args(context: Context) -> tuple | None:
    return tuple(context) if context else None


def integrated_gradients(f, inputs, context, *, n_steps: int = 32, internal_batch_size: int = 128):
    """Integrated Gradients (Sundararajan et al. 2017), Gauss-Legendre steps; returns its
    convergence delta, sum(attributions) - (f(x) - f(baseline)), per sample."""
    if n_steps < 1:
        raise ConfigError(f"ig needs at least 1 step (got n_steps={n_steps}); 32 is usual")
    return IntegratedGradients(f).attribute(
        inputs,
        baselines=torch.zeros_like(inputs),
        additional_forward_args=_args(context),
        n_steps=n_steps,
        internal_batch_size=max(internal_batch_size, len(inputs)),
        return_convergence_delta=True,
    )


def _saliency(f, inputs, context, *, abs: bool = True):
    """The gradient (Simonyan et al. 2014); its absolute value by default, as in Captum."""
    return Saliency(f).attribute(inputs, additional_forward_args=_args(context), abs=abs), None


def _gradshap(f, inputs, context, *, n_samples: int = 16, n_baselines: int = 8):
    """GradientShap (Lundberg & Lee 2017): expected gradients between random baselines
    (black plus uniform-noise images in pixel space, prior draws in latent space) and x."""
    shape = (n_baselines - 1, *inputs.shape[1:])
    noise = torch.rand(shape) if inputs.dim() > 2 else torch.randn(shape)
    baselines = torch.cat([torch.zeros(1, *inputs.shape[1:]), noise]).to(inputs)
    attr = GradientShap(f).attribute(
        inputs, baselines=baselines, n_samples=n_samples, additional_forward_args=_args(context)
    )
    return attr, None


def _deeplift(f, inputs, context):
    """DeepLift (Shrikumar et al. 2017) against the zero baseline."""
    attr = DeepLift(f).attribute(
        inputs, baselines=torch.zeros_like(inputs), additional_forward_args=_args(context)
    )
    return attr, None


def _occlusion(f, inputs, context, *, window: int | None = None, stride: int | None = None):
    """Occlusion (Zeiler & Fergus 2014): the target's drop when a square patch (or, in latent
    space, one dim) is set to zero; the patch is about a seventh of the image side."""
    if inputs.dim() == 2:
        shapes, strides = (1,), 1
    else:
        c, h, _ = inputs.shape[1:]
        window = window or max(1, round(h / 7))
        stride = stride or max(1, window // 2)
        shapes, strides = (c, window, window), (c, stride, stride)
    attr = Occlusion(f).attribute(
        inputs,
        sliding_window_shapes=shapes,
        strides=strides,
        baselines=0.0,
        additional_forward_args=_args(context),
        perturbations_per_eval=8,
    )
    return attr, None


def _smoothgrad(f, inputs, context, *, nt_samples: int = 16, stdev: float = 0.1):
    """SmoothGrad (Smilkov et al. 2017) via NoiseTunnel: the signed gradient averaged over
    copies of x with Gaussian noise of ``stdev`` (pixels span [0, 1], z about [-3, 3])."""
    attr = NoiseTunnel(Saliency(f)).attribute(
        inputs,
        nt_type="smoothgrad",
        nt_samples=nt_samples,
        stdevs=stdev,
        additional_forward_args=_args(context),
        abs=False,
    )
    return attr, None


@dataclass(frozen=True)
class Method:
    """One attribution method: ``run(forward_module, inputs, context, **options)`` returns
    ``(attributions, convergence delta or None)``."""

    name: str
    label: str
    run: Callable[..., tuple[Tensor, Tensor | None]]

    def options(self) -> list[str]:
        return list(inspect.signature(self.run).parameters)[3:]


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("ig", "Integrated Gradients", integrated_gradients),
        Method("saliency", "Saliency", _saliency),
        Method("gradshap", "GradientShap", _gradshap),
        Method("deeplift", "DeepLift", _deeplift),
        Method("occlusion", "Occlusion", _occlusion),
        Method("smoothgrad", "SmoothGrad (NoiseTunnel)", _smoothgrad),
    )
}


def method_entry(name: str) -> Method:
    """The registered method ``name``; ConfigError listing the known ones otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(
            f"unknown attribution method {name!r}; known methods: {', '.join(sorted(METHODS))}"
        ) from None

"""The interpretability block of the record: faithfulness, stability and MIG, all in [0, 1].

**faithfulness** is a deletion test of Integrated Gradients on the model's default target.
For each image and each fraction p in ``FRACTIONS``, the k = ceil(p * n) pixels with the largest
(signed) attribution are set to the baseline (0), among the n pixels not already at the
baseline (setting a black pixel to black changes nothing, and counting those would let any
attribution beat chance on mostly black digits). The target's drop, f(x) - f(x without them),
is compared with its drop when k of the same n pixels are deleted at random, ``N_RANDOM``
times:

    faithfulness = mean over images and p of  P_random[ drop_top > drop_random ]
                                              (+ half the ties)

so 0.5 is exactly chance (a random ranking deletes a random set), 1 means deleting the top
pixels hurts the target more than every random deletion, and 0 that it hurts it less. Being a
rank, it does not depend on the target's scale, so models compare. It saturates at 1 as soon
as the top pixels beat every random draw; ``deletion_contrast``, (T - R) / (|T| + |R|) for the
mean drop T of the top deletions and R of the random ones, is kept beside it to say by how much
(0: no better than random, 1: random deletions do not lower the target at all).

**stability** is 1 / (1 + s), with s Captum's ``sensitivity_max`` of the same attributions:
the largest relative change ||a(x + e) - a(x)|| / ||a(x)|| over ``N_PERTURB`` uniform
perturbations |e| <= ``RADIUS``, averaged over the images. 1 means the attributions do not move.

**mig** is the mutual information gap (:mod:`genlab.interpret.disentanglement`), null without
an encoder.
**score** is the mean of the available ones. Captum's raw ``infidelity`` (with its optimal
scaling of the attributions, Gaussian perturbations of std ``NOISE``) and the mean
``sensitivity_max`` are kept alongside. Every random choice is seeded, so the block repeats.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from captum.metrics import infidelity, sensitivity_max
from torch import Tensor

from genlab.interpret.attribution import (
    TargetModule,
    example_inputs,
    explainable_copy,
    one_cpu_thread,
    seeded,
)
from genlab.interpret.disentanglement import model_mig
from genlab.interpret.methods import integrated_gradients
from genlab.interpret.targets import Target, parse_target
from genlab.models.base import GenerativeModel

FRACTIONS = (0.05, 0.1, 0.2)
N_RANDOM = 16
N_IMAGES, STEPS, SEED = 16, 32, 0
# IG is an integral approximated by a Riemann sum: the block doubles the steps from STEPS until
# the median convergence delta is below MAX_RELATIVE_DELTA of the target's change (the
# completeness axiom, Sundararajan et al. 2017), up to MAX_STEPS. On mnist5k at 32 steps the
# GAN's discriminator logit left 6.3% and the mixture's log-likelihood 2.9% unexplained.
MAX_STEPS, MAX_RELATIVE_DELTA = 256, 0.01
N_PERTURB, RADIUS = 8, 0.02
N_INFIDELITY, NOISE = 16, 0.1


@torch.no_grad()
def _batched(fn: Callable[[Tensor], Tensor], x: Tensor, size: int = 512) -> Tensor:
    return torch.cat([fn(x[i : i + size]) for i in range(0, len(x), size)])


@torch.no_grad()
def deletion_drops(
    target_fn: Callable[[Tensor], Tensor],
    x: Tensor,
    attributions: Tensor,
    *,
    fractions: tuple[float, ...] = FRACTIONS,
    n_random: int = N_RANDOM,
    baseline: float = 0.0,
    seed: int = SEED,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The target's drops in the deletion test of the module docstring.

    Returns:
        ``(drop_top, drop_random, f0)``: shapes (P, B), (P, R, B) and (B,), for P fractions,
        B images and R random deletions; f0 is the target of the intact images.
    """
    rng = np.random.default_rng(seed)
    flat, attr = x.flatten(1), attributions.detach().flatten(1).to(x)
    b = len(flat)
    f0 = _batched(target_fn, x)
    tops, rands = [], []
    for p in fractions:
        top = flat.clone()
        rand = flat.repeat(n_random, 1)  # row r * b + i: random deletion r of image i
        for i in range(b):
            cand = torch.nonzero(flat[i] != baseline).squeeze(1)
            if len(cand) == 0:
                cand = torch.arange(flat.shape[1])
            k = max(1, math.ceil(p * len(cand)))
            order = torch.argsort(attr[i, cand], descending=True, stable=True)
            top[i, cand[order[:k]]] = baseline
            for r in range(n_random):
                rand[r * b + i, cand[rng.permutation(len(cand))[:k]]] = baseline
        values = _batched(target_fn, torch.cat([top, rand]).view(-1, *x.shape[1:]))
        tops.append((f0 - values[:b]).cpu().numpy())
        rands.append((f0.repeat(n_random) - values[b:]).view(n_random, b).cpu().numpy())
    return np.stack(tops), np.stack(rands), f0.cpu().numpy()


def faithfulness(
    target_fn: Callable[[Tensor], Tensor],
    x: Tensor,
    attributions: Tensor,
    *,
    fractions: tuple[float, ...] = FRACTIONS,
    n_random: int = N_RANDOM,
    baseline: float = 0.0,
    seed: int = SEED,
) -> float:
    """The deletion test of the module docstring, in [0, 1]; 0.5 is chance.

    Args:
        target_fn: images (B, ...) to the target, shape (B,), as the model computes it.
        x: the images, (B, ...).
        attributions: shaped like ``x``.
        fractions: shares of each image's non-baseline pixels to delete.
        n_random: random deletions each top deletion is compared with.
        baseline: the value a deleted pixel takes.
        seed: seeds the random deletions.
    """
    drops = deletion_drops(
        target_fn,
        x,
        attributions,
        fractions=fractions,
        n_random=n_random,
        baseline=baseline,
        seed=seed,
    )
    return _win_rate(*drops)


def _win_rate(drop_top: np.ndarray, drop_random: np.ndarray, f0: np.ndarray) -> float:
    """P(drop_top > drop_random), ties counting half, averaged over fractions and images."""
    top = drop_top[:, None, :]
    tol = 1e-6 * (1 + np.abs(f0))  # float noise in equal drops is a tie
    wins = (top > drop_random + tol).mean() + 0.5 * (np.abs(top - drop_random) <= tol).mean()
    return float(wins)


def _deletion_contrast(drop_top: np.ndarray, drop_random: np.ndarray) -> float | None:
    """(T - R) / (|T| + |R|) for the mean top drop T and mean random drop R, in [-1, 1]:
    0 when the top pixels matter no more than random ones, 1 when random deletions do not lower
    the target at all (or raise it); None when neither deletion changes it."""
    t, r = float(drop_top.mean()), float(drop_random.mean())
    return (t - r) / (abs(t) + abs(r)) if abs(t) + abs(r) > 0 else None


def _ig_function(module: TargetModule, target: Target, steps: int):
    """inputs -> IG attributions, the target's context taken from those very inputs."""

    def explain(inputs: Tensor | tuple[Tensor]) -> Tensor | tuple[Tensor]:
        if isinstance(inputs, tuple):  # Captum's metrics pass (and want back) tuples
            return (explain(inputs[0]),)
        x, context = target.prepare(inputs)
        with torch.enable_grad():
            return integrated_gradients(module, x, context, n_steps=steps)[0]

    return explain


def sensitivity(
    module: TargetModule,
    target: Target,
    x: Tensor,
    *,
    steps: int = STEPS,
    n_perturb: int = N_PERTURB,
    radius: float = RADIUS,
    seed: int = SEED,
) -> Tensor:
    """Captum's ``sensitivity_max`` of IG attributions, per image (B,)."""
    with seeded(seed, x.device):
        return sensitivity_max(
            _ig_function(module, target, steps),
            x,
            perturb_radius=radius,
            n_perturb_samples=n_perturb,
        )


def _infidelity(module, target, x, attributions, *, n: int, noise: float, seed: int) -> Tensor:
    inputs, context = target.prepare(x)

    def perturb(inp: Tensor) -> tuple[Tensor, Tensor]:
        e = torch.randn_like(inp) * noise
        return e, inp - e

    with seeded(seed, inputs.device), torch.no_grad():
        return infidelity(
            module,
            perturb,
            inputs,
            attributions,
            additional_forward_args=tuple(context) or None,
            n_perturb_samples=n,
            normalize=True,
        )


def interpretability_block(
    model: GenerativeModel,
    data,
    *,
    n: int = N_IMAGES,
    steps: int = STEPS,
    max_steps: int = MAX_STEPS,
    seed: int = SEED,
) -> dict[str, Any]:
    """The record's ``interpretability`` block for ``model`` on its dataset ``data``.

    Args:
        model: any registered model (a copy is explained; the model is not modified).
        data: the run's :class:`~genlab.data.DataSplits`; images come from its test split.
        n: test images attributed (a seeded choice).
        steps: Integrated Gradients steps to start from; doubled until IG's median convergence
            delta is below 1% of the target's change, or ``max_steps`` is reached.
        max_steps: the most IG steps used.
        seed: fixes the images, the random deletions and the perturbations.

    Returns:
        ``faithfulness``, ``stability``, ``mig`` (None without an encoder) and ``score`` in
        [0, 1], the raw ``infidelity`` and ``sensitivity_max``, and the settings used.
    """
    with one_cpu_thread(next(model.parameters()).device):
        return _block(model, data, n=n, steps=steps, max_steps=max(steps, max_steps), seed=seed)


def _converged_ig(module, inputs, context, change, *, steps: int, max_steps: int):
    """IG attributions with the fewest steps (doubling from ``steps``) that leave a median
    relative delta under MAX_RELATIVE_DELTA; returns (attributions, steps, relative delta)."""
    while True:
        attr, delta = integrated_gradients(module, inputs, context, n_steps=steps)
        relative = float((delta.abs() / change.clamp_min(1e-12)).median())
        if relative < MAX_RELATIVE_DELTA or steps >= max_steps:
            return attr, steps, relative
        steps = min(2 * steps, max_steps)


def _block(
    model: GenerativeModel, data, *, n: int, steps: int, max_steps: int, seed: int
) -> dict[str, Any]:
    m = explainable_copy(model)
    target = parse_target(m, "default")
    module = TargetModule(m, target)
    x = example_inputs(m, data, n=n, seed=seed)
    inputs, context = target.prepare(x)
    with torch.no_grad():
        change = (module(inputs, *context) - module(torch.zeros_like(inputs), *context)).abs()
    attr, steps, relative_delta = _converged_ig(
        module, inputs, context, change, steps=steps, max_steps=max_steps
    )
    drops = deletion_drops(target.values, inputs, attr, seed=seed)
    faithful = _win_rate(*drops)
    sens = sensitivity(module, target, inputs, steps=steps, seed=seed)
    infid = _infidelity(module, target, inputs, attr, n=N_INFIDELITY, noise=NOISE, seed=seed)
    stability = 1.0 / (1.0 + float(sens.mean()))
    latent = model_mig(m, data)
    parts = [faithful, stability] + ([latent["mig"]] if latent["mig"] is not None else [])
    return {
        "faithfulness": faithful,
        "stability": stability,
        "mig": latent["mig"],
        "score": float(np.mean(parts)),
        "infidelity": float(infid.mean()),
        "sensitivity_max": float(sens.mean()),
        "method": "ig",
        "target": target.spec,
        "n_images": len(inputs),
        "steps": steps,
        "seed": seed,
        "ig_relative_delta": relative_delta,
        "deletion_contrast": _deletion_contrast(drops[0], drops[1]),
        "deletion_fractions": list(FRACTIONS),
        "n_random_deletions": N_RANDOM,
        "perturb_radius": RADIUS,
        "n_perturb": N_PERTURB,
        "mig_factors": latent["mig_factors"],
        "mig_n": latent["mig_n"],
    }

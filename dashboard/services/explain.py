"""The Explain page's services: attributions of a run, its interpretability block, its latent map,
and the attribution drift between two runs (with and without differential privacy).

Attributions are cached with ``st.cache_data`` as plain numpy arrays, keyed by the genlab home,
the run, the images' run and the settings. :func:`genlab.interpret.explain` explains a fresh copy
of the shared cached model, so the model itself is never touched. Which targets a run offers comes
from :func:`genlab.interpret.target_names`, never from the model's name.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import streamlit as st
import torch

from genlab.interpret import (
    METHODS,
    LatentMap,
    example_inputs,
    explain,
    interpretability_block,
    latent_map,
    target_names,
)
from genlab.interpret.drift import rank_correlations
from genlab.interpret.targets import REGIONS
from genlab.runs import RunInfo

from .core import get_store, home_key, load_model, model_at

# Above this share of f(x) - f(baseline), the page says IG has not converged (issue 6's bound).
IG_DELTA_WARN = 0.01

# The parts of a target spec that need a number (an index) or a region after the colon.
INDEXED, REGIONAL = ("latent", "component"), ("decoder", "generator")

# One line per field of the record's interpretability block, for the page.
BLOCK_HELP = {
    "faithfulness": "Deleting the pixels Integrated Gradients ranks highest lowers the target "
                    "more than deleting as many random pixels, in this share of the comparisons; "
                    "0.5 is no better than random, 1 always better.",
    "stability": "1 / (1 + sensitivity): 1 means the attributions stay put when the image is "
                 "nudged a little (±0.02 per pixel).",
    "mig": "Mutual information gap: how much of each factor (the class label, or the sprites' "
           "shape, scale, ...) one latent dim captures alone; empty without an encoder.",
    "score": "The mean of the scores above that this model has; higher is better.",
    "infidelity": "Captum's infidelity: how badly attributions × noise predict the target's "
                  "change under that noise (raw, lower is better).",
    "sensitivity_max": "Captum's sensitivity: the largest relative change of the attributions "
                       "under those nudges (raw, lower is better).",
}


def methods() -> dict[str, str]:
    """``{method name: its label}`` for every registered attribution method."""
    return {name: m.label for name, m in METHODS.items()}


def regions() -> list[str]:
    """The named output regions of a decoder (generator) target."""
    return list(REGIONS)


def explain_targets(run_id: str) -> list[dict[str, Any]]:
    """The targets the run's model offers, in order: ``kind`` (the spec before the colon),
    ``label`` (the usage string shown to the user), ``count`` (how many indices a ``latent`` or
    ``component`` target has, else 0) and ``default`` (the default target's own name)."""
    model, _, _ = load_model(run_id)
    out = []
    for usage in target_names(model):
        kind = re.split(r"[: ]", usage)[0]
        if kind == model.explain_target_name:  # the default, under its own name
            continue
        count = re.search(r"K = 0–(\d+)", usage)
        out.append({"kind": kind, "label": usage, "count": int(count.group(1)) + 1 if count else 0,
                    "default": model.explain_target_name})
    return out


def target_spec(kind: str, *, index: int = 0, region: str = "center") -> str:
    """The spec :func:`genlab.interpret.explain` takes, e.g. ``latent:3`` or ``decoder:top``."""
    if kind in INDEXED:
        return f"{kind}:{int(index)}"
    if kind in REGIONAL:
        return f"{kind}:{region.strip()}"
    return kind


# ----------------------------------------------------------------------------- attributions
@st.cache_data(show_spinner="Attributing…", max_entries=64)
def _explanation(home: str, run_id: str, images_run: str, method: str, target: str, n: int,
                 steps: int, seed: int) -> dict[str, Any]:
    model, _, data = model_at(home, run_id)
    source = data if images_run == run_id else model_at(home, images_run)[2]
    x = example_inputs(model, source, target=target, n=n, seed=seed)
    options = {"n_steps": steps} if method == "ig" else {}
    e = explain(model, x, method=method, target=target, seed=seed, **options)
    attr = e.attributions.float().cpu()
    values, base = e.target_values.float().cpu(), e.baseline_values.float().cpu()
    delta = None if e.delta is None else e.delta.float().cpu()
    change = (values - base).abs().clamp_min(1e-12)
    return {
        "method": e.method, "label": METHODS[e.method].label, "target": e.target,
        "description": e.description, "space": e.space, "region": e.region,
        "images": e.images.float().cpu().mean(1).numpy(),  # (n, H, W) grey
        "attributions": attr.numpy(),  # as attributed: (n, C, H, W) or (n, latent_dim)
        "maps": attr.sum(1).numpy() if e.space == "pixels" else attr.numpy(),
        "target_values": values.numpy(), "baseline_values": base.numpy(),
        "delta": None if delta is None else delta.numpy(),
        "relative_delta": None if delta is None else float((delta.abs() / change).median()),
    }


def explanation(run_id: str, method: str, target: str, n: int, steps: int, seed: int, *,
                images_run: str | None = None) -> dict[str, Any]:
    """Attributions of ``target`` for ``n`` test images of the run (picked by ``seed``).

    Args:
        method: one of :func:`methods`; ``steps`` is Integrated Gradients' number of steps
            (ignored by the other methods).
        images_run: the run whose test split supplies the images (default: this run), so two
            runs can explain the very same images.

    Returns:
        A dict of numpy arrays and text: ``images`` (n, H, W) grey in [0, 1], ``maps`` (n, H, W)
        for pixel targets or (n, latent_dim) for latent ones, ``target_values``,
        ``baseline_values``, IG's ``delta`` and ``relative_delta`` (None for other methods),
        ``description``, ``space`` and ``region``.

    Raises:
        ConfigError: an unknown method or a target this model lacks (a one-line message).
    """
    key = home_key()
    store = get_store()
    rid = store.get(run_id).id
    source = rid if images_run is None else store.get(images_run).id
    return _explanation(key, rid, source, method, target, int(n), int(steps), int(seed))


def drift(run_id: str, other_id: str, method: str, target: str, n: int, steps: int,
          seed: int) -> dict[str, Any]:
    """Both runs' attributions on the same images (those of ``run_id``) and their drift.

    Returns:
        ``{"a", "b"}`` (as :func:`explanation`), ``per_image``: Spearman's rho per image (NaN
        where undefined) and ``value``: their mean, :func:`genlab.interpret.attribution_drift`.
    """
    a = explanation(run_id, method, target, n, steps, seed)
    b = explanation(other_id, method, target, n, steps, seed, images_run=run_id)
    rho = rank_correlations(torch.from_numpy(a["attributions"]),
                            torch.from_numpy(b["attributions"]))
    value = float(np.nanmean(rho)) if np.isfinite(rho).any() else float("nan")
    return {"a": a, "b": b, "per_image": rho, "value": value}


def is_private(info: RunInfo) -> bool:
    """Whether the run trained with differential privacy."""
    return bool(info.config.get("privacy"))


def drift_candidates(info: RunInfo, runs: list[RunInfo]) -> list[RunInfo]:
    """Other finished runs of the same model on the same dataset; those on the other side of
    the DP switch (the run's DP or non-DP twin) first, then the rest, each newest first."""
    same = [r for r in runs if r.id != info.id and r.model == info.model
            and r.dataset == info.dataset and r.status == "finished"]
    return sorted(same, key=lambda r: is_private(r) == is_private(info))


# ----------------------------------------------------------------------------- scores and map
def interpretability_record(info: RunInfo) -> dict[str, Any] | None:
    """The run's stored interpretability block, or None before it is computed."""
    return info.record.get("interpretability")


def compute_interpretability(run_id: str) -> dict[str, Any]:
    """Compute the run's interpretability block (seconds: it trains nothing) and store it."""
    model, _, data = load_model(run_id)
    block = interpretability_block(model, data)
    get_store().update_record(get_store().get(run_id).id, "interpretability", block)
    return block


@st.cache_data(show_spinner="Mapping the latent space…", max_entries=16)
def _latent_map(home: str, run_id: str) -> LatentMap:
    model, _, data = model_at(home, run_id)
    return latent_map(model, data)


def run_latent_map(run_id: str) -> LatentMap:
    """The 2-D latent map (a decoded grid when latent_dim is 2, else a PCA scatter).

    Raises:
        ConfigError: the model has no latent space, or a latent of more than 2 dims and no
            encoder (the GAN).
    """
    return _latent_map(home_key(), get_store().get(run_id).id)

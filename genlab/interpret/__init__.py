"""Interpretability axis: Captum attributions, latent tools, and the record's scores.

This package is the only place in genlab that imports captum. Its modules:

- ``targets``: which scalar an attribution explains (``default``, ``latent:k``,
  ``decoder:REGION``, ``component:k``, ...), per model family;
- ``methods``: the method registry (``ig``, ``saliency``, ``gradshap``, ``deeplift``,
  ``occlusion``, ``smoothgrad``);
- ``attribution``: :func:`explain` / :func:`attribute` on a plain copy of the model;
- ``scores``: faithfulness, stability and the ``interpretability`` record block;
- ``disentanglement``: the mutual information gap (MIG);
- ``drift``: DP-versus-non-DP attribution drift;
- ``latent``: traversals, interpolation and the 2-D latent map; ``overlay``: PNG pictures.

Names are loaded on first use, so ``genlab.interpret.latent`` does not pay for importing captum.
"""

from __future__ import annotations

from genlab.lazy import lazy_exports

_EXPORTS = {
    "interpolate": "latent",
    "traverse": "latent",
    "slerp": "latent",
    "latent_map": "latent",
    "LatentMap": "latent",
    "has_encoder": "latent",
    "latent_levels": "latent",
    "dim_labels": "latent",
    "Target": "targets",
    "parse_target": "targets",
    "target_names": "targets",
    "METHODS": "methods",
    "Explanation": "attribution",
    "attribute": "attribution",
    "explain": "attribution",
    "example_inputs": "attribution",
    "explainable_copy": "attribution",
    "faithfulness": "scores",
    "interpretability_block": "scores",
    "mig": "disentanglement",
    "model_mig": "disentanglement",
    "attribution_drift": "drift",
    "save_explanation_png": "overlay",
    "explanation_grid": "overlay",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS)

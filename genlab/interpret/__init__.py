"""Interpretability axis: latent tools now; Captum attributions and their scores to come.

This package is the only place in genlab that may import captum.
"""

from genlab.interpret.latent import interpolate, traverse

__all__ = ["interpolate", "traverse"]

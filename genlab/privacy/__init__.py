"""Privacy axis: the one door to Opacus.

Only this package imports opacus. It holds:

- ``readiness``: Opacus's validator and per-sample gradients checked one sample at a time;
- ``accounting``: ε from σ, σ from ε, and the budget planner, with Opacus's accountants;
- ``dp``: DP-SGD training (:class:`~genlab.privacy.dp.PrivateTraining`, used by the Trainer);
- ``attack``: the statistics of a membership-inference attack (no model code);
- ``audit``: the membership audit of a trained model.

Submodules that import opacus are loaded when first used, so ``attack`` stays light.
"""

from genlab.privacy.readiness import (
    per_sample_gradients,
    per_sample_gradients_by_loop,
    validate_private_modules,
)

__all__ = ["per_sample_gradients", "per_sample_gradients_by_loop", "validate_private_modules"]

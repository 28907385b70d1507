"""Privacy axis: the one door to Opacus.

Only this package imports opacus. Today it checks that every model is ready for DP-SGD
(:func:`validate_private_modules`, :func:`per_sample_gradients`); DP training, accounting and the
membership audit arrive here next.
"""

from genlab.privacy.readiness import (
    per_sample_gradients,
    per_sample_gradients_by_loop,
    validate_private_modules,
)

__all__ = ["per_sample_gradients", "per_sample_gradients_by_loop", "validate_private_modules"]

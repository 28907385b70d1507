"""Performance axis: the reference classifier per dataset, FD, PRDC, CAS and NLL in bits/dim.

FD and PRDC are measured in the penultimate features of genlab's own reference classifier (a small
CNN trained on the dataset's train split), because Inception weights cannot be loaded here. They
cannot be compared with published Inception FID values.

Names are loaded on first use, as in :mod:`genlab.interpret`: the command line shows
``FD_NOTE`` in its help without importing torch.
"""

from __future__ import annotations

from genlab.lazy import lazy_exports

FD_NOTE = (
    "fd is the Frechet distance in the features of genlab's own reference classifier, not "
    "Inception: it cannot be compared with published FID figures."
)

_EXPORTS = {
    "bits_per_dim": "metrics",
    "classification_accuracy_score": "metrics",
    "frechet_distance": "metrics",
    "prdc": "metrics",
    "CAS_EPOCHS": "performance",
    "performance_block": "performance",
    "CODE_VERSION": "reference",
    "ReferenceCNN": "reference",
    "extract_features": "reference",
    "reference_accuracy": "reference",
    "reference_classifier": "reference",
    "reference_info": "reference",
    "train_classifier": "reference",
}

__all__ = sorted(["FD_NOTE", *_EXPORTS])


__getattr__ = lazy_exports(__name__, _EXPORTS)

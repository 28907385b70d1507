"""Performance axis: the reference classifier per dataset, FD, PRDC, CAS and NLL in bits/dim.

FD and PRDC are measured in the penultimate features of genlab's own reference classifier (a small
CNN trained on the dataset's train split), because Inception weights cannot be loaded here. They
cannot be compared with published Inception FID values.
"""

from genlab.fidelity.metrics import (
    bits_per_dim,
    classification_accuracy_score,
    frechet_distance,
    prdc,
)
from genlab.fidelity.performance import CAS_EPOCHS, performance_block
from genlab.fidelity.reference import (
    CODE_VERSION,
    ReferenceCNN,
    extract_features,
    reference_accuracy,
    reference_classifier,
    reference_info,
    train_classifier,
)

FD_NOTE = (
    "fd is the Frechet distance in the features of genlab's own reference classifier, not "
    "Inception: it cannot be compared with published FID figures."
)

__all__ = [
    "FD_NOTE",
    "CAS_EPOCHS",
    "CODE_VERSION",
    "ReferenceCNN",
    "bits_per_dim",
    "classification_accuracy_score",
    "extract_features",
    "frechet_distance",
    "performance_block",
    "prdc",
    "reference_accuracy",
    "reference_classifier",
    "reference_info",
    "train_classifier",
]

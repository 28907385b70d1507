"""The performance block of a run's three-axis record (DESIGN.md, "The three-axis record").

``fd`` and the PRDC values are measured in the reference classifier's penultimate features, not
Inception's: they cannot be compared with published FID values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from genlab.data import DataSplits
from genlab.fidelity.metrics import bits_per_dim, classification_accuracy_score, frechet_distance
from genlab.fidelity.metrics import prdc as prdc_metrics
from genlab.fidelity.reference import (
    CODE_VERSION,
    extract_features,
    predict,
    reference_accuracy,
    reference_classifier,
)

K = 5  # neighbours for PRDC, as in Naeem et al.
CAS_EPOCHS = 15  # ~8 s of CPU on 1,000 mnist5k samples; the real holdout gives ~0.97 CAS with it
SAMPLE_BATCH = 500


def performance_block(
    model: nn.Module,
    data: DataSplits,
    *,
    n_generated: int = 1000,
    seed: int = 0,
    split_seed: int = 0,
    holdout_fraction: float = 0.2,
    test_fraction: float = 0.2,
    cas_epochs: int = CAS_EPOCHS,
    nll_k: int | None = None,
) -> dict[str, Any]:
    """Fill the performance block for ``model`` on ``data``: FD, PRDC, CAS and test NLL.

    Samples come from ``model.sample(n, generator=...)`` in batches, without gradients, with the
    model in eval mode (its mode is restored afterwards). FD and PRDC (k = 5) compare them with the
    real **test** split in the reference classifier's features, so ``fd`` is not Inception FID.
    CAS labels come from ``model.sample_with_labels`` for conditional models, otherwise from the
    reference classifier's predictions; ``cas_real`` is the reference classifier's own test
    accuracy, the ceiling. ``nll_bpd`` needs ``has_likelihood`` and the contract's
    ``nll(x, k=..., generator=...)`` returning nats per image, else it is None. The same model,
    data and seed give the same numbers.

    Args:
        model: A generative model (see ``genlab.models.base.GenerativeModel``).
        data: The splits the model was trained on.
        n_generated: Number of samples to draw.
        seed: Fixes sampling, the NLL's noise and the CAS classifier.
        split_seed: The seed ``data`` was split with (keys the reference classifier's cache).
        holdout_fraction: The holdout fraction ``data`` was split with.
        test_fraction: The test fraction ``data`` was split with.
        cas_epochs: Training epochs of the CAS classifier.
        nll_k: Importance samples for models whose ``nll`` is a bound (the VAE); None keeps the
            model's own default.

    Raises:
        ValueError: ``n_generated`` too small for PRDC, or samples of the wrong shape, or with
            NaN or infinite pixels.
    """
    if n_generated <= K:
        raise ValueError(
            f"n_generated must be > {K}, the PRDC neighbourhood size (got {n_generated})"
        )
    split = {
        "seed": split_seed,
        "holdout_fraction": holdout_fraction,
        "test_fraction": test_fraction,
    }
    reference = reference_classifier(data, **split)
    test_x, test_y = data.test.x, data.test.y
    was_training = model.training
    device = _device_of(model)
    model.eval()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)  # for models that also draw from the global RNG
            fake = _draw(model.sample, n_generated, seed, data)
            if getattr(model, "conditional", False) and hasattr(model, "sample_with_labels"):
                cas_x, cas_y = _draw(model.sample_with_labels, n_generated, seed, data)
                source = "model"
            else:
                cas_x, cas_y, source = fake, predict(reference, fake), "reference-classifier"
            nll_bpd = _nll_bpd(model, test_x, data.shape, device, nll_k, seed)
    finally:
        model.train(was_training)
    real_feats, fake_feats = extract_features(reference, test_x), extract_features(reference, fake)
    cas = classification_accuracy_score(
        cas_x, cas_y, test_x, test_y, num_classes=data.num_classes, epochs=cas_epochs, seed=seed
    )
    return {
        "fd": frechet_distance(real_feats, fake_feats),
        **prdc_metrics(real_feats, fake_feats, k=K),
        "cas": cas,
        "cas_real": reference_accuracy(data, **split),
        "cas_labels": source,
        "nll_bpd": nll_bpd,
        "n_generated": n_generated,
        "n_real": len(test_x),
        "feature_space": f"reference-cnn-v{CODE_VERSION}",
        "k": K,
    }


@torch.no_grad()
def _draw(sample: Callable[..., Any], n: int, seed: int, data: DataSplits) -> Any:
    """Call ``sample(batch, generator=...)`` until ``n`` images; concatenate on the CPU.

    Handles both ``sample`` (images) and ``sample_with_labels`` (images, labels).
    """
    generator = torch.Generator().manual_seed(seed)
    parts = []
    for start in range(0, n, SAMPLE_BATCH):
        out = sample(min(SAMPLE_BATCH, n - start), generator=generator)
        parts.append(tuple(out) if isinstance(out, (tuple, list)) else (out,))
    images = torch.cat([p[0].detach().to("cpu", torch.float32) for p in parts])
    if tuple(images.shape) != (n, *data.shape):
        raise ValueError(
            f"the model sampled images of shape {tuple(images.shape[1:])}; "
            f"{data.name} needs {data.shape}"
        )
    if not bool(torch.isfinite(images).all()):
        raise ValueError("the model sampled NaN or infinite pixels; it may have diverged")
    if len(parts[0]) == 1:
        return images
    return images, torch.cat([p[1].detach().to("cpu", torch.int64) for p in parts])


@torch.no_grad()
def _nll_bpd(
    model: nn.Module, x: Tensor, shape: tuple, device: torch.device, k: int | None, seed: int
) -> float | None:
    if not (getattr(model, "has_likelihood", False) and callable(getattr(model, "nll", None))):
        return None
    options: dict[str, Any] = {"generator": torch.Generator().manual_seed(seed)}
    if k is not None:
        options["k"] = k
    parts = [
        model.nll(x[i : i + SAMPLE_BATCH].to(device), **options).detach().cpu()
        for i in range(0, len(x), SAMPLE_BATCH)
    ]
    return bits_per_dim(torch.cat(parts), shape)


def _device_of(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")

"""The reference classifier: a small CNN per dataset whose penultimate features define FD and PRDC.

Inception weights cannot be loaded here, so genlab measures sample quality in the feature space of
its own classifier, trained on the dataset's train split only. Distances in this space cannot be
compared with published (Inception) FID values, nor across datasets or ``CODE_VERSION``s.

The trained classifier is cached under ``$GENLAB_HOME/cache/reference`` (safetensors weights plus a
JSON file holding its test accuracy) and memoised in-process. Training and feature extraction run
on the CPU in one thread: the numbers then do not depend on the device or the core count, and on a
busy machine one thread is several times faster than two for convolutions this small.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.checkpoint import load_weights, save_weights
from genlab.data import DataSplits
from genlab.errors import DataError
from genlab.paths import cache_dir
from genlab.threads import one_cpu_thread

CODE_VERSION = 2  # bump whenever the architecture or the training recipe changes
BATCH_SIZE = 128
LEARNING_RATE = 3e-3
REFERENCE_STEPS = 360  # optimiser steps for a reference classifier, whatever the dataset's size
MIN_EPOCHS, MAX_EPOCHS = 8, 40

_MEMO: dict[tuple[Path, str], tuple[ReferenceCNN, dict]] = {}  # (cache folder, key)
_LOCK = threading.Lock()


class ReferenceCNN(nn.Module):
    """A small CNN classifier for (C, H, W) images in [0, 1] (8×8 up to 32×32 and beyond).

    ``features(x)`` is the penultimate layer, ``feature_dim`` wide (after its ReLU, as Inception's
    pool features are); ``forward(x)`` returns the class logits.
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        num_classes: int,
        *,
        width: int = 16,
        feature_dim: int = 128,
    ):
        super().__init__()
        c, h, w = shape
        self.shape, self.num_classes, self.feature_dim = tuple(shape), num_classes, feature_dim
        pools = 2 if min(h, w) >= 16 else 1  # 8×8 digits halve once; 28×28 and 32×32 twice
        layers: list[nn.Module] = [_conv(c, width)]
        ch = width
        for _ in range(pools):
            layers += [nn.MaxPool2d(2), _conv(ch, 2 * ch)]
            ch *= 2
        layers += [nn.AdaptiveAvgPool2d(4), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self.penultimate = nn.Sequential(nn.Linear(ch * 16, feature_dim), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(feature_dim, num_classes))

    def features(self, x: Tensor) -> Tensor:
        """Penultimate-layer features, shape (N, feature_dim)."""
        return self.penultimate(self.body(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def _conv(c_in: int, c_out: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU())


def extract_features(model: ReferenceCNN, x: Tensor, *, batch_size: int = 500) -> Tensor:
    """The model's penultimate features of images ``x`` (N, C, H, W), computed on the CPU.

    Fixed batches, eval mode, one thread: the same images always give the same features.
    """
    return _batched(model.features, model, x, batch_size)


def predict(model: ReferenceCNN, x: Tensor, *, batch_size: int = 500) -> Tensor:
    """Class predictions (N,) of ``model`` for images ``x``."""
    return _batched(lambda xb: model(xb).argmax(1), model, x, batch_size)


@torch.no_grad()
def _batched(fn, model: ReferenceCNN, x: Tensor, batch_size: int) -> Tensor:
    model.eval()
    x = x.detach().to("cpu", torch.float32)
    with one_cpu_thread():
        return torch.cat([fn(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def accuracy(model: ReferenceCNN, x: Tensor, y: Tensor) -> float:
    """Share of ``x`` that ``model`` labels as ``y``."""
    return float((predict(model, x) == y.to("cpu")).double().mean())


def default_epochs(n: int) -> int:
    """Epochs giving about ``REFERENCE_STEPS`` optimiser steps on ``n`` images."""
    return max(MIN_EPOCHS, min(MAX_EPOCHS, round(REFERENCE_STEPS * BATCH_SIZE / max(n, 1))))


def train_classifier(
    x: Tensor, y: Tensor, *, num_classes: int, epochs: int, seed: int, augment: bool = True
) -> ReferenceCNN:
    """Train a :class:`ReferenceCNN` on images ``x`` (N, C, H, W) in [0, 1] and labels ``y``.

    Adam with a one-cycle learning rate (warm-up, then cosine decay), mini-batches sliced from
    shuffled tensors, and (with ``augment``) random shifts of up to 1 pixel (8×8 images) or 2
    pixels (larger ones). Runs on the CPU in one thread (:func:`genlab.threads.one_cpu_thread`)
    and is deterministic for a seed; the global RNG state is left as it was.

    Args:
        x: Training images, float in [0, 1].
        y: Integer labels in ``[0, num_classes)``.
        num_classes: Width of the output layer.
        epochs: Passes over the data (>= 1).
        seed: Fixes initialisation, shuffling, dropout and augmentation.
        augment: Apply random shifts.

    Returns:
        The trained model, in eval mode.

    Raises:
        ValueError: Shapes that do not match, labels out of range, or ``epochs`` < 1.
    """
    x, y = x.detach().to("cpu", torch.float32), y.detach().to("cpu", torch.int64)
    if x.dim() != 4 or len(x) != len(y) or len(x) < 2:
        raise ValueError(
            f"need images (N, C, H, W) and N labels, N >= 2 (got {tuple(x.shape)} "
            f"images and {len(y)} labels)"
        )
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise ValueError(
            f"labels must lie in [0, {num_classes}) (got {int(y.min())} to {int(y.max())})"
        )
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1 (got {epochs})")
    gen = torch.Generator().manual_seed(seed)
    shift = 1 if min(x.shape[-2:]) < 16 else 2
    steps_per_epoch = math.ceil(len(x) / BATCH_SIZE)
    with one_cpu_thread(), torch.random.fork_rng(devices=[]):  # seeded init, dropout; RNG untouched
        torch.manual_seed(seed)
        model = ReferenceCNN(tuple(x.shape[1:]), num_classes)
        opt = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=LEARNING_RATE, total_steps=epochs * steps_per_epoch, pct_start=0.15
        )
        model.train()
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=gen)
            for i in range(0, len(x), BATCH_SIZE):
                rows = order[i : i + BATCH_SIZE]
                xb = random_shift(x[rows], shift, gen) if augment else x[rows]
                loss = F.cross_entropy(model(xb), y[rows])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
    return model.eval()


def random_shift(x: Tensor, shift: int, generator: torch.Generator) -> Tensor:
    """Move each image by its own random offset in ``[-shift, shift]`` pixels, filling with 0."""
    n, c, h, w = x.shape
    padded = F.pad(x, (shift, shift, shift, shift)).flatten(2)  # (n, c, (h + 2s) * (w + 2s))
    dy, dx = torch.randint(0, 2 * shift + 1, (2, n, 1, 1), generator=generator)
    flat = (dy + torch.arange(h)[:, None]) * (w + 2 * shift) + dx + torch.arange(w)  # (n, h, w)
    return padded.gather(2, flat.view(n, 1, h * w).expand(n, c, h * w)).view(n, c, h, w)


def reference_classifier(
    data: DataSplits, *, seed: int = 0, holdout_fraction: float = 0.2, test_fraction: float = 0.2
) -> ReferenceCNN:
    """The dataset's reference classifier, trained on ``data.train`` only, then cached.

    The cache key holds the dataset name, the split arguments (pass the ones ``data`` was loaded
    with: ``DataSplits`` does not record them), ``CODE_VERSION`` and a fingerprint of the train
    split. The returned model is shared: do not train or modify it.

    Args:
        data: The dataset's splits.
        seed: The split seed given to ``load_dataset``.
        holdout_fraction: The holdout fraction given to ``load_dataset``.
        test_fraction: The test fraction given to ``load_dataset``.
    """
    return _reference(data, seed, holdout_fraction, test_fraction)[0]


def reference_accuracy(
    data: DataSplits, *, seed: int = 0, holdout_fraction: float = 0.2, test_fraction: float = 0.2
) -> float:
    """Test accuracy of the dataset's reference classifier: the real-data ceiling for CAS."""
    return float(_reference(data, seed, holdout_fraction, test_fraction)[1]["test_accuracy"])


def reference_info(
    data: DataSplits, *, seed: int = 0, holdout_fraction: float = 0.2, test_fraction: float = 0.2
) -> dict:
    """The cached JSON record of the reference classifier (accuracy, epochs, train seconds...)."""
    return dict(_reference(data, seed, holdout_fraction, test_fraction)[1])


def clear_memo() -> None:
    """Forget the in-process reference classifiers (the files on disk stay)."""
    _MEMO.clear()


def _reference(
    data: DataSplits, seed: int, holdout_fraction: float, test_fraction: float
) -> tuple[ReferenceCNN, dict]:
    split = {"seed": seed, "holdout_fraction": holdout_fraction, "test_fraction": test_fraction}
    key, folder = _cache_key(data, split), cache_dir("reference")
    with _LOCK:  # one trainer per process, even when several threads ask at once
        if (folder, key) not in _MEMO:
            found = _load(data, folder, key)
            _MEMO[folder, key] = found or _train_and_save(data, folder, key, split)
        return _MEMO[folder, key]


def _cache_key(data: DataSplits, split: dict) -> str:
    digest = hashlib.blake2b(
        repr((data.name, split, CODE_VERSION, data.shape, data.num_classes)).encode(), digest_size=8
    )
    digest.update(data.train.x.contiguous().numpy().tobytes())  # a local file may change in place
    digest.update(data.train.y.contiguous().numpy().tobytes())
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(data.name).stem)[:40] or "data"
    return f"{stem}-v{CODE_VERSION}-{digest.hexdigest()}"


def _load(data: DataSplits, folder: Path, key: str) -> tuple[ReferenceCNN, dict] | None:
    try:
        info = json.loads((folder / f"{key}.json").read_text())
        model = ReferenceCNN(data.shape, data.num_classes)
        load_weights(model, folder / f"{key}.safetensors")
        float(info["test_accuracy"])
    except (OSError, ValueError, KeyError, TypeError, DataError):
        return None  # missing or damaged: train again and overwrite
    return model.eval().requires_grad_(False), info


def _train_and_save(
    data: DataSplits, folder: Path, key: str, split: dict
) -> tuple[ReferenceCNN, dict]:
    epochs = default_epochs(len(data.train))
    start = time.perf_counter()
    model = train_classifier(
        data.train.x, data.train.y, num_classes=data.num_classes, epochs=epochs, seed=0
    )
    seconds = time.perf_counter() - start
    info = {
        "dataset": data.name,
        **split,
        "code_version": CODE_VERSION,
        "epochs": epochs,
        "n_train": len(data.train),
        "train_seconds": round(seconds, 2),
        "test_accuracy": accuracy(model, data.test.x, data.test.y),
    }
    tmp = f".{os.getpid()}.tmp"  # unique per process, so two trainers never share a temp file
    save_weights(model, folder / f"{key}.safetensors{tmp}")
    os.replace(folder / f"{key}.safetensors{tmp}", folder / f"{key}.safetensors")
    (folder / f"{key}.json{tmp}").write_text(json.dumps(info, indent=2))
    os.replace(folder / f"{key}.json{tmp}", folder / f"{key}.json")  # the JSON last: complete
    return model.requires_grad_(False), info

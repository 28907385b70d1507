"""Reading local image files: ``.npz`` archives and MNIST-style IDX folders (torchvision's layout).

Every check raises :class:`~genlab.errors.DataError` with one line that names the file and what is
wrong; nothing is unpickled (``allow_pickle=False``). The parsers that take bytes
(:func:`parse_idx`, :func:`combine_idx`) also serve uploads (:mod:`genlab.uploads`).
"""

from __future__ import annotations

import gzip
import math
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

from genlab.errors import DataError

MIN_IMAGES = 10
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
READ_ERRORS = (OSError, EOFError, zlib.error, zipfile.BadZipFile)


def load_npz(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read images and labels from an ``.npz`` holding ``x`` and ``y``; pickled data is refused.

    Args:
        path: The file. ``x`` is (N, H, W), (N, 1, H, W) or (N, H, W, 1), uint8 (0-255) or float
            in [0, 1]; ``y`` is (N,) integer labels.

    Returns:
        Images as float32 (N, 1, H, W) in [0, 1] and labels as int64 (N,).
    """
    path = Path(path)
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise DataError(f"{path}: is a single .npy array; expected an .npz with x and y")
        with archive:
            missing = sorted({"x", "y"} - set(archive.files))
            if missing:
                found = ", ".join(archive.files) or "nothing"
                raise DataError(f"{path}: holds {found}; expected arrays x (images) and y (labels)")
            x, y = archive["x"], archive["y"]
            if not (isinstance(x, np.ndarray) and isinstance(y, np.ndarray)):  # not .npy members
                raise DataError(f"{path}: x and y are not .npy arrays; expected numeric x and y")
    except (ValueError, *READ_ERRORS) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"{path}: cannot read as .npz ({_npz_problem(path, err)}); expected "
                        "numeric x and y") from None
    images = check_images(x, str(path))
    return images, check_labels(y, len(images), str(path))


def _npz_problem(path: Path, err: Exception) -> str:
    """What is wrong with a file ``np.load`` refused, in plain words. numpy takes any file that
    starts with neither a zip nor a .npy header for a pickle, so random bytes would read as
    "pickled data" without the header check here."""
    if "pickle" not in str(err):
        return one_line(err)
    try:
        with open(path, "rb") as fh:
            head = fh.read(6)
    except OSError as read_err:
        return one_line(read_err)
    if head.startswith((b"PK", b"\x93NUMPY")):
        return "it holds pickled or object data"  # object arrays: numpy refuses them unread
    if head[:1] == b"\x80":  # the opcode that opens every pickle since protocol 2
        return "it is a Python pickle"
    return "it is not an .npz file: it starts with neither a zip nor a .npy header"


IDX_STEMS = {part: (f"{part}-images-idx3-ubyte", f"{part}-labels-idx1-ubyte")
             for part in ("train", "t10k")}


def load_idx_folder(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read MNIST-style IDX files, pooling ``train-*`` with the optional ``t10k-*`` pair.

    Args:
        path: ``<root>`` holding ``MNIST/raw`` or ``FashionMNIST/raw`` (torchvision's layout), or
            the raw folder itself. Each file may be gzipped (``.gz``).

    Returns:
        Images as float32 (N, 1, H, W) in [0, 1] and labels as int64 (N,).
    """
    raw = idx_raw_folder(Path(path))
    found = {stem: f for pair in IDX_STEMS.values() for stem in pair
             if (f := _idx_file(raw, stem)) is not None}
    return combine_idx({stem: (f.name, read_idx(f)) for stem, f in found.items()}, str(raw))


def combine_idx(arrays: dict[str, tuple[str, np.ndarray]], source: str
                ) -> tuple[np.ndarray, np.ndarray]:
    """Check and pool parsed IDX arrays: the ``train`` pair, and the ``t10k`` pair if present.

    Args:
        arrays: ``{stem: (file name, array)}`` for the stems of :data:`IDX_STEMS` that exist.
        source: Where they come from, for messages.

    Returns:
        Images as float32 (N, 1, H, W) in [0, 1] and labels as int64 (N,).
    """
    xs, ys = [], []
    for part, stems in IDX_STEMS.items():
        images, labels = (arrays.get(stem) for stem in stems)
        if part == "t10k" and images is None and labels is None:
            continue
        if images is None or labels is None:
            lacking = stems[0] if images is None else stems[1]
            raise DataError(f"{source}: {lacking}[.gz] is missing; expected images and labels")
        (x_name, x), (y_name, y) = images, labels
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(
                f"{x_name} holds {x.shape} and {y_name} holds {y.shape}; "
                "expected (N, H, W) images and (N,) labels with the same N"
            )
        xs.append(x)
        ys.append(y)
    if len({x.shape[1:] for x in xs}) > 1:
        raise DataError(f"{source}: train and t10k images differ in size; expected the same H×W")
    x = check_images(np.concatenate(xs), source)
    return x, check_labels(np.concatenate(ys), len(x), source)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Parse one IDX file (optionally ``.gz``) into an array in native byte order.

    Raises:
        DataError: An unreadable file, a bad magic number, or a data size that does not match.
    """
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except READ_ERRORS as err:
        raise DataError(f"{path}: cannot read ({one_line(err)})") from None
    return parse_idx(raw, str(path))


def parse_idx(raw: bytes, source: str) -> np.ndarray:
    """Parse the bytes of one IDX file into an array in native byte order.

    The format: magic ``00 00 <dtype code> <ndim>``, then ``ndim`` big-endian uint32 dims, then
    the data, big-endian.

    Raises:
        DataError: A bad magic number, or a data size that does not match the header.
    """
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[3] == 0:
        raise DataError(f"{source}: bad IDX magic number 0x{raw[:4].hex()}; expected 00 00 xx ndim")
    if raw[2] not in _IDX_DTYPES:
        codes = ", ".join(f"0x{code:02x}" for code in _IDX_DTYPES)
        raise DataError(f"{source}: unknown IDX dtype code 0x{raw[2]:02x}; expected one of {codes}")
    dtype, header = np.dtype(_IDX_DTYPES[raw[2]]), 4 + 4 * raw[3]
    if len(raw) < header:
        raise DataError(f"{source} is truncated: expected a {header}-byte header, found {len(raw)}")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=raw[3], offset=4))
    expected, found = math.prod(dims) * dtype.itemsize, len(raw) - header
    if found != expected:
        problem = "is truncated" if found < expected else "is too long"
        raise DataError(f"{source} {problem}: expected {expected} bytes of data, found {found}")
    data = np.frombuffer(raw, dtype, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="))


def idx_raw_folder(root: Path) -> Path:
    """The folder under ``root`` holding ``train-images-idx3-ubyte[.gz]``."""
    candidates = (root / "MNIST" / "raw", root / "FashionMNIST" / "raw", root)
    found = [sub for sub in candidates if _idx_file(sub, "train-images-idx3-ubyte")]
    if len(found) > 1 and found[1] != root:
        raise DataError(f"{root}: holds both MNIST and FashionMNIST; pass the raw folder you mean")
    if not found:
        where = "in it, in MNIST/raw or in FashionMNIST/raw"
        raise DataError(f"{root}: no IDX files; expected train-images-idx3-ubyte[.gz] {where}")
    return found[0]


def _idx_file(folder: Path, stem: str) -> Path | None:
    """``folder/stem``, else ``folder/stem.gz``, else None."""
    return next((f for f in (folder / stem, folder / f"{stem}.gz") if f.is_file()), None)


def check_images(x: np.ndarray, source: str) -> np.ndarray:
    """Check images and return a float32 (N, 1, H, W) copy in [0, 1]."""
    if x.ndim == 4 and 1 in (x.shape[1], x.shape[3]):
        x = x[:, 0] if x.shape[1] == 1 else x[..., 0]
    if x.ndim != 3:
        shapes = "(N, H, W), (N, 1, H, W) or (N, H, W, 1)"
        raise DataError(f"{source}: images have shape {x.shape}; expected {shapes}")
    if len(x) < MIN_IMAGES or min(x.shape[1:]) < 1:
        raise DataError(f"{source}: {len(x)} images of {x.shape[1:]}; need at least {MIN_IMAGES}")
    if x.dtype == np.uint8:
        return (x.astype(np.float32) / 255.0)[:, None]
    if not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"{source}: images are {x.dtype}; expected uint8 0-255 or float in [0, 1]")
    if not np.isfinite(x).all():
        raise DataError(f"{source}: images contain NaN or infinity; expected values in [0, 1]")
    low, high = float(x.min()), float(x.max())
    if low < 0 or high > 1:
        expected = "expected floats in [0, 1] or uint8 0-255"
        raise DataError(f"{source}: image values span [{low:g}, {high:g}]; {expected}")
    return x.astype(np.float32)[:, None]


def check_labels(y: np.ndarray, n: int, source: str) -> np.ndarray:
    """Check labels against ``n`` images and return them as int64."""
    if y.shape != (n,):
        raise DataError(f"{source}: labels have shape {y.shape}; expected ({n},), one per image")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{source}: labels are {y.dtype}; expected integer class indices")
    if y.min() < 0 or y.max() >= n:
        raise DataError(f"{source}: labels span {y.min()}..{y.max()}; expected classes 0..K-1")
    return y.astype(np.int64)


def one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__

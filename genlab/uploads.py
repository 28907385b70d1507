"""Uploaded datasets: a ``.npz``, a zipped MNIST-style IDX folder, or a zipped image folder.

An upload is untrusted bytes from a browser, so everything is checked before any of it is kept:

- a size limit on the upload (:func:`max_upload_bytes`, 32 MB unless ``GENLAB_MAX_UPLOAD_MB``
  says otherwise), and limits on what a zip may unpack to (members, declared sizes, image sides),
  checked from headers before anything is decompressed, so a zip bomb is refused unopened;
- types and shapes, with one :class:`~genlab.errors.DataError` line naming what is wrong;
- nothing is unpickled (``allow_pickle=False``) and nothing is extracted to disk: zip members are
  read in memory by name, so a member called ``../../x`` is only a name.

A valid upload is saved as a plain ``.npz`` under ``<home>/uploads/``, named by its content hash,
and that path is the dataset name a run uses (``genlab.data.load_dataset`` reads it).
"""

from __future__ import annotations

import hashlib
import io
import lzma
import math
import os
import re
import struct
import zipfile
import zlib
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from genlab.datafiles import IDX_STEMS, check_images, check_labels, combine_idx, one_line, parse_idx
from genlab.errors import DataError
from genlab.paths import replacing

DEFAULT_MAX_UPLOAD_MB = 32
MAX_UNPACKED = 512 * 2**20  # bytes a zip may declare in all; 60,000 MNIST images take 47 MB
MAX_MEMBERS = 100_000
MAX_SIDE = 256  # pixels: the models here are small; larger images are refused, not resized
MAX_PIXELS = 128 * 2**20  # all images of an image folder together (60,000 MNIST digits: 47 M)
IMAGE_TYPES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".pgm", ".ppm", ".tif", ".tiff", ".webp")
IMAGE_FORMATS = ["PNG", "JPEG", "BMP", "GIF", "PPM", "TIFF", "WEBP"]
UPLOAD_TYPES = ("npz", "zip")
# What a damaged zip, gzip or image can raise inside the standard library and Pillow.
_BROKEN = (OSError, EOFError, ValueError, SyntaxError, struct.error, zlib.error, lzma.LZMAError,
           zipfile.BadZipFile, NotImplementedError, RuntimeError, KeyError, IndexError,
           TypeError, OverflowError, Image.DecompressionBombError)


def max_upload_bytes() -> int:
    """The upload size limit in bytes (``GENLAB_MAX_UPLOAD_MB``, default 32 MB)."""
    text = os.environ.get("GENLAB_MAX_UPLOAD_MB", str(DEFAULT_MAX_UPLOAD_MB))
    try:
        return int(float(text) * 2**20)
    except ValueError:
        raise DataError(
            f"GENLAB_MAX_UPLOAD_MB must be a number of megabytes (got {text!r})") from None


def shown(name: object) -> str:
    """A file or member name as it may appear in a one-line message: whitespace collapsed."""
    return " ".join(str(name).split())[:120] or "(no name)"


def check_size(data: bytes, name: str, *, limit: int | None = None) -> None:
    """Refuse an upload over the size limit, or an empty one."""
    limit = max_upload_bytes() if limit is None else limit
    if len(data) > limit:
        raise DataError(f"{name} is {len(data) / 2**20:.1f} MB; uploads are limited to "
                        f"{limit / 2**20:.0f} MB")
    if not data:
        raise DataError(f"{name} is empty")


def read_upload(name: str, data: bytes) -> tuple[np.ndarray, np.ndarray, str]:
    """Images and labels of an uploaded dataset, checked.

    Args:
        name: The uploaded file's name; its suffix says what it is (``.npz`` or ``.zip``).
        data: Its bytes.

    Returns:
        ``(x, y, kind)``: the images as uint8 (N, H, W) when they came as bytes, else float32 in
        [0, 1]; int64 labels (N,); and ``"npz"``, ``"idx"`` or ``"images"``.

    Raises:
        DataError: too large, not a supported type, or wrongly shaped; the message says which.
    """
    name = shown(name)
    check_size(data, name)
    suffix = PurePosixPath(name).suffix.lower()
    if suffix not in (".npz", ".zip"):
        raise DataError(f"{name}: unsupported upload; expected a .npz file or a .zip of an IDX "
                        "folder or of an image folder (one subfolder per class)")
    archive = _open_zip(data, name)
    with archive:
        if suffix == ".npz":
            return (*_read_npz(archive, name), "npz")
        members = _members(archive, name)
        stems = {_idx_stem(info.filename) for info in members} - {None}
        if stems:
            return (*_read_idx_zip(archive, members, name), "idx")
        images = [i for i in members if PurePosixPath(i.filename).suffix.lower() in IMAGE_TYPES]
        if images:
            return (*_read_image_zip(archive, images, name), "images")
        listed = ", ".join(shown(i.filename) for i in members[:3]) or "nothing"
        raise DataError(f"{name} holds {listed}; expected IDX files (train-images-idx3-ubyte...) "
                        f"or images ({', '.join(IMAGE_TYPES[:3])}, ...) in class subfolders")


def import_dataset(home: str | os.PathLike, name: str, data: bytes) -> Path:
    """Check an upload and keep it as ``<home>/uploads/<name>-<hash>.npz``; returns that path.

    The same bytes always land at the same path, so uploading a file twice keeps one copy.
    """
    from genlab.data import split_indices  # imports torch; the readers above do not need it

    x, y, _ = read_upload(name, data)
    split_indices(y, seed=0, holdout_fraction=0.2, test_fraction=0.2)  # every class splits
    digest = hashlib.sha256(data).hexdigest()[:12]
    stem = re.sub(r"[^a-z0-9_]+", "_", PurePosixPath(name).stem.lower()).strip("_")[:40] or "data"
    folder = Path(home) / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    kept = sorted(folder.glob(f"*-{digest}.npz"))  # these very bytes, under any name
    path = kept[0] if kept else folder / f"{stem}-{digest}.npz"
    if not path.exists():
        with replacing(path) as partial, open(partial, "wb") as fh:  # a run never reads half
            np.savez_compressed(fh, x=x, y=y)
    return path


def uploaded_datasets(home: str | os.PathLike) -> list[Path]:
    """The kept uploads under ``home``, newest first."""
    folder = Path(home) / "uploads"
    files = folder.glob("*.npz") if folder.is_dir() else []
    return sorted(files, key=lambda p: (p.stat().st_mtime, p.name), reverse=True)


# ----------------------------------------------------------------------------- zip members
def _open_zip(data: bytes, name: str) -> zipfile.ZipFile:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except _BROKEN as err:
        raise DataError(f"{name}: not a valid zip archive ({one_line(err)})") from None
    if len(infos) > MAX_MEMBERS:
        raise DataError(f"{name} holds {len(infos):,} files; at most {MAX_MEMBERS:,} are allowed")
    declared = sum(i.file_size for i in infos)
    if declared > MAX_UNPACKED:
        raise DataError(f"{name} would unpack to {declared / 2**20:,.0f} MB; at most "
                        f"{MAX_UNPACKED / 2**20:.0f} MB are allowed")
    return archive


def _read(archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str) -> bytes:
    """One member's bytes; zipfile stops at the declared size and checks the CRC."""
    try:
        return archive.read(info)
    except _BROKEN as err:
        raise DataError(f"{name}: cannot read {shown(info.filename)} ({one_line(err)})") from None


def _members(archive: zipfile.ZipFile, name: str) -> list[zipfile.ZipInfo]:
    """The files of an archive, without folders, macOS resource forks and hidden files."""
    keep = []
    for info in archive.infolist():
        parts = PurePosixPath(info.filename.replace("\\", "/")).parts
        if info.is_dir() or not parts or "__MACOSX" in parts or parts[-1].startswith("."):
            continue
        keep.append(info)
    return keep


# ----------------------------------------------------------------------------- .npz
def _read_npz(archive: zipfile.ZipFile, name: str) -> tuple[np.ndarray, np.ndarray]:
    found = {PurePosixPath(i.filename).stem: i for i in archive.infolist()
             if i.filename.endswith(".npy")}
    if not {"x", "y"} <= set(found):
        listed = ", ".join(shown(key) for key in sorted(found)) or "nothing"
        raise DataError(f"{name}: holds {listed}; expected arrays x (images) and y (labels)")
    x, y = (_npy(_read(archive, found[key], name), f"{name}: {key}") for key in ("x", "y"))
    return _kept(check_images(x, name), x), check_labels(y, len(x), name)


def _npy(raw: bytes, source: str) -> np.ndarray:
    """One ``.npy`` array from bytes, its header checked first; object arrays are refused."""
    stream = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(stream)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, _, dtype = read_header(stream)
        if dtype.hasobject:
            raise DataError(f"{source} holds pickled or object data; expected numbers")
        if math.prod(shape) * dtype.itemsize > len(raw):
            raise DataError(f"{source} is truncated: its header promises {shape} {dtype}")
        stream.seek(0)
        return np.load(stream, allow_pickle=False)
    except _BROKEN as err:
        if isinstance(err, DataError):
            raise
        why = "pickled or object data" if "pickle" in str(err) else one_line(err)
        raise DataError(f"{source}: not a readable .npy array ({why})") from None


def _kept(checked: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """What to save: uint8 images as they came, anything else as the checked float32."""
    return np.asarray(raw.reshape(checked.shape[0], *checked.shape[2:]) if raw.dtype == np.uint8
                      else checked[:, 0])


# ----------------------------------------------------------------------------- IDX
def _idx_stem(filename: str) -> str | None:
    base = PurePosixPath(filename.replace("\\", "/")).name
    base = base[:-3] if base.endswith(".gz") else base
    stems = {stem for pair in IDX_STEMS.values() for stem in pair}
    return base if base in stems else None


def _gunzip(raw: bytes, source: str) -> bytes:
    """Decompress at most :data:`MAX_UNPACKED` bytes of a gzip stream (a bomb stops there)."""
    out = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        data = out.decompress(raw, MAX_UNPACKED)
    except zlib.error as err:
        raise DataError(f"{source}: not a valid gzip file ({one_line(err)})") from None
    if out.unconsumed_tail:
        raise DataError(f"{source} unpacks to more than {MAX_UNPACKED / 2**20:.0f} MB")
    return data


def _read_idx_zip(archive: zipfile.ZipFile, members: list[zipfile.ZipInfo], name: str
                  ) -> tuple[np.ndarray, np.ndarray]:
    arrays: dict[str, tuple[str, np.ndarray]] = {}
    for info in members:
        stem = _idx_stem(info.filename)
        if stem is None:
            continue
        if stem in arrays:
            raise DataError(f"{name} holds {stem} twice; zip one IDX folder (MNIST or "
                            "FashionMNIST), not both")
        raw = _read(archive, info, name)
        source = f"{name}: {shown(info.filename)}"
        raw = _gunzip(raw, source) if info.filename.endswith(".gz") else raw
        arrays[stem] = (shown(PurePosixPath(info.filename).name), parse_idx(raw, source))
    x, y = combine_idx(arrays, name)
    pooled = [arrays[s][1] for pair in IDX_STEMS.values() for s in pair[:1] if s in arrays]
    raw_x = np.concatenate(pooled)
    return _kept(x, raw_x), y


# ----------------------------------------------------------------------------- image folders
def _read_image_zip(archive: zipfile.ZipFile, members: list[zipfile.ZipInfo], name: str
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Grey-scale images, one subfolder per class (torchvision's ImageFolder layout)."""
    paths = [PurePosixPath(shown(i.filename).replace("\\", "/")) for i in members]
    if any(len(p.parts) < 2 for p in paths):
        loose = next(p for p in paths if len(p.parts) < 2)
        raise DataError(f"{name}: {loose} is not in a class folder; put each class's images in "
                        "a subfolder named after the class (e.g. cats/001.png)")
    if len({len(p.parts) for p in paths}) > 1:
        raise DataError(f"{name}: images sit at different folder depths; expected "
                        "<class>/<image> (optionally inside one top folder)")
    classes = sorted({p.parent.name for p in paths},
                     key=lambda c: (0, int(c), c) if c.isdigit() else (1, 0, c))
    if len(classes) < 2:
        raise DataError(f"{name}: found one class folder ({classes[0]}); expected at least two")
    label = {c: k for k, c in enumerate(classes)}
    images, first, pixels = [], None, 0
    for info, path in zip(members, paths):
        image = _image(_read(archive, info, name), f"{name}: {path}")
        pixels += image.size
        if pixels > MAX_PIXELS:
            raise DataError(f"{name}: the images hold more than {MAX_PIXELS / 2**20:.0f} M "
                            "pixels in all; upload fewer or smaller images")
        if first is None:
            first = (path, image.shape)
        elif image.shape != first[1]:
            raise DataError(f"{name}: {path} is {image.shape[1]}×{image.shape[0]} but {first[0]} "
                            f"is {first[1][1]}×{first[1][0]}; expected images of one size")
        images.append(image)
    x = np.stack(images)
    y = np.array([label[p.parent.name] for p in paths], dtype=np.int64)
    return _kept(check_images(x, name), x), check_labels(y, len(x), name)


def _image(raw: bytes, source: str) -> np.ndarray:
    """One image as uint8 (H, W) grey levels; its size is checked before it is decoded."""
    try:
        with Image.open(io.BytesIO(raw), formats=IMAGE_FORMATS) as img:
            width, height = img.size
            if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
                raise DataError(f"{source} is {width}×{height}; images may be at most "
                                f"{MAX_SIDE}×{MAX_SIDE} pixels")
            return np.asarray(img.convert("L"), dtype=np.uint8)
    except _BROKEN as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"{source}: not a readable image ({one_line(err)})") from None

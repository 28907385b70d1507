"""Bad-input fuzzing (Hypothesis): random bytes and shapes to every loader and to the checkpoint
import, random values to every config, random URL parameters.

Each case may succeed or raise one of genlab's own errors (genlab/errors.py) with a one-line
message; anything else fails the test. A crafted pickle, whose unpickling would create a marker
file, is mixed into the inputs; the marker must never appear. Example counts are kept modest so
the suite stays fast; ``FUZZ_EXAMPLES`` scales them (e.g. ``FUZZ_EXAMPLES=10`` for a long run),
and the counts tried are printed at the end of the module.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import os
import pickle
import tempfile
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from genlab import checkpoint_import, datafiles, uploads
from genlab.checkpoint import CONFIG_KEY, WEIGHTS_FILE
from genlab.config import (
    DataConfig,
    PrivacyConfig,
    RunConfig,
    TrainConfig,
    config_from_dict,
    make_run_config,
    to_dict,
)
from genlab.errors import GenlabError
from genlab.models import MODELS
from genlab.runs import RunStore

SCALE = float(os.environ.get("FUZZ_EXAMPLES", "1"))
COUNTS: Counter[str] = Counter()
MARKER = Path(tempfile.mkdtemp(prefix="genlab-fuzz-")) / "pickle-ran"


def fuzz(n: int):
    """Hypothesis settings for ``n`` examples (scaled), without deadlines: the CPU is shared."""
    return settings(max_examples=max(1, int(n * SCALE)), deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


class Payload:
    """Unpickling this opens ``path`` (MARKER by default) for writing, which creates the file."""

    def __init__(self, path: Path = MARKER):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


PICKLE = pickle.dumps(Payload())


def only_clear_errors(target: str, call, *args, **kwargs):
    """Run one case: success, or a GenlabError with a one-line message; never code from a file."""
    COUNTS[target] += 1
    try:
        return call(*args, **kwargs)
    except GenlabError as err:
        text = str(err)
        assert text and "\n" not in text, repr(text)
    finally:
        assert not MARKER.exists(), f"{target} executed a pickle"


@pytest.fixture(scope="module", autouse=True)
def report_counts(request):
    yield
    total = sum(COUNTS.values())
    line = ", ".join(f"{name} {n}" for name, n in sorted(COUNTS.items()))
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():  # shown even when the tests pass
            reporter.write_line(f"\nfuzz examples tried: {total} ({line})")


def test_the_pickle_payload_is_live():
    """The control: unpickling the payload does create a marker, so its absence means something."""
    control = MARKER.with_name("control")
    pickle.loads(pickle.dumps(Payload(control)))
    assert control.exists()
    control.unlink()


# ----------------------------------------------------------------------------- strategies
blobs = st.one_of(st.binary(max_size=2048), st.just(PICKLE),
                  st.binary(max_size=512).map(lambda b: b"PK\x03\x04" + b),
                  st.binary(max_size=512).map(lambda b: b"\x93NUMPY" + b),
                  st.binary(max_size=512).map(gzip.compress))
dtypes = st.one_of(hnp.integer_dtypes(), hnp.unsigned_integer_dtypes(), hnp.floating_dtypes(),
                   hnp.boolean_dtypes(), hnp.complex_number_dtypes(),
                   hnp.unicode_string_dtypes(max_len=3))
arrays = hnp.arrays(dtypes, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=12))


def npz_of(members: dict[str, np.ndarray | bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, value in members.items():
            if isinstance(value, np.ndarray):
                inner = io.BytesIO()
                np.save(inner, value, allow_pickle=value.dtype.hasobject)
                value = inner.getvalue()
            archive.writestr(name, value)
    return buffer.getvalue()


def zip_of(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, value in members.items():
            archive.writestr(name, value)
    return buffer.getvalue()


# ----------------------------------------------------------------------------- loaders
@fuzz(150)
@given(name=st.sampled_from(["a.npz", "a.zip", "A.NPZ", "a", "a.npy"])
       | st.builds(str.__add__, st.text(max_size=8), st.sampled_from([".npz", ".zip"])),
       data=blobs)
def test_uploads_of_random_bytes(name, data):
    only_clear_errors("upload bytes", uploads.read_upload, name, data)


@fuzz(80)
@given(x=st.one_of(arrays, st.just(np.array([Payload()], dtype=object))), y=arrays,
       extra=st.dictionaries(st.sampled_from(["z.npy", "x", "y.npy.npy", "../x.npy"]), blobs,
                             max_size=2))
def test_npz_of_random_arrays_and_shapes(x, y, extra):
    data = npz_of({**extra, "x.npy": x, "y.npy": y})
    only_clear_errors("npz upload", uploads.read_upload, "a.npz", data)
    with tempfile.TemporaryDirectory() as folder:  # the loader of local .npz files, too
        path = Path(folder) / "a.npz"
        path.write_bytes(data)
        only_clear_errors("npz file", datafiles.load_npz, path)


idx_headers = st.builds(
    lambda code, dims, body: bytes([0, 0, code, len(dims)]) + np.array(dims, ">u4").tobytes()
    + body,
    code=st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x01, 0xFF]),
    dims=st.lists(st.integers(0, 40), min_size=0, max_size=4),
    body=st.binary(max_size=3000))


@fuzz(80)
@given(images=st.one_of(idx_headers, blobs), labels=st.one_of(idx_headers, blobs),
       gz=st.booleans(), folder=st.sampled_from(["", "MNIST/raw/", "FashionMNIST/raw/"]))
def test_idx_files_with_random_headers_and_shapes(images, labels, gz, folder):
    only_clear_errors("idx parse", datafiles.parse_idx, images, "fuzz")
    suffix = ".gz" if gz else ""
    pack = gzip.compress if gz else (lambda b: b)
    members = {f"{folder}train-images-idx3-ubyte{suffix}": pack(images),
               f"{folder}train-labels-idx1-ubyte{suffix}": pack(labels)}
    only_clear_errors("idx zip upload", uploads.read_upload, "mnist.zip", zip_of(members))
    with tempfile.TemporaryDirectory() as root:  # the loader of local IDX folders, too
        for name, value in members.items():
            (Path(root) / name).parent.mkdir(parents=True, exist_ok=True)
            (Path(root) / name).write_bytes(value)
        only_clear_errors("idx folder", datafiles.load_idx_folder, root)


def image_bytes(array: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


images = st.builds(
    image_bytes,
    hnp.arrays(np.uint8, st.tuples(st.integers(1, 20), st.integers(1, 20))
               | st.tuples(st.integers(1, 12), st.integers(1, 12), st.sampled_from([3, 4]))),
    st.sampled_from(["PNG", "BMP", "GIF", "TIFF"]))
member_names = st.builds(
    lambda parts, ext: "/".join(parts) + ext,
    st.lists(st.sampled_from(["0", "1", "cats", "..", "", "a b", "ü", "__MACOSX", ".x", "a\nb"])
             | st.text(max_size=6), min_size=1, max_size=3),
    st.sampled_from([".png", ".jpg", ".bmp", ".gif", ".tif", ".txt", ""])).filter(
        lambda name: name.split("\x00")[0].strip("/"))  # zipfile needs a name (ends at NUL)


@fuzz(50)
@given(members=st.dictionaries(member_names, st.one_of(images, blobs), min_size=1, max_size=14))
def test_image_folder_zips_with_random_members(members):
    only_clear_errors("image zip upload", uploads.read_upload, "faces.zip", zip_of(members))


# ----------------------------------------------------------------------------- checkpoints
@pytest.fixture(scope="module")
def weights(zoo):
    run_id = zoo.run("vae")
    store = RunStore(zoo.home)
    return store.get(run_id).config, (store.artifacts_dir(run_id) / WEIGHTS_FILE).read_bytes()


@fuzz(150)
@given(data=st.one_of(blobs, st.builds(
    lambda header, body: len(header).to_bytes(8, "little") + header + body,
    st.one_of(st.binary(max_size=200),
              st.dictionaries(st.text(max_size=8), st.one_of(
                  st.none(), st.integers(), st.text(max_size=8),
                  st.fixed_dictionaries({"dtype": st.sampled_from(["F32", "I64", "X", "U8"]),
                                         "shape": st.lists(st.integers(-2, 5), max_size=3),
                                         "data_offsets": st.lists(st.integers(-1, 64),
                                                                  max_size=3)})),
                  max_size=4).map(lambda d: json.dumps(d).encode())),
    st.binary(max_size=256))), config=st.one_of(st.none(), blobs, st.text(max_size=64)))
def test_checkpoint_reader_on_random_bytes(data, config):
    only_clear_errors("checkpoint bytes", checkpoint_import.read_checkpoint, data, "w.safetensors",
                      config_json=config)


@fuzz(30)
@given(data=st.data())
def test_checkpoint_import_of_random_shapes_and_configs(weights, tmp_path_factory, data):
    config, real = weights
    state = load_safetensors(real)
    for key in data.draw(st.lists(st.sampled_from(sorted(state)), max_size=3, unique=True)):
        shape = data.draw(st.lists(st.integers(0, 6), max_size=3))
        dtype = data.draw(st.sampled_from([torch.float32, torch.float16, torch.int64]))
        state[key] = torch.zeros(shape, dtype=dtype)
    settings_ = data.draw(st.dictionaries(
        st.sampled_from(sorted(config["model_config"]) + ["bogus"]),
        st.one_of(st.integers(-3, 10**9), st.floats(), st.text(max_size=5), st.none()),
        max_size=2))
    cfg = {**config, "model_config": {**config["model_config"], **settings_}}
    blob = save_safetensors(state, metadata={CONFIG_KEY: json.dumps(cfg)})
    store = RunStore(tmp_path_factory.mktemp("import"))
    run_id = only_clear_errors("checkpoint import", checkpoint_import.import_checkpoint, store,
                               blob, "w.safetensors")
    assert [r.id for r in store.list()] == ([run_id] if run_id else [])  # refused: no run


def test_pickles_in_every_disguise_never_run(weights, tmp_path):
    """Targeted cases on top of the random ones: each place a pickle could hide."""
    config, _ = weights
    buffer = io.BytesIO()
    torch.save({"w": Payload()}, buffer)
    torch_file = buffer.getvalue()
    disguises = {
        "pickle as .npz": ("a.npz", PICKLE),
        "object array in .npz": ("a.npz", npz_of({"x.npy": np.array([Payload()] * 12),
                                                  "y.npy": np.zeros(12, np.int64)})),
        "pickle as an image": ("a.zip", zip_of({"0/a.png": PICKLE, "1/b.png": PICKLE})),
        "pickle as IDX": ("a.zip", zip_of({"train-images-idx3-ubyte": PICKLE,
                                           "train-labels-idx1-ubyte": PICKLE})),
    }
    for label, (name, data) in disguises.items():
        COUNTS[label] += 1
        with pytest.raises(GenlabError):
            uploads.read_upload(name, data)
        assert not MARKER.exists(), label
    store = RunStore(tmp_path)
    for data, config_json in ((torch_file, None), (torch_file, json.dumps(config)),
                              (PICKLE, None), (save_safetensors({"w": torch.zeros(1)}), PICKLE)):
        assert only_clear_errors("pickled checkpoint", checkpoint_import.import_checkpoint,
                                 store, data, "w.safetensors", config_json=config_json) is None
    path = tmp_path / "a.npz"
    path.write_bytes(disguises["object array in .npz"][1])
    only_clear_errors("object array in a local .npz", datafiles.load_npz, path)
    assert store.list() == [] and not MARKER.exists()


# ----------------------------------------------------------------------------- configs
anything = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-2**70, 2**70),
              st.floats(), st.text(max_size=12),
              st.sampled_from(["1", "0", "-1", "nan", "inf", "1e3", "none", "true", "prv",
                               "conv", "mlp", "auto", "cpu", "1e-5"])),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=3),
    max_leaves=5)
CONFIG_CLASSES = {"data": DataConfig, "train": TrainConfig, "privacy": PrivacyConfig,
                  **{f"model {name}": config_cls for name, (_, config_cls) in MODELS.items()}}


def _check_config(cls, values) -> None:
    cfg = config_from_dict(cls, values)
    # an accepted config is all finite numbers and survives the JSON round trip unchanged
    assert config_from_dict(cls, json.loads(json.dumps(to_dict(cfg)))) == cfg
    assert all(not isinstance(v, float) or np.isfinite(v) for v in to_dict(cfg).values())


@pytest.mark.parametrize("label", sorted(CONFIG_CLASSES))
@fuzz(80)
@given(data=st.data())
def test_every_config_takes_random_values(label, data):
    cls = CONFIG_CLASSES[label]
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    values = data.draw(st.dictionaries(st.sampled_from([*names, "bogus"]), anything,
                                       max_size=len(names)))
    only_clear_errors(f"config {label}", _check_config, cls, values)
    only_clear_errors(f"config {label}", config_from_dict, cls,
                      data.draw(st.one_of(anything, st.just(values))))


@fuzz(100)
@given(model=st.sampled_from([*MODELS, "nope"]),
       overrides=st.dictionaries(st.text(max_size=12) | st.sampled_from(
           ["lr", "batch_size", "latent_dim", "beta", "holdout_fraction", "channels"]),
           st.text(max_size=8) | st.sampled_from(["0", "-1", "nan", "1e9", "3"]), max_size=3),
       epochs=st.one_of(st.none(), st.integers(-2, 5)), seed=st.integers(-2, 2**33),
       privacy=st.one_of(st.none(), st.dictionaries(
           st.sampled_from(["epsilon", "noise_multiplier", "delta", "accountant", "x"]),
           anything, max_size=3)))
def test_run_configs_from_the_form_and_the_cli(model, overrides, epochs, seed, privacy):
    """make_run_config is what both the Train page and `genlab train --set` call."""
    only_clear_errors("make_run_config", make_run_config, model, "digits", epochs=epochs,
                      seed=seed, overrides=overrides, privacy=privacy)


@fuzz(100)
@given(text=st.one_of(st.text(max_size=80), anything.map(json.dumps)))
def test_stored_run_configs_from_random_json(text):
    only_clear_errors("RunConfig.from_json", RunConfig.from_json, text)


# ----------------------------------------------------------------------------- URL parameters
@pytest.fixture(scope="module")
def demo_frame():
    from genlab.export import read_records
    from genlab.tradeoffs import runs_frame

    demo = Path(__file__).resolve().parents[1] / "assets" / "demo" / "records.json"
    _, runs = read_records(demo.read_text())
    return runs_frame([r for r in runs if r.status == "finished" and r.record])


@fuzz(60)
@given(params=st.dictionaries(
    st.sampled_from(["dataset", "models", "runs", "x", "y", "eps", "nodp", "run", "zzz"]),
    st.text(max_size=20) | st.sampled_from(["digits", "vae,gan", "1,8", "inf,1", "cas", "1"]),
    max_size=6))
def test_trade_offs_view_from_random_query_params(demo_frame, params):
    import services  # the dashboard's own parser of ?dataset=...&x=...

    view, problems = only_clear_errors("trade-offs URL", services.parse_view, params, demo_frame)
    assert all(isinstance(p, str) and p for p in problems)  # shown with st.warning
    assert view.dataset in set(demo_frame["dataset"])


@pytest.fixture(scope="module")
def url_store(tmp_path_factory):
    store = RunStore(tmp_path_factory.mktemp("url_store"))
    store.create_run(model="vae", dataset="digits", config={})
    return store


@fuzz(100)
@given(run=st.text(max_size=30) | st.sampled_from(["'; DROP TABLE runs; --", "%", "_", "../x"]))
def test_run_ids_from_the_url(url_store, run):
    """?run=<id> on Explore, Explain and Privacy: a lookup in the store, by value, never SQL."""
    only_clear_errors("run id from URL", url_store.get, run)
    only_clear_errors("run id from URL", url_store.artifacts_dir, run)
    assert len(url_store.list()) == 1

"""The upload on the Train page and the checkpoint import on Explore, under AppTest."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from streamlit.testing.v1 import AppTest

from genlab.checkpoint import WEIGHTS_FILE
from genlab.owners import local_owner
from genlab.runs import RunStore

APP = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"


def page(name: str) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    at.switch_page(f"views/{name}.py")
    return at.run()


def npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def test_an_uploaded_dataset_becomes_the_train_dataset(genlab_home):
    at = page("train")
    rng = np.random.default_rng(1)
    good = npz_bytes(x=rng.random((60, 12, 12), dtype=np.float32), y=np.arange(60) % 3)
    at.file_uploader(key="train_upload").upload("Shapes.npz", good).run()
    assert not at.exception, [e.value for e in at.exception]
    chosen = at.selectbox(key="train_dataset")
    assert chosen.value.startswith(str(genlab_home / "uploads" / "shapes-"))
    assert chosen.format_func(chosen.value) == "shapes (uploaded)"
    assert "Shapes.npz is checked and ready" in at.success[0].value
    assert "36 training images" in at.success[0].value  # 60 images, 20% holdout, 20% test

    bad = npz_bytes(x=np.zeros((60, 12), np.float32), y=np.arange(60) % 3)
    at.file_uploader(key="train_upload").clear().upload("flat.npz", bad).run()
    assert "flat.npz: images have shape (60, 12)" in at.error[0].value
    assert at.selectbox(key="train_dataset").value == chosen.value  # unchanged


def test_a_checkpoint_imports_from_the_explore_page(zoo, genlab_home):
    source = RunStore(zoo.home)
    run_id = zoo.run("mixture")
    weights = (source.artifacts_dir(run_id) / WEIGHTS_FILE).read_bytes()
    at = page("explore")
    assert "No finished runs yet" in at.info[0].value
    at.file_uploader(key="explore_import_files").upload("shared.safetensors", weights).run()
    at.button(key="explore_import").click().run()
    assert not at.exception, [e.value for e in at.exception]
    (imported,) = RunStore(genlab_home).list()
    assert (imported.status, imported.owner, imported.model) == ("finished", local_owner(),
                                                                 "mixture")
    assert at.selectbox(key="explore_run").value == imported.id
    assert f"Imported shared.safetensors as run {imported.id}." in at.success[0].value
    assert at.get("download_button")  # and its weights can be downloaded again

    at.file_uploader(key="explore_import_files").clear().upload("junk.safetensors",
                                                                b"\x80\x04junk").run()
    at.button(key="explore_import").click().run()
    assert "junk.safetensors is too short for a safetensors file" in at.error[0].value
    assert len(RunStore(genlab_home).list()) == 1

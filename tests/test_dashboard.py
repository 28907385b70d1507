"""The dashboard pages under Streamlit's AppTest, against a real run store and real models.

Pages are opened through the router (``dashboard/app.py``), as a user reaches them. Training the
page starts runs in a real background worker; each such test waits for its worker to end.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import services
from streamlit.testing.v1 import AppTest

from genlab import jobs
from genlab.config import make_run_config
from genlab.errors import GenlabError
from genlab.models import MODELS, config_fields, model_entry, model_names
from genlab.runs import ACTIVE, RunStore

APP = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"


def open_page(page: str, **query: str) -> AppTest:
    """Run the app, switch to ``views/<page>.py`` (with ``query`` in the URL) and run it."""
    at = AppTest.from_file(str(APP), default_timeout=90)
    at.run()
    if page != "home":
        at.switch_page(f"views/{page}.py")
    at.query_params.update(query)
    return at.run()


def no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def plotly_traces(at: AppTest) -> dict[str, list]:
    """``{trace name: y values}`` of every Plotly chart on the page."""
    traces = {}
    for chart in at.get("plotly_chart"):
        for trace in json.loads(chart.proto.spec)["data"]:
            traces[trace["name"]] = trace["y"]
    return traces


def train_in_process(home: Path, model: str = "vae", epochs: int = 1, **overrides) -> str:
    store = RunStore(home)
    cfg = make_run_config(model, "digits", epochs=epochs, seed=0, overrides=overrides)
    run_id = store.create_run(model=model, dataset="digits", config=cfg.to_dict())
    jobs.execute_run(store, run_id)
    return run_id


# ----------------------------------------------------------------------------- home
def test_home_explains_axes_and_lists_runs(trained_home):
    _, run_id = trained_home
    at = open_page("home")
    no_exception(at)
    headings = " ".join(h.value for h in at.subheader)
    for axis in ("Performance", "Interpretability", "Privacy"):
        assert axis in headings
    text = " ".join(m.value for m in at.markdown)
    assert "ε" in text and "membership" in text.lower()
    table = at.dataframe[0].value.set_index("id")
    assert table.loc[run_id, "status"] == "finished" and table.loc[run_id, "epochs"] == 2
    summary = RunStore(trained_home[0]).get(run_id).summary
    assert table.loc[run_id, "test loss"] == pytest.approx(summary["test_loss"])
    assert [link.proto.label for link in at.page_link] == ["Train your first model"]
    assert "train" in at.page_link[0].proto.page


def test_home_without_runs_says_so(genlab_home):
    at = open_page("home")
    no_exception(at)
    assert not at.dataframe
    assert "No runs yet" in at.info[0].value


# ----------------------------------------------------------------------------- train
def test_train_form_is_built_from_the_model_config(genlab_home):
    at = open_page("train")
    no_exception(at)
    assert at.selectbox(key="train_model").value == "vae"
    assert at.selectbox(key="train_dataset").value == "digits"
    arch = at.selectbox(key="train_field_vae_arch")
    assert arch.options == ["conv", "mlp"] and arch.value == "conv"
    assert at.number_input(key="train_field_vae_latent_dim").value == 16
    assert at.number_input(key="train_field_vae_beta").value == 1.0
    assert "KL" in at.number_input(key="train_field_vae_beta").help
    vae = model_entry("vae")[0]
    assert at.number_input(key="train_epochs").value == vae.default_epochs("digits")
    assert at.number_input(key="train_batch_size").value == 128
    # A new dataset brings the model's own defaults for it.
    at.selectbox(key="train_dataset").set_value("mnist5k").run()
    assert at.number_input(key="train_epochs").value == vae.default_epochs("mnist5k")
    assert at.number_input(key="train_batch_size").value == 64
    assert "No runs yet" in at.info[0].value


@pytest.mark.parametrize("name", model_names())
def test_train_form_follows_each_registered_model(genlab_home, name):
    at = open_page("train")
    at.selectbox(key="train_model").set_value(name).run()
    no_exception(at)
    assert at.subheader[0].value == f"{name} settings"
    for field in config_fields(name):
        assert at.session_state[f"train_field_{name}_{field['name']}"] == field["default"]
    cls = model_entry(name)[0]
    expected = {"batch_size": 128, "lr": 1e-3, **cls.default_train_settings("digits")}
    assert at.session_state["train_epochs"] == cls.default_epochs("digits")
    assert at.session_state["train_batch_size"] == expected["batch_size"]
    assert at.session_state["train_lr"] == pytest.approx(expected["lr"])


def test_train_rejects_an_invalid_setting_without_creating_a_run(genlab_home):
    at = open_page("train")
    at.number_input(key="train_field_vae_latent_dim").set_value(0)
    at.button(key="train_start").click().run()
    no_exception(at)
    assert len(at.error) == 1 and "latent_dim" in at.error[0].value
    assert RunStore(genlab_home).list() == []
    assert at.number_input(key="train_epochs").value == 30  # the page is still up


def test_train_starts_a_background_run_and_follows_it(genlab_home):
    store = RunStore(genlab_home)
    at = open_page("train")
    at.number_input(key="train_epochs").set_value(1)
    at.number_input(key="train_seed").set_value(3)
    at.selectbox(key="train_field_vae_arch").set_value("mlp")
    at.button(key="train_start").click().run()
    runs = store.list()
    try:
        no_exception(at)
        assert len(runs) == 1
        run = runs[0]
        assert run.status in ACTIVE
        assert run.config["train"]["epochs"] == 1 and run.config["train"]["seed"] == 3
        assert run.config["model_config"]["arch"] == "mlp"
        assert run.id in at.success[0].value
        assert at.selectbox(key="train_follow").value == run.id
        assert at.metric[0].label == "Status" and at.metric[0].value in ACTIVE
        assert at.button(key="train_cancel")  # an active run can be cancelled
    finally:
        for run in runs:
            if jobs.wait(store, run.id, timeout=120) in ACTIVE:  # pragma: no cover
                jobs.cancel(store, run.id)
    assert store.get(run.id).status == "finished", store.get(run.id).error

    at.run()
    no_exception(at)
    assert at.metric[0].value == "finished"
    assert at.metric[1].value == "1 / 1"
    traces = plotly_traces(at)
    history = store.history(run.id)
    assert traces["test_loss"] == pytest.approx([h["test_loss"] for h in history])
    assert len(traces["train_loss"]) == 1
    assert len(at.image) == 1 and at.image[0].value[0].endswith(".png")
    assert [link.proto.query_string for link in at.page_link] == [f"run={run.id}"]
    assert not [b for b in at.button if b.key == "train_cancel"]


def test_cancel_button_cancels_the_followed_run(genlab_home):
    store = RunStore(genlab_home)
    at = open_page("train")
    at.number_input(key="train_epochs").set_value(200)
    at.button(key="train_start").click().run()
    (run,) = store.list()
    try:
        at.button(key="train_cancel").click().run()
        no_exception(at)
        assert store.get(run.id).cancel_requested
    finally:
        status = jobs.wait(store, run.id, timeout=120)
    assert status == "cancelled"
    at.run()
    assert at.metric[0].value == "cancelled"
    assert "cancelled" in at.warning[0].value


# ----------------------------------------------------------------------------- explore
def test_explore_shows_the_trained_run(trained_home):
    _, run_id = trained_home
    at = open_page("explore", run=run_id)
    no_exception(at)
    assert not at.error
    assert at.selectbox(key="explore_run").value == run_id
    summary = RunStore(trained_home[0]).get(run_id).summary
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Test loss"] == f"{summary['test_loss']:.2f}"
    assert metrics["Epochs"] == "2" and metrics["Device"] == "cpu"
    assert metrics["Parameters"] == f"{summary['params']:,}"
    assert [t.label for t in at.tabs] == ["Samples", "Reconstructions", "Latent traversal"]
    assert len(at.image) == 3  # samples, reconstructions, traversal
    assert all(img.value[0].endswith(".png") for img in at.image)
    dims = at.multiselect(key=f"explore_dims_{run_id}")
    assert dims.value == list(range(8)) and len(dims.options) == 16


def test_explore_seed_changes_the_samples(trained_home):
    _, run_id = trained_home
    at = open_page("explore", run=run_id)
    first = at.image[0].value
    at.number_input(key="explore_seed").set_value(1).run()
    no_exception(at)
    assert at.image[0].value != first
    assert at.image[1].value and at.image[2].value
    same = services.sample_grid(run_id, 16, 0)
    assert np.array_equal(same, services.sample_grid(run_id, 16, 0))
    assert not np.array_equal(same, services.sample_grid(run_id, 16, 1))


def test_explore_grids_have_the_promised_layout(trained_home):
    _, run_id = trained_home
    scale = services.grid_scale((1, 8, 8))
    assert 64 <= 8 * scale <= 96
    samples = services.sample_grid(run_id, 16, 0)
    assert samples.shape == ((4 * 9 + 1) * scale,) * 2 and samples.dtype == np.uint8
    rec = services.reconstruction_grid(run_id, 10, 0)
    assert rec.shape == ((2 * 9 + 1) * scale, (10 * 9 + 1) * scale)
    originals = rec[: 9 * scale]
    assert originals.std() > 0  # real test digits, not a blank row
    trav = services.traversal_grid(run_id, [0, 5, 7], -3.0, 3.0, 9, 0)
    assert trav.shape[0] == (3 * 9 + 1) * scale
    assert trav.shape[1] > (9 * 9 + 1) * scale  # the row labels sit on the left
    first_row = trav[scale: 9 * scale, -(9 * 9 + 1) * scale:]
    assert not np.array_equal(first_row[:, : 9 * scale], first_row[:, -9 * scale:])


def test_explore_reports_an_unknown_run_in_the_url(trained_home):
    at = open_page("explore", run="no-such-run")
    no_exception(at)
    assert len(at.error) == 1 and "unknown run 'no-such-run'" in at.error[0].value
    newest = services.list_runs(status="finished")[0].id
    assert at.selectbox(key="explore_run").value == newest  # the page stays usable
    assert len(at.image) == 3


def test_explore_honours_the_run_in_the_url(genlab_home):
    older = train_in_process(genlab_home, arch="mlp", latent_dim=4)
    newer = train_in_process(genlab_home, arch="mlp")
    at = open_page("explore")
    assert at.selectbox(key="explore_run").value == newer
    at = open_page("explore", run=older)
    no_exception(at)
    assert not at.error
    assert at.selectbox(key="explore_run").value == older
    assert at.multiselect(key=f"explore_dims_{older}").options == ["z0", "z1", "z2", "z3"]
    at.selectbox(key="explore_run").set_value(newer).run()
    assert at.query_params["run"] == newer


def test_explore_without_finished_runs_links_to_train(genlab_home):
    store = RunStore(genlab_home)
    queued = store.create_run(model="vae", dataset="digits", config={})
    at = open_page("explore", run=queued)
    no_exception(at)
    assert "not finished" in at.error[0].value
    assert "No finished runs" in at.info[0].value
    assert "train" in at.page_link[0].proto.page


def test_train_panel_shows_why_a_run_failed(genlab_home):
    store = RunStore(genlab_home)
    cfg = make_run_config("vae", "digits", epochs=1, overrides={"batch_size": 5000})
    run_id = store.create_run(model="vae", dataset="digits", config=cfg.to_dict())
    with pytest.raises(GenlabError):
        jobs.execute_run(store, run_id)
    at = open_page("train")
    no_exception(at)
    assert at.selectbox(key="train_follow").value == run_id
    assert at.metric[0].value == "failed"
    assert len(at.error) == 1 and "batch_size 5000 is larger" in at.error[0].value
    assert not at.image and not [b for b in at.button if b.key == "train_cancel"]


@pytest.mark.skipif("gan" not in MODELS, reason="no GAN registered")
def test_explore_a_latent_model_without_an_encoder(genlab_home):
    run_id = train_in_process(genlab_home, "gan", channels=8, latent_dim=4)
    at = open_page("explore", run=run_id)
    no_exception(at)
    assert not at.error
    assert "cannot reconstruct" in at.info[0].value
    assert len(at.image) == 2  # samples and the traversal (from z = 0)
    assert at.multiselect(key=f"explore_dims_{run_id}").options == ["z0", "z1", "z2", "z3"]


@pytest.mark.slow
@pytest.mark.skipif("pixelcnn" not in MODELS, reason="no PixelCNN registered")
def test_explore_a_model_without_a_latent(genlab_home):
    run_id = train_in_process(genlab_home, "pixelcnn", channels=8, layers=2, head=8,
                              batch_size=128)
    at = open_page("explore", run=run_id)
    no_exception(at)
    assert not at.error
    infos = [i.value for i in at.info]
    assert any("cannot reconstruct" in i for i in infos)
    assert any("no latent space" in i for i in infos)
    assert len(at.image) == 1  # samples only

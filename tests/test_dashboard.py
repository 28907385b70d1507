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
from test_svg_chart import svg_series

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


def live_view(at: AppTest) -> AppTest:
    """On Train, switch from the form ("New run", where a fresh session opens) to "Live run"."""
    return at.radio(key="train_view").set_value("Live run").run()


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
    headings = [m.value.split("\n")[0] for m in at.markdown if m.value.startswith("### ")]
    for axis in ("Performance", "Interpretability", "Privacy"):
        assert any(heading.endswith(f" {axis}") for heading in headings)
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
    # Switching DP on loads the family's DP-SGD defaults (larger batches); off brings them back.
    at.toggle(key="train_dp").set_value(True).run()
    no_exception(at)
    assert at.number_input(key="train_batch_size").value == vae.default_train_settings(
        "mnist5k", private=True)["batch_size"] == 256
    assert at.number_input(key="train_lr").value == pytest.approx(3e-3)
    at.toggle(key="train_dp").set_value(False).run()
    assert at.number_input(key="train_batch_size").value == 64
    assert "train_follow" not in [box.key for box in at.selectbox]  # the form alone
    live_view(at)
    assert "No runs yet: start one under New run." == at.info[0].value
    assert not at.number_input  # and the live run alone


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
    chart, samples = at.image
    lines = {name: values for name, (values, _) in svg_series(chart.value[0]).items()}
    history = store.history(run.id)
    assert lines["test_loss"] == pytest.approx([h["test_loss"] for h in history])
    assert len(lines["train_loss"]) == 1
    assert samples.value[0].endswith(".png")
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
    assert [t.label for t in at.tabs] == ["Samples", "Reconstructions", "Latent traversal",
                                          "Interpolation"]
    assert len(at.image) == 4  # samples, reconstructions, traversal, interpolation
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


def test_explore_grids_have_grey_gutters_and_no_empty_cells(trained_home):
    _, run_id = trained_home
    scale, cell = services.grid_scale((1, 8, 8)), 9 * services.grid_scale((1, 8, 8))
    grid = services.sample_grid(run_id, 18, 0)  # 5 per row: 3 full rows, then 3 images
    grey = round(services.GUTTER * 255)
    assert (grid[:scale] == grey).all() and (grid[:, :scale] == grey).all()
    assert (grid[:, cell: cell + scale] == grey).all()  # between the first two columns
    last_row = grid[3 * cell + scale:]
    assert (last_row[:, 3 * cell + scale:] == 255).all()  # no grey frames without an image
    assert last_row[:, : 3 * cell].std() > 0


def test_explore_reports_an_unknown_run_in_the_url(trained_home):
    at = open_page("explore", run="no-such-run")
    no_exception(at)
    assert len(at.error) == 1 and "unknown run 'no-such-run'" in at.error[0].value
    newest = services.list_runs(status="finished")[0].id
    assert at.selectbox(key="explore_run").value == newest  # the page stays usable
    assert len(at.image) == 4


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
    at = live_view(open_page("train"))
    no_exception(at)
    assert at.selectbox(key="train_follow").value == run_id
    assert at.metric[0].value == "failed"
    assert len(at.error) == 1 and "batch_size 5000 is larger" in at.error[0].value
    assert not at.image and not [b for b in at.button if b.key == "train_cancel"]


def expected_tabs(cls) -> list[str]:
    """Explore's tabs for a model class, from its capabilities (never from its name)."""
    tabs = ["Samples"]
    if cls.conditional:
        tabs.append("Classes")
    if callable(getattr(cls, "components", None)):
        tabs.append("Components")
    return [*tabs, "Reconstructions", "Latent traversal", "Interpolation"]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_explore_shows_every_model_type(zoo, monkeypatch, name):
    """Each registered family, trained briefly on digits, gets the sections it can show."""
    monkeypatch.setenv("GENLAB_HOME", str(zoo.home))
    run_id = zoo.run(name)
    at = open_page("explore", run=run_id)
    no_exception(at)
    assert not at.error, [e.value for e in at.error]
    assert at.selectbox(key="explore_run").value == run_id
    cls = model_entry(name)[0]
    model, _, data = services.load_model(run_id)
    tabs = [t.label for t in at.tabs]
    assert tabs == expected_tabs(cls)
    infos = " ".join(i.value for i in at.info)
    captions = " ".join([c.value for c in at.caption]
                        + [text for img in at.image for text in img.captions])
    images = 1  # the samples

    if cls.conditional:  # one labelled row of samples per class
        images += 1
        k = data.num_classes
        assert f"{k} rows, one per class" in captions
        assert services.class_labels(k) == [f"class {c}" for c in range(k)]
        grid = services.class_grid(run_id, 5, 0)
        cell = (data.shape[-2] + 1) * services.grid_scale(data.shape)
        assert grid.shape[0] == k * cell + services.grid_scale(data.shape)
        assert grid[:, :20].min() < 128  # the labels are drawn in the left margin
    if "Components" in tabs:  # the mixture's prototypes and their weights
        images += 1
        k = model.config.components
        weights = plotly_traces(at)["weight"]
        assert len(weights) == k and sum(weights) == pytest.approx(1.0)
        assert weights == sorted(weights, reverse=True)
        assert f"The {k} heaviest of {k} components" in captions
    if model.has_latent:
        levels = services.capabilities(run_id)["levels"]
        images += len(levels) + 1  # a traversal per latent level, and the interpolation
        if len(levels) == 1:
            dims = at.multiselect(key=f"explore_dims_{run_id}")
            assert dims.options == [f"z{d}" for d in range(model.latent_dim)]
        else:  # one multiselect per level, each offering that level's dims only
            pickers = [at.multiselect(key=f"explore_dims_{run_id}_{lv['key']}") for lv in levels]
            offered = [p.options for p in pickers]
            assert offered == [lv["labels"] for lv in levels]
            assert [p.value for p in pickers] == [lv["shown_first"] for lv in levels]
            assert sum(map(len, offered)) == model.latent_dim
        mode = at.radio(key=f"explore_interp_mode_{run_id}")
        assert mode.options == ["linear", "spherical"]
        assert mode.value == ("linear" if services.capabilities(run_id)["has_encoder"]
                              else "spherical")
    else:
        assert "no latent space, so there is nothing to traverse" in infos
        assert "no latent space, so there is nothing to interpolate" in infos
    if callable(getattr(model, "reconstruct", None)):
        images += 1
    else:
        assert "cannot reconstruct" in infos
    assert len(at.image) == images
    assert all(img.value[0].endswith(".png") for img in at.image)


def test_explore_interpolation_strips(zoo, monkeypatch):
    """Encoder models: real image, gap, decoded path, gap, real image; others: the path only."""
    monkeypatch.setenv("GENLAB_HOME", str(zoo.home))
    scale = services.grid_scale((1, 8, 8))
    cell = 9 * scale
    vae, gan = zoo.run("vae"), zoo.run("gan")
    strip = services.interpolation_grid(vae, 3, 6, False, 0)
    assert strip.shape == (3 * cell + scale, (6 + 4) * cell + scale)
    gap = strip[scale: cell, cell + scale: 2 * cell]
    assert (gap == 255).all()  # the white cell that sets the real image apart
    spherical = services.interpolation_grid(vae, 3, 6, True, 0)
    assert spherical.shape == strip.shape
    # both paths share their ends (the real images and their codes) and differ in between
    assert np.array_equal(strip[:, :2 * cell], spherical[:, :2 * cell])
    assert not np.array_equal(strip, spherical)
    prior = services.interpolation_grid(gan, 2, 5, True, 0)
    assert prior.shape == (2 * cell + scale, 5 * cell + scale)
    assert not np.array_equal(prior, services.interpolation_grid(gan, 2, 5, True, 1))


def test_pixelcnn_sampling_reports_progress_only_on_a_cache_miss(zoo, monkeypatch):
    if "pixelcnn" not in MODELS:  # pragma: no cover
        pytest.skip("no PixelCNN registered")
    monkeypatch.setenv("GENLAB_HOME", str(zoo.home))
    run_id = zoo.run("pixelcnn")
    calls = []
    first = services.sample_grid(run_id, 16, 12345, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(8 * r, 64) for r in range(1, 9)]  # one call per row of 8 pixels
    calls.clear()
    again = services.sample_grid(run_id, 16, 12345, progress=lambda d, t: calls.append((d, t)))
    assert calls == [] and np.array_equal(first, again)  # cached: no sampling, no progress

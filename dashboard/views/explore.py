"""Explore: samples, reconstructions and latent traversals of a finished run.

The run comes from ``?run=<id>`` when the URL has one (the Train page links here that way), else
from the selectbox, newest first. Every picture comes from a cached service, so moving a slider
back to an earlier value is instant.
"""

import services
import streamlit as st

from genlab.errors import GenlabError


def remember_choice() -> None:
    """Keep the chosen run in the URL, so the page can be shared or reloaded."""
    st.query_params["run"] = st.session_state["explore_run"]


def describe(run) -> str:
    loss = run.summary.get("test_loss")
    loss_text = "" if loss is None else f", test loss {loss:.2f}"
    epochs = run.summary.get("epochs", "?")
    return f"{run.id} — {run.model} on {run.dataset}, {epochs} epochs{loss_text}"


def show_samples(run_id: str) -> None:
    seed_col, n_col = st.columns([1, 3])
    seed = seed_col.number_input("Seed", min_value=0, value=0, step=1, key="explore_seed",
                                 help="The same seed always draws the same samples.")
    n = n_col.slider("Number of samples", 16, 100, 64, key="explore_n")
    st.image(services.sample_grid(run_id, n, seed),
             caption=f"{n} images generated from random latent codes (seed {seed})",
             output_format="PNG")


def show_reconstructions(run_id: str, can_reconstruct: bool) -> None:
    if not can_reconstruct:
        st.info("This model has no encoder, so it cannot reconstruct an image it is given.")
        return
    seed_col, n_col = st.columns([1, 3])
    seed = seed_col.number_input("Seed", min_value=0, value=0, step=1, key="explore_rec_seed",
                                 help="Picks which test images are shown.")
    n = n_col.slider("Number of images", 4, 16, 10, key="explore_rec_n")
    st.image(services.reconstruction_grid(run_id, n, seed),
             caption="Top: test images the model never trained on. "
                     "Bottom: the same images encoded and decoded by the model.",
             output_format="PNG")


def show_traversal(run_id: str, latent_dim: int) -> None:
    if not latent_dim:
        st.info("This model has no latent space, so there is nothing to traverse.")
        return
    st.markdown("Each row changes **one** latent dimension from left to right and keeps the "
                "others fixed at the code of one test image. A dimension whose row changes a "
                "single feature of the image is easy to interpret.")
    dims = st.multiselect("Latent dimensions", list(range(latent_dim)),
                          default=list(range(min(8, latent_dim))), format_func=lambda d: f"z{d}",
                          key=f"explore_dims_{run_id}")
    range_col, steps_col, seed_col = st.columns([2, 2, 1])
    lo, hi = range_col.slider("Range of values", -6.0, 6.0, (-3.0, 3.0), step=0.5,
                              key="explore_range",
                              help="In standard deviations of the prior N(0, 1).")
    steps = steps_col.slider("Steps", 3, 15, 9, key="explore_steps")
    seed = seed_col.number_input("Base image", min_value=0, value=0, step=1,
                                 key="explore_trav_seed",
                                 help="Picks the test image to start from.")
    if not dims:
        st.info("Pick at least one latent dimension.")
        return
    st.image(services.traversal_grid(run_id, dims, lo, hi, steps, seed),
             caption=f"Columns: values from {lo:g} to {hi:g} in {steps} steps; rows: one per "
                     "latent dimension (labelled on the left).",
             output_format="PNG")


st.title("Explore a run")
try:
    finished = services.list_runs(status="finished", limit=200)
except GenlabError as err:
    st.error(str(err))
    st.stop()
by_id = {run.id: run for run in finished}

wanted = st.query_params.get("run")
if wanted:
    try:
        info = services.run_info(wanted)
    except GenlabError as err:
        st.error(str(err))
    else:
        if info.status != "finished":
            st.error(f"Run {info.id} is {info.status}, not finished, so there is nothing to "
                     "explore yet. Follow it on the Train page.")
        else:
            by_id.setdefault(info.id, info)
            st.session_state["explore_run"] = info.id

if not by_id:
    st.info("No finished runs yet. Train a model first; it appears here when it finishes.")
    st.page_link("views/train.py", label="Go to Train", icon=":material/model_training:")
    st.stop()

run_id = st.selectbox("Run", list(by_id), key="explore_run", on_change=remember_choice,
                      format_func=lambda rid: describe(by_id[rid]))
run = by_id[run_id]

epochs, loss, params, device, seconds = st.columns(5)
epochs.metric("Epochs", run.summary.get("epochs", "—"))
test_loss = run.summary.get("test_loss")
loss.metric("Test loss", "—" if test_loss is None else f"{test_loss:.2f}",
            help="Negative ELBO or NLL on the test split, in nats per image; lower is better.")
params.metric("Parameters", f"{run.summary.get('params', 0):,}")
device.metric("Device", run.summary.get("device", "—"))
seconds.metric("Train time", f"{run.summary.get('train_seconds', 0):.1f} s")

performance = run.record.get("performance")
if performance:
    shown = [("FD", "fd", "{:.1f}"), ("Precision", "precision", "{:.2f}"),
             ("Recall", "recall", "{:.2f}"), ("Coverage", "coverage", "{:.2f}"),
             ("CAS", "cas", "{:.1%}"), ("NLL (bits/dim)", "nll_bpd", "{:.3f}")]
    for col, (label, key, fmt) in zip(st.columns(len(shown)), shown):
        value = performance.get(key)
        col.metric(label, "—" if value is None else fmt.format(value))
    st.caption(f"{services.FD_NOTE} CAS: accuracy on real test images of a classifier trained "
               f"only on samples (real-data ceiling {performance.get('cas_real', 0):.1%}).")

try:
    caps = services.capabilities(run_id)
    samples_tab, rec_tab, trav_tab = st.tabs(["Samples", "Reconstructions", "Latent traversal"])
    with samples_tab:
        show_samples(run_id)
    with rec_tab:
        show_reconstructions(run_id, caps["can_reconstruct"])
    with trav_tab:
        show_traversal(run_id, caps["latent_dim"] if caps["has_latent"] else 0)
except GenlabError as err:
    st.error(str(err))

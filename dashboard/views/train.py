"""Train: choose a model and data, set the model's config, start a background run, follow it live.

The form is built from the model's config fields, so a new model family needs no change here.
Training runs in a worker process (``services.start_run``); the live panel polls the store.
"""

import dataclasses
import math
import typing

import services
import streamlit as st

from genlab.errors import GenlabError

ACTIVE = ("queued", "running")


def reset_train_defaults() -> None:
    """A new model or dataset brings its own default epochs, batch size and learning rate."""
    for key in ("train_epochs", "train_batch_size", "train_lr"):
        st.session_state.pop(key, None)


def field_widget(model: str, field: dict):
    """One input for one config field, chosen by the field's type."""
    name, kind, help_text = field["name"], field["type"], field["help"]
    default = None if field["default"] is dataclasses.MISSING else field["default"]
    choices = field["choices"]
    if typing.get_origin(kind) is typing.Literal:
        choices = choices or typing.get_args(kind)
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if args and typing.get_origin(kind) is not typing.Literal:  # Optional[X] -> X
        kind = args[0]
    key = f"train_field_{model}_{name}"
    if choices:
        options = list(choices)
        index = options.index(default) if default in options else 0
        return st.selectbox(name, options, index=index, key=key, help=help_text)
    if kind is bool:
        return st.checkbox(name, value=bool(default), key=key, help=help_text)
    if kind is int:
        value = None if default is None else int(default)
        return st.number_input(name, value=value, step=1, key=key, help=help_text)
    if kind is float:
        value = None if default is None else float(default)
        step = 10.0 ** math.floor(math.log10(abs(value))) / 10 if value else 0.1
        return st.number_input(name, value=value, step=step, format="%g", key=key,
                               help=help_text)
    text = st.text_input(name, value="" if default is None else str(default), key=key,
                         help=help_text)
    return None if text == "" and default is None else text


def format_elapsed(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"


def live_panel(run_id: str, was_active: bool) -> None:
    """Status, progress, loss curve and, once finished, samples of one run."""
    try:
        info = services.run_info(run_id)
    except GenlabError as err:
        st.error(str(err))
        return
    if was_active and info.status not in ACTIVE:
        st.rerun()  # the run ended: redraw the page once, without polling
    history = services.run_history(run_id)
    epochs = info.config.get("train", {}).get("epochs")
    last = history.iloc[-1] if len(history) else None
    status, epoch, elapsed, loss = st.columns(4)
    status.metric("Status", info.status)
    epoch.metric("Epoch", f"{int(last['epoch']) if last is not None else 0} / {epochs}")
    elapsed.metric("Elapsed", format_elapsed(services.elapsed_seconds(info)))
    loss.metric("Test loss", "—" if last is None else f"{last['test_loss']:.2f}",
                help="Negative ELBO or NLL on the test split, in nats per image; lower is better.")
    st.progress(min(max(info.progress, 0.0), 1.0), text=f"{info.progress:.0%}")

    if info.status == "queued":
        st.info("Waiting for a free device: one job trains at a time per device.")
    if info.status in ACTIVE:
        if info.cancel_requested:
            st.warning("Cancel requested; the worker stops at its next check.")
        else:  # the callback runs before the rerun, so the rerun shows the request
            st.button("Cancel", key="train_cancel", icon=":material/stop_circle:",
                      on_click=services.cancel_run, args=(run_id,))
    elif info.status == "failed":
        st.error(f"The run failed: {info.error or 'no error message was recorded'}")
    elif info.status == "cancelled":
        st.warning("This run was cancelled.")

    if len(history):
        st.plotly_chart(services.loss_figure(history), key=f"train_loss_{run_id}")
    elif info.status in ACTIVE:
        st.caption("The loss curve appears after the first epoch.")

    if info.status == "finished":
        seed = int(info.config.get("train", {}).get("seed", 0))
        try:
            st.image(services.sample_grid(run_id, 64, seed), caption=f"64 samples (seed {seed})",
                     output_format="PNG")
        except GenlabError as err:
            st.error(str(err))
        st.page_link("views/explore.py", label="Explore this run", query_params={"run": run_id},
                     icon=":material/image_search:")


st.title("Train a model")

model_col, data_col = st.columns(2)
model_options = services.models()
model = model_col.selectbox("Model", model_options, key="train_model",
                            index=model_options.index(services.default_model()),
                            on_change=reset_train_defaults)
dataset = data_col.selectbox("Dataset", services.datasets(), key="train_dataset",
                             on_change=reset_train_defaults)
defaults = services.train_defaults(model, dataset)

with st.form("train_form"):
    st.subheader(f"{model} settings")
    columns = st.columns(3)
    settings = {}
    for i, field in enumerate(services.model_fields(model)):
        with columns[i % 3]:
            settings[field["name"]] = field_widget(model, field)
    st.subheader("Training")
    epochs_col, batch_col, lr_col, seed_col = st.columns(4)
    epochs = epochs_col.number_input("Epochs", min_value=1, value=defaults["epochs"], step=1,
                                     key="train_epochs", help="Passes over the train split.")
    batch_size = batch_col.number_input("Batch size", min_value=1, value=defaults["batch_size"],
                                        step=16, key="train_batch_size")
    lr = lr_col.number_input("Learning rate", min_value=0.0, value=float(defaults["lr"]),
                             step=1e-4, format="%g", key="train_lr", help="Adam's step size.")
    seed = seed_col.number_input("Seed", min_value=0, value=0, step=1, key="train_seed",
                                 help="The same seed and settings give the same model.")
    start = st.form_submit_button("Start training", type="primary", key="train_start",
                                  icon=":material/play_arrow:")

if start:
    try:
        run_id = services.start_run(model, dataset, epochs, seed, batch_size, lr, settings)
    except GenlabError as err:
        st.error(str(err))
    else:
        st.session_state["train_follow"] = run_id
        st.success(f"Started run {run_id}. It trains in the background; closing the tab does "
                   "not stop it.")

st.header("Live run")
try:
    runs = services.list_runs(limit=20)
except GenlabError as err:
    st.error(str(err))
    st.stop()
if not runs:
    st.info("No runs yet: start one above.")
    st.stop()

statuses = {r.id: r.status for r in runs}
if st.session_state.get("train_follow") not in statuses:
    st.session_state["train_follow"] = runs[0].id
# Plain ids as labels: the browser keeps a keyed selectbox's labels, so a status in them would
# go stale. The status is shown in the panel below.
followed = st.selectbox("Run", list(statuses), key="train_follow",
                        help="Your latest run, or any recent one (newest first).")
active = statuses[followed] in ACTIVE
st.fragment(live_panel, run_every=1.0 if active else None)(followed, active)

"""Train: choose a model and data, set the model's config, start a background run, follow it live.

The form is built from the model's config fields, so a new model family needs no change here.
Besides the built-in datasets, a user may upload their own (checked in genlab before it is kept).
With differential privacy on, the page shows the planned ε (or the σ a target ε needs) for the
current data, batch size and epochs before anything starts; it is not an ``st.form``, so the plan
follows every change. Training runs in a worker process (``services.start_run``); the live panel
polls the store. The page has two views, "New run" (the form) and "Live run" (one run followed
live); starting a run switches to the second, and a session that started one opens on it.
"""

import dataclasses
import math
import typing

import services
import streamlit as st

from genlab.errors import GenlabError

ACTIVE = ("queued", "running")
NEW, LIVE = "New run", "Live run"  # the two views


def reset_train_defaults() -> None:
    """A new model, dataset or DP switch brings its own default epochs, batch size and lr."""
    for key in ("train_epochs", "train_batch_size", "train_lr"):
        st.session_state.pop(key, None)


def add_upload() -> None:
    """The uploader's callback: check and keep the file, then select it as the dataset."""
    upload = st.session_state.get("train_upload")
    if upload is None:
        return
    try:
        name = services.import_dataset(upload.name, upload.getvalue())
    except GenlabError as err:
        st.session_state["train_upload_error"] = str(err)
        return
    st.session_state["train_dataset"] = name
    reset_train_defaults()
    st.session_state["train_upload_notice"] = (
        f"{upload.name} is checked and ready: it is now the dataset "
        f"({services.train_size(name):,} training images).")


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


def privacy_settings(dataset: str, batch_size: int, epochs: int) -> tuple[dict | None, str | None]:
    """The DP switch and, when on, its settings checked by genlab and the planned ε.

    Returns:
        ``(privacy, error)``: the PrivacyConfig fields (None with DP off) and genlab's one-line
        message when a setting is invalid (None when they are fine).
    """
    if not st.toggle("Differential privacy", key="train_dp", on_change=reset_train_defaults,
                     help="Train with DP-SGD: each image's gradient is clipped and noise is added, "
                          "so the model provably depends little on any one image. Switching it "
                          "loads the model's DP training defaults (larger batches)."):
        return None, None
    dp = services.DP_DEFAULTS
    mode_col, budget_col, delta_col, clip_col, accountant_col = st.columns(5)
    by_target = mode_col.radio("Budget by", ["target ε", "noise σ"], key="train_dp_mode",
                               help="Ask for the ε the run must end at (genlab picks the noise), "
                                    "or set the noise σ and see the ε it buys.") == "target ε"
    if by_target:
        privacy = {"epsilon": budget_col.number_input(
            "Target ε", value=dp["epsilon"], step=0.5, format="%g", key="train_dp_epsilon",
            help="The privacy budget: smaller is more private. Around 1 is strong, 10 is weak.")}
    else:
        privacy = {"noise_multiplier": budget_col.number_input(
            "Noise σ", value=dp["noise_multiplier"], step=0.1, format="%g", key="train_dp_sigma",
            help="Noise standard deviation, relative to max_grad_norm: more noise, smaller ε.")}
    privacy["delta"] = delta_col.number_input(
        "δ", value=dp["delta"], step=1e-6, format="%g", key="train_dp_delta",
        help="The small chance the guarantee fails; it must be below 1/N for N training images.")
    privacy["max_grad_norm"] = clip_col.number_input(
        "max_grad_norm", value=dp["max_grad_norm"], step=0.1, format="%g",
        key="train_dp_max_grad_norm", help="Each image's gradient is clipped to this L2 norm.")
    privacy["accountant"] = accountant_col.selectbox(
        "Accountant", services.accountants(), key="train_dp_accountant",
        help="prv is tight; rdp is the classic, looser bound.")
    try:
        n = services.train_size(dataset)
        services.check_dp_settings(privacy, n=n, batch_size=batch_size)
        plan = services.plan(n, batch_size, epochs, privacy["delta"],
                             sigma=privacy.get("noise_multiplier"), epsilon=privacy.get("epsilon"),
                             accountant=privacy["accountant"])
    except GenlabError as err:
        st.error(str(err))
        return privacy, str(err)
    numbers, curve = st.columns([1, 2])
    numbers.metric("Planned ε", f"{plan['epsilon']:.3g}",
                   help=f"ε after {epochs} epochs at δ = {plan['delta']:g}; smaller is more "
                        "private.")
    numbers.metric("Noise σ", f"{plan['noise_multiplier']:.3g}",
                   help="Chosen so the run ends at the target ε." if by_target else None)
    numbers.caption(f"N = {n:,} training images, batch {batch_size}: sampling rate q ≈ B/N = "
                    f"{plan['sample_rate']:.3f}, {plan['steps']:,} steps; "
                    f"{plan['accountant'].upper()} accountant.")
    if plan["fallback_reason"]:
        numbers.caption(plan["fallback_reason"])
    curve.plotly_chart(services.plan_figure(plan), key="train_dp_plan")
    return privacy, None


def format_elapsed(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"


def cancel(run_id: str) -> None:
    """The Cancel button's callback; genlab refuses a run that is not this session's."""
    try:
        services.cancel_run(run_id)
    except GenlabError as err:
        st.session_state["train_action_error"] = str(err)


def live_panel(run_id: str, was_every: float | None) -> None:
    """Status, progress, loss curve and, once finished, samples of one run."""
    try:
        info = services.run_info(run_id)
    except GenlabError as err:
        st.error(str(err))
        return
    ahead = services.queue_position(run_id) if info.status == "queued" else None
    if services.live_refresh_seconds(info.status, ahead) != was_every:
        st.rerun()  # it started, ended or moved up the line: redraw once, polling at the new pace
    history = services.run_history(run_id)
    epochs = info.config.get("train", {}).get("epochs")
    last = history.iloc[-1] if len(history) else None
    status, epoch, elapsed, loss = st.columns(4)
    status.metric("Status", info.status)
    epoch.metric("Epoch", f"{int(last['epoch']) if last is not None else 0} / {epochs}")
    elapsed.metric("Elapsed", format_elapsed(services.elapsed_seconds(info)))
    loss.metric("Test loss", "—" if last is None else f"{last['test_loss']:.2f}",
                help=services.loss_help(info.model))
    st.progress(min(max(info.progress, 0.0), 1.0), text=f"{info.progress:.0%}")

    st.caption(f"Owner: {info.owner or 'the command line'}")
    if info.status == "queued":
        line = "" if ahead is None else f" {ahead} job{'s' * (ahead != 1)} ahead of it."
        st.info("Waiting for a free device: one job trains at a time per device, and owners "
                f"take turns.{line}")
    allowed = services.can_modify(info)
    refused = None if allowed else f"Only {info.owner or 'the teacher'} or the teacher can"
    if error := st.session_state.pop("train_action_error", None):
        st.error(error)
    if info.status in ACTIVE:
        if info.cancel_requested:
            st.warning("Cancel requested; the worker stops at its next check.")
        else:  # the callback runs before the rerun, so the rerun shows the request
            st.button("Cancel", key="train_cancel", icon=":material/stop_circle:",
                      on_click=cancel, args=(run_id,), disabled=not allowed,
                      help=refused and f"{refused} cancel this run.")
    else:
        if info.status == "failed":
            st.error(f"The run failed: {info.error or 'no error message was recorded'}")
        elif info.status == "cancelled":
            st.warning("This run was cancelled.")
        if st.button("Delete run", key="train_delete", icon=":material/delete:",
                     disabled=not allowed, help=refused and f"{refused} delete this run."):
            try:
                services.delete_run(run_id)
            except GenlabError as err:
                st.error(str(err))
            else:
                st.session_state["train_notice"] = f"Deleted run {run_id}."
                st.rerun(scope="app")  # the run list changes

    if len(history):
        st.image(services.loss_chart(history, info.model))
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


def new_run() -> None:
    """The form: model, data, the model's settings, training settings, DP, and Start."""
    try:
        services.list_runs(limit=1)  # a store that would refuse the run is said first
    except GenlabError as err:
        st.error(str(err))
        st.stop()
    model_col, data_col = st.columns(2)
    model_options = services.models()
    model = model_col.selectbox("Model", model_options, key="train_model",
                                index=model_options.index(services.default_model()),
                                on_change=reset_train_defaults)
    dataset = data_col.selectbox("Dataset", services.dataset_options(), key="train_dataset",
                                 format_func=services.dataset_label, on_change=reset_train_defaults)
    with data_col.expander("Use your own data"):
        st.file_uploader(
            "A .npz with x (images) and y (labels), or a .zip of an MNIST-style IDX folder or of "
            "an image folder (one subfolder per class)", type=list(services.UPLOAD_TYPES),
            key="train_upload", on_change=add_upload,
            help=f"At most {services.upload_limit_mb():.0f} MB. The file is checked before it is "
                 "kept: grey-scale images of one size, integer labels, nothing pickled.")
        if error := st.session_state.pop("train_upload_error", None):
            st.error(error)
        if notice := st.session_state.pop("train_upload_notice", None):
            st.success(notice)
    # The DP switch is drawn further down; its state from the last run picks DP-SGD's defaults.
    defaults = services.train_defaults(model, dataset,
                                       private=st.session_state.get("train_dp", False))

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
    privacy, privacy_error = privacy_settings(dataset, int(batch_size), int(epochs))
    start = st.button("Start training", type="primary", key="train_start",
                      icon=":material/play_arrow:")

    if start and privacy_error:
        st.warning("Fix the differential privacy settings above first.")
    elif start:
        try:
            run_id = services.start_run(model, dataset, epochs, seed, batch_size, lr, settings,
                                        privacy=privacy)
        except GenlabError as err:
            st.error(str(err))
        else:
            st.session_state["train_follow"] = run_id
            # Kept in the session, not only shown by this script run: in a busy class a live
            # panel's timer can restart the script before it gets here, and the run would start
            # with no word of it (seen in bench/classroom_load.py with 20 students).
            st.session_state["train_started"] = run_id
            st.session_state["train_view_next"] = LIVE  # the next script run shows it live
            st.session_state["train_confirm"] = run_id  # and says so, even if it ended already
            st.rerun()


def live_run() -> None:
    """The run this session follows (its latest, or any recent one), live."""
    started = st.session_state.get("train_started")
    confirm = st.session_state.pop("train_confirm", None)
    if notice := st.session_state.pop("train_notice", None):
        st.success(notice)
    try:
        runs = services.list_runs(limit=20)
    except GenlabError as err:
        st.error(str(err))
        st.stop()
    if not runs:
        st.info("No runs yet: start one under New run.")
        st.stop()

    statuses = {r.id: r.status for r in runs}
    if started and "train_follow" not in st.session_state:  # back from another page
        st.session_state["train_follow"] = started
    mine = st.session_state.get("train_follow")
    if mine and mine not in statuses:  # in a busy class one's own run leaves the newest 20
        try:
            info = services.run_info(mine)  # an id prefix in a link is enough
        except GenlabError as err:  # deleted meanwhile, or a link to no run
            st.warning(f"{err}. The newest run is shown instead.")
            st.session_state["train_follow"] = runs[0].id
        else:
            statuses[info.id] = info.status
            st.session_state["train_follow"] = info.id
    # Said once after Start, and on later visits while the run waits or trains; once it ended,
    # the panel says how.
    if started and (confirm == started or statuses.get(started) in ACTIVE):
        st.success(f"Started run {started}. It trains in the background; closing the tab does "
                   "not stop it.")
    # Plain ids as labels: the browser keeps a keyed selectbox's labels, so a status in them would
    # go stale. The status is shown in the panel below.
    followed = st.selectbox("Run", list(statuses), key="train_follow",
                            help="Your latest run, or any recent one (newest first).")
    status = statuses[followed]
    every = services.live_refresh_seconds(
        status, services.queue_position(followed) if status == "queued" else None)
    st.fragment(live_panel, run_every=every)(followed, every)


st.title("Train a model")

# Two views, one drawn at a time: the form's 20-odd widgets or the live run. Each element costs
# the browser time on every visit, and in a class the page is mostly revisited to follow a run
# (bench/README.md, "Page weight"). Once this session started a run, the page opens on it.
if view := st.session_state.pop("train_view_next", None):
    st.session_state["train_view"] = view
elif "train_view" not in st.session_state and (linked := st.query_params.get("run")):
    st.session_state["train_view"], st.session_state["train_follow"] = LIVE, linked  # ?run=ID
st.session_state.setdefault("train_view", LIVE if st.session_state.get("train_started") else NEW)
view = st.radio("View", (NEW, LIVE), key="train_view", horizontal=True,
                label_visibility="collapsed")
if view == NEW:
    new_run()
else:
    live_run()

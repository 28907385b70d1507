"""Trade-offs: every evaluated run on the three axes, seeds summarised, the Pareto front.

Filters (dataset, models, ε range, runs without DP, chosen runs) narrow a sortable runs table
(compressed and fused runs name their method and parents) and the figures: the Pareto view with
user-picked axes (ε against CAS by default), the scatter matrix and parallel coordinates over
user-picked metrics (one per axis plus ε by default, efficiency as a fourth axis when every group
has it), and each axis against ε per model. The
filtered runs export as CSV, JSON or a self-contained HTML report. The whole view lives in the
URL, so a copied link reproduces it; bad values in a link are named and fall back to defaults.
With no evaluated runs the page shows the demo records, if present, under a banner.
"""

import services
import streamlit as st

from genlab.errors import GenlabError

KEYS = {"dataset": "tradeoffs_dataset", "models": "tradeoffs_models", "x": "tradeoffs_x",
        "y": "tradeoffs_y", "epsilon_range": "tradeoffs_eps", "include_no_dp": "tradeoffs_nodp",
        "runs": "tradeoffs_runs"}
WRITTEN = "tradeoffs_url_written"  # the query params this page last wrote
DEPENDENT = ("models", "epsilon_range", "runs")  # they depend on the dataset's runs


def apply_url(frame) -> None:
    """Load the view from the URL when it is not the one this page last wrote (a fresh load or a
    pasted link); each bad value is named in a warning and falls back to its default."""
    params = st.query_params.to_dict()
    if params == st.session_state.get(WRITTEN):
        return
    view, problems = services.parse_view(params, frame)
    for problem in problems:
        st.warning(problem)
    for name, key in KEYS.items():
        if getattr(view, name) is None:  # no ε range: the dataset has fewer than two ε
            st.session_state.pop(key, None)
        else:
            st.session_state[key] = getattr(view, name)


def dataset_changed() -> None:
    """A new dataset: its models, ε values and runs differ, so those widgets start afresh."""
    for name in DEPENDENT:
        st.session_state.pop(KEYS[name], None)


def ensure(frame, dataset: str) -> None:
    """Fill missing or stale widget values with the dataset's defaults before drawing them."""
    default = services.default_view(frame, dataset)
    rows = frame[frame["dataset"] == dataset]
    models, ids = set(rows["model"]), set(rows["id"])
    stops = services.epsilon_values(rows)
    state = st.session_state
    if KEYS["models"] not in state or not set(state[KEYS["models"]]) <= models:
        state[KEYS["models"]] = default.models
    eps = state.get(KEYS["epsilon_range"])
    if eps is not None and (not isinstance(eps, tuple) or not set(eps) <= set(stops)):
        del state[KEYS["epsilon_range"]]  # the slider starts at its default, the full range
    state[KEYS["runs"]] = [r for r in state.get(KEYS["runs"], []) if r in ids]
    for name in ("x", "y", "include_no_dp"):
        state.setdefault(KEYS[name], getattr(default, name))


def run_label(by_id: dict, run_id: str) -> str:
    r = by_id[run_id]
    return f"{run_id} ({r.model}, seed {r.config.get('train', {}).get('seed')})"


def filters(data):
    """Draw the filters; return the view they select and the runs that pass them."""
    frame = data.frame
    datasets = sorted(frame["dataset"].unique())
    if st.session_state.get(KEYS["dataset"]) not in datasets:
        st.session_state[KEYS["dataset"]] = services.default_view(frame).dataset
    data_col, model_col = st.columns([1, 3])
    dataset = data_col.selectbox("Dataset", datasets, key=KEYS["dataset"],
                                 on_change=dataset_changed)
    ensure(frame, dataset)
    rows = frame[frame["dataset"] == dataset]
    models = model_col.multiselect("Models", sorted(rows["model"].unique()), key=KEYS["models"])
    stops = services.epsilon_values(rows)
    eps_col, dp_col = st.columns([3, 1])
    epsilon_range = None
    if len(stops) > 1:
        # value= makes it a range slider; a value from the URL comes through the session state
        epsilon_range = eps_col.select_slider(
            "ε range of the DP runs", stops, value=(stops[0], stops[-1]),
            key=KEYS["epsilon_range"],
            format_func=services.format_epsilon,
            help="Smaller ε is more private. ε is the accountant's, at each run's δ.")
    elif stops:
        eps_col.caption(f"Every DP run here has ε = {services.format_epsilon(stops[0])}.")
    include_no_dp = dp_col.toggle("Runs without DP (ε = ∞)", key=KEYS["include_no_dp"])
    narrowed = services.filter_frame(rows, models=models, epsilon_range=epsilon_range,
                                     include_no_dp=include_no_dp)
    st.multiselect("Only these runs (empty: every run that passes the filters)",
                   sorted(rows["id"]), key=KEYS["runs"],
                   format_func=lambda rid: run_label(data.by_id, rid))
    return services.TradeoffView(dataset=dataset, models=models, x=st.session_state[KEYS["x"]],
                         y=st.session_state[KEYS["y"]], epsilon_range=epsilon_range,
                         include_no_dp=include_no_dp, runs=st.session_state[KEYS["runs"]]), \
        narrowed


def show_pareto(summary) -> None:
    st.header("The Pareto view")
    st.markdown(
        "Each point is a **group of runs** that differ only by their seed: it sits at their "
        "mean, with error bars of one standard deviation. A **ringed** point is Pareto-optimal: "
        "no other group is at least as good on both axes and better on one. Colour shows the "
        "interpretability score, the symbol the model.")
    keys = list(services.AXES)
    x_col, y_col = st.columns(2)
    x = x_col.selectbox("x axis", keys, key=KEYS["x"], format_func=services.axis_label)
    y = y_col.selectbox("y axis", keys, key=KEYS["y"], format_func=services.axis_label)
    if x == y:
        st.warning("x and y are the same metric: every point lies on the diagonal.")
    st.plotly_chart(services.pareto_figure(summary, x=x, y=y), key="tradeoffs_pareto",
                    theme=None)
    if "performance.fd" in (x, y):
        st.caption(services.FD_NOTE)


MATRIX_KEY = "tradeoffs_matrix_keys"  # the metrics of the scatter matrix and parallel coords


def show_axes(summary) -> None:
    st.header("The axes together")
    st.markdown("By default one metric per axis — CAS (performance), the interpretability score, "
                "the membership attack's AUC (privacy), the weights' size (efficiency) when every "
                "group has it — and ε. ↑ marks metrics where higher is better, ↓ where lower is.")
    default = list(services.matrix_keys(summary))
    if not st.session_state.get(MATRIX_KEY):
        st.session_state[MATRIX_KEY] = default
    keys = st.multiselect("Metrics of the scatter matrix and the parallel coordinates",
                          list(services.AXES), key=MATRIX_KEY, format_func=services.axis_label)
    if len(keys) < 2:
        st.warning("Pick at least two metrics; showing the default ones.")
        keys = default
    st.plotly_chart(services.scatter_matrix_figure(summary, keys), key="tradeoffs_matrix",
                    theme=None)
    st.plotly_chart(services.parallel_figure(summary, keys), key="tradeoffs_parallel",
                    theme=None)
    st.caption("Drag along an axis of the parallel coordinates to highlight the groups in a "
               "range. Plotly draws no hover text there: the runs table lists every run.")
    st.header("Each axis against ε")
    st.plotly_chart(services.epsilon_curves_figure(summary), key="tradeoffs_curves",
                    theme=None)


def show_exports(runs: list, demo) -> None:
    st.header("Export")
    st.caption(f"The {len(runs)} runs shown above: their full records as CSV or JSON, or a "
               "self-contained HTML report (opens offline).")
    csv_col, json_col, html_col = st.columns(3)
    csv_col.download_button("CSV of the records", services.export_text(runs, "csv"),
                            file_name="genlab_tradeoffs.csv", mime="text/csv",
                            key="tradeoffs_csv", on_click="ignore")
    json_col.download_button("JSON of the records", services.export_text(runs, "json"),
                             file_name="genlab_tradeoffs.json", mime="application/json",
                             key="tradeoffs_json", on_click="ignore")
    html_col.download_button("HTML report", lambda: services.report_html(runs, demo),
                             file_name="genlab_report.html", mime="text/html",
                             key="tradeoffs_html", on_click="ignore")


SWEEP_KEY = "tradeoffs_sweep_spec"  # the grid this session started, followed until it ends
SWEEP_NOTE = "tradeoffs_sweep_note"  # what the last followed grid ended with


def sweep_progress_panel() -> None:
    """The started grid's progress; when it ends, the page reloads with its runs."""
    spec = st.session_state.get(SWEEP_KEY)
    if spec is None:
        return
    try:
        status = services.sweep_progress(spec)
    except GenlabError as err:
        st.error(str(err))
        return
    total, done = status["total"], status["done"]
    st.progress(done / total, text=f"Sweep {status['sweep_id']}: {done} of {total} runs "
                f"trained and evaluated, {status['active']} in progress, {status['failed']} "
                "failed.")
    for run_id, error in status["errors"].items():
        st.error(f"{run_id}: {error}")
    if status["finished"]:  # reload the whole page, so the charts take the new runs
        del st.session_state[SWEEP_KEY]
        st.session_state[SWEEP_NOTE] = (f"Sweep {status['sweep_id']} has ended: {done} of "
                                        f"{total} runs trained and evaluated.")
        st.rerun(scope="app")
    elif not status["running"]:
        st.warning("The sweep's driver has stopped before the end. Start the same grid again: "
                   "finished runs are kept and only the rest are trained.")


def sweep_launcher(datasets: list[str]) -> None:
    """Start a grid of runs (every model × ε × seed) in the background and follow it."""
    with st.container(border=True, key="tradeoffs_sweep"):
        st.subheader("Run a sweep")
        st.caption("Every chosen model at every ε and seed, trained and evaluated on all three "
                   "axes in the background (locally one run at a time per device; on Ray one "
                   "per CPU, or per GPU where there are GPUs). A grid that was run before reuses "
                   "its finished runs.")
        data_col, model_col = st.columns([1, 2])
        dataset = data_col.selectbox("Dataset", datasets, key="tradeoffs_sweep_dataset")
        models = model_col.multiselect("Models", services.models(), default=["vae", "mixture"],
                                       key="tradeoffs_sweep_models")
        eps_col, seed_col, epoch_col = st.columns(3)
        epsilons = eps_col.text_input("ε values", services.SWEEP_DEFAULTS["epsilons"],
                                      key="tradeoffs_sweep_epsilons",
                                      help="Comma-separated; inf is a run without DP.")
        seeds = seed_col.text_input("Seeds", services.SWEEP_DEFAULTS["seeds"],
                                    key="tradeoffs_sweep_seeds",
                                    help="Comma-separated; the spread over seeds draws the "
                                         "error bars.")
        epochs = epoch_col.number_input("Epochs (0: each model's default)", min_value=0, value=0,
                                        step=1, key="tradeoffs_sweep_epochs")
        exec_col, address_col = st.columns([1, 2])
        executor = exec_col.selectbox("Executor", list(services.EXECUTORS),
                                      format_func=services.EXECUTORS.get,
                                      key="tradeoffs_sweep_executor",
                                      help="Ray runs each run as a Ray task; results come back "
                                           "to this server's store (pip install 'genlab[ray]').")
        address = address_col.text_input("Ray address", "", key="tradeoffs_sweep_ray_address",
                                         disabled=executor != "ray",
                                         placeholder="empty: start a local Ray instance",
                                         help="auto, HOST:PORT or ray://HOST:PORT of a running "
                                              "cluster (ray start --head).")
        if SWEEP_NOTE in st.session_state:
            st.success(st.session_state.pop(SWEEP_NOTE))
        if st.button("Start sweep", key="tradeoffs_sweep_start", icon=":material/play_arrow:"):
            try:
                spec = services.sweep_spec(dataset=dataset, models=models, epsilons=epsilons,
                                           seeds=seeds, epochs=int(epochs))
                st.session_state[SWEEP_KEY] = services.start_sweep(
                    spec, executor=executor, ray_address=address if executor == "ray" else None)
            except (GenlabError, OSError) as err:
                st.error(str(err))
        running = SWEEP_KEY in st.session_state
        st.fragment(sweep_progress_panel, run_every=2.0 if running else None)()


st.title("Trade-offs")
st.markdown("Every evaluated run on the three axes — **performance**, **interpretability** and "
            "**privacy** — to find the settings that give up least.")
try:
    data = services.tradeoff_runs()
except GenlabError as err:
    st.error(str(err))
    st.stop()
if data.problem:
    st.warning(data.problem)
if data.demo is not None:
    st.info(f"**Demo data computed on {data.demo.get('device', 'an unknown device')} on "
            f"{data.demo.get('date', 'an unknown date')}.** Your own evaluated runs replace it "
            "as soon as there are any.", icon=":material/science:")
if not data.runs:
    st.info("No evaluated runs yet. Train with `genlab train --evaluate` (or on the Train page, "
            "then evaluate), or run a sweep; finished runs with a record appear here.")
    sweep_launcher(services.datasets())
    st.stop()

apply_url(data.frame)
view, narrowed = filters(data)
shown = services.filter_frame(narrowed, run_ids=view.runs)
params = services.view_params(view)
st.query_params.from_dict(params)
st.session_state[WRITTEN] = params

st.caption(f"{len(shown)} of {len(data.frame)} runs shown.")
st.dataframe(services.tradeoff_table(shown), hide_index=True, key="tradeoffs_table", height=300,
             column_config=services.TABLE_FORMATS)
if shown.empty:
    st.info("No run passes these filters: widen the ε range, add models or clear the run list.")
else:
    summary = services.tradeoff_summary(shown)
    show_pareto(summary)
    show_axes(summary)
    show_exports([data.by_id[rid] for rid in shown["id"]], data.demo)
sweep_launcher(services.datasets())

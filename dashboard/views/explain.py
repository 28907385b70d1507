"""Explain: which pixels (or latent dims) drive a run's chosen target, how trustworthy those
attributions are, and whether training with differential privacy changes them.

The run comes from ``?run=<id>`` or the selectbox, the run to compare from ``?compare=<id>`` or
the drift section's selectbox. Sections: the attributions as heatmaps over the images (latent
traversals beside them for latent models), the run's interpretability scores (or a button that
computes them), the 2-D latent map, and the drift between two runs of the same model and dataset.
A target the model lacks is one ``st.error`` line; the rest of the page stays up.
"""

import math

import services
import streamlit as st

from genlab.errors import GenlabError

CUSTOM_REGION = "custom rows and columns…"
TARGET_WORDS = {  # what each kind of target explains, in a student's words
    "latent": "latent:K — the pixels behind latent dim K",
    "decoder": "decoder:REGION — the latent dims that drive an output region",
    "generator": "generator:REGION — the latent dims that drive an output region",
    "component": "component:K — the pixels behind mixture component K's responsibility",
}
SHOWN_SCORES = [("Faithfulness", "faithfulness", "{:.2f}"), ("Stability", "stability", "{:.2f}"),
                ("MIG", "mig", "{:.2f}"), ("Score", "score", "{:.2f}"),
                ("Infidelity (raw)", "infidelity", "{:.3g}"),
                ("Sensitivity (raw)", "sensitivity_max", "{:.3g}")]


def remember_choice() -> None:
    """Keep both runs in the URL, so the page can be shared or reloaded."""
    st.query_params["run"] = st.session_state["explain_run"]
    other = st.session_state.get("explain_compare")
    if other:
        st.query_params["compare"] = other
    else:
        st.query_params.pop("compare", None)


def describe(run) -> str:
    return f"{services.run_label(run)} — {run.model} on {run.dataset}"


def from_url(by_id: dict) -> None:
    """Select the finished run the URL names; an unknown or unfinished one is an st.error."""
    wanted = st.query_params.get("run")
    if not wanted:
        return
    try:
        info = services.run_info(wanted)
    except GenlabError as err:
        st.error(str(err))
        return
    if info.status != "finished":
        st.error(f"Run {info.id} is {info.status}, not finished: there is no model to explain.")
        return
    by_id.setdefault(info.id, info)
    st.session_state["explain_run"] = info.id


def choose_target(run_id: str) -> str:
    """The target widgets: a kind, then its index or output region; returns the spec."""
    targets = {t["kind"]: t for t in services.explain_targets(run_id)}
    kind_col, arg_col = st.columns(2)
    kind = kind_col.selectbox(
        "Target", list(targets), key=f"explain_target_{run_id}",
        format_func=lambda k: (f"{targets[k]['default']} — the model's own score (default)"
                               if k == "default" else TARGET_WORDS.get(k, targets[k]["label"])),
        help="The one number per image that the attribution explains.")
    t = targets[kind]
    if t["count"]:
        index = arg_col.number_input(f"{kind} index K", min_value=0, value=0, step=1,
                                     key=f"explain_index_{run_id}_{kind}",
                                     help=f"This model has K = 0 to {t['count'] - 1}.")
        return services.target_spec(kind, index=index)
    if kind in ("decoder", "generator"):
        region = arg_col.selectbox("Output region", [*services.regions(), CUSTOM_REGION],
                                   key=f"explain_region_{run_id}")
        if region == CUSTOM_REGION:
            region = arg_col.text_input("Rows and columns r0:r1,c0:c1", "2:6,2:6",
                                        key=f"explain_slices_{run_id}",
                                        help="Half-open pixel ranges, rows first.")
        return services.target_spec(kind, region=region)
    return services.target_spec(kind)


def show_attributions(run_id: str, caps: dict, method: str, spec: str, n: int, steps: int,
                      seed: int) -> bool:
    """The attribution heatmaps (and a traversal); False, after one st.error, if genlab refuses
    the settings."""
    try:
        expl = services.explanation(run_id, method, spec, n, steps, seed)
    except GenlabError as err:
        st.error(str(err))
        return False
    values, base = expl["target_values"], expl["baseline_values"]
    target, mean, zero, delta = st.columns([3, 2, 2, 2])  # room for "decoder:center"
    target.metric("Target", expl["target"], help=expl["description"])
    mean.metric("f(x), mean over the images", f"{values.mean():.3g}",
                help="The target's value for each image is above its panel.")
    zero.metric("f(baseline), mean", f"{base.mean():.3g}",
                help="The target for the all-zero input (a black image, or z = 0).")
    if expl["delta"] is None:
        delta.metric("IG convergence delta", "—", help="Only Integrated Gradients has one.")
    else:
        delta.metric("IG convergence delta", f"{abs(expl['delta']).max():.2g}",
                     help="The largest |sum of attributions − (f(x) − f(baseline))| over the "
                          "images: 0 means the attributions account for all of the change.")
    overlays, traversal = st.columns([2, 1]) if caps["has_latent"] else (st.container(), None)
    pixels = expl["space"] == "pixels"
    # 4 images a row up to 16 (about 110 px each beside the colour bar), or 2 image-cells pairs
    ncol = max(4, math.ceil(math.sqrt(n))) if pixels else 2
    panel = 480 // ncol if pixels else int(560 / (ncol * (1 + services.LATENT_WIDTH)))
    overlays.plotly_chart(services.attribution_figure(expl, ncol=ncol, panel_px=panel + 20),
                          key="explain_attributions")
    what = ("Each panel: a test image in grey with its attributions over it" if pixels else
            "Each pair: the decoded image (the region in gold) and one cell per latent dim")
    relative = ("" if expl["relative_delta"] is None else
                f" IG's convergence delta is {expl['relative_delta']:.1%} of f(x) − f(baseline) "
                "(median over the images).")
    overlays.caption(f"{expl['label']} on {expl['description']}. {what}: red raises the "
                     "target, blue lowers it, each map scaled to its own largest values (hover "
                     f"for the raw attribution).{relative}")
    if (expl["relative_delta"] or 0) > services.IG_DELTA_WARN:
        overlays.warning(f"Integrated Gradients has not converged: its delta is "
                         f"{expl['relative_delta']:.0%} of f(x) − f(baseline), so these maps do "
                         "not add up to the target's change. Raise **IG steps** (a conv VAE with 8 "
                         "channels needs about 512).", icon=":material/warning:")
    if traversal is not None:
        show_traversal(traversal, run_id, caps, spec, seed)
    return True


def show_traversal(col, run_id: str, caps: dict, spec: str, seed: int) -> None:
    """Up to 8 dims, shared evenly by the latent levels (4 top and 4 bottom for the HVAE; each
    level's ``shown_first``), plus dim K of a latent:K target."""
    levels = caps["levels"]
    per_level = max(1, 8 // len(levels))
    dims = [d for level in levels for d in level["shown_first"][:per_level]]
    if spec.startswith("latent:"):
        dims = sorted({*dims, int(spec.split(":")[1])})
    col.image(services.traversal_grid(run_id, dims, -3.0, 3.0, 7, seed), output_format="PNG")
    base = "the first image's code" if caps["has_encoder"] else "z = 0"
    where = ("" if len(levels) == 1 else
             " Rows are labelled by level: " + ", ".join(
                 f"{lv['prefix']}… for the {lv['title']}" for lv in levels) + ".")
    col.caption(f"Latent traversal: each row moves one dim from −3 to 3 from {base}; set it "
                f"beside a latent:K map to see what dim K does.{where}")


def show_scores(info) -> None:
    st.header("How far can these attributions be trusted?")
    block = services.interpretability_record(info)
    if block is None:
        st.markdown(f"**{info.id}** has no interpretability scores yet. They take seconds: "
                    "nothing is trained.")
        if st.button("Compute the interpretability scores", key=f"explain_block_{info.id}",
                     type="primary"):
            with st.spinner("Scoring the attributions…"):
                try:
                    services.compute_interpretability(info.id)
                except GenlabError as err:
                    st.error(str(err))
                    return
            st.rerun()
        return
    for col, (label, key, fmt) in zip(st.columns(len(SHOWN_SCORES)), SHOWN_SCORES):
        value = block.get(key)
        col.metric(label, "—" if value is None else fmt.format(value),
                   help=services.BLOCK_HELP[key])
    st.markdown("\n".join(f"- **{label}**: {services.BLOCK_HELP[key]}"
                          for label, key, _ in SHOWN_SCORES))
    against = ", ".join(block.get("mig_factors") or []) or "no factors (no encoder)"
    st.caption(f"Integrated Gradients ({block['steps']} steps) on {block['n_images']} test "
               f"images, target {block['target']}; MIG against {against}.")


def show_latent_map(run_id: str) -> None:
    st.header("The latent map")
    try:
        lmap = services.run_latent_map(run_id)
    except GenlabError as err:
        st.info(str(err))
        return
    st.plotly_chart(services.latent_map_figure(lmap), key="explain_latent_map")
    st.caption("Decoded images on a grid of codes z = (z0, z1) across the prior's bulk."
               if lmap.kind == "grid" else
               "Test images encoded, then flattened to their two main directions (PCA), one "
               "colour per class: classes in separate clusters mean the latent sorts them.")


def show_drift(info, by_id: dict, method: str, spec: str, n: int, steps: int, seed: int) -> None:
    st.header("Does privacy change what the model looks at?")
    candidates = {r.id: r for r in services.drift_candidates(info, list(by_id.values()))}
    if not candidates:
        st.info(f"No other finished {info.model} run on {info.dataset}. Train its twin with DP "
                "switched the other way, then compare the two here.")
        return
    wanted = st.query_params.get("compare")
    if wanted and wanted not in candidates:
        st.error(f"Run {wanted} is not a finished {info.model} run on {info.dataset}, so it "
                 "cannot be compared with this one.")
    if st.session_state.get("explain_compare") not in candidates:
        st.session_state["explain_compare"] = wanted if wanted in candidates else next(
            iter(candidates))
    other = st.selectbox("Compare with", list(candidates), key="explain_compare",
                         on_change=remember_choice, format_func=lambda r: describe(candidates[r]),
                         help="The same model on the same dataset, with DP switched the other "
                              "way first: both explain the same images.")
    try:
        result = services.drift(info.id, other, method, spec, n, steps, seed)
    except GenlabError as err:
        st.error(str(err))
        return
    st.metric("Attribution drift (mean Spearman ρ)", f"{result['value']:.2f}")
    st.caption("Rank correlation of the two maps, image by image: 1 = the same pixels matter to "
               "both models, 0 = unrelated, −1 = reversed.")
    for col, (rid, expl, titles) in zip(st.columns(2), [
            (info.id, result["a"], None),
            (other, result["b"], [f"ρ = {r:.2f}" for r in result["per_image"]])]):
        col.subheader(describe(by_id[rid]))
        pixels = expl["space"] == "pixels"  # each column is about 460 px wide
        col.plotly_chart(services.attribution_figure(expl, ncol=4 if pixels else 2, titles=titles,
                                                     panel_px=105 if pixels else 115),
                         key=f"explain_drift_{'a' if rid == info.id else 'b'}")


st.title("Explain a run")
try:
    by_id = {run.id: run for run in services.list_runs(status="finished", limit=200)}
except GenlabError as err:
    st.error(str(err))
    st.stop()
from_url(by_id)
if not by_id:
    st.info("No finished runs yet. Train a model first; it appears here when it finishes.")
    st.page_link("views/train.py", label="Go to Train", icon=":material/model_training:")
    st.stop()

run_id = st.selectbox("Run", list(by_id), key="explain_run", on_change=remember_choice,
                      format_func=lambda rid: describe(by_id[rid]))
info = by_id[run_id]
method_names = services.methods()
try:
    caps = services.capabilities(run_id)
    with st.container(key="explain_overlays"):
        st.header("What the model looks at")
        method_col, target_col = st.columns([1, 2])
        method = method_col.selectbox("Method", list(method_names), key="explain_method",
                                      format_func=method_names.get)
        with target_col:
            spec = choose_target(run_id)
        n_col, steps_col, seed_col = st.columns([2, 2, 1])
        n = n_col.slider("Images", 4, 32, 16, step=4, key="explain_n")
        steps = steps_col.slider("IG steps", 4, 512, 32, key="explain_steps",
                                 disabled=method != "ig",
                                 help="More steps follow the path from the black baseline more "
                                      "closely (a smaller convergence delta), at more cost.")
        seed = seed_col.number_input("Seed", min_value=0, value=0, step=1, key="explain_seed",
                                     help="Picks which test images are explained.")
        explained = show_attributions(run_id, caps, method, spec, n, steps, seed)
        show_scores(info)
    if caps["has_latent"]:
        show_latent_map(run_id)
    with st.container(key="explain_drift"):
        if explained:
            show_drift(info, by_id, method, spec, n, steps, seed)
except GenlabError as err:
    st.error(str(err))

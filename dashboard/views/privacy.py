"""Privacy: the formal guarantee (ε, δ) of a run beside what a membership attack achieves on it.

The run comes from ``?run=<id>`` or the selectbox, a second run to compare from ``?compare=<id>``
or the second selectbox. Sections: ε against steps, a budget planner started from the run's
settings, the attack's ROC (log-log), the empirical ε bound beside the formal ε, and the most
exposed training images. A run without an audit gets buttons that start one (the full audit in a
background worker, which the page polls).
"""

import services
import streamlit as st

from genlab.errors import GenlabError

NO_COMPARISON = ""
COMPARED_EXPOSED = {"n": 8, "per_row": 2}  # exposed pairs shown per run when comparing two


def remember_choice() -> None:
    """Keep both runs in the URL, so the page can be shared or reloaded."""
    st.query_params["run"] = st.session_state["privacy_run"]
    other = st.session_state.get("privacy_compare")
    if other:
        st.query_params["compare"] = other
    else:
        st.query_params.pop("compare", None)


def describe(run) -> str:
    if not run:
        return "(no comparison)"
    audited = "audited" if services.is_audited(services.privacy_block(run)) else "not audited"
    return f"{services.run_label(run)} — {run.model} on {run.dataset}, {audited}"


def from_url(param: str, key: str, by_id: dict) -> None:
    """Select the finished run the URL names; an unknown or unfinished one is an st.error."""
    wanted = st.query_params.get(param)
    if not wanted:
        return
    try:
        info = services.run_info(wanted)
    except GenlabError as err:
        st.error(str(err))
        return
    if info.status != "finished":
        st.error(f"Run {info.id} is {info.status}, not finished: it has no privacy record yet.")
        return
    by_id.setdefault(info.id, info)
    st.session_state[key] = info.id


def audit(run_id: str, *, reference: bool) -> None:
    """The quick audit runs here; the full one starts a background worker (it trains)."""
    what = "Starting the audit of" if reference else "Attacking"
    with st.spinner(f"{what} run {run_id}…"):
        try:
            services.run_audit(run_id, reference=reference)
        except (GenlabError, RuntimeError, ValueError) as err:
            st.error(f"The audit failed: {err}")
            return
    st.rerun()


def poll_audit(run_id: str) -> None:
    """Redraw the whole page once the background audit has ended."""
    running, _ = services.audit_state(run_id)
    if not running:
        st.rerun()


def offer_audit(run_id: str) -> None:
    """Buttons that run the membership audit on a run that has none (or its progress)."""
    running, error = services.audit_state(run_id)
    if running:
        st.info(f"The membership audit of **{run_id}** is running in the background: a "
                "reference model trains first, then both models are attacked. This page "
                "updates when it is done.")
        st.fragment(poll_audit, run_every=2.0)(run_id)
        return
    if error:
        st.error(f"The last audit of {run_id} failed: {error}")
    st.markdown(f"**{run_id}** has no membership audit yet.")
    full, quick = st.columns(2)
    if full.button("Run the membership audit", key=f"privacy_audit_{run_id}", type="primary",
                   help="The LOSS attack plus a reference-calibrated attack; a reference model "
                        "trains first, so this takes a while."):
        audit(run_id, reference=True)
    if quick.button("Quick audit (no reference model)", key=f"privacy_quick_{run_id}",
                    help="Only the LOSS attack: fast, but it may miss leaks."):
        audit(run_id, reference=False)


def show_formal(runs: dict) -> None:
    st.header("The guarantee: ε as training goes on")
    st.markdown(
        "Differential privacy promises that the trained model would come out almost the same "
        "whether or not any one image was in the training data: no outcome becomes more than "
        "e^ε times more likely, except with a tiny probability δ. **Smaller ε is more "
        "private**; each training step spends a little more of the budget.")
    histories = {}
    for col, (run_id, info) in zip(st.columns(len(runs)), runs.items()):
        block = services.privacy_block(info)
        if block.get("epsilon") is None:
            col.metric(run_id, "ε = ∞")
            col.caption("No DP: ε = ∞, no guarantee. Nothing limits what the model remembers.")
            continue
        col.metric(run_id, f"ε = {block['epsilon']:.3g}")
        if "composition" in block:  # a fused run (genlab fuse): its parents' ε composed
            composition = block["composition"]
            col.caption(f"Fused: {composition['note']} ({composition['rule']}; "
                        f"{composition['reference']}).")
            continue
        if block.get("post_processing"):  # a compressed run (genlab compress)
            col.caption(f"Compressed: {block['post_processing']}.")
        fallback = " (PRV failed, so RDP answered)" if block.get("accountant_fallback") else ""
        col.caption(f"{block['accountant'].upper()} accountant{fallback}, δ = {block['delta']:g}, "
                    f"noise σ = {block['noise_multiplier']:.3g}, "
                    f"clipping C = {block['max_grad_norm']:g}, {block['steps']:,} steps at "
                    f"sampling rate q = {block['sample_rate']:.3f}.")
        histories[services.run_label(info)] = services.epsilon_history(run_id)
    if any(len(h) for h in histories.values()):
        st.plotly_chart(services.epsilon_steps_figure(histories), key="privacy_epsilon_steps")


def show_planner(run_id: str, info) -> None:
    st.header("Plan a budget")
    st.markdown(f"What ε would **{run_id}**'s training cost with other settings? More noise σ, "
                "fewer epochs or smaller batches (a smaller sampling rate) all lower ε.")
    block, train = services.privacy_block(info), info.config["train"]
    sigma0 = float(block.get("noise_multiplier") or services.DP_DEFAULTS["noise_multiplier"])
    sigma_col, batch_col, epochs_col = st.columns(3)
    sigma = sigma_col.slider("Noise σ", 0.3, max(4.0, round(2 * sigma0, 1)), sigma0, step=0.05,
                             key=f"privacy_plan_sigma_{run_id}")
    batch = batch_col.number_input("Batch size", 1, None, int(train["batch_size"]), step=16,
                                   key=f"privacy_plan_batch_{run_id}")
    epochs = epochs_col.number_input("Epochs", 1, None, int(train["epochs"]), step=1,
                                     key=f"privacy_plan_epochs_{run_id}")
    delta = block.get("delta") or services.DP_DEFAULTS["delta"]
    try:
        plan = services.plan(services.run_train_size(info), batch, epochs, delta, sigma=sigma,
                             accountant=block.get("accountant") if block.get("accountant")
                             in ("prv", "rdp") else "prv", compare=True)
    except GenlabError as err:
        st.error(str(err))
        return
    numbers, curve = st.columns([1, 2])
    for name, eps in plan["comparison"].items():
        numbers.metric(f"ε ({name.upper()} accountant)", "—" if eps is None else f"{eps:.3g}")
    numbers.caption(f"At δ = {delta:g} after {plan['steps']:,} steps. PRV is tight; RDP, the "
                    "classic bound, is usually a little larger.")
    curve.plotly_chart(services.plan_figure(plan), key=f"privacy_plan_{run_id}")


def show_attack(blocks: dict) -> None:
    st.header("The attack: can it tell who was in the training data?")
    st.markdown(
        "The attacker scores each image with the model and guesses **member** (used in "
        "training) above a threshold. The ROC curve shows every threshold: the share of "
        "members caught (TPR) against the share of outsiders wrongly flagged (FPR). Guessing "
        "lies on the diagonal. The **AUC** sums up the whole curve (0.5 = guessing), but the "
        "real danger is the **TPR at a low FPR**: an attack that is sure about even a few "
        "people exposes them.")
    st.plotly_chart(services.roc_figure(blocks), key="privacy_roc")
    rows = []
    for label, block in blocks.items():
        for attack, result in block["attacks"].items():
            low = result.get("tpr_at_0_1pct_fpr")
            rows.append({"run": label, "attack": attack, "AUC": round(result["auc"], 3),
                         "TPR at 1% FPR": f"{result['tpr_at_1pct_fpr']:.1%}",
                         "TPR at 0.1% FPR": "—" if low is None else f"{low:.1%}",
                         "members / non-members": f"{result['n_members']} / "
                                                  f"{result['n_nonmembers']}"})
    st.dataframe(rows, hide_index=True, key="privacy_attack_table")
    reasons = {b.get("mia_tpr_at_0_1pct_fpr_reason") for b in blocks.values()} - {None}
    if reasons:
        st.caption(f"TPR at 0.1% FPR: {'; '.join(sorted(reasons))}. Zero rates are drawn at the "
                   "axes' lower edge.")


def show_bound(blocks: dict) -> None:
    st.header("What the attack proves: empirical ε beside the formal ε")
    st.markdown(
        "From the attack's hit rates genlab derives, with 95% confidence, a **lower bound** on "
        "the model's real ε. The accountant's ε is an **upper bound** that DP guarantees, so the "
        "empirical bound must stay below it; if it ever went above, the DP training or its "
        "accounting would be broken. A bound far below ε is normal: real attacks are weaker "
        "than the worst case that DP protects against.")
    st.plotly_chart(services.epsilon_pair_figure(blocks), key="privacy_epsilon_pair")
    st.caption("Orange bar: the proven lower bound; its whisker reaches the top of the bound's "
               "confidence interval. A hatched blue bar marks a run without DP: its ε is ∞.")


def show_exposed(runs: dict) -> None:
    st.header("The most exposed training images")
    # Side by side, each column is half as wide: fewer, larger pairs stay readable.
    shown = {} if len(runs) == 1 else COMPARED_EXPOSED
    for col, (run_id, info) in zip(st.columns(len(runs)), runs.items()):
        block = services.privacy_block(info)
        image = services.exposed_image(run_id, **shown)
        col.subheader(services.run_label(info))
        if image is None:
            col.caption("No exposed images were saved for this run.")
        else:
            n = min(len(block["exposed"]), shown.get("n", len(block["exposed"])))
            col.image(image, output_format="PNG",
                      caption=f"The {n} training images (members) the attack was most sure "
                              "about, each on the left of its pair; on the right, the generated "
                              "sample closest to it. A near-copy means the model memorised it.")
        col.markdown(f"**DCR ratio {block['dcr_ratio']:.2f}**: how far generated samples lie "
                     "from their closest training image, relative to their closest unseen "
                     "image; below 1 means they sit nearer the training data (memorisation).")


st.title("Privacy")
try:
    by_id = {run.id: run for run in services.list_runs(status="finished", limit=200)}
except GenlabError as err:
    st.error(str(err))
    st.stop()
from_url("run", "privacy_run", by_id)
from_url("compare", "privacy_compare", by_id)
if not by_id:
    st.info("No finished runs yet. Train a model first; it appears here when it finishes.")
    st.page_link("views/train.py", label="Go to Train", icon=":material/model_training:")
    st.stop()

pick, compare = st.columns(2)
run_id = pick.selectbox("Run", list(by_id), key="privacy_run", on_change=remember_choice,
                        format_func=lambda rid: describe(by_id[rid]))
others = [NO_COMPARISON, *(rid for rid in by_id if rid != run_id)]
if st.session_state.get("privacy_compare") not in others:
    st.session_state["privacy_compare"] = NO_COMPARISON
other = compare.selectbox("Compare with", others, key="privacy_compare", on_change=remember_choice,
                          format_func=lambda rid: describe(by_id.get(rid)),
                          help="A second run side by side, e.g. the same model with and without "
                               "DP.")
runs = {rid: by_id[rid] for rid in (run_id, other) if rid}

show_formal(runs)
show_planner(run_id, runs[run_id])
audited = {rid: info for rid, info in runs.items()
           if services.is_audited(services.privacy_block(info))}
if len(audited) < len(runs):
    st.header("The membership audit")
    for rid in [r for r in runs if r not in audited]:
        offer_audit(rid)
if audited:
    blocks = {services.run_label(info): services.privacy_block(info) for info in audited.values()}
    show_attack(blocks)
    show_bound(blocks)
    show_exposed(audited)

"""Home: what genlab is, the three axes in plain words, and the recent runs."""

import services
import streamlit as st

from genlab.errors import GenlabError

st.title("genlab")
st.markdown(
    "A lab for **small generative models**: train one, look at what it makes, and weigh three "
    "things against each other — how *good* it is, how well we can *explain* it, and how much "
    "it gives away about the people whose data trained it."
)

performance, interpretability, privacy = st.columns(3)
with performance:
    st.subheader(":material/insights: Performance")
    st.markdown(
        "How good the model is as a generator. **Sample quality**: do its images look like the "
        "real ones, and do they cover every kind of image in the data? **Likelihood**: how "
        "probable the model finds real test images it never saw (lower test loss is better)."
    )
with interpretability:
    st.subheader(":material/psychology: Interpretability")
    st.markdown(
        "How well we can explain what the model does. Models with a **latent space** let us "
        "turn one knob at a time and watch the image change (a *latent traversal*); "
        "**attributions** show which pixels a model's output depends on."
    )
with privacy:
    st.subheader(":material/shield_lock: Privacy")
    st.markdown(
        "How much the model leaks about the people in its training data. **Differential "
        "privacy** gives a formal guarantee, a budget **ε** (smaller is more private). A "
        "**membership attack** measures the leak in practice: can an attacker tell whether a "
        "given record was in the training set?"
    )

st.page_link("views/train.py", label="Train your first model", icon=":material/arrow_forward:")

st.header("Recent runs")
try:
    runs = services.list_runs(limit=20)
except GenlabError as err:
    st.error(str(err))
    st.stop()

if not runs:
    st.info("No runs yet. Train a model on the Train page and it will appear here.")
else:
    st.dataframe(
        services.runs_table(runs),
        hide_index=True,
        column_config={
            "test loss": st.column_config.NumberColumn(format="%.2f",
                                                      help="nats per image; lower is better"),
            "created": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss"),
        },
        key="home_runs",
    )

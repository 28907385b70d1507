"""Home: what genlab is, the three axes in plain words, lessons for class, and the recent runs."""

import services
import streamlit as st

from genlab.errors import GenlabError

st.title("genlab")
st.markdown(
    "A lab for **small generative models**: train one, look at what it makes, and weigh three "
    "things against each other — how *good* it is, how well we can *explain* it, and how much "
    "it gives away about the people whose data trained it."
)

# One Markdown element per block of text: in a class every page view draws each element anew, and
# each costs the browser's renderer time whatever its size (bench/README.md, "Page weight").
performance, interpretability, privacy = st.columns(3)
performance.markdown(
    "### :material/insights: Performance\n\n"
    "How good the model is as a generator. **Sample quality**: do its images look like the "
    "real ones, and do they cover every kind of image in the data? **Likelihood**: how "
    "probable the model finds real test images it never saw (lower test loss is better)."
)
interpretability.markdown(
    "### :material/psychology: Interpretability\n\n"
    "How well we can explain what the model does. Models with a **latent space** let us "
    "turn one knob at a time and watch the image change (a *latent traversal*); "
    "**attributions** show which pixels a model's output depends on."
)
privacy.markdown(
    "### :material/shield_lock: Privacy\n\n"
    "How much the model leaks about the people in its training data. **Differential "
    "privacy** gives a formal guarantee, a budget **ε** (smaller is more private). A "
    "**membership attack** measures the leak in practice: can an attacker tell whether a "
    "given record was in the training set?"
)

st.page_link("views/train.py", label="Train your first model", icon=":material/arrow_forward:")


def lesson_panel(lesson_id: str, was_running: bool, status: dict | None = None) -> None:
    """Start button, live progress, or the links to the answer, of one lesson (``status``: its
    :func:`services.lesson_status`, read here when not given)."""
    if status is None:
        try:
            status = services.lesson_status(lesson_id)
        except GenlabError as err:
            st.error(str(err))
            return
    if was_running and status["state"] != "running":
        st.rerun()  # the whole page: polling stops and the answer links appear
    done, total = status["done"], status["total"]
    if status["state"] == "running":
        st.progress(done / total, text=f"{done} of {total} runs trained and evaluated. It "
                    "works in the background: closing the tab does not stop it.")
        return
    if status["state"] == "done":
        st.success("Ready: open the answer.", icon=":material/check_circle:")
        for link in services.answer_links(lesson_id, status["run_ids"]):
            st.page_link(link["page"], label=link["label"], query_params=link["query_params"],
                         icon=":material/arrow_forward:")
        return
    if status["state"] == "failed":
        reasons = "; ".join(f"{run_id}: {error}" for run_id, error in status["errors"].items())
        st.error(f"{status['failed']} of {total} runs failed ({reasons}). Try again: the runs "
                 "that finished are kept.")
    label = ("Try again" if status["failed"] else "Finish this lesson" if done
             else "Start this lesson")
    if st.button(label, key=f"lesson_start_{lesson_id}", icon=":material/play_arrow:"):
        try:
            services.start_lesson(lesson_id)
        except (GenlabError, OSError) as err:
            st.error(f"The lesson could not start: {err}")
        else:
            st.rerun()


try:  # the store is read here for the whole page, so a broken one is said once
    recent = services.list_runs(limit=20)
    statuses = {lesson.id: services.lesson_status(lesson.id) for lesson in services.lessons()}
except GenlabError as err:
    st.error(str(err))
    recent, statuses = None, {}

st.markdown(
    "## Lessons for class\n\n"
    "Each lesson asks one question and trains the few small models that answer it, on the "
    "bundled handwritten digits, in the background (about a minute or two on a laptop). "
    "When it has finished, open the page that shows the answer.\n\n" + services.GOOD_EPSILON
)
for lesson in services.lessons():
    with st.container(border=True):
        runs = f"{lesson.spec.size} run" + ("s" if lesson.spec.size != 1 else "")
        st.markdown(f"### {lesson.title}\n\n*{lesson.question}*\n\n{lesson.explanation}\n\n"
                    f":small[:gray[{runs}. From a terminal: `{lesson.command()}`]]")
        if (status := statuses.get(lesson.id)) is None:  # the store's error is above
            continue
        if status["state"] == "running":  # its own script run every 2 s, while it trains
            st.fragment(lesson_panel, run_every=2.0)(lesson.id, True)
        else:
            lesson_panel(lesson.id, False, status)

if recent is None:
    st.stop()
st.header("Recent runs")
if not recent:
    st.info("No runs yet. Train a model on the Train page and it will appear here.")
else:
    st.dataframe(
        services.runs_table(recent),
        hide_index=True,
        column_config={
            "test loss": st.column_config.NumberColumn(
                format="%.2f", help="Each model's own loss on the test split, in its family's "
                                    "unit; lower is better. Explore says what it measures."),
            "created": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss"),
        },
        key="home_runs",
    )

"""The Train page's two views: the form ("New run") and one run followed live ("Live run")."""

from __future__ import annotations

from test_dashboard import no_exception, open_page

from genlab.config import make_run_config
from genlab.runs import RunStore


def add_run(store: RunStore, owner: str, seed: int) -> str:
    cfg = make_run_config("vae", "digits", epochs=1, seed=seed)
    return store.create_run(model="vae", dataset="digits", config=cfg.to_dict(), owner=owner,
                            status="cancelled")


def keys(widgets) -> list[str]:
    return [w.key for w in widgets]


def test_a_fresh_session_opens_on_the_form_and_draws_no_live_run(genlab_home):
    add_run(RunStore(genlab_home), "ann", 0)
    at = open_page("train")
    no_exception(at)
    assert at.radio(key="train_view").value == "New run"
    assert "train_epochs" in keys(at.number_input) and "train_start" in keys(at.button)
    assert "train_follow" not in keys(at.selectbox) and not at.metric


def test_a_session_that_started_a_run_comes_back_to_it_not_to_the_newest(genlab_home):
    store = RunStore(genlab_home)
    mine = add_run(store, "ann", 0)
    newest = add_run(store, "bob", 1)
    at = open_page("home")
    at.session_state["train_started"] = mine  # as the Start button leaves it
    at.switch_page("views/train.py")
    at.run()
    no_exception(at)
    assert at.radio(key="train_view").value == "Live run"
    assert at.selectbox(key="train_follow").value == mine != newest
    assert at.metric[0].value == "cancelled" and not at.number_input  # the form is not drawn
    assert not at.success  # it ended: no word of it training in the background
    at.radio(key="train_view").set_value("New run").run()
    assert "train_epochs" in keys(at.number_input) and not at.metric


def test_the_started_line_shows_while_the_run_waits_or_trains_and_not_once_it_ended(genlab_home):
    store = RunStore(genlab_home)
    cfg = make_run_config("vae", "digits", epochs=1, seed=0)
    mine = store.create_run(model="vae", dataset="digits", config=cfg.to_dict(), owner="ann",
                            status="queued")
    at = open_page("home")
    at.session_state["train_started"] = mine
    at.switch_page("views/train.py")
    at.run()
    no_exception(at)
    assert [s.value for s in at.success] == [
        f"Started run {mine}. It trains in the background; closing the tab does not stop it."]
    store.mark_cancelled(mine)
    at.run()
    assert not at.success and at.metric[0].value == "cancelled"
    at.session_state["train_confirm"] = mine  # as Start leaves it: a tiny run may end at once
    at.run()
    assert len(at.success) == 1 and at.success[0].value.startswith(f"Started run {mine}.")
    at.run()
    assert not at.success  # said once


def test_a_link_to_a_run_opens_it_live_and_a_link_to_no_run_says_so(genlab_home):
    store = RunStore(genlab_home)
    linked = add_run(store, "ann", 0)
    newest = add_run(store, "bob", 1)
    at = open_page("train", run=linked[:-2])  # a unique prefix is enough
    no_exception(at)
    assert at.radio(key="train_view").value == "Live run"
    assert at.selectbox(key="train_follow").value == linked
    assert "Owner: ann" in [c.value for c in at.caption]

    at = open_page("train", run="no-such-run")
    no_exception(at)
    assert at.selectbox(key="train_follow").value == newest
    assert at.warning[0].value == ("unknown run 'no-such-run'; `genlab runs list` shows the "
                                   "runs. The newest run is shown instead.")


def test_the_test_loss_help_says_what_the_runs_family_measures(genlab_home):
    store = RunStore(genlab_home)
    for model, words in (("gan", "discriminator"), ("diffusion", "denoising"), ("vae", "ELBO")):
        cfg = make_run_config(model, "digits", epochs=1, seed=0)
        run = store.create_run(model=model, dataset="digits", config=cfg.to_dict(), owner="ann",
                               status="cancelled")
        at = open_page("train", run=run)
        no_exception(at)
        loss = next(m for m in at.metric if m.label == "Test loss")
        assert words in loss.proto.help and ("ELBO" in loss.proto.help) == (model == "vae")

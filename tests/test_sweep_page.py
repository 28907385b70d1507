"""The Trade-offs page's sweep launcher under AppTest: bad grids are refused with the CLI's own
message and create nothing; a good one runs in the background and its runs reach the page."""

from __future__ import annotations

import time

import pytest
import services
from test_dashboard import no_exception, open_page

from genlab.runs import RunStore
from genlab.sweep import SweepSpec, sweep_status


@pytest.fixture
def empty_home(genlab_home, monkeypatch, tmp_path):
    monkeypatch.setenv(services.DEMO_ENV, str(tmp_path / "absent.json"))  # no demo records
    return genlab_home


def fill(at, *, models=("mixture",), epsilons="inf", seeds="0", epochs=1):
    at.selectbox(key="tradeoffs_sweep_dataset").set_value("digits")
    at.multiselect(key="tradeoffs_sweep_models").set_value(list(models))
    at.text_input(key="tradeoffs_sweep_epsilons").set_value(epsilons)
    at.text_input(key="tradeoffs_sweep_seeds").set_value(seeds)
    at.number_input(key="tradeoffs_sweep_epochs").set_value(epochs)
    return at.button(key="tradeoffs_sweep_start").click().run()


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        (dict(epsilons="0"), "epsilon must be > 0"),
        (dict(epsilons="-1"), "epsilon must be > 0"),
        (dict(seeds="0,0"), "0"),
        (dict(models=()), "model"),
        (dict(epsilons=",".join(str(e) for e in range(1, 60)), seeds="0,1,2,3"), "236 runs"),
    ],
)
def test_a_bad_grid_is_refused_with_one_message_and_nothing_starts(empty_home, grid, message):
    at = fill(open_page("tradeoffs"), **grid)
    no_exception(at)
    assert len(at.error) == 1 and message in at.error[0].value, [e.value for e in at.error]
    assert "tradeoffs_sweep_spec" not in at.session_state
    assert RunStore(empty_home).list() == []
    assert not (empty_home / "sweeps").exists() or not list((empty_home / "sweeps").glob("*.pid"))


@pytest.mark.slow
def test_a_sweep_started_on_the_page_trains_and_its_runs_appear(empty_home):
    at = fill(open_page("tradeoffs"), models=("mixture",), epsilons="inf,4", seeds="0", epochs=2)
    no_exception(at)
    assert not at.error
    spec = SweepSpec.from_dict(at.session_state["tradeoffs_sweep_spec"])
    assert (spec.models, spec.epsilons, spec.seeds, spec.epochs) == (("mixture",),
                                                                     (float("inf"), 4.0), (0,), 2)
    assert any("Sweep" in p.proto.text for p in at.get("progress"))
    store = RunStore(empty_home)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        status = sweep_status(store, spec)
        if not status["running"] and status["done"] + status["failed"] == status["total"]:
            break
        time.sleep(1)
    assert status["done"] == 2 and status["failed"] == 0, status
    at.run()  # the page's next poll sees the end and reloads with the runs
    at.run()
    no_exception(at)
    assert "tradeoffs_sweep_spec" not in at.session_state
    table = at.dataframe[0].value
    assert sorted(table["run"]) == sorted(status["run_ids"])

"""Resuming runs: a run stopped after an epoch and resumed ends exactly where an uninterrupted run
ends (weights, history, and for DP the accountant's ε), for every registered model; a worker
killed with SIGKILL resumes through the CLI; runs that cannot resume say why in one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import TINY_SETTINGS
from safetensors.torch import load_file

from genlab import jobs
from genlab.checkpoint import WEIGHTS_FILE
from genlab.cli import main
from genlab.config import make_run_config
from genlab.models import MODELS
from genlab.resume import resume_run
from genlab.runs import RunStore
from genlab.train import Callback
from genlab.train_state import CHECKPOINT_FILE, load_checkpoint

EPOCHS = 3


class StopAfter(Callback):
    """Fails the run at the end of epoch ``n`` (after that epoch's checkpoint is written)."""

    def __init__(self, n: int):
        self.n = n

    def on_epoch_end(self, trainer, epoch, metrics):
        if epoch == self.n:
            raise RuntimeError(f"stopped after epoch {epoch}")


@pytest.fixture
def store(genlab_home) -> RunStore:
    return RunStore(genlab_home)


def new_run(store: RunStore, cfg) -> str:
    return store.create_run(model=cfg.model, dataset=cfg.data.name, config=cfg.to_dict(),
                            config_hash=cfg.config_hash())


def without_time(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in ("time", "seconds")} for row in rows]


def weights(store: RunStore, run_id: str) -> dict[str, torch.Tensor]:
    return load_file(str(store.artifacts_dir(run_id) / WEIGHTS_FILE))


# DP with each accountant: a given σ under RDP on the mixture (fast: no calibration), a target
# ε under PRV, the default, on the VAE
CASES = [(name, None) for name in sorted(MODELS)] + [
    ("mixture", {"noise_multiplier": 1.0, "accountant": "rdp"}),
    pytest.param("vae", {"epsilon": 4.0}, marks=pytest.mark.slow)]


@pytest.mark.parametrize(("model", "privacy"), CASES,
                         ids=[f"{m}" for m in sorted(MODELS)] + ["mixture-dp", "vae-dp"])
def test_a_resumed_run_ends_exactly_where_an_uninterrupted_one_does(store, model, privacy):
    cfg = make_run_config(model, "digits", epochs=EPOCHS, seed=3,
                          overrides=TINY_SETTINGS.get(model, {}), privacy=privacy)
    whole = new_run(store, cfg)
    jobs.execute_run(store, whole)
    assert not (store.artifacts_dir(whole) / CHECKPOINT_FILE).exists()  # gone once finished

    broken = new_run(store, cfg)
    with pytest.raises(RuntimeError, match="stopped after epoch 1"):
        jobs.execute_run(store, broken, callbacks=[StopAfter(1)])
    assert store.get(broken).status == "failed"
    state = load_checkpoint(store.artifacts_dir(broken) / CHECKPOINT_FILE)
    assert state.epoch == 1 and [h["epoch"] for h in state.history] == [1]
    # an epoch the store logged after the last checkpoint is trained again, not kept twice
    store.log(broken, epoch=2, step=999, metrics={"train_loss": 0.0})

    assert resume_run(store, broken[:-1])[0] == broken  # a unique prefix works
    done, ref = store.get(broken), store.get(whole)
    assert done.status == "finished" and done.error is None
    assert without_time(store.history(broken)) == without_time(store.history(whole))
    assert [h["epoch"] for h in store.history(broken)] == list(range(1, EPOCHS + 1))
    keep = ("epochs", "steps", "train_loss", "test_loss", "params")
    assert {k: done.summary[k] for k in keep} == {k: ref.summary[k] for k in keep}
    a, b = weights(store, whole), weights(store, broken)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    if privacy is not None:
        eps, eps_ref = done.record["privacy"]["epsilon"], ref.record["privacy"]["epsilon"]
        assert abs(eps - eps_ref) <= 1e-6 and 0 < eps <= privacy.get("epsilon", 100)
        assert done.record["privacy"]["steps"] == ref.record["privacy"]["steps"]
        assert done.record["privacy"]["accountant"] == privacy.get("accountant", "prv")


def test_runs_that_cannot_resume_say_why_in_one_line(store, capsys):
    cfg = make_run_config("mixture", "digits", epochs=1, seed=0)
    finished = new_run(store, cfg)
    jobs.execute_run(store, finished)
    never = new_run(store, cfg)
    store.fail(never, "the worker never started")
    running = new_run(store, cfg)
    store.claim(running)  # this test process is its live worker
    damaged = new_run(store, cfg)
    store.fail(damaged, "killed")
    (store.artifacts_dir(damaged) / CHECKPOINT_FILE).write_bytes(b"not a checkpoint" * 10)
    expected = {
        "nope": "genlab: error: unknown run 'nope'; `genlab runs list` shows the runs",
        finished: f"genlab: error: run {finished} has finished; there is nothing to resume",
        never: f"genlab: error: run {never} has no checkpoint to resume from (it stopped before "
               "its first epoch ended, or it ran on Ray); train it again",
        running: f"genlab: error: run {running} is running (worker pid {os.getpid()}); cancel "
                 "it, or wait for it to stop, before resuming it",
        damaged: "is not a valid genlab checkpoint",
    }
    for run_id, message in expected.items():
        assert main(["runs", "resume", run_id, "--quiet"]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert store.get(never).status == "failed" and store.get(damaged).status == "failed"


@pytest.mark.slow
def test_a_killed_dp_worker_resumes_to_the_uninterrupted_epsilon(store, genlab_home):
    # σ given, not a target ε: no calibration to wait for (the target-ε case is tested above)
    cfg = make_run_config("vae", "digits", epochs=6, seed=1, overrides=TINY_SETTINGS["vae"],
                          privacy={"noise_multiplier": 1.2})
    whole = jobs.submit(store, cfg)
    assert jobs.wait(store, whole, timeout=300) == "finished"
    victim = jobs.submit(store, cfg)
    checkpoint = store.artifacts_dir(victim) / CHECKPOINT_FILE
    deadline = time.monotonic() + 120
    while not (checkpoint.exists() and store.get(victim).status == "running"):
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.05)
    pid = store.get(victim).pid
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.3)
    assert RunStore(genlab_home).get(victim).status == "failed"  # recovered on opening
    epoch_killed = load_checkpoint(checkpoint).epoch
    assert 1 <= epoch_killed < 6

    out = subprocess.run([sys.executable, "-m", "genlab.cli", "runs", "resume", victim,
                          "--json", "--quiet"], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "GENLAB_HOME": str(genlab_home)})
    assert out.returncode == 0, out.stderr
    resumed = json.loads(out.stdout)
    assert resumed["status"] == "finished" and resumed["summary"]["epochs"] == 6
    ref = store.get(whole)
    eps = resumed["record"]["privacy"]["epsilon"]
    assert abs(eps - ref.record["privacy"]["epsilon"]) <= 1e-6 and 0 < eps < 100
    assert resumed["record"]["privacy"]["accountant"] == "prv"
    assert resumed["summary"]["test_loss"] == ref.summary["test_loss"]
    assert [h["epoch"] for h in store.history(victim)] == [1, 2, 3, 4, 5, 6]
    assert not checkpoint.exists()

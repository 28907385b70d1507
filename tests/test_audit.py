"""Known-answer membership audits: memorisation is caught, DP stops it, no signal gives no result,
and the empirical bound never exceeds the accountant's ε. Also `genlab audit` and `genlab budget`.
"""

from __future__ import annotations

import json

import pytest
import torch
from opacus.accountants.utils import get_noise_multiplier

from genlab.cli import main
from genlab.config import make_run_config
from genlab.data import load_dataset
from genlab.models import build
from genlab.privacy.audit import AuditSets, membership_audit
from genlab.runs import RunStore
from genlab.train import seed_everything, train_run

# About 200 members: digits split 11% train / 45% holdout / 44% test. A wide MLP VAE with a weak
# KL term (beta = 0.01) trained for 400 epochs memorises its 197 training images.
OVERFIT = {
    "arch": "mlp",
    "hidden": 512,
    "latent_dim": 16,
    "beta": 0.01,
    "batch_size": 16,
    "holdout_fraction": 0.45,
    "test_fraction": 0.44,
}
EPOCHS = 400


@pytest.fixture
def one_thread():
    """The overfit VAE is tiny (batch 16): one thread beats two, and never oversubscribes."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _overfit_cfg(privacy=None):
    return make_run_config(
        "vae", "digits", epochs=EPOCHS, seed=0, device="cpu", overrides=OVERFIT, privacy=privacy
    )


def _data():
    return load_dataset("digits", seed=0, holdout_fraction=0.45, test_fraction=0.44)


@pytest.mark.slow
def test_memorisation_is_caught(genlab_home, one_thread):
    cfg = _overfit_cfg()
    model, result = train_run(cfg)
    assert result.test_loss > result.train_loss + 20  # it did overfit
    rec = membership_audit(model, cfg, _data()).record
    assert rec["audit"]["n_members"] == rec["audit"]["n_nonmembers"] == 197
    assert rec["mia_auc"] >= 0.8
    # calibrating by a reference model makes the attack stronger, not weaker
    assert rec["attacks"]["reference"]["auc"] >= rec["attacks"]["loss"]["auc"]
    assert rec["mia_tpr_at_1pct_fpr"] > 0.3
    assert rec["epsilon_lower_bound"] > 1.0  # a memorising model is provably not 1-DP
    assert rec["mia_tpr_at_0_1pct_fpr"] is None and "197" in rec["mia_tpr_at_0_1pct_fpr_reason"]
    assert len(rec["exposed"]) == 16


@pytest.mark.slow
def test_dp_stops_it(genlab_home, one_thread):
    cfg = _overfit_cfg(privacy={"epsilon": 1.0})
    model, result = train_run(cfg)
    formal = result.privacy["epsilon"]
    assert 0.98 <= formal <= 1.0
    # The global-threshold attack only: a reference model under DP would retrain 800 images for
    # 400 epochs with per-sample gradients, minutes this suite does not spend.
    rec = membership_audit(model, cfg, _data(), reference=False).record
    assert rec["mia_auc"] <= 0.6
    assert rec["epsilon_lower_bound"] <= 1.0
    assert rec["epsilon_lower_bound"] <= formal


def test_no_signal_gives_no_result(genlab_home):
    # an untrained model's scores do not depend on membership
    data = load_dataset("digits", seed=0)
    cfg = make_run_config("mixture", "digits", epochs=1, seed=0, device="cpu")
    seed_everything(0)
    model = build("mixture", shape=data.shape, num_classes=data.num_classes)
    rec = membership_audit(model, cfg, data, reference=False).record
    assert 0.45 <= rec["mia_auc"] <= 0.55
    assert rec["epsilon_lower_bound"] < 0.5


@pytest.mark.parametrize("name", ["vae", "gan", "mixture"])
def test_the_bound_stays_below_the_guarantee(name, genlab_home):
    cfg = make_run_config(name, "digits", epochs=2, seed=0, device="cpu", privacy={"epsilon": 2.0})
    model, result = train_run(cfg)
    rec = membership_audit(model, cfg, _data_default(), reference=False).record
    assert rec["epsilon_lower_bound"] <= result.privacy["epsilon"] <= 2.0


def _data_default():
    return load_dataset("digits", seed=0)


def test_members_and_nonmembers_are_equal_and_disjoint_from_the_reference():
    data = _data_default()
    sets = AuditSets.draw(data)
    assert len(sets.members) == len(sets.nonmembers) == len(data.holdout)
    assert len(set(sets.members.tolist())) == len(sets.members)
    ref = sets.reference_split(data)
    assert len(ref) == len(data.train) - len(sets.members) + len(data.test)
    # no reference image is a member (compare pixels, not indices)
    members = data.train.x[sets.members].flatten(1)
    d = torch.cdist(ref.x.flatten(1)[: len(data.train) - len(sets.members)], members)
    same = (d == 0).nonzero()
    # identical digits images exist in the data; any exact match must be a duplicate image,
    # never the member row itself
    assert len(same) <= 2


def test_cli_audit_merges_into_the_record(genlab_home, capsys):
    assert (
        main(
            [
                "train",
                "--dataset",
                "digits",
                "--model",
                "mixture",
                "--epochs",
                "2",
                "--noise-multiplier",
                "1.0",
                "--quiet",
                "--json",
            ]
        )
        == 0
    )
    run_id = json.loads(capsys.readouterr().out)["run_id"]
    assert main(["audit", run_id, "--no-reference", "--json", "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out)
    priv = out["record"]["privacy"]
    # the formal fields from training survive the audit
    assert priv["noise_multiplier"] == 1.0 and priv["accountant"] == "prv"
    assert priv["epsilon"] > 0 and 0 <= priv["epsilon_lower_bound"] <= priv["epsilon"]
    assert 0 <= priv["mia_auc"] <= 1 and priv["dcr_ratio"] > 0
    assert set(priv["attacks"]) == {"loss"}
    assert (RunStore(genlab_home).artifacts_dir(run_id) / "audit_exposed.png").exists()
    assert main(["audit", "no-such-run"]) == 2
    assert "no-such-run" in capsys.readouterr().err


def test_cli_budget_agrees_with_opacus(capsys):
    base = [
        "budget",
        "--n",
        "3000",
        "--batch-size",
        "256",
        "--epochs",
        "20",
        "--delta",
        "1e-5",
        "--json",
    ]
    assert main([*base, "--sigma", "1.0"]) == 0
    plan = json.loads(capsys.readouterr().out)
    q, steps = 1 / 12, 20 * 12  # q = 1/ceil(3000/256)
    assert plan["sample_rate"] == pytest.approx(q) and plan["steps"] == steps
    assert main([*base, "--epsilon", str(plan["epsilon"])]) == 0
    inverse = json.loads(capsys.readouterr().out)
    sigma = get_noise_multiplier(
        target_epsilon=plan["epsilon"],
        target_delta=1e-5,
        sample_rate=q,
        steps=steps,
        accountant="prv",
    )
    assert inverse["noise_multiplier"] == pytest.approx(sigma, rel=1e-9)
    assert inverse["noise_multiplier"] == pytest.approx(1.0, rel=0.02)
    assert main([*base, "--sigma", "1", "--epsilon", "3"]) == 2
    assert "not both" in capsys.readouterr().err

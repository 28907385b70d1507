"""`genlab fuse`: weight averaging and sampling ensembles of tiny digits VAEs, the composed ε,
and the refusals for different architectures and different data."""

from __future__ import annotations

import json
import math

import pytest
import torch

from genlab import jobs
from genlab.checkpoint import load_run_model
from genlab.cli import main
from genlab.compress import compress_run
from genlab.config import make_run_config
from genlab.ensemble import Ensemble
from genlab.errors import ConfigError, StoreError
from genlab.fusion import fuse_runs
from genlab.runs import RunStore
from genlab.tradeoffs import run_epsilon, runs_frame

TINY = {"arch": "mlp", "latent_dim": 4, "hidden": 32}
DP = {"noise_multiplier": 1.0, "accountant": "rdp"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two seeds of one VAE on one split, the same pair with DP (σ = 1 and the RDP accountant,
    which is quick: ε ≈ 4.4 each), and the odd ones out: a GAN, a wider latent, and a VAE on
    another split."""
    home = tmp_path_factory.mktemp("fusion_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENLAB_HOME", str(home))
        store = RunStore(home)

        def train(name, model="vae", seed=0, data_seed=0, privacy=None, **settings):
            cfg = make_run_config(model, "digits", epochs=2, seed=seed, data_seed=data_seed,
                                  overrides=settings or TINY, privacy=privacy)
            run_id = store.create_run(model=model, dataset="digits", config=cfg.to_dict(),
                                      config_hash=cfg.config_hash())
            jobs.execute_run(store, run_id)
            return name, run_id

        ids = dict([train("a"), train("b", seed=1),
                    train("dp_a", privacy=DP),
                    train("dp_b", seed=1, privacy=DP),
                    train("gan", model="gan", channels=8, latent_dim=4),
                    train("wide", **{**TINY, "latent_dim": 8}),
                    train("other_split", seed=1, data_seed=1)])
        yield home, store, ids


def test_averaging_two_seeds_gives_the_mean_of_their_weights(runs):
    home, store, ids = runs
    fused = fuse_runs(store, [ids["a"], ids["b"]], "average")
    model = load_run_model(RunStore(home), fused)[0]
    a, b = (load_run_model(store, ids[k])[0].state_dict() for k in ("a", "b"))
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, (a[key] + b[key]) / 2, rtol=0, atol=1e-7)
    assert not torch.equal(a["encoder.1.weight"], b["encoder.1.weight"])  # the seeds differ
    x = model.sample(16, generator=torch.Generator().manual_seed(0))
    assert x.shape == (16, 1, 8, 8) and 0 <= x.min() and x.max() <= 1
    info = store.get(fused)
    assert info.record["lineage"]["parents"] == [ids["a"], ids["b"]]
    assert info.record["privacy"]["epsilon"] is None and "trained without DP" in \
        info.record["privacy"]["composition"]["note"]
    assert info.summary["train_seconds"] == pytest.approx(
        store.get(ids["a"]).summary["train_seconds"] + store.get(ids["b"]).summary["train_seconds"])


def test_fused_epsilon_is_the_sum(runs):
    _, store, ids = runs
    eps = [store.get(ids[k]).record["privacy"]["epsilon"] for k in ("dp_a", "dp_b")]
    assert all(1 < e < 10 for e in eps)
    fused = store.get(fuse_runs(store, [ids["dp_a"], ids["dp_b"]], "average"))
    privacy = fused.record["privacy"]
    assert privacy["epsilon"] == pytest.approx(sum(eps), rel=1e-12)
    assert privacy["delta"] == pytest.approx(2e-5, rel=1e-12)
    assert privacy["accountant"] == "composition"
    assert "Theorem 3.16" in privacy["composition"]["reference"]
    assert [p["run_id"] for p in privacy["composition"]["parts"]] == [ids["dp_a"], ids["dp_b"]]
    assert run_epsilon(fused) == pytest.approx(sum(eps))  # the Trade-offs page's ε
    assert fused.summary["privacy"]["epsilon"] == privacy["epsilon"]


def test_a_parent_without_dp_makes_the_fusion_non_dp(runs):
    _, store, ids = runs
    fused = store.get(fuse_runs(store, [ids["dp_a"], ids["b"]], "average"))
    assert fused.record["privacy"]["epsilon"] is None and "privacy" not in fused.config
    assert math.isinf(run_epsilon(fused))
    assert ids["b"] in fused.record["privacy"]["composition"]["note"]


def test_a_run_and_its_own_compression_count_once(runs):
    """Pruning is post-processing: fusing a run with its pruned copy costs that run's ε once."""
    _, store, ids = runs
    pruned = compress_run(store, ids["dp_a"], "prune:0.5")
    assert store.get(pruned).record["privacy"]["epsilon"] == \
        store.get(ids["dp_a"]).record["privacy"]["epsilon"]
    fused = store.get(fuse_runs(store, [ids["dp_a"], pruned], "average"))
    assert fused.record["privacy"]["epsilon"] == pytest.approx(
        store.get(ids["dp_a"]).record["privacy"]["epsilon"], rel=1e-12)


def test_ensemble_is_a_mixture_of_its_members(runs):
    home, store, ids = runs
    fused = fuse_runs(store, [ids["a"], ids["b"]], "ensemble")
    model = load_run_model(RunStore(home), fused)[0]
    assert isinstance(model, Ensemble) and len(model.members) == 2
    members = [load_run_model(store, ids[k])[0] for k in ("a", "b")]
    x = load_run_model(store, ids["a"])[2].test.x[:8]
    # score and explanation target: the log-mean-exp of the members' (a mixture's likelihood)
    target = model.explain_target(x)
    expected = torch.logsumexp(torch.stack([m.explain_target(x) for m in members]), 0) - \
        math.log(2)
    torch.testing.assert_close(target, expected)
    # each image is drawn from a uniformly chosen member, reproducibly
    gen = torch.Generator().manual_seed(5)
    which = torch.randint(2, (64,), generator=gen)
    sample = model.sample(64, generator=torch.Generator().manual_seed(5))
    assert sample.shape == (64, 1, 8, 8) and 0 < which.sum() < 64
    assert torch.equal(sample, model.sample(64, generator=torch.Generator().manual_seed(5)))
    rows = (which == 0).nonzero().squeeze(1)
    replay = torch.Generator().manual_seed(5)
    torch.randint(2, (64,), generator=replay)
    torch.testing.assert_close(sample[rows], members[0].sample(len(rows), generator=replay))
    assert store.get(fused).record["lineage"]["details"]["combine"] == "logmeanexp"


@pytest.mark.parametrize(("pair", "message"), [
    (("a", "gan"), "cannot fuse runs of different architectures: {a} is a vae, {gan} is a gan"),
    (("a", "wide"), "cannot fuse runs of different architectures: latent_dim is 4 in {a} and 8 "
                    "in {wide}"),
    (("a", "other_split"), "cannot fuse runs trained on different data: the split seed is 0 in "
                           "{a} and 1 in {other_split}; their members differ, so train them "
                           "with the same --data-seed"),
])
@pytest.mark.parametrize("method", ["average", "ensemble"])
def test_different_architectures_or_data_are_refused(runs, capsys, pair, message, method):
    _, store, ids = runs
    before = len(store.list())
    assert main(["fuse", ids[pair[0]], ids[pair[1]], "--method", method]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == ["genlab: error: " + message.format(**ids)]
    assert len(store.list()) == before


def test_other_refusals(runs):
    _, store, ids = runs
    with pytest.raises(ConfigError, match="at least two different runs"):
        fuse_runs(store, [ids["a"], ids["a"]], "average")
    with pytest.raises(ConfigError, match="unknown fusion method 'soup'; use average or "
                                          "ensemble"):
        fuse_runs(store, [ids["a"], ids["b"]], "soup")
    int8 = compress_run(store, ids["a"], "int8")
    with pytest.raises(StoreError, match=f"run {int8} was made by int8; fuse full-precision"):
        fuse_runs(store, [ids["a"], int8], "average")


def test_cli_fuse_json_and_the_runs_frame(runs, capsys):
    _, store, ids = runs
    assert main(["fuse", ids["dp_a"], ids["dp_b"], "--method", "ensemble", "--no-evaluate",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["record"]["lineage"]["spec"] == "ensemble"
    assert out["record"]["privacy"]["epsilon"] == pytest.approx(
        sum(store.get(ids[k]).record["privacy"]["epsilon"] for k in ("dp_a", "dp_b")))
    frame = runs_frame(store.list(status="finished")).set_index("id")
    row = frame.loc[out["run_id"]]
    assert row["derived"] == "ensemble" and row["parent"] == f"{ids['dp_a']},{ids['dp_b']}"
    assert row["group"] != frame.loc[ids["dp_a"], "group"]  # never pooled with its parents
    assert frame.loc[ids["a"], "derived"] == "" and frame.loc[ids["a"], "parent"] == ""


def test_pages_show_an_ensemble_and_a_fused_dp_run(runs, monkeypatch):
    from test_dashboard import no_exception, open_page

    home, store, ids = runs
    monkeypatch.setenv("GENLAB_HOME", str(home))
    ensemble = fuse_runs(store, [ids["a"], ids["b"]], "ensemble")
    averaged = fuse_runs(store, [ids["dp_a"], ids["dp_b"]], "average")
    for run_id, pages in ((ensemble, ("explore", "explain")), (averaged, ("privacy",))):
        for page in pages:
            at = open_page(page, run=run_id)
            no_exception(at)
            assert not at.error, (page, [e.value for e in at.error])
            if page == "privacy":  # the composed ε, and how it was computed
                assert any(c.value.startswith("Fused: ε = ") and "Theorem 3.16" in c.value
                           for c in at.caption)

"""`genlab compress`: pruned, int8 and fp16 runs of tiny digits models, reloaded from the store
the way `genlab evaluate` and the dashboard load runs (weights only, no pickle)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from torch import nn

from genlab import jobs
from genlab.checkpoint import WEIGHTS_FILE, load_run_model, read_metadata
from genlab.cli import main
from genlab.compress import PRUNABLE, compress_run, parse_method
from genlab.config import make_run_config
from genlab.errors import ConfigError, StoreError
from genlab.lineage import children_of, lineage_of
from genlab.precision import HalfLayer, Int8Linear
from genlab.runs import RunStore

TINY = {"vae": {"latent_dim": 4, "hidden": 32, "channels": 8},  # conv: convs and Linear layers
        "gan": {"channels": 8, "latent_dim": 4},
        "mixture": {"components": 6}}
METHODS = ("prune:0.5", "int8", "fp16")


@pytest.fixture(scope="module")
def compressed(tmp_path_factory):
    """A store with a tiny VAE, GAN and mixture, and every compression of the VAE and GAN."""
    home = tmp_path_factory.mktemp("compress_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENLAB_HOME", str(home))
        store = RunStore(home)
        parents = {}
        for model, settings in TINY.items():
            cfg = make_run_config(model, "digits", epochs=2, seed=0, overrides=settings)
            run_id = store.create_run(model=model, dataset="digits", config=cfg.to_dict(),
                                      config_hash=cfg.config_hash())
            jobs.execute_run(store, run_id)
            parents[model] = run_id
        children = {(m, method): compress_run(store, parents[m], method)
                    for m in ("vae", "gan") for method in METHODS}
        yield home, parents, children


def _reload(home, run_id):
    return load_run_model(RunStore(home), run_id)[0]  # a fresh store: as a new process would


def _samples(model, n=32, seed=3):
    return model.sample(n, generator=torch.Generator().manual_seed(seed))


def _size(home, run_id) -> int:
    return (RunStore(home).artifacts_dir(run_id) / WEIGHTS_FILE).stat().st_size


@pytest.mark.parametrize("model", ["vae", "gan"])
@pytest.mark.parametrize("method", METHODS)
def test_compressed_runs_reload_and_sample(compressed, model, method):
    home, parents, children = compressed
    run_id = children[model, method]
    store = RunStore(home)
    info = store.get(run_id)
    assert info.status == "finished" and info.config == store.get(parents[model]).config
    assert info.config_hash is None  # a sweep never takes it for a trained run of this config
    assert lineage_of(store, run_id).parents == (parents[model],)
    assert info.record["lineage"]["spec"] == method
    assert run_id in children_of(store, parents[model])
    x = _samples(_reload(home, run_id))
    assert x.shape == (32, 1, 8, 8) and x.dtype == torch.float32
    assert torch.isfinite(x).all() and 0 <= x.min() and x.max() <= 1
    again = _samples(_reload(home, run_id))
    assert torch.equal(x, again)  # reloading is exact
    parent = _samples(_reload(home, parents[model]))
    diff = (x - parent).abs().max().item()
    assert diff > 0  # the compression changed the model...
    if method != "prune:0.5":  # ...and rounding weights barely moves the samples
        assert diff < 0.1, diff
    # the run's own losses were measured, next to its parent's
    assert info.summary["parent_test_loss"] == store.get(parents[model]).summary["test_loss"]
    assert info.summary["test_loss"] > 0


@pytest.mark.parametrize("model", ["vae", "gan"])
def test_prune_half_zeroes_half_of_every_layer(compressed, model):
    home, parents, children = compressed
    pruned, dense = _reload(home, children[model, "prune:0.5"]), _reload(home, parents[model])
    layers = [(n, m) for n, m in pruned.named_modules() if isinstance(m, PRUNABLE)]
    assert layers
    for name, m in layers:
        w = m.weight.detach()
        assert abs((w == 0).float().mean().item() - 0.5) <= 1 / w.numel() + 1e-9, name
        kept = dense.get_submodule(name).weight.detach()[w != 0].abs()
        dropped = dense.get_submodule(name).weight.detach()[w == 0].abs()
        assert kept.min() >= dropped.max(), name  # magnitude pruning: the largest survive
        if m.bias is not None:
            assert torch.equal(m.bias, dense.get_submodule(name).bias)  # biases untouched
    # packed on disk: a bitmask and the nonzeros take much less than the dense floats
    assert _size(home, children[model, "prune:0.5"]) < 0.65 * _size(home, parents[model])


@pytest.mark.parametrize("model", ["vae", "gan"])
def test_int8_weights_are_int8_on_reload(compressed, model):
    home, parents, children = compressed
    run_id = children[model, "int8"]
    q = _reload(home, run_id)
    linear = [n for n, m in _reload(home, parents[model]).named_modules() if type(m) is nn.Linear]
    int8 = [n for n, m in q.named_modules() if isinstance(m, Int8Linear)]
    assert int8 == linear and not any(type(m) is nn.Linear for m in q.modules())
    for name in int8:
        w = q.get_submodule(name).int8_weight()
        assert w.dtype == torch.qint8 and w.int_repr().dtype == torch.int8
    path = RunStore(home).artifacts_dir(run_id) / WEIGHTS_FILE
    with safe_open(str(path), "pt") as fh:
        dtypes = {k: fh.get_slice(k).get_dtype() for k in fh.keys()}
    assert read_metadata(path) == {"genlab_method": "int8", "genlab_parent": parents[model]}
    assert {dtypes[f"{n}.weight_int8"] for n in int8} == {"I8"}
    floats = [k for k in dtypes if k.endswith(".weight")]  # convolutions and norms
    assert floats and all(dtypes[k] == "F32" for k in floats)  # not quantized: float32
    details = RunStore(home).get(run_id).record["lineage"]["details"]
    assert details["quantized"]["layers"] == sorted(int8)
    assert set(details["float32"]) >= {"Conv2d"}


def test_int8_passes_gradients_for_attributions(compressed):
    """torch's int8 kernel has no gradient; the straight-through backward gives a real one."""
    home, _, children = compressed
    q = _reload(home, children["vae", "int8"])
    x = torch.rand(4, 1, 8, 8, requires_grad=True)
    q.explain_target(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("model", ["vae", "gan"])
def test_fp16_halves_the_size(compressed, model):
    home, parents, children = compressed
    half = _reload(home, children[model, "fp16"])
    layers = [m for m in half.modules() if isinstance(m, HalfLayer)]
    assert layers and all(p.dtype == torch.float16 for m in layers for p in m.parameters())
    ratio = _size(home, children[model, "fp16"]) / _size(home, parents[model])
    assert 0.45 < ratio < 0.56, ratio


def test_compressed_run_evaluates_on_every_axis(compressed, capsys):
    home, parents, _ = compressed
    assert main(["compress", parents["vae"], "--method", "int8", "--no-reference",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    record = out["record"]
    assert {"performance", "interpretability", "privacy", "cost", "efficiency",
            "lineage"} <= set(record)
    assert record["lineage"]["parents"] == [parents["vae"]]
    assert record["privacy"]["epsilon"] is None and "post-processing" in \
        record["privacy"]["post_processing"]
    assert 0 <= record["privacy"]["mia_auc"] <= 1 and record["privacy"]["dcr_ratio"] > 0
    eff = record["efficiency"]
    assert eff["size_bytes"] == _size(home, out["run_id"])
    assert eff["params_total"] == record["cost"]["params"] > eff["weight_dtypes"]["float32"]
    assert eff["weight_dtypes"]["int8"] > 0 and eff["sample_seconds"] > 0
    assert 0 <= record["interpretability"]["score"] <= 1


def test_int8_without_linear_layers_is_refused(compressed):
    home, parents, _ = compressed
    store = RunStore(home)
    before = len(store.list())
    with pytest.raises(ConfigError, match="int8 cannot compress the mixture: .* has none"):
        compress_run(store, parents["mixture"], "int8")
    with pytest.raises(ConfigError, match="no convolution or Linear layers to prune"):
        compress_run(store, parents["mixture"], "prune:0.5")
    assert len(store.list()) == before  # refused before any run was made


def test_compressing_an_int8_run_again_is_refused(compressed):
    home, parents, children = compressed
    with pytest.raises(StoreError, match=f"made by int8 already; compress its parent "
                                         f"{parents['vae']}"):
        compress_run(RunStore(home), children["vae", "int8"], "fp16")


@pytest.mark.parametrize(("method", "message"), [
    ("prune:1.5", "prune needs a sparsity strictly between 0 and 1 (got 1.5); e.g. prune:0.5 "
                  "zeroes half the weights of each layer"),
    ("prune", "prune needs a sparsity strictly between 0 and 1 (got none); e.g. prune:0.5 "
              "zeroes half the weights of each layer"),
    ("int9", "unknown compression method 'int9' (int8 is the only integer precision); use "
             "prune:S (a sparsity 0 < S < 1, e.g. prune:0.5), int8 or fp16"),
])
def test_bad_methods_are_one_line(compressed, capsys, method, message):
    home, parents, _ = compressed
    before = len(RunStore(home).list())
    assert main(["compress", parents["vae"], "--method", method]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.splitlines() == [f"genlab: error: {message}"]
    assert len(RunStore(home).list()) == before


def test_parse_method():
    assert parse_method("prune:0.25").sparsity == 0.25 and parse_method(" INT8 ").method == "int8"
    for bad in ("prune:0", "prune:1", "prune:x", "fp32", ""):
        with pytest.raises(ConfigError):
            parse_method(bad)


@pytest.mark.parametrize("method", ["int8", "fp16"])
def test_explore_and_explain_pages_show_compressed_runs(compressed, monkeypatch, method):
    from test_dashboard import no_exception, open_page

    home, _, children = compressed
    monkeypatch.setenv("GENLAB_HOME", str(home))
    run_id = children["vae", method]
    for page in ("explore", "explain"):
        at = open_page(page, run=run_id)
        no_exception(at)
        assert not at.error and at.image, page  # samples, traversals, attribution maps


def test_deleting_a_parent_keeps_its_compressed_child(compressed):
    home, parents, _ = compressed
    store = RunStore(home)
    child = compress_run(store, parents["mixture"], "fp16")
    store.delete(parents["mixture"])
    assert lineage_of(store, child).parents == (parents["mixture"],)
    assert _samples(_reload(home, child)).shape == (32, 1, 8, 8)  # its weights are its own
    store.delete(child)
    assert lineage_of(store, child) is None  # the link went with the run

"""`genlab explain` writes a PNG, bad input is one line with exit 2; `evaluate` fills the
interpretability block."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from genlab.checkpoint import load_run_model
from genlab.cli import main
from genlab.evaluate import evaluate_run
from genlab.interpret import interpretability_block
from genlab.runs import RunStore


def genlab(home, *args, timeout=120):
    env = {**os.environ, "GENLAB_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "genlab.cli", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_explain_writes_an_overlay_png(zoo, tmp_path):
    run_id = zoo.run("vae")
    out = tmp_path / "ig.png"
    done = genlab(zoo.home, "explain", run_id, "--method", "ig", "--target", "latent:3",
                  "--n", "6", "--out", out, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report == {"run_id": run_id, "out": str(out), "method": "ig", "target": "latent:3",
                      "n": 6, "space": "pixels"}
    picture = np.asarray(Image.open(out).convert("RGB")).astype(int)
    # 6 pairs, 4 a row: two rows of 112-pixel panels under an 18-pixel caption
    assert picture.shape[0] == 18 + 4 + 2 * (112 + 4)
    red = (picture[..., 0] > 150) & (picture[..., 1] < 100) & (picture[..., 2] < 100)
    blue = (picture[..., 2] > 150) & (picture[..., 0] < 100)
    assert red.sum() > 100 and blue.sum() > 100  # a diverging map, not a blank one


def test_explain_a_generator_region_of_a_gan(zoo, tmp_path):
    run_id = zoo.run("gan")
    out = tmp_path / "gan.png"
    done = genlab(zoo.home, "explain", run_id, "--target", "generator:center", "--n", "3",
                  "--method", "saliency", "--out", out)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{run_id}: saliency on generator:center") and out.is_file()


@pytest.mark.parametrize(
    ("model", "args", "line"),
    [
        ("vae", ["--target", "latent:99"],
         "genlab: error: latent:99 is out of range; this model has 4 latent dims (0–3)"),
        ("pixelcnn", ["--target", "latent:3"],
         "genlab: error: latent:3 needs a model with an encoder; the pixelcnn has none "
         "(its targets: default, loglik)"),
        ("vae", ["--method", "lime"],
         "genlab: error: unknown attribution method 'lime'; known methods: deeplift, gradshap, "
         "ig, occlusion, saliency, smoothgrad"),
        ("vae", ["--n", "0"], "genlab: error: --n must be at least 1 (got 0)"),
    ],
)
def test_bad_explain_input_is_one_line_and_exit_2(
    zoo, tmp_path, monkeypatch, capsys, model, args, line
):
    """In-process (the subprocess path is the same ``main``; see the first case below)."""
    monkeypatch.setenv("GENLAB_HOME", str(zoo.home))
    run_id = zoo.run(model)
    out = tmp_path / "never.png"
    assert main(["explain", run_id, *args, "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.strip().splitlines() == [line]
    assert not out.exists()


def test_a_bad_target_exits_2_from_the_real_command(zoo, tmp_path):
    done = genlab(zoo.home, "explain", zoo.run("vae"), "--target", "component:1",
                  "--out", tmp_path / "never.png")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "genlab: error: component:1 needs a model with mixture components; the vae has none "
        "(its targets: default, elbo, latent:K (K = 0–3), decoder:REGION (REGION = center, top, "
        "bottom, left, right, all, or r0:r1,c0:c1))"
    ]


def test_evaluate_fills_the_interpretability_block(zoo, monkeypatch):
    monkeypatch.setenv("GENLAB_HOME", str(zoo.home))
    store = RunStore(zoo.home)
    for model in ("vae", "mixture"):
        run_id = zoo.run(model)
        record = evaluate_run(store, run_id, audit=False)
        block = record["interpretability"]
        assert store.get(run_id).record["interpretability"] == block
        net, _, data = load_run_model(store, run_id)
        assert interpretability_block(net, data) == block  # the same numbers on a repeat
        assert 0.5 < block["faithfulness"] <= 1 and 0 < block["stability"] <= 1
        assert 0.2 < block["deletion_contrast"] <= 1
        assert (block["mig"] is None) == (model == "mixture")
        assert set(record) >= {"performance", "interpretability", "cost"}

"""The Trainer's fast path: thread fitting, fused optimizers, and (on a GPU) the CUDA graph."""

from __future__ import annotations

import pytest
import torch

from genlab.config import make_run_config
from genlab.fastpath import CudaGraphStep, fuse_optimizers, step_function, training_threads
from genlab.models import build
from genlab.train import Callback, Trainer, check_run, train_run


@pytest.mark.parametrize(
    "cores, load, expected", [(2, 0.0, 2), (2, 0.4, 2), (2, 0.9, 1), (2, 6.5, 1), (8, 3.2, 5)]
)
def test_training_uses_the_free_cores(cores, load, expected, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("GENLAB_TRAIN_THREADS", raising=False)
    assert training_threads(cores=cores, load=load) == expected


def test_an_explicit_thread_count_wins(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert training_threads(cores=2, load=0.0) == 1
    monkeypatch.setenv("GENLAB_TRAIN_THREADS", "3")
    assert training_threads(cores=2, load=9.0) == 3


def test_fast_path_fuses_adam_and_restores_the_thread_count(monkeypatch):
    monkeypatch.setenv("GENLAB_TRAIN_THREADS", "1")
    before = torch.get_num_threads()
    for fast in (True, False):
        cfg = make_run_config("vae", "digits", epochs=1, device="cpu", fast_path=fast,
                              overrides={"arch": "mlp", "hidden": 32, "latent_dim": 4})
        data = check_run(cfg)
        model = build("vae", shape=data.shape, num_classes=10, config=cfg.model_config)
        trainer = Trainer(model, cfg.train)
        assert bool(trainer.optimizers[0].defaults.get("fused")) is fast
        trainer.fit(data)
        assert torch.get_num_threads() == before
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    assert fuse_optimizers([sgd], torch.device("cpu"))[0] is sgd


def test_cpu_steps_are_eager():
    model = build("vae", shape=(1, 8, 8), num_classes=10,
                  config=make_run_config("vae", "digits").model_config)
    fn = step_function(model, model.configure_optimizers(1e-3), batch_size=64,
                       device=torch.device("cpu"), fast=True)
    assert not isinstance(fn, CudaGraphStep)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")
def test_cuda_graph_training_matches_eager_quality():
    class Keep(Callback):
        def on_train_end(self, trainer, result):
            self.step_fn = trainer.step_fn

    losses, kept = {}, Keep()
    for fast in (True, False):
        cfg = make_run_config("vae", "mnist5k", epochs=3, seed=0, device="cuda", fast_path=fast,
                              overrides={"arch": "mlp", "hidden": 400, "latent_dim": 20})
        _, result = train_run(cfg, callbacks=[kept] if fast else [])
        losses[fast] = result.test_loss
    assert isinstance(kept.step_fn, CudaGraphStep)
    assert kept.step_fn.graph is not None and kept.step_fn.failed is None
    assert abs(losses[True] - losses[False]) < 1.0


def test_the_command_runs_on_the_free_cores_and_restores_the_count(monkeypatch, capsys):
    from genlab.cli import main

    seen = []
    monkeypatch.setattr("genlab.cli.cmd_budget",
                        lambda args: seen.append(torch.get_num_threads()) or 0)
    monkeypatch.setenv("GENLAB_TRAIN_THREADS", "1")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        args = ["budget", "--n", "3000", "--batch-size", "256", "--epochs", "1", "--sigma", "1"]
        assert main(args) == 0
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)

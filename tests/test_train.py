"""The Trainer: reproducible runs, callbacks in order, cancelling, device choice."""

from __future__ import annotations

import pytest
import torch

from genlab.config import make_run_config
from genlab.errors import ConfigError, TrainingCancelled
from genlab.train import Callback, resolve_device, train_run


class Recorder(Callback):
    def __init__(self):
        self.events = []

    def on_train_start(self, trainer):
        self.events.append(("start", trainer.total_steps))

    def on_step_end(self, trainer, step, metrics):
        self.events.append(("step", step))

    def on_epoch_end(self, trainer, epoch, metrics):
        self.events.append(("epoch", epoch, sorted(metrics)))

    def on_train_end(self, trainer, result):
        self.events.append(("end", result.steps))


def test_same_seed_same_run_and_other_seed_differs():
    cfg = make_run_config("vae", "digits", epochs=2, seed=11)
    m1, r1 = train_run(cfg)
    m2, r2 = train_run(cfg)
    _, r3 = train_run(make_run_config("vae", "digits", epochs=2, seed=12))
    assert [h["test_loss"] for h in r1.history] == [h["test_loss"] for h in r2.history]
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p1, p2)
    assert r3.history[-1]["test_loss"] != r1.history[-1]["test_loss"]


def test_callbacks_are_called_in_order():
    rec = Recorder()
    cfg = make_run_config("vae", "digits", epochs=2, seed=0, overrides={"batch_size": "256"})
    _, result = train_run(cfg, callbacks=[rec])
    steps_per_epoch = -(-1079 // 256)  # the last batch is smaller, not dropped
    assert rec.events[0] == ("start", 2 * steps_per_epoch)
    assert [e[1] for e in rec.events if e[0] == "step"] == list(range(1, 2 * steps_per_epoch + 1))
    epochs = [e for e in rec.events if e[0] == "epoch"]
    assert [e[1] for e in epochs] == [1, 2]
    assert epochs[0][2] == ["seconds", "test_loss", "train_loss"]
    assert rec.events[-1] == ("end", result.steps) and result.steps == 2 * steps_per_epoch
    assert rec.events.index(("epoch", 1, epochs[0][2])) == 1 + steps_per_epoch


def test_a_callback_can_cancel_training():
    class CancelAtStep3(Callback):
        def on_step_end(self, trainer, step, metrics):
            if step == 3:
                raise TrainingCancelled("stop")

    rec = Recorder()
    with pytest.raises(TrainingCancelled):
        train_run(make_run_config("vae", "digits", epochs=5), callbacks=[CancelAtStep3(), rec])
    assert not any(e[0] == "end" for e in rec.events)


def test_device_choice():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cuda", "mps", "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU is available"):
            resolve_device("cuda")

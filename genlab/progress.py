"""A tqdm progress bar on stderr for command-line training (a Trainer callback)."""

from __future__ import annotations

from tqdm.auto import tqdm

from genlab.train import Callback, Trainer, TrainResult


class ProgressBar(Callback):
    def __init__(self, desc: str = "train"):
        self.desc = desc
        self.bar: tqdm | None = None

    def on_train_start(self, trainer: Trainer) -> None:
        self.bar = tqdm(
            total=trainer.total_steps,
            desc=self.desc,
            unit="step",
            leave=False,
            disable=None,
            dynamic_ncols=True,
        )

    def on_step_end(self, trainer: Trainer, step: int, metrics) -> None:
        self.bar.update(1)

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        self.bar.set_postfix(epoch=epoch, test_loss=f"{metrics['test_loss']:.2f}")

    def on_train_end(self, trainer: Trainer, result: TrainResult) -> None:
        self.bar.close()

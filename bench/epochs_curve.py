"""Sample quality against training time, in one training run: how many epochs does a model need?

Usage::

    python bench/epochs_curve.py --model diffusion --dataset mnist5k --epochs 60 --every 10
    python bench/epochs_curve.py --model diffusion --dataset mnist5k --epochs 30 --every 10 \
        --epsilon 10

Trains the model once (on the CPU; ``--device cuda`` gives the GPU time) with its defaults
(``--set key=value`` overrides them; ``--epsilon`` trains with DP-SGD at that target ε, spread
over all ``--epochs``) and, every ``--every`` epochs, fills the performance block of the record
(FD, PRDC, CAS on 1,000 samples, as ``genlab evaluate`` does) for the model as it stands. The
training seconds exclude these evaluations. Writes
``bench/results/epochs_curve-<model>-<dataset>[-eps<E>].json`` with the device, torch version,
load average and date.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import time
from pathlib import Path

import torch

from genlab.config import make_run_config, parse_set_options
from genlab.fidelity import performance_block
from genlab.train import Callback, Trainer, prepare_run

RESULTS = Path(__file__).resolve().parent / "results"


class Checkpoints(Callback):
    """Evaluates the model every ``every`` epochs; the time it takes is kept out of training's."""

    def __init__(self, data, every: int, epochs: int):
        self.data, self.every, self.epochs = data, every, epochs
        self.rows: list[dict] = []
        self.eval_seconds = 0.0

    def on_epoch_end(self, trainer, epoch, metrics):
        if epoch % self.every and epoch != self.epochs:
            return
        trained = metrics["seconds"] - self.eval_seconds  # the clock includes earlier evals
        start = time.perf_counter()
        block = performance_block(trainer.model, self.data)
        self.eval_seconds += time.perf_counter() - start
        row = {
            "epoch": epoch,
            "train_seconds": round(trained, 1),
            "test_loss": metrics["test_loss"],
            **{k: block[k] for k in ("fd", "precision", "recall", "cas", "nll_bpd")},
        }
        if "epsilon" in metrics:
            row["epsilon"] = metrics["epsilon"]
        self.rows.append(row)
        print(json.dumps(row), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--dataset", default="mnist5k")
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--epsilon", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (the GPU time)")
    parser.add_argument("--set", action="append", default=[], dest="sets")
    args = parser.parse_args()
    privacy = None if args.epsilon is None else {"epsilon": args.epsilon}
    cfg = make_run_config(args.model, args.dataset, epochs=args.epochs, seed=args.seed,
                          device=args.device, overrides=parse_set_options(args.sets),
                          privacy=privacy)
    model, data = prepare_run(cfg)
    checkpoints = Checkpoints(data, args.every, args.epochs)
    trainer = Trainer(model, cfg.train, callbacks=[checkpoints], privacy=cfg.privacy)
    trainer.fit(data)
    device = trainer.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        platform.processor() or platform.machine())
    out = {
        "what": f"performance of {args.model} on {args.dataset} against training epochs",
        "config": cfg.to_dict(),
        "rows": checkpoints.rows,
        "device": str(device),
        "device_name": name,
        "threads": torch.get_num_threads(),
        "load_average_at_end": os.getloadavg(),
        "torch": torch.__version__,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    suffix = "" if args.epsilon is None else f"-eps{args.epsilon:g}"
    path = RESULTS / f"epochs_curve-{args.model}-{args.dataset}{suffix}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

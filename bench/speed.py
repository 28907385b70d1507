"""Baselines and genlab side by side, in one process: seconds per epoch, ratios, quality.

Usage (on an otherwise idle machine: other work on the cores skews the timings)::

    .venv/bin/python bench/speed.py
    python bench/speed.py --quick          # one epoch each, no probes: a smoke test

An epoch is one pass over mnist5k's train split, **3,000 images**; ``per_60k_seconds`` scales the
median linearly to a 60,000-image epoch (not measured). Times are training only: the per-epoch
test evaluation is timed apart and left out, for genlab and the baselines alike. Quality is the
test loss (negative ELBO, nats per image, 1,000 test images) after the same number of epochs.

Rows: the pytorch/examples VAE recipe (``baselines.py``) against genlab's MLP VAE of the same
network and batch; genlab's conv VAE without DP, with DP (the fast step and, ``--no-fast-path``,
Opacus's hooks inside genlab) and Opacus's default ``make_private`` on the same model and batch;
probes of ``torch.compile`` and of CPU threads; PixelCNN sampling (``pixelcnn_sampling.py``);
attribution latency (``interpret_latency.py``); and the classroom path, ``genlab train --dataset
digits --model vae --evaluate`` in a fresh process (cold: a new genlab home; warm: the
reference classifier cached). Writes ``bench/results/speed.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from baselines import opacus_make_private, recipe_vae  # noqa: E402
from interpret_latency import time_attribution  # noqa: E402
from pixelcnn_sampling import time_sampling  # noqa: E402
from probes import classroom_path, compile_probe, thread_probe  # noqa: E402

from genlab.config import make_run_config  # noqa: E402
from genlab.data import load_dataset  # noqa: E402
from genlab.fastpath import training_threads  # noqa: E402
from genlab.models import build  # noqa: E402
from genlab.train import Callback, resolve_device, train_run  # noqa: E402

RESULTS = BENCH / "results" / "speed.json"
MLP = {"arch": "mlp", "hidden": 400, "latent_dim": 20, "batch_size": 128, "lr": 1e-3}
CONV = {"batch_size": 256, "lr": 3e-3}  # genlab's DP defaults on mnist5k, used with and without DP
DP = {"noise_multiplier": 1.0, "max_grad_norm": 1.0}
PER_60K = 60_000 / 3_000


class EpochTimer(Callback):
    """Training seconds per epoch: the time between epoch ends minus the test evaluation."""

    def on_train_start(self, trainer):
        self.evals: list[float] = []
        inner = trainer.evaluate_loss

        def timed(*args, **kwargs):
            start = time.perf_counter()
            out = inner(*args, **kwargs)
            self.evals.append(time.perf_counter() - start)
            return out

        trainer.evaluate_loss = timed
        self.device = trainer.device
        self.marks = [time.perf_counter()]

    def on_epoch_end(self, trainer, epoch, metrics):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.marks.append(time.perf_counter())

    def epoch_seconds(self) -> list[float]:
        return [b - a - e for a, b, e in zip(self.marks, self.marks[1:], self.evals)]


def summarise(row: dict) -> dict:
    med = statistics.median(row["epoch_seconds"])
    return {**row, "median_epoch_seconds": med, "per_60k_seconds": med * PER_60K}


def genlab_row(settings: dict, *, epochs: int, device: str, privacy=None, fast=True) -> dict:
    settings = dict(settings)
    train = {k: settings.pop(k) for k in ("batch_size", "lr") if k in settings}
    cfg = make_run_config("vae", "mnist5k", epochs=epochs, seed=1, device=device,
                          overrides={**settings, **train}, privacy=privacy, fast_path=fast)
    timer = EpochTimer()
    model, result = train_run(cfg, callbacks=[timer])
    row = {"epoch_seconds": timer.epoch_seconds(), "test_loss": result.test_loss,
           "train_loss": result.train_loss, "params": model.num_params()}
    if result.privacy:
        row.update(epsilon=result.privacy["epsilon"], dp_step=result.privacy["dp_step"])
    return summarise(row), model


def padded_dp_row(epochs: int, device: str) -> dict:
    """The fast DP step with padding forced on (the GPU default) on this device."""
    from genlab.privacy import fast_dp

    default = fast_dp.default_capacity
    fast_dp.default_capacity = lambda dev, n, q: fast_dp.batch_capacity(n, q)
    try:
        row, _ = genlab_row(CONV, epochs=epochs, device=device, privacy=DP)
    finally:
        fast_dp.default_capacity = default
    return {**row, "capacity": fast_dp.batch_capacity(3000, 1 / 12)}


def ratio(rows: dict, slow: str, fast: str) -> float:
    return rows[slow]["median_epoch_seconds"] / rows[fast]["median_epoch_seconds"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--mlp-epochs", type=int, default=10)
    parser.add_argument("--conv-epochs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1 epoch each, no probes")
    args = parser.parse_args(argv)
    mlp_epochs, conv_epochs = (1, 1) if args.quick else (args.mlp_epochs, args.conv_epochs)
    device = resolve_device(args.device)
    load_before = os.getloadavg()
    # Every row runs on the thread count genlab's fast path picks now, so the ratios compare
    # loops and algorithms; one extra recipe row keeps torch's default (what a copy gets).
    default_threads = torch.get_num_threads()
    threads = training_threads()
    torch.set_num_threads(threads)
    data = load_dataset("mnist5k")
    x, y, xt, yt = data.train.x, data.train.y, data.test.x, data.test.y
    rows: dict[str, dict] = {}

    def log(name: str) -> None:
        r = rows[name]
        extra = f", ε {r['epsilon']:.2f}" if "epsilon" in r else ""
        print(f"{name:<22} {r['median_epoch_seconds']:7.3f} s/epoch  test loss "
              f"{r['test_loss']:7.2f}{extra}", flush=True)

    rows["recipe_mlp"] = summarise(recipe_vae(x, y, xt, yt, epochs=mlp_epochs, device=device))
    log("recipe_mlp")
    if device.type == "cpu" and default_threads != threads:
        torch.set_num_threads(default_threads)
        rows["recipe_mlp_default_threads"] = {
            **summarise(recipe_vae(x, y, xt, yt, epochs=min(3, mlp_epochs), device=device)),
            "threads": default_threads,
        }
        torch.set_num_threads(threads)
        log("recipe_mlp_default_threads")
    rows["genlab_mlp"], _ = genlab_row(MLP, epochs=mlp_epochs, device=args.device)
    log("genlab_mlp")
    rows["genlab_mlp_plain"], _ = genlab_row(MLP, epochs=mlp_epochs, device=args.device,
                                             fast=False)
    log("genlab_mlp_plain")
    rows["genlab_conv"], conv_model = genlab_row(CONV, epochs=conv_epochs, device=args.device)
    log("genlab_conv")
    rows["genlab_conv_dp"], _ = genlab_row(CONV, epochs=conv_epochs, device=args.device,
                                           privacy=DP)
    log("genlab_conv_dp")
    rows["genlab_conv_dp_plain"], _ = genlab_row(CONV, epochs=conv_epochs, device=args.device,
                                                 privacy=DP, fast=False)
    log("genlab_conv_dp_plain")
    if device.type == "cpu":
        rows["genlab_conv_dp_padded"] = padded_dp_row(conv_epochs, args.device)
        log("genlab_conv_dp_padded")
    torch.manual_seed(1)
    fresh = build("vae", shape=data.shape, num_classes=data.num_classes,
                  config=make_run_config("vae", "mnist5k").model_config)
    rows["opacus_conv_dp"] = summarise(opacus_make_private(
        fresh, x, y, xt, yt, epochs=conv_epochs, device=device, **CONV, **DP))
    log("opacus_conv_dp")

    ratios = {
        "recipe_over_genlab_mlp": ratio(rows, "recipe_mlp", "genlab_mlp"),
        "genlab_dp_over_genlab_nodp_conv": ratio(rows, "genlab_conv_dp", "genlab_conv"),
        "opacus_over_genlab_dp_conv": ratio(rows, "opacus_conv_dp", "genlab_conv_dp"),
        "genlab_plain_dp_over_fast_dp_conv": ratio(rows, "genlab_conv_dp_plain",
                                                   "genlab_conv_dp"),
    }
    def gap(a: str, b: str) -> float:
        return rows[a]["test_loss"] - rows[b]["test_loss"]

    quality = {
        "genlab_mlp_minus_recipe": gap("genlab_mlp", "recipe_mlp"),
        "genlab_dp_minus_opacus": gap("genlab_conv_dp", "opacus_conv_dp"),
        "genlab_fast_minus_plain_mlp": gap("genlab_mlp", "genlab_mlp_plain"),
        "genlab_fast_minus_plain_dp": gap("genlab_conv_dp", "genlab_conv_dp_plain"),
    }
    pixel = build("pixelcnn", shape=data.shape, num_classes=data.num_classes,
                  config=make_run_config("pixelcnn", "mnist5k").model_config).to(device).eval()
    sampling = time_sampling(pixel)  # sampling time depends on the architecture, not the weights
    attribution = time_attribution(conv_model.eval(), data)
    extras = {
        "pixelcnn_sample_64_seconds": statistics.median(sampling),
        "ig_16x32_seconds_conv_vae": statistics.median(attribution),
    }
    print(f"pixelcnn 64 samples {extras['pixelcnn_sample_64_seconds']:.2f} s, IG "
          f"{extras['ig_16x32_seconds_conv_vae']:.2f} s", flush=True)
    probes = {}
    if not args.quick:
        probes["compile"] = compile_probe(x, device, mlp=MLP, conv=CONV)
        print("compile:", json.dumps(probes["compile"]), flush=True)
        if device.type == "cpu":
            probes["threads"] = thread_probe()
            print("threads:", json.dumps(probes["threads"]), flush=True)
        probes["classroom"] = classroom_path()
        print("classroom:", json.dumps(probes["classroom"]), flush=True)

    result = {
        "what": "seconds per training epoch of 3,000 mnist5k images (median), test loss in "
                "nats per image after equal epochs; ratios within this run",
        "epochs": {"mlp": mlp_epochs, "conv": conv_epochs},
        "rows": rows, "ratios": ratios, "quality_nats": quality, "extras": extras,
        "probes": probes, "settings": {"mlp": MLP, "conv": CONV, "dp": DP},
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "torch": torch.__version__, "cpu_count": os.cpu_count(),
        "torch_default_threads": default_threads, "bench_threads": threads,
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "quick": args.quick,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    out = RESULTS.with_name("speed_quick.json") if args.quick else RESULTS
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"ratios": ratios, "quality_nats": quality}, indent=1))
    print(f"load average {result['load_average_before']} -> {result['load_average_after']}; "
          f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

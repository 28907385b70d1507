"""How long does a default mnist5k PixelCNN take to draw 64 images?

Usage::

    python bench/pixelcnn_sampling.py                 # trains a default model briefly first
    python bench/pixelcnn_sampling.py --run RUN_ID    # a finished run from the store

Sampling time does not depend on the weights, only on the architecture, so the brief training
only makes the samples look like digits. Writes ``bench/results/pixelcnn_sampling.json`` and
prints the median of three timings.
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

from genlab.config import make_run_config, to_dict
from genlab.models import GenerativeModel

RESULTS = Path(__file__).resolve().parent / "results" / "pixelcnn_sampling.json"
N_IMAGES = 64
REPEATS = 3
BRIEF_EPOCHS = 1


def stored_model(run_id: str) -> tuple[GenerativeModel, str]:
    from genlab.checkpoint import load_run_model
    from genlab.runs import RunStore

    model, cfg, _ = load_run_model(RunStore(), run_id)
    if cfg.model != "pixelcnn":
        sys.exit(f"run {run_id} is a {cfg.model!r} model, not a pixelcnn")
    return model, cfg.data.name


def briefly_trained_model(device: str) -> GenerativeModel:
    from genlab.train import train_run

    cfg = make_run_config("pixelcnn", "mnist5k", epochs=BRIEF_EPOCHS, device=device)
    print(f"training a default mnist5k pixelcnn for {BRIEF_EPOCHS} epoch ...", flush=True)
    model, result = train_run(cfg)
    print(f"  {result.seconds:.0f} s, test loss {result.test_loss:.1f} nats/image", flush=True)
    return model.eval()


def time_sampling(model: GenerativeModel) -> list[float]:
    seconds = []
    for seed in range(REPEATS):
        gen = torch.Generator().manual_seed(seed)
        start = time.perf_counter()
        model.sample(N_IMAGES, generator=gen)
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="a finished pixelcnn run to load instead of training")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (training only)")
    args = parser.parse_args(argv)
    if args.run:
        model, dataset = stored_model(args.run)
    else:
        model, dataset = briefly_trained_model(args.device), "mnist5k"
    seconds = time_sampling(model)
    result = {
        "what": f"sample {N_IMAGES} images, median of {REPEATS}",
        "seconds": statistics.median(seconds),
        "all_seconds": seconds,
        "dataset": dataset,
        "shape": list(model.shape),
        "run": args.run,
        "model_config": to_dict(model.config),
        "device": str(model.device),
        "device_name": torch.cuda.get_device_name(model.device)
        if model.device.type == "cuda"
        else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"pixelcnn: {N_IMAGES} {dataset} images in {result['seconds']:.2f} s "
        f"(median of {REPEATS}, {result['device']}); written to {RESULTS}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

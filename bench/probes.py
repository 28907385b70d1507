"""Measurements behind the fast path's choices, run by bench/speed.py.

- :func:`compile_probe`: does ``torch.compile`` pay on this device, after its compile time?
- :func:`thread_probe`: one or two trainings at once, on one or two threads each
  (``GENLAB_TRAIN_THREADS``), each in its own process.
- :func:`classroom_path`: ``genlab train --dataset digits --model vae --evaluate`` in a fresh
  process, timed from the outside: cold (a new genlab home), warm (cached reference classifier),
  and warm with ``--no-fast-path``.

``python bench/probes.py --thread-worker`` is the worker the thread probe starts.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

AXES = ("performance", "interpretability", "privacy")


def _epoch(step, x: torch.Tensor, batch_size: int, device: torch.device) -> float:
    order = torch.randperm(len(x), device=x.device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(0, len(x), batch_size):
        step(x[order[i : i + batch_size]])
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def compile_probe(x, device, *, mlp: dict, conv: dict, epochs: int = 3) -> dict:
    """Eager against ``torch.compile`` on the generic step, per network: the first compiled
    epoch (compile included), the steady epochs, and the epochs a run needs to break even."""
    from genlab.config import make_run_config
    from genlab.models import build

    out = {}
    x = x.to(device)
    for name, settings in (("mlp", mlp), ("conv", conv)):
        model_settings = {k: v for k, v in settings.items() if k not in ("batch_size", "lr")}
        cfg = make_run_config("vae", "mnist5k", overrides=model_settings)
        times = {}
        for mode in ("eager", "compiled"):
            torch.manual_seed(1)
            torch._dynamo.reset()
            model = build("vae", shape=tuple(x.shape[1:]), num_classes=10,
                          config=cfg.model_config).to(device)
            opt = torch.optim.Adam(model.parameters(), lr=settings["lr"])

            def loss_of(xb, model=model):
                return model.loss(xb).mean()

            fn = torch.compile(loss_of) if mode == "compiled" else loss_of

            def step(xb, fn=fn, opt=opt):
                opt.zero_grad(set_to_none=True)
                fn(xb).backward()
                opt.step()

            times[mode] = [_epoch(step, x, settings["batch_size"], device) for _ in range(epochs)]
        eager = statistics.median(times["eager"])
        steady = statistics.median(times["compiled"][1:])
        overhead = times["compiled"][0] - steady
        gain = eager - steady
        out[name] = {
            "eager_epoch_seconds": eager, "compiled_first_epoch_seconds": times["compiled"][0],
            "compiled_steady_epoch_seconds": steady,
            "break_even_epochs": overhead / gain if gain > 0 else None,
        }
    return out


def _thread_worker() -> None:
    from genlab.config import make_run_config
    from genlab.train import train_run

    cfg = make_run_config("vae", "mnist5k", epochs=1, seed=1, device="cpu",
                          overrides={"batch_size": 256, "lr": 3e-3})
    _, result = train_run(cfg)
    print(json.dumps({"seconds": result.seconds, "threads": torch.get_num_threads()}))


def thread_probe() -> dict:
    """Seconds of one conv-VAE epoch (evaluation included) per process, for one process alone
    and for two at once, with 1 or 2 threads each."""
    out = {}
    for threads in (1, 2):
        for procs in (1, 2):
            env = {**os.environ, "GENLAB_TRAIN_THREADS": str(threads)}
            env.pop("OMP_NUM_THREADS", None)
            running = [
                subprocess.Popen([sys.executable, __file__, "--thread-worker"], env=env,
                                 stdout=subprocess.PIPE, text=True)
                for _ in range(procs)
            ]  # fmt: skip
            seconds = [json.loads(p.communicate()[0].strip().splitlines()[-1])["seconds"]
                       for p in running]  # fmt: skip
            out[f"{procs}_procs_{threads}_threads"] = seconds
    return out


def _cli(args: list[str], home: str) -> tuple[float, dict]:
    env = {**os.environ, "GENLAB_HOME": home}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "genlab.cli", *args], env=env, check=True,
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    return wall, json.loads(done.stdout)


def classroom_path() -> dict:
    """``genlab train --dataset digits --model vae --evaluate`` timed from the outside."""
    base = ["train", "--dataset", "digits", "--model", "vae", "--evaluate", "--json", "--quiet"]
    out = {}
    with tempfile.TemporaryDirectory() as home:
        for name, extra in (("cold", ["--seed", "0"]), ("warm", ["--seed", "1"]),
                            ("warm_no_fast_path", ["--seed", "2", "--no-fast-path"])):
            wall, run = _cli(base + extra, home)
            record = run["record"]
            out[name] = {
                "wall_seconds": wall,
                "train_seconds": run.get("summary", {}).get("train_seconds"),
                "test_loss": run.get("summary", {}).get("test_loss"),
                "axes_filled": [a for a in AXES if record.get(a)],
                "fd": record["performance"].get("fd"),
                "interpretability_score": record["interpretability"].get("score"),
                "mia_auc": record["privacy"].get("mia_auc"),
            }
    out["target_seconds"] = 30.0
    return out


if __name__ == "__main__":
    if "--thread-worker" in sys.argv:
        _thread_worker()

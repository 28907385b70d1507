"""The Trainer's fast path (``TrainConfig.fast_path``, on by default; ``--no-fast-path`` turns
it off). What it changes, and where each change engages:

- **Fused optimizers** (every device torch supports them on): Adam and AdamW are rebuilt with
  ``fused=True``, one kernel for all parameters instead of a loop over them; on cuda also
  ``capturable=True``, so a CUDA graph can hold the update.
- **CPU threads**: training uses the cores the machine has free (:func:`training_threads`);
  the ``genlab`` command and the workers set the whole process so (:func:`fit_cpu_threads`).
- **A CUDA graph per step** (cuda only, models trained by the generic ``train_step``): after
  three eager warm-up steps, the whole step (forward, backward, optimizer) at the full batch size
  is captured once and replayed; a smaller last batch runs eagerly. The data already stays on the
  device (the Trainer slices one tensor), so a replay is one copy into the graph's input buffer.
- **DP-SGD**: :mod:`genlab.privacy.fast_dp`'s one-pass clipping (see :mod:`genlab.privacy.dp`).

``torch.compile`` is not used on a CPU: ``bench/speed.py`` measures its compile time against
what it saves per epoch on these small models. Mixed precision is not used anywhere yet: the rule
is bf16 only on cuda and only where the test loss stays within 1 nat of float32, and no GPU has
been available to check that.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from genlab.models.base import GenerativeModel

log = logging.getLogger(__name__)
StepFn = Callable[[Tensor, Tensor], dict[str, Tensor]]
WARMUP_STEPS = 3  # eager steps on a side stream before capture (the CUDA graphs docs' recipe)
_FUSABLE = (torch.optim.Adam, torch.optim.AdamW)


def training_threads(*, cores: int | None = None, load: float | None = None) -> int:
    """Intra-op threads for training on a CPU: the cores not already busy, at least one.

    An explicit ``GENLAB_TRAIN_THREADS`` or ``OMP_NUM_THREADS`` wins. Otherwise the 1-minute
    load average says how many cores other processes hold: two 2-thread trainings on 2 cores
    each wait for the other's threads at every operation, and measured on this project's 2-core
    machine (``bench/speed.py``, the ``threads`` block) each ran slower than on one thread.

    Args:
        cores: CPU cores (default ``os.cpu_count()``).
        load: the load average (default ``os.getloadavg()[0]``).
    """
    for var in ("GENLAB_TRAIN_THREADS", "OMP_NUM_THREADS"):
        if os.environ.get(var, "").strip().isdigit():
            return max(1, int(os.environ[var]))
    cores = cores or os.cpu_count() or 1
    if load is None:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, min(cores, round(cores - load)))


def fit_cpu_threads() -> int:
    """Set this process's torch CPU threads to :func:`training_threads`; the ``genlab`` command
    and the background workers call it once at start, so evaluation, audits and reference models
    (not only the Trainer) avoid waiting on cores other processes hold. Returns the count."""
    n = training_threads()
    torch.set_num_threads(n)
    return n


def fuse_optimizers(optimizers: list[torch.optim.Optimizer], device: torch.device) -> list:
    """Adam/AdamW rebuilt with ``fused=True`` (and ``capturable`` on cuda); others unchanged.

    Called before the first step, so there is no optimizer state to carry over.
    """
    if device.type not in ("cuda", "cpu"):
        return optimizers
    out = []
    for opt in optimizers:
        if type(opt) not in _FUSABLE or opt.state:
            out.append(opt)
            continue
        groups = [
            {k: v for k, v in g.items() if k not in ("fused", "foreach", "capturable")}
            for g in opt.param_groups
        ]
        extra: dict[str, Any] = {"fused": True, "foreach": None}
        if device.type == "cuda":
            extra["capturable"] = True
        try:
            out.append(type(opt)(groups, **{**opt.defaults, **extra}))
        except (RuntimeError, ValueError) as err:  # a torch build without the fused kernel
            log.info("keeping the unfused %s: %s", type(opt).__name__, err)
            out.append(opt)
    return out


class CudaGraphStep:
    """The generic ``train_step`` at one batch size, captured as a CUDA graph and replayed.

    Args:
        model: a model trained by :meth:`GenerativeModel.train_step` with one optimizer.
        optimizer: its optimizer, built ``capturable`` (see :func:`fuse_optimizers`).
        batch_size: the batch size the graph is captured at.
    """

    def __init__(self, model: GenerativeModel, optimizer: torch.optim.Optimizer, batch_size: int):
        self.model, self.optimizer, self.batch_size = model, optimizer, batch_size
        self.graph: torch.cuda.CUDAGraph | None = None
        self.failed: str | None = None  # why capture was given up (eager from then on)
        self._warm = 0
        self._stream = torch.cuda.Stream()

    def _eager(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        return self.model.train_step(x, y, [self.optimizer])

    def __call__(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        if len(x) != self.batch_size or self.failed:
            return self._eager(x, y)
        if self.graph is not None:
            self._x.copy_(x)
            self._y.copy_(y)
            self.graph.replay()
            return {"loss": self._loss.clone()}
        if self._warm < WARMUP_STEPS:
            self._stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self._stream):
                metrics = self._eager(x, y)
            torch.cuda.current_stream().wait_stream(self._stream)
            self._warm += 1
            return metrics
        return self._capture(x, y)

    def _capture(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        self._x, self._y = x.clone(), y.clone()
        self.optimizer.zero_grad(set_to_none=True)  # grads are then allocated in the graph's pool
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                loss = self.model.loss(self._x, self._y).mean()
                loss.backward()
                self.optimizer.step()
        except RuntimeError as err:  # an operation that cannot be captured: stay eager
            self.failed = f"{type(err).__name__}: {err}"
            log.warning("CUDA graph capture failed, training eagerly: %s", self.failed)
            torch.cuda.synchronize()
            return self._eager(x, y)
        self.graph, self._loss = graph, loss.detach()
        graph.replay()  # capture records the step without running it
        return {"loss": self._loss.clone()}


def step_function(
    model: GenerativeModel, optimizers: list[torch.optim.Optimizer], *, batch_size: int,
    device: torch.device, fast: bool,
) -> StepFn:  # fmt: skip
    """The callable the Trainer runs per batch: a CUDA graph where it can be, else eager."""
    generic = type(model).train_step is GenerativeModel.train_step
    if fast and device.type == "cuda" and generic and len(optimizers) == 1:
        return CudaGraphStep(model, optimizers[0], batch_size)
    return lambda x, y: model.train_step(x, y, optimizers)

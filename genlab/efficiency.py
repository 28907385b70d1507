"""The record's ``efficiency`` block: what a model costs to keep and to use.

Filled for every evaluated run (trained, compressed or fused), so compression is compared on one
axis with everything else:

- ``size_bytes``: the run's saved weights file on disk (``weights.safetensors``), header included.
  A pruned run stores its pruned layers packed (a bitmask and the nonzero values), an int8 run
  its Linear weights as int8, an fp16 run every float tensor in 16 bits.
- ``sample_seconds``: wall time to draw ``SAMPLE_N`` = 64 images, the median of ``REPEATS``
  timed draws after one untimed warm-up, on the device the model was evaluated on; the machine's
  load changes it, so compare runs measured together.
- ``params_total`` and ``params_nonzero``: every parameter (an int8 weight counts as one) and
  those that are not zero.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from genlab.precision import Int8Linear, parameter_counts

SAMPLE_N = 64
REPEATS = 5


def sampling_latency(model, *, n: int = SAMPLE_N, repeats: int = REPEATS) -> float:
    """Median seconds for ``model.sample(n)`` over ``repeats`` seeded draws (after a warm-up)."""
    def draw(seed: int) -> float:
        gen = torch.Generator().manual_seed(seed)
        start = time.perf_counter()
        model.sample(n, generator=gen)
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    draw(0)
    return statistics.median(draw(i + 1) for i in range(repeats))


def weight_dtypes(model) -> dict[str, int]:
    """How many parameters are held in each dtype, e.g. ``{"float32": 1200, "int8": 40000}``."""
    counts: Counter[str] = Counter()
    for p in model.parameters():
        counts[str(p.dtype).removeprefix("torch.")] += p.numel()
    for m in model.modules():
        if isinstance(m, Int8Linear):
            counts["int8"] += m.int8_weight().numel()
    return dict(counts)


def efficiency_block(model, weights_path: str | Path) -> dict[str, Any]:
    """The ``efficiency`` block of ``model``, whose saved weights are ``weights_path``.

    Returns:
        ``size_bytes``, ``sample_seconds`` (``sample_n`` images, median of ``repeats``),
        ``params_total``, ``params_nonzero``, ``sparsity`` (the zero fraction),
        ``weight_dtypes`` and ``device``.
    """
    total, nonzero = parameter_counts(model)
    return {
        "size_bytes": Path(weights_path).stat().st_size,
        "sample_seconds": sampling_latency(model),
        "params_total": total,
        "params_nonzero": nonzero,
        "sparsity": 1.0 - nonzero / total if total else 0.0,
        "weight_dtypes": weight_dtypes(model),
        "sample_n": SAMPLE_N,
        "repeats": REPEATS,
        "device": str(model.device),
    }

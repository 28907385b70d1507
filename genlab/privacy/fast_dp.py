"""The fast DP-SGD step: Poisson batches of a fixed capacity, and per-sample clipping in one pass.

Opacus's hooks mode materialises every per-sample gradient, ``(B, *param.shape)`` for each
parameter, then reads it twice more (the norms, then the clipped sum). For the fully connected
layers of genlab's VAEs that is hundreds of megabytes per step, and on a CPU it is most of a DP
step's time. This module computes exactly what Opacus's ``DPOptimizer`` computes, with less
traffic (the "book-keeping" trick of Bu et al. 2023, *Differentially Private Optimization on
Large Model at Small Cost*, ICML):

- one backward pass gives each layer's output gradient; no parameter gradient is formed there;
- per-sample norms come from Opacus's own samplers: its ghost-norm sampler for ``nn.Linear``
  (``||g_i a_i^T|| = ||g_i|| ||a_i||``, Goodfellow 2015), its grad samplers for every other layer
  but the larger ``nn.Conv2d`` layers, whose per-sample weight gradients come from one grouped
  convolution backward (2-6 times faster than Opacus's unfold-based sampler there, see
  ``GROUPED_MIN_POSITIONS``);
- each clip factor is Opacus's, ``min(1, C / (||g_i|| + 1e-6))``; the clipped sum of a linear
  layer is one matrix product of the rescaled output gradients with the inputs, of any other
  layer Opacus's ``einsum`` over its per-sample gradients;
- the noise is added by ``DPOptimizer.add_noise`` itself (the run's generator, σ·C), the sum is
  divided by Opacus's expected batch size, and the step is counted by Opacus's accountant.

Sampling stays Poisson, as the accountant assumes: each image joins each step's batch
independently with probability q. A batch can be padded to a fixed capacity with zero-weight rows
(their gradient is exactly zero, so they add nothing to the clipped sum), which keeps shapes static
for CUDA graphs; a batch larger than the capacity is split into several chunks that are clipped
separately and noised once, so no sampled image is ever dropped.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from opacus.grad_sample import GradSampleModule
from opacus.grad_sample.grad_sample_module_fast_gradient_clipping import (
    GradSampleModuleFastGradientClipping,
)
from torch import Tensor, nn

# Opacus's per-layer rules, registered when opacus.grad_sample is imported.
GRAD_SAMPLERS = GradSampleModule.GRAD_SAMPLERS
NORM_SAMPLERS = GradSampleModuleFastGradientClipping.NORM_SAMPLERS
OVERFLOW_TAIL = 1e-6  # P(a Poisson batch needs a second chunk) at the default capacity
_BLOCK = 1 << 24  # Poisson draws per block of steps (16M floats), so huge N*steps fit in memory


def batch_capacity(n: int, sample_rate: float, *, tail: float = OVERFLOW_TAIL) -> int:
    """The smallest K with P(Binomial(n, q) > K) <= ``tail``: a batch capacity rarely exceeded.

    For N = 3,000 and q = 1/12 (batch 250 expected, s.d. 15) this is 325.
    """
    from scipy.stats import binom  # scikit-learn's dependency, already installed

    return max(1, int(binom.ppf(1.0 - tail, n, sample_rate)))


@dataclass(frozen=True)
class Chunk:
    """Rows of one step's Poisson batch: ``index`` into the train split, ``weight`` 1 for a
    sampled row and 0 for padding, ``count`` the sampled rows."""

    index: Tensor
    weight: Tensor
    count: int


class PoissonSchedule:
    """Poisson batches on the device: every image joins each step with probability q.

    Args:
        n: train split size.
        sample_rate: q.
        steps: steps per epoch.
        capacity: rows per chunk (padded with zero-weight rows); ``None`` gives each batch its
            exact size (no padding, as on a CPU where padding is paid for in arithmetic).
        device: where the draws and indices live.
        seed: seeds the sampling generator.
    """

    def __init__(
        self, n: int, sample_rate: float, steps: int, *, capacity: int | None,
        device: torch.device, seed: int,
    ):  # fmt: skip
        self.n, self.q, self.steps, self.capacity = n, sample_rate, steps, capacity
        self.device = device
        self.generator = torch.Generator(device=device).manual_seed(seed)
        if capacity is not None:
            self._arange = torch.arange(capacity, device=device)

    def epoch(self) -> Iterator[list[Chunk]]:
        """One epoch: for each step, the chunks of its batch (one, unless it overflows)."""
        rows = max(1, _BLOCK // max(self.n, 1))
        for start in range(0, self.steps, rows):
            draws = torch.rand(
                (min(rows, self.steps - start), self.n), generator=self.generator,
                device=self.device,
            )  # fmt: skip
            mask = draws < self.q
            counts = mask.sum(1).tolist()  # one host sync per block of steps, not per step
            for row, count in zip(mask, counts):
                yield self.chunks(row, count)

    def chunks(self, row: Tensor, count: int) -> list[Chunk]:
        """The chunks of one batch given as a boolean mask over the train split with ``count``
        rows set: one padded chunk, or several when ``count`` exceeds the capacity."""
        k = self.capacity
        if k is None:
            idx = row.nonzero().flatten()
            return [Chunk(idx, torch.ones(count, device=self.device), count)]
        if count <= k:  # no sync: the count is already on the host
            idx = torch.nonzero_static(row, size=k, fill_value=0).flatten()
            return [Chunk(idx, (self._arange < count).float(), count)]
        chosen = row.nonzero().flatten()  # overflow: several chunks, none dropped
        out = []
        for s in range(0, count, k):
            part = chosen[s : s + k]
            pad = part.new_zeros(k - len(part))
            out.append(Chunk(torch.cat([part, pad]), (self._arange < len(part)).float(), len(part)))
        return out


# Below this many output positions Opacus's unfold + bmm beats one grouped convolution backward.
# Measured on this project's CPU, batch 256, one thread (seconds, Opacus / grouped): 32->16 3x3 at
# 28x28 0.27 / 0.064; 64->32 3x3 at 14x14 0.18 / 0.077; 16->32 4x4 stride 2 to 14x14 0.12 / 0.020;
# 32->64 4x4 stride 2 to 7x7 0.066 / 0.099.
GROUPED_MIN_POSITIONS = 100


def _conv2d_grad_sample(layer: nn.Conv2d, a: Tensor, g: Tensor) -> dict[nn.Parameter, Tensor]:
    """Per-sample gradients of a Conv2d as one convolution backward with a group per sample
    (the rule functorch's vmap uses, without its extra forward): stacking the batch into the
    channels makes sample i's weight gradient the weight gradient of group i."""
    b, (co, cig, kh, kw) = len(a), layer.weight.shape
    out = {}
    if layer.weight.requires_grad:
        weight = layer.weight.detach().expand(b, co, cig, kh, kw).reshape(b * co, cig, kh, kw)
        grad_w = torch.ops.aten.convolution_backward(
            g.reshape(1, b * co, *g.shape[2:]), a.reshape(1, b * a.shape[1], *a.shape[2:]),
            weight, None, list(layer.stride), list(layer.padding), list(layer.dilation), False,
            [0, 0], layer.groups * b, [False, True, False],
        )[1]  # fmt: skip
        out[layer.weight] = grad_w.view(b, co, cig, kh, kw)
    if layer.bias is not None and layer.bias.requires_grad:
        out[layer.bias] = g.sum(dim=(2, 3))
    return out


def _grad_sample(layer: nn.Module, a: Tensor, g: Tensor) -> dict[nn.Parameter, Tensor]:
    if (
        type(layer) is nn.Conv2d
        and layer.padding_mode == "zeros"
        and isinstance(layer.padding, tuple)
        and len(a)
        and g.shape[2] * g.shape[3] >= GROUPED_MIN_POSITIONS
    ):
        return _conv2d_grad_sample(layer, a, g)
    return GRAD_SAMPLERS[type(layer)](layer, [a], g)  # Opacus's own rule


class Unsupported(ValueError):
    """The model has a parameter no Opacus sampler covers; the Opacus hooks path is used."""


class BookKeepingClipper:
    """Captures each layer's input and output in a forward pass, for clipped per-sample sums.

    Every module that owns trainable parameters must have an Opacus grad sampler (Linear, Conv,
    GroupNorm, LayerNorm, Embedding, ...); otherwise :class:`Unsupported` is raised.

    Args:
        module: the private modules.
    """

    def __init__(self, module: nn.Module):
        self.layers: list[nn.Module] = []
        for name, m in module.named_modules():
            if not any(p.requires_grad for p in m.parameters(recurse=False)):
                continue
            if type(m) not in GRAD_SAMPLERS:
                raise Unsupported(f"{name or 'the model'} ({type(m).__name__}) has no grad sampler")
            self.layers.append(m)
        self.params = [p for m in self.layers for p in m.parameters(recurse=False)]
        self.active = False
        self._records: list[tuple[nn.Module, Tensor, Tensor, int]] = []
        self._handles = [m.register_forward_hook(self._save) for m in self.layers]

    def _save(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        if self.active and torch.is_grad_enabled() and output.requires_grad:
            self._records.append((module, inputs[0].detach(), output, output._version))

    def clipped_sum(self, total: Tensor, max_grad_norm: float) -> dict[nn.Parameter, Tensor]:
        """Backpropagate ``total`` (the weighted sum of per-sample losses) and return, per
        parameter, the sum over samples of the per-sample gradients clipped to ``max_grad_norm``
        exactly as Opacus's ``DPOptimizer.clip_and_accumulate`` clips them."""
        records, self._records = self._records, []
        for m, _, out, version in records:
            if out._version != version:
                raise RuntimeError(f"{type(m).__name__}'s output was changed in place")
        grads = torch.autograd.grad(total, [r[2] for r in records], allow_unused=True)
        by_layer: dict[nn.Module, list[tuple[Tensor, Tensor]]] = {}
        for (m, a, out, _), g in zip(records, grads):
            by_layer.setdefault(m, []).append((a, torch.zeros_like(out) if g is None else g))
        batch = len(records[0][1]) if records else 0
        sq_norms = torch.zeros(batch, device=total.device)
        parts = []
        for m, calls in by_layer.items():
            if len(calls) == 1 and type(m) in NORM_SAMPLERS and calls[0][1].dim() == 2:
                a, g = calls[0]  # ghost norm: no (B, out, in) tensor is ever formed
                for norm in NORM_SAMPLERS[type(m)](m, [a], g).values():
                    sq_norms += norm.pow(2)
                parts.append((m, a, g, None))
            else:  # Opacus's per-sample gradients, summed over the calls of a shared layer
                per_sample: dict[nn.Parameter, Tensor] = {}
                for a, g in calls:
                    for p, gs in _grad_sample(m, a, g).items():
                        per_sample[p] = per_sample[p] + gs if p in per_sample else gs
                for gs in per_sample.values():
                    sq_norms += gs.reshape(len(gs), -1).norm(2, dim=-1).pow(2)
                parts.append((m, None, None, per_sample))
        # Opacus: per_sample_clip_factor = (max_grad_norm / (per_sample_norms + 1e-6)).clamp(max=1)
        factor = (max_grad_norm / (sq_norms.sqrt() + 1e-6)).clamp(max=1.0)
        sums: dict[nn.Parameter, Tensor] = {}
        for m, a, g, per_sample in parts:
            if per_sample is None:
                scaled = g * factor[:, None]
                sums[m.weight] = scaled.t() @ a.to(scaled.dtype)
                if m.bias is not None and m.bias.requires_grad:
                    sums[m.bias] = scaled.sum(0)
            else:
                for p, gs in per_sample.items():
                    sums[p] = torch.einsum("i,i...", factor.to(gs.dtype), gs)
        return sums

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles, self._records = [], []


def noisy_step(dp_optimizer, accountant, sample_rate: float, sums: dict) -> None:
    """Finish a DP step from clipped sums exactly as ``DPOptimizer.step`` finishes one.

    ``DPOptimizer.add_noise`` adds N(0, (σC)²) from the run's generator to each parameter's
    clipped sum, the result is divided by the expected batch size (Opacus's ``scale_grad`` with
    one accumulated batch), the accountant counts one step at rate q, and the wrapped optimizer
    steps.
    """
    for p in dp_optimizer.params:
        summed = sums.get(p)
        p.summed_grad = torch.zeros_like(p) if summed is None else summed.view_as(p)
    dp_optimizer.add_noise()
    for p in dp_optimizer.params:
        p.grad /= dp_optimizer.expected_batch_size
    accountant.step(noise_multiplier=dp_optimizer.noise_multiplier, sample_rate=sample_rate)
    dp_optimizer.original_optimizer.step()
    for p in dp_optimizer.params:
        p.summed_grad = None


def default_capacity(device: torch.device, n: int, sample_rate: float) -> int | None:
    """Padding pays on a GPU (static shapes; extra rows are nearly free there) and costs
    arithmetic on a CPU, where each batch keeps its exact size."""
    return batch_capacity(n, sample_rate) if device.type == "cuda" else None

"""Low-precision layers for compressed runs: dynamic int8 Linear layers and half-precision layers.

Both wrap an ordinary layer in place of the original, so every registered model keeps its own
code (``sample``, ``score``, ``explain_target``) and only the arithmetic changes:

- :class:`Int8Linear` holds a layer made by ``torch.ao.quantization.quantize_dynamic``: int8
  weights, activations quantized to 8 bits on the fly from each batch's range, int8 matrix
  products, float output. torch's quantized kernel has no gradient (backpropagating through it
  silently yields none), and attributions need one, so the backward pass uses the dequantized
  weights: the straight-through estimator of quantization-aware training (Bengio et al. 2013;
  Jacob et al. 2018). The forward pass is the real int8 one.
- :class:`HalfLayer` stores its layer's parameters in float16 and computes in float16; what it
  hands on is float32, so the code between layers (sampling noise, losses) needs no change.

Their state dicts hold plain tensors only (int8 weights with their scales and zero points), so
the weights save with safetensors and load without pickle (:mod:`genlab.checkpoint`).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn


@contextmanager
def _quiet_ao() -> Iterator[None]:
    """torch 2.13 warns on every use of ``torch.ao.quantization`` (deprecated in favour of the
    separate torchao package, which genlab does not depend on); the calls themselves work."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.ao")
        warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization.*")
        warnings.filterwarnings("ignore", message=r".*quantize_per_tensor.*")
        warnings.filterwarnings("ignore", message=r".*quantized tensor creation.*")
        yield


class _Int8LinearFn(torch.autograd.Function):
    """Forward: torch's dynamic int8 linear. Backward: grad @ dequantized W (straight-through)."""

    @staticmethod
    def forward(ctx, x: Tensor, quantized: nn.Module) -> Tensor:  # noqa: D102
        ctx.quantized = quantized
        return quantized(x)

    @staticmethod
    def backward(ctx, grad: Tensor):  # noqa: D102
        weight = ctx.quantized.weight().dequantize().to(grad.dtype)
        return grad @ weight, None


class Int8Linear(nn.Module):
    """A Linear layer with int8 weights (from ``quantize_dynamic``) and a float32 bias.

    The bias stays an ``nn.Parameter``, so a model whose layers are all Linear still has a
    parameter to report its device. State dict: ``weight_int8`` (int8), ``weight_scale`` and
    ``weight_zero_point`` (per tensor, or per output channel), and ``bias``.
    """

    def __init__(self, linear: nn.Linear):
        super().__init__()
        from torch.ao.quantization import quantize_dynamic

        self.in_features, self.out_features = linear.in_features, linear.out_features
        float_copy = nn.Linear(self.in_features, self.out_features, bias=False)
        float_copy.weight.data.copy_(linear.weight.detach().float().cpu())
        with _quiet_ao():
            quantized = quantize_dynamic(nn.Sequential(float_copy), {nn.Linear},
                                         dtype=torch.qint8)[0]
        self._quantized = [quantized]  # a list: not a submodule, its packed weight is not a tensor
        self.bias = (nn.Parameter(linear.bias.detach().float().cpu().clone(), requires_grad=False)
                     if linear.bias is not None else None)

    @property
    def quantized(self) -> nn.Module:
        """The ``torch.ao`` dynamic quantized Linear doing the int8 arithmetic."""
        return self._quantized[0]

    def int8_weight(self) -> Tensor:
        """The quantized weight (a ``torch.qint8`` tensor)."""
        return self.quantized.weight()

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1]).float()
        out = _Int8LinearFn.apply(x, self.quantized) if torch.is_grad_enabled() else \
            self.quantized(x)
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*shape[:-1], self.out_features)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        w = self.int8_weight()
        if w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
            scale, zero = w.q_per_channel_scales(), w.q_per_channel_zero_points()
        else:
            scale = torch.tensor(w.q_scale(), dtype=torch.float64)
            zero = torch.tensor(w.q_zero_point(), dtype=torch.int64)
        destination[prefix + "weight_int8"] = w.int_repr()
        destination[prefix + "weight_scale"] = scale.to(torch.float64)
        destination[prefix + "weight_zero_point"] = zero.to(torch.int64)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        names = ("weight_int8", "weight_scale", "weight_zero_point")
        found = {n: state_dict.pop(prefix + n) for n in names if prefix + n in state_dict}
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        if len(found) < len(names):
            missing_keys += [prefix + n for n in names if n not in found]
            return
        ints = found["weight_int8"].to(torch.int8).cpu()
        scale, zero = found["weight_scale"].double().cpu(), found["weight_zero_point"].cpu()
        with _quiet_ao():
            if scale.dim() == 0:
                weight = torch._make_per_tensor_quantized_tensor(ints, float(scale), int(zero))
            else:
                weight = torch._make_per_channel_quantized_tensor(ints, scale, zero.long(), 0)
            self.quantized.set_weight_bias(weight, None)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weights"


class HalfLayer(nn.Module):
    """A layer whose parameters are float16 and whose arithmetic is float16; float32 out."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.inner = layer.half()

    def forward(self, *args, **kwargs):
        def half(v):
            return v.half() if isinstance(v, Tensor) and v.is_floating_point() else v

        out = self.inner(*map(half, args), **{k: half(v) for k, v in kwargs.items()})
        return out.float() if isinstance(out, Tensor) and out.is_floating_point() else out


def _replace(model: nn.Module, wanted, make) -> list[str]:
    """Replace every submodule ``m`` with ``wanted(m)`` by ``make(m)``; returns their names."""
    names = [name for name, m in model.named_modules() if name and wanted(m)]
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, make(getattr(parent, child)))
    return names


def quantize_linear_int8(model: nn.Module) -> list[str]:
    """Swap every ``nn.Linear`` of ``model`` for an :class:`Int8Linear`, in place (on the CPU:
    torch's int8 kernels are CPU kernels); returns the names of the layers swapped."""
    model.to("cpu")
    return _replace(model, lambda m: type(m) is nn.Linear, Int8Linear)


def _standard_layer(m: nn.Module) -> bool:
    """A leaf layer of torch.nn itself (conv, Linear, a norm) with parameters: one used only
    through ``forward``. A family's own modules may be called through other methods (the
    mixture's ``mixture_log_weights``), which a wrapper would hide."""
    return (type(m).__module__.startswith("torch.nn.modules.") and not list(m.children())
            and any(True for _ in m.parameters(recurse=False)))


def to_half_layers(model: nn.Module) -> tuple[list[str], list[str]]:
    """Make ``model`` compute in float16, in place, where its layers allow.

    Every torch.nn layer with parameters (convolutions, Linear, norms) becomes a
    :class:`HalfLayer`. Parameters held elsewhere (by a family's own module, such as the
    mixture's logits) are rounded to float16 but stay float32 tensors, since that module's code
    may combine them with float32 inputs.

    Returns:
        ``(half, rounded)``: the names of the layers that compute in float16, and the names of the
        modules whose parameters are only rounded.
    """
    half = _replace(model, _standard_layer, HalfLayer)
    rounded = []
    for name, m in model.named_modules():
        if isinstance(m, HalfLayer) or name.endswith(".inner") or name == "inner":
            continue
        own = list(m.parameters(recurse=False))
        if own and not isinstance(m, HalfLayer):
            for p in own:
                p.data = p.data.half().float()
            rounded.append(name or "(the model)")
    return half, rounded


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """``(total, nonzero)`` parameters of ``model``, the int8 weights of :class:`Int8Linear`
    layers included (an int8 weight is zero where it equals its zero point)."""
    total = nonzero = 0
    for p in model.parameters():
        total += p.numel()
        nonzero += int(torch.count_nonzero(p.detach()))
    for m in model.modules():
        if isinstance(m, Int8Linear):
            w = m.int8_weight()
            ints = w.int_repr()
            if w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
                zero = w.q_per_channel_zero_points().view(-1, *([1] * (ints.dim() - 1)))
            else:
                zero = w.q_zero_point()
            total += ints.numel()
            nonzero += int((ints.long() != zero).sum())
    return total, nonzero

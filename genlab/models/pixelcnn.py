"""The gated PixelCNN (van den Oord et al. 2016): an exact, autoregressive likelihood.

Each pixel is predicted from the pixels before it in raster order. The network has the paper's
two stacks, which leave no blind spot: a *vertical* stack that sees every pixel in the rows above,
and a *horizontal* stack that sees the pixels to the left in the current row and takes the
vertical stack's features at each layer.

The masks are built from shifts and padding rather than masked weights: the vertical stack's
input is shifted down one row and the horizontal stack's input right one column (together they
play mask A), then every layer is an ordinary ``nn.Conv2d`` whose kernel only reaches up
(``(k//2+1) x k``) or left (``1 x (k//2+1)``), with padding on the top and left only (mask B).
Plain convolutions keep DP-SGD on Opacus's fast hook-based per-sample gradients, and no masked
weight exists for DP noise to leak into. There is no normalisation layer: GroupNorm averages over
all positions, so it would let later pixels leak into earlier predictions.

By default a prediction sees the earlier pixels thresholded at 0.5 (``inputs="binary"``), while
its target stays the grey level (the VAE's Bernoulli convention, so the NLLs compare). Sampling
feeds back binary pixels, so it then sees what training showed it; a net that saw grey levels
leans on the soft edges of strokes, which binary samples never have, and its samples fall apart.
Conditioning on a fixed function of the past keeps the likelihood exact.

Because the vertical stack never sees the current row, sampling advances it once per row and the
cheap horizontal stack once per pixel, each layer computing only its one new row or pixel from
cached inputs: one image costs about one forward pass, not one per pixel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.errors import ConfigError
from genlab.models import register
from genlab.models.base import NLL_LOSS, GenerativeModel, ProgressFn
from genlab.threads import one_cpu_thread

INPUTS = ("binary", "grey")


@dataclass(frozen=True)
class PixelCNNConfig:
    """Settings of the gated PixelCNN.

    Args:
        channels: feature channels of each gated layer; the main cost of training and sampling.
        layers: gated layers, the first included; each one widens the view by a row or more.
        kernel_size: odd kernel size of the gated layers after the first (3 or 5 are usual).
        first_kernel_size: odd kernel size of the first layer, which sees the image itself.
        head: width of the 1x1 output layers that turn features into each pixel's logit.
        inputs: what a prediction sees of the earlier pixels: ``binary`` (thresholded at 0.5,
            like the binary samples it draws) or ``grey`` (the exact levels: a lower NLL, but
            then its samples look like nothing it was trained on, and fall apart).
    """

    channels: int = 24
    layers: int = 6
    kernel_size: int = 5
    first_kernel_size: int = 7
    head: int = 64
    inputs: str = field(default="binary", metadata={"choices": INPUTS})

    def __post_init__(self):
        if self.channels < 1 or self.head < 1:
            raise ConfigError(
                f"channels and head must be at least 1 (got {self.channels} and {self.head})"
            )
        if self.inputs not in INPUTS:
            raise ConfigError(f"inputs must be one of {', '.join(INPUTS)} (got {self.inputs!r})")
        if self.layers < 1:
            raise ConfigError(f"layers must be at least 1 (got {self.layers})")
        for name in ("kernel_size", "first_kernel_size"):
            k = getattr(self, name)
            if k < 3 or k % 2 == 0:
                raise ConfigError(
                    f"{name} must be an odd number of at least 3 (got {k}), so that the kernel "
                    "has a centre pixel"
                )


def _linear(conv: nn.Conv2d, flat: Tensor) -> Tensor:
    """``conv`` applied at one position to its flattened (B, C_in * kh * kw) receptive field."""
    return F.linear(flat, conv.weight.flatten(1), conv.bias)


def _gate(a: Tensor) -> Tensor:
    """The gated activation tanh(a1) * sigmoid(a2) over the two halves of the channels."""
    a1, a2 = a.chunk(2, dim=1)
    return torch.tanh(a1) * torch.sigmoid(a2)


class GatedLayer(nn.Module):
    """One layer of both stacks; the convolutions see only the past (see the module docstring)."""

    def __init__(self, c_in: int, channels: int, k: int, *, residual: bool):
        super().__init__()
        self.k, self.residual = k, residual
        self.conv_v = nn.Conv2d(c_in, 2 * channels, (k // 2 + 1, k))  # this row and k//2 above
        self.conv_h = nn.Conv2d(c_in, 2 * channels, (1, k // 2 + 1))  # this column, k//2 left
        self.v_to_h = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.h_out = nn.Conv2d(channels, channels, 1)

    def vertical(self, v: Tensor) -> tuple[Tensor, Tensor]:
        """(the next vertical input, this layer's contribution to the horizontal stack)."""
        r = self.k // 2
        pre = self.conv_v(F.pad(v, (r, r, r, 0)))  # pad left, right and top: causal in rows
        return _gate(pre), self.v_to_h(pre)

    def horizontal(self, h: Tensor, from_v: Tensor) -> Tensor:
        out = self.h_out(_gate(self.conv_h(F.pad(h, (self.k // 2, 0, 0, 0))) + from_v))
        return out + h if self.residual else out


@register("pixelcnn", PixelCNNConfig)
class PixelCNN(GenerativeModel):
    """Per-pixel Bernoulli likelihood on grey levels; the loss is the exact NLL in nats per image.

    The channels of one pixel are independent given the earlier pixels, so colour images are a
    valid (if simple) model too.
    """

    has_likelihood = True
    explain_target_name = "loglik"
    loss_meaning = NLL_LOSS

    def __init__(self, config: PixelCNNConfig, *, shape: tuple[int, int, int], num_classes: int):
        super().__init__(config, shape=shape, num_classes=num_classes)
        c, ch = shape[0], config.channels
        ks = [config.first_kernel_size] + [config.kernel_size] * (config.layers - 1)
        self.layers = nn.ModuleList(
            GatedLayer(c if i == 0 else ch, ch, k, residual=i > 0) for i, k in enumerate(ks)
        )
        self.head = nn.Sequential(
            nn.ReLU(), nn.Conv2d(ch, config.head, 1), nn.ReLU(), nn.Conv2d(config.head, c, 1)
        )

    @classmethod
    def default_epochs(cls, dataset: str, *, private: bool = False) -> int:
        return {"digits": 20, "mnist5k": 4, "sprites": 4}.get(dataset, 5)

    @classmethod
    def default_train_settings(cls, dataset: str, *, private: bool = False) -> dict[str, Any]:
        # Small batches: on a CPU budget of a few epochs, more steps beat bigger ones. Under
        # DP-SGD a batch of 16 drowns each step in noise (std sigma*C/16 per coordinate), so
        # private runs take batches of 64.
        return {"batch_size": 64 if private else 16, "lr": 3e-3}

    # ---------------------------------------------------------------- the network
    def vertical_stack(self, x: Tensor) -> list[Tensor]:
        """Each layer's input to the horizontal stack; row i depends only on rows above i."""
        v = F.pad(x, (0, 0, 1, 0))[:, :, :-1]  # shift down one row: the current row is unseen
        from_v = []
        for layer in self.layers:
            v, to_h = layer.vertical(v)
            from_v.append(to_h)
        return from_v

    def horizontal_stack(self, x: Tensor, from_v: list[Tensor]) -> Tensor:
        """Logits; pixel (i, j) depends on row i left of j and on ``from_v`` at (i, j)."""
        h = F.pad(x, (1, 0, 0, 0))[..., :-1]  # shift right one column: the pixel itself is unseen
        for layer, to_h in zip(self.layers, from_v):
            h = layer.horizontal(h, to_h)
        return self.head(h)

    def logits(self, x: Tensor) -> Tensor:
        """Per-pixel Bernoulli logits, shape of ``x``; each sees only earlier pixels."""
        if self.config.inputs == "binary":
            x = (x > 0.5).to(x.dtype)  # the sampler feeds back binary pixels: train on the same
        return self.horizontal_stack(x, self.vertical_stack(x))

    # ---------------------------------------------------------------- likelihood
    def loss(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """-log p(x) in nats: BCE of grey levels summed over pixels (the VAE's convention)."""
        bce = F.binary_cross_entropy_with_logits(self.logits(x), x, reduction="none")
        return bce.flatten(1).sum(1)

    @torch.no_grad()
    def nll(self, x: Tensor, *, k: int = 1, generator: torch.Generator | None = None) -> Tensor:
        """The exact negative log-likelihood; ``k`` and ``generator`` are not needed."""
        return self.loss(x)

    def explain_target(self, x: Tensor, logits: Tensor | None = None) -> Tensor:
        """The log-likelihood log p(x): exact, deterministic and differentiable in x.

        With ``inputs="binary"`` the gradient reaches x through each pixel's own term only
        (the threshold on the conditioning side has none). ``logits``, when given, are the
        per-pixel predictions to score x against (see :meth:`explain_context`); with
        ``logits = self.logits(x)`` this is exactly log p(x)."""
        if logits is None:
            return -self.loss(x)
        bce = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
        return -bce.flatten(1).sum(1)

    def explain_context(self, x: Tensor) -> tuple[Tensor, ...]:
        """With binary inputs, hold the predictions at those made from the explained image.

        Thresholding makes log p(x) jump wherever a pixel crosses 0.5 on the way from a
        baseline to x, and attributions that integrate gradients cannot see jumps. The gradient
        at x is the same either way (the threshold has none), the target stays exact at x, and
        the network runs once per image rather than once per attribution step.
        """
        return (self.logits(x).detach(),) if self.config.inputs == "binary" else ()

    # ---------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        progress: ProgressFn | None = None,
    ) -> Tensor:
        """Draw ``n`` binary images pixel by pixel, all ``n`` at once on the model's device.

        The uniform noise for every pixel is drawn up front on the CPU from ``generator``, so a
        seed gives the same images on any device. ``progress(done_pixels, total_pixels)`` is
        called after each row.
        """
        with one_cpu_thread(self.device):
            return self._sample(n, generator, progress)

    def _sample(
        self, n: int, generator: torch.Generator | None, progress: ProgressFn | None
    ) -> Tensor:
        c, h, w = self.shape
        dtype = next(self.parameters()).dtype
        noise = torch.rand((n, c, h, w), generator=generator).to(self.device, dtype)
        x = torch.zeros((n, c, h, w), device=self.device, dtype=dtype)
        # Each layer's input, zero-padded as in logits(); filled in one row (vertical stack)
        # or one pixel (horizontal stack) at a time, so every step computes one new position.
        pads = [layer.k // 2 for layer in self.layers]
        sizes = [layer.conv_v.in_channels for layer in self.layers]
        v_in = [x.new_zeros(n, ci, r + h, w + 2 * r) for ci, r in zip(sizes, pads)]
        for i in range(h):
            if i > 0:  # the vertical stack sees the image shifted down one row
                v_in[0][:, :, pads[0] + i, pads[0] : pads[0] + w] = x[:, :, i - 1]
            from_v = []
            for li, (layer, r) in enumerate(zip(self.layers, pads)):
                pre = layer.conv_v(v_in[li][:, :, i : i + r + 1])  # (n, 2ch, 1, w)
                from_v.append(layer.v_to_h(pre))
                if li + 1 < len(self.layers):
                    r1 = pads[li + 1]
                    v_in[li + 1][:, :, r1 + i, r1 : r1 + w] = _gate(pre)[:, :, 0]
            h_in = [x.new_zeros(n, ci, r + w) for ci, r in zip(sizes, pads)]
            for j in range(w):
                if j > 0:  # the horizontal stack sees the row shifted right one column
                    h_in[0][:, :, pads[0] + j] = x[:, :, i, j - 1]
                for li, (layer, r) in enumerate(zip(self.layers, pads)):
                    # One output pixel of a 1 x (r+1) conv is a matrix product: far cheaper
                    # than a conv call on such small inputs.
                    window = h_in[li][:, :, j : j + r + 1].reshape(n, -1)
                    pre = _linear(layer.conv_h, window) + from_v[li][:, :, 0, j]
                    out = _linear(layer.h_out, _gate(pre))
                    if layer.residual:
                        out = out + h_in[li][:, :, r + j]
                    if li + 1 < len(self.layers):
                        h_in[li + 1][:, :, pads[li + 1] + j] = out
                logits = _linear(self.head[3], F.relu(_linear(self.head[1], F.relu(out))))
                x[:, :, i, j] = (noise[:, :, i, j] < torch.sigmoid(logits)).to(dtype)
            if progress is not None:
                progress((i + 1) * w, h * w)
        return x

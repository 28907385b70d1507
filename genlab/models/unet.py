"""A small U-Net for denoising diffusion (Ronneberger et al. 2015; the DDPM variant of Ho et al.
2020), built only from layers Opacus computes per-sample gradients for with its fast hooks.

- GroupNorm, never BatchNorm: BatchNorm mixes the samples of a batch, so one image's gradient
  would depend on the others and DP-SGD could not bound it.
- Upsampling is ``nn.Upsample`` (nearest) + ``Conv2d``, not ``ConvTranspose2d``, whose
  per-sample gradients are far slower under Opacus. Downsampling is a stride-2 ``Conv2d``.
- No self-attention: Opacus only supports it by swapping in its own ``DPMultiheadAttention``,
  and at 28x28 a few residual blocks do without it.
- Every layer with parameters runs exactly once per forward pass, as Opacus's hooks expect.

The timestep enters as a sinusoidal embedding (Vaswani et al. 2017, as in DDPM) passed through
a two-layer MLP and added to every residual block's features.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from genlab.models.vae import _downsample_sizes

MAX_LEVELS = 3  # resolutions: 28 -> 14 -> 7, 32 -> 16 -> 8, 8 -> 4


def _group_norm(channels: int) -> nn.GroupNorm:
    """Up to 8 groups, never a group of one channel (which would zero the previous bias's
    gradient, as the VAE found with 8 channels)."""
    groups = math.gcd(8, channels)
    while groups > 1 and channels // groups < 2:
        groups //= 2
    return nn.GroupNorm(groups, channels)


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Sinusoidal features of integer timesteps ``t`` (B,), shape (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    args = t.to(freqs.dtype)[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return emb if dim % 2 == 0 else torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=1)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with the time embedding added in between, plus a skip."""

    def __init__(self, c_in: int, c_out: int, t_dim: int):
        super().__init__()
        self.norm1, self.conv1 = _group_norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.time = nn.Linear(t_dim, c_out)
        self.norm2, self.conv2 = _group_norm(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.act = nn.SiLU()
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        h = self.conv1(self.act(self.norm1(x)))
        h = h + self.time(temb)[:, :, None, None]
        h = self.conv2(self.act(self.norm2(h)))
        return h + self.skip(x)


class UNet(nn.Module):
    """Noisy image (B, C, H, W) and timestep (B,) to predicted noise (B, C, H, W).

    Args:
        shape: (C, H, W) of the images.
        channels: width at full resolution, doubled at each lower resolution.
    """

    def __init__(self, shape: tuple[int, int, int], channels: int):
        super().__init__()
        c, h, w = shape
        self.sizes = _downsample_sizes(h, w)[:MAX_LEVELS]
        widths = [channels * 2**i for i in range(len(self.sizes))]  # c, 2c, 4c
        self.t_base = channels
        t_dim = 4 * channels
        self.time_mlp = nn.Sequential(
            nn.Linear(channels, t_dim), nn.SiLU(), nn.Linear(t_dim, t_dim), nn.SiLU()
        )
        self.stem = nn.Conv2d(c, widths[0], 3, padding=1)
        self.down_blocks = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        ch = widths[0]
        for i, width in enumerate(widths):
            self.down_blocks.append(ResBlock(ch, width, t_dim))
            ch = width
            if i + 1 < len(widths):
                self.downsamples.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
        self.mid = ResBlock(ch, ch, t_dim)
        self.up_blocks = nn.ModuleList()
        self.upsamples = nn.ModuleList()
        for i in reversed(range(len(widths))):
            self.up_blocks.append(ResBlock(ch + widths[i], widths[i], t_dim))
            ch = widths[i]
            if i > 0:
                self.upsamples.append(
                    nn.Sequential(
                        nn.Upsample(size=self.sizes[i - 1], mode="nearest"),
                        nn.Conv2d(ch, widths[i - 1], 3, padding=1),
                    )
                )
                ch = widths[i - 1]
        # Not zero-initialised (as some DDPM code does): an untrained model's score and
        # explanation target must already depend on the image.
        self.out = nn.Sequential(_group_norm(ch), nn.SiLU(), nn.Conv2d(ch, c, 3, padding=1))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        temb = self.time_mlp(timestep_embedding(t, self.t_base).to(x.dtype))
        h = self.stem(x)
        skips = []
        for i, block in enumerate(self.down_blocks):
            h = block(h, temb)
            skips.append(h)
            if i < len(self.downsamples):
                h = self.downsamples[i](h)
        h = self.mid(h, temb)
        for i, block in enumerate(self.up_blocks):
            h = block(torch.cat([h, skips.pop()], dim=1), temb)
            if i < len(self.upsamples):
                h = self.upsamples[i](h)
        return self.out(h)

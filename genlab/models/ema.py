"""A running average of a network's weights, for models that sample from one (GAN, diffusion).

The average's decay warms up, ``min(ema, (1 + n) / (10 + n))`` after ``n`` updates, so early steps
count. ``n`` is a training counter: a resumed run carries it in its checkpoint, and its average
continues exactly as an uninterrupted run's does.
"""

from __future__ import annotations

import torch
from torch import nn


class AveragedWeights:
    """Mixin for a :class:`~genlab.models.base.GenerativeModel` whose config has ``ema``."""

    _ema_updates = 0

    def training_counters(self) -> dict[str, int]:
        return {"ema_updates": self._ema_updates}  # the EMA's warm-up decay depends on it

    def load_training_counters(self, counters: dict[str, int]) -> None:
        self._ema_updates = int(counters["ema_updates"])

    @torch.no_grad()
    def _average_into(self, average: nn.Module, live: nn.Module) -> None:
        """average <- decay * average + (1 - decay) * live."""
        self._ema_updates += 1
        n = self._ema_updates
        decay = min(self.config.ema, (1 + n) / (10 + n))
        torch._foreach_lerp_(list(average.parameters()), list(live.parameters()), 1.0 - decay)

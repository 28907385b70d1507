"""One CPU thread for small, chatty torch work.

Sampling PixelCNN pixel by pixel, training the reference classifier and attributing with Captum
make thousands of small calls that gain nothing from a second thread. On a busy CPU (a training
worker beside them) each multi-threaded call also waits for all its threads to be scheduled:
measured on this project's 2-core machine, Integrated Gradients for 16 mnist5k images took
0.5-0.9 s on one thread and 3-9 s on two, and PixelCNN sampling was ten times slower.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def cpu_threads(n: int) -> Iterator[None]:
    """Run torch on ``n`` CPU threads inside the block, restoring the previous count after."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def one_cpu_thread(device: torch.device | str = "cpu") -> Iterator[None]:
    """Run torch on one CPU thread inside the block (nothing changes on a GPU device).

    The previous thread count is restored afterwards. The setting is process-wide, so other
    threads' torch work also runs on one thread meanwhile.
    """
    if torch.device(device).type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)

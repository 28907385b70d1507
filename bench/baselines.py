"""The two recipes users copy today, re-implemented here so that bench/speed.py can time them.

- :func:`recipe_vae`: the pytorch/examples VAE (``vae/main.py``): an MLP 784-400-20, Adam 1e-3,
  batch 128, a ``DataLoader`` over CPU tensors with ``shuffle=True``, loss BCE (summed) + KLD,
  ``loss.item()`` after every step, each batch moved to the device inside the loop.
- :func:`opacus_make_private`: Opacus's default ``PrivacyEngine.make_private`` (hooks mode,
  ``wrap_model=True``, Poisson sampling through its ``DPDataLoader``) on genlab's conv VAE.

Both return per-epoch training seconds and the test loss (negative ELBO, nats per image) after
the last epoch, measured as the recipe itself measures it.
"""

from __future__ import annotations

import time
import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class RecipeVAE(nn.Module):
    """pytorch/examples ``vae/main.py``'s network, layer for layer."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 400)
        self.fc21 = nn.Linear(400, 20)
        self.fc22 = nn.Linear(400, 20)
        self.fc3 = nn.Linear(20, 400)
        self.fc4 = nn.Linear(400, 784)

    def encode(self, x):
        h1 = F.relu(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def reparameterize(self, mu, logvar):
        std = torch.exp(0.5 * logvar)
        eps = torch.randn_like(std)
        return mu + eps * std

    def decode(self, z):
        h3 = F.relu(self.fc3(z))
        return torch.sigmoid(self.fc4(h3))

    def forward(self, x):
        mu, logvar = self.encode(x.view(-1, 784))
        z = self.reparameterize(mu, logvar)
        return self.decode(z), mu, logvar


def recipe_loss(recon_x, x, mu, logvar):
    """Reconstruction + KL divergence losses summed over all elements and batch (the recipe's)."""
    bce = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def recipe_vae(x, y, xt, yt, *, epochs: int, device: torch.device, seed: int = 1) -> dict:
    """Train the pytorch/examples VAE as its ``main.py`` does; time each epoch's training."""
    torch.manual_seed(seed)
    model = RecipeVAE().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    kwargs = {"num_workers": 1, "pin_memory": True} if device.type == "cuda" else {}
    train_loader = DataLoader(TensorDataset(x, y), batch_size=128, shuffle=True, **kwargs)
    test_loader = DataLoader(TensorDataset(xt, yt), batch_size=128, shuffle=False, **kwargs)
    seconds, train_losses = [], []
    for _ in range(epochs):
        model.train()
        train_loss = 0.0
        _sync(device)
        start = time.perf_counter()
        for data, _ in train_loader:
            data = data.to(device)
            optimizer.zero_grad()
            recon_batch, mu, logvar = model(data)
            loss = recipe_loss(recon_batch, data, mu, logvar)
            loss.backward()
            train_loss += loss.item()
            optimizer.step()
        _sync(device)
        seconds.append(time.perf_counter() - start)
        train_losses.append(train_loss / len(train_loader.dataset))
    model.eval()
    test_loss = 0.0
    with torch.no_grad():
        for data, _ in test_loader:
            data = data.to(device)
            recon_batch, mu, logvar = model(data)
            test_loss += recipe_loss(recon_batch, data, mu, logvar).item()
    return {
        "epoch_seconds": seconds,
        "train_loss": train_losses[-1],
        "test_loss": test_loss / len(test_loader.dataset),
        "params": sum(p.numel() for p in model.parameters()),
    }


def opacus_make_private(
    model, x, y, xt, yt, *, epochs: int, batch_size: int, lr: float, noise_multiplier: float,
    max_grad_norm: float, device: torch.device, seed: int = 1,
) -> dict:  # fmt: skip
    """Opacus's documented default: ``make_private`` in hooks mode over a Poisson DataLoader.

    ``model`` is a genlab model (its ``loss`` gives per-sample losses); everything else is what
    the Opacus tutorials write: the wrapped module, ``DPOptimizer``, ``DPDataLoader``, the mean
    loss, ``optimizer.step()`` on every batch.
    """
    from opacus import PrivacyEngine

    warnings.filterwarnings("ignore", message="Secure RNG turned off")
    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    torch.manual_seed(seed)
    model = model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size)
    engine = PrivacyEngine()
    module, optimizer, loader = engine.make_private(
        module=model, optimizer=optimizer, data_loader=loader,
        noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm,
    )  # fmt: skip
    seconds = []
    for _ in range(epochs):
        module.train()
        _sync(device)
        start = time.perf_counter()
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            optimizer.zero_grad()
            if len(xb) == 0:  # an empty Poisson batch: Opacus still steps (noise only)
                for p in optimizer.params:
                    p.grad_sample = torch.zeros((0, *p.shape), device=p.device)
            else:
                loss = module._module.loss(xb, yb).mean()
                loss.backward()
            optimizer.step()
        _sync(device)
        seconds.append(time.perf_counter() - start)
    module.eval()
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(2024)
        test = sum(float(module._module.eval_loss(xt[i : i + 500].to(device)).sum())
                   for i in range(0, len(xt), 500))  # fmt: skip
    eps = engine.get_epsilon(delta=1e-5)
    module._close()
    return {"epoch_seconds": seconds, "test_loss": test / len(xt), "epsilon": eps}

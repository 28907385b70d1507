"""The one door from the dashboard into genlab: every ``st.cache_*`` wrapper lives here.

Pages read their widgets, call these functions and render what comes back. Nothing here trains:
:func:`start_run` hands the run to a background worker (:func:`genlab.jobs.submit`). Cached
models are shared by every session, so they are never modified; sampling passes its own
``torch.Generator``. Functions that load a run take the genlab home as part of their cache key,
so two homes (tests, or a changed ``GENLAB_HOME``) never share cached results.
"""

from __future__ import annotations

import math
import time
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch
from PIL import Image, ImageDraw, ImageFont

from genlab import data as gdata
from genlab import jobs
from genlab.checkpoint import load_run_model
from genlab.config import make_run_config
from genlab.errors import ConfigError
from genlab.fidelity import FD_NOTE  # noqa: F401  (shown by the pages)
from genlab.interpret.latent import traverse
from genlab.models import config_fields, model_entry, model_names
from genlab.paths import genlab_home
from genlab.runs import ACTIVE, RunInfo, RunStore
from genlab.viz import image_grid

TARGET_PX = 64  # small images are scaled up (nearest neighbour) to about this many pixels
TRAIN_DEFAULTS = {"batch_size": 128, "lr": 1e-3}  # TrainConfig's defaults


# ----------------------------------------------------------------------------- store and runs
@st.cache_resource(show_spinner=False)
def _store_at(home: str) -> RunStore:
    return RunStore(home)


def get_store() -> RunStore:
    """The run store under the current ``GENLAB_HOME`` (one shared instance per home)."""
    return _store_at(str(genlab_home()))


def _home() -> str:
    return str(get_store().home)


def list_runs(*, status: str | None = None, limit: int | None = 50) -> list[RunInfo]:
    """Runs, newest first; dead workers' runs are marked failed first (uncached: it is cheap)."""
    store = get_store()
    store.recover()
    return store.list(status=status, limit=limit)


def run_info(run_id: str) -> RunInfo:
    """One run by id or unique prefix; RunNotFound (a GenlabError) when there is none."""
    store = get_store()
    if store.get(run_id).status in ACTIVE:
        store.recover()
    return store.get(run_id)


def runs_table(runs: list[RunInfo]) -> pd.DataFrame:
    """A display table of runs: id, model, dataset, status, epochs, test loss, created."""
    rows = [{
        "id": r.id, "model": r.model, "dataset": r.dataset, "status": r.status,
        "epochs": r.summary.get("epochs", r.config.get("train", {}).get("epochs")),
        "test loss": r.summary.get("test_loss"),
        "created": datetime.fromtimestamp(r.created).replace(microsecond=0),  # server's time
    } for r in runs]
    columns = ["id", "model", "dataset", "status", "epochs", "test loss", "created"]
    return pd.DataFrame(rows, columns=columns)


def start_run(model: str, dataset: str, epochs: int, seed: int, batch_size: int, lr: float,
              model_settings: dict[str, Any]) -> str:
    """Validate the settings and queue a run on a background worker; returns its id.

    Raises:
        ConfigError: a setting is invalid (the message names it).
    """
    overrides = {**model_settings, "batch_size": int(batch_size), "lr": float(lr)}
    cfg = make_run_config(model, dataset, epochs=int(epochs), seed=int(seed), overrides=overrides)
    return jobs.submit(get_store(), cfg, owner="dashboard")


def cancel_run(run_id: str) -> str:
    """Ask a queued or running run to stop; returns its status at the time of asking."""
    return jobs.cancel(get_store(), run_id)


def run_history(run_id: str) -> pd.DataFrame:
    """Per-epoch history (epoch, step, train_loss, test_loss, seconds, ...) as a DataFrame."""
    rows = get_store().history(run_id)
    return pd.DataFrame(rows, columns=None if rows else ["epoch", "train_loss", "test_loss"])


def elapsed_seconds(info: RunInfo) -> float | None:
    """Seconds the run has trained so far (or in all, once it ended); None before it starts."""
    if info.started is None:
        return None
    return (info.finished or time.time()) - info.started


def loss_figure(history: pd.DataFrame) -> go.Figure:
    """Train and test loss per epoch (nats per image)."""
    fig = go.Figure()
    for column, name in (("train_loss", "train_loss"), ("test_loss", "test_loss")):
        if column in history and len(history):
            fig.add_trace(go.Scatter(x=history["epoch"].tolist(), y=history[column].tolist(),
                                     name=name, mode="lines+markers"))
    fig.update_layout(xaxis_title="epoch", yaxis_title="loss (nats per image)", height=320,
                      margin=dict(l=10, r=10, t=30, b=10), legend=dict(orientation="h"))
    fig.update_xaxes(dtick=1 if len(history) <= 20 else None)
    return fig


# ----------------------------------------------------------------------------- form metadata
DEFAULT_MODEL = "vae"  # the classroom default: fast on a CPU, with a latent to explore


def models() -> list[str]:
    return model_names()


def default_model() -> str:
    names = model_names()
    return DEFAULT_MODEL if DEFAULT_MODEL in names else names[0]


def datasets() -> list[str]:
    return list(gdata.DATASETS)


def model_fields(model: str) -> list[dict[str, Any]]:
    """The model's settable config fields: name, type, default, choices, help."""
    return config_fields(model)


def train_defaults(model: str, dataset: str) -> dict[str, Any]:
    """Default epochs, batch_size and lr of ``model`` on ``dataset``."""
    cls, _ = model_entry(model)
    return {"epochs": cls.default_epochs(dataset), **TRAIN_DEFAULTS,
            **cls.default_train_settings(dataset)}


# ----------------------------------------------------------------------------- models and images
@st.cache_resource(show_spinner="Loading the model…", max_entries=8)
def _model_at(home: str, run_id: str):
    return load_run_model(_store_at(home), run_id)


def load_model(run_id: str):
    """``(model, config, data)`` of a finished run, cached and shared: never modify the model."""
    return _model_at(_home(), get_store().get(run_id).id)


def capabilities(run_id: str) -> dict[str, Any]:
    """What the run's model supports: a latent (and its size), reconstructions."""
    model, _, _ = load_model(run_id)
    return {"has_latent": bool(model.has_latent),
            "latent_dim": int(getattr(model, "latent_dim", 0) or 0),
            "can_reconstruct": callable(getattr(model, "reconstruct", None))}


def grid_scale(shape: tuple[int, ...]) -> int:
    """Nearest-neighbour factor that shows an image about TARGET_PX pixels across."""
    return max(1, math.ceil(TARGET_PX / max(shape[-2:])))


def _test_images(data, n: int, seed: int) -> torch.Tensor:
    """``n`` test images picked by ``seed`` (a fixed pick for a given seed)."""
    pick = torch.randperm(len(data.test), generator=torch.Generator().manual_seed(seed))[:n]
    return data.test.x[pick]


@st.cache_data(show_spinner="Drawing samples…", max_entries=64)
def _sample_grid(home: str, run_id: str, n: int, seed: int) -> np.ndarray:
    model, _, data = _model_at(home, run_id)
    images = model.sample(n, generator=torch.Generator().manual_seed(seed))
    return image_grid(images, scale=grid_scale(data.shape))


def sample_grid(run_id: str, n: int, seed: int) -> np.ndarray:
    """``n`` samples drawn with ``seed``, tiled into one uint8 image."""
    return _sample_grid(_home(), get_store().get(run_id).id, int(n), int(seed))


@st.cache_data(show_spinner=False, max_entries=32)
def _reconstruction_grid(home: str, run_id: str, n: int, seed: int) -> np.ndarray:
    model, _, data = _model_at(home, run_id)
    if not callable(getattr(model, "reconstruct", None)):
        raise ConfigError(f"model {model.name!r} cannot reconstruct images")
    x = _test_images(data, n, seed)
    with torch.no_grad():
        rec = model.reconstruct(x.to(model.device)).cpu()
    return image_grid(torch.cat([x, rec]), nrow=len(x), scale=grid_scale(data.shape))


def reconstruction_grid(run_id: str, n: int, seed: int) -> np.ndarray:
    """Test images (first row) above their reconstructions (second row)."""
    return _reconstruction_grid(_home(), get_store().get(run_id).id, int(n), int(seed))


@st.cache_data(show_spinner=False, max_entries=32)
def _traversal_grid(home: str, run_id: str, dims: tuple[int, ...], lo: float, hi: float,
                    steps: int, seed: int) -> np.ndarray:
    model, _, data = _model_at(home, run_id)
    base = torch.zeros(model.latent_dim)
    if model.has_latent:
        try:  # start from a real test image's posterior mean where there is an encoder
            with torch.no_grad():
                base = model.encode(_test_images(data, 1, seed).to(model.device))[0].cpu()
        except NotImplementedError:
            pass
    values = np.linspace(lo, hi, steps).tolist()
    images = traverse(model, base=base, dims=list(dims), values=values)
    grid = image_grid(images, nrow=steps, scale=grid_scale(data.shape))
    cell = (data.shape[-2] + 1) * grid_scale(data.shape)  # one image plus its padding
    return label_rows(grid, [f"z{d}" for d in dims], row_height=cell)


def traversal_grid(run_id: str, dims: list[int], lo: float, hi: float, steps: int,
                   seed: int) -> np.ndarray:
    """Latent traversal: row i sweeps dim ``dims[i]`` from ``lo`` to ``hi`` in ``steps``.

    The other dims stay at the posterior mean of the test image picked by ``seed`` (or at zero
    for a model without an encoder). Each row is labelled with its dim on the left.
    """
    return _traversal_grid(_home(), get_store().get(run_id).id, tuple(int(d) for d in dims),
                           float(lo), float(hi), int(steps), int(seed))


def label_rows(grid: np.ndarray, labels: list[str], *, row_height: int) -> np.ndarray:
    """Add a white margin on the left of ``grid`` with one text label per row of images."""
    img = Image.fromarray(grid).convert("L" if grid.ndim == 2 else "RGB")
    size = max(10, min(20, row_height // 3))
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        font = ImageFont.load_default()
    width = 8 + max(int(ImageDraw.Draw(img).textlength(t, font=font)) for t in labels)
    out = Image.new(img.mode, (img.width + width, img.height), "white")
    out.paste(img, (width, 0))
    draw = ImageDraw.Draw(out)
    for i, text in enumerate(labels):
        draw.text((4, i * row_height + (row_height - size) // 2), text, fill="black", font=font)
    return np.asarray(out)

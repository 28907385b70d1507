"""Store, runs, training forms and the shared model loader: the dashboard's core services.

Nothing here trains: :func:`start_run` hands the run to a background worker
(:func:`genlab.jobs.submit`). Functions that load a run take the genlab home as part of their cache
key, so two homes (tests, or a changed ``GENLAB_HOME``) never share cached results. Cached models
are shared by every session, so they are never modified.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import pandas as pd
import streamlit as st

from genlab import data as gdata
from genlab import fairqueue, jobs, launcher
from genlab.checkpoint import load_run_model
from genlab.config import make_run_config
from genlab.errors import OwnershipError
from genlab.models import config_fields, family, model_entry, model_names
from genlab.owners import Actor
from genlab.paths import genlab_home
from genlab.runs import ACTIVE, RunInfo, RunStore

from . import access
from .svg_chart import line_chart_svg

TRAIN_DEFAULTS = {"batch_size": 128, "lr": 1e-3}  # TrainConfig's defaults


# ----------------------------------------------------------------------------- store and runs
@st.cache_resource(show_spinner=False)
def _store_at(home: str) -> RunStore:
    return RunStore(home)


@st.cache_resource(show_spinner=False)
def _warm_workers() -> bool:
    """Start the warm worker launcher (:mod:`genlab.launcher`) once per server, in the background,
    so that even the first job a class submits is forked instead of importing torch afresh."""
    launcher.start()
    return True


def get_store() -> RunStore:
    """The run store under the current ``GENLAB_HOME`` (one shared instance per home)."""
    _warm_workers()
    return _store_at(str(genlab_home()))


def home_key() -> str:
    """The current genlab home as a string: part of every cached result's key."""
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
    """A display table of runs: id, owner, model, dataset, status, epochs, test loss, created."""
    rows = [{
        "id": r.id, "owner": r.owner, "model": r.model, "dataset": r.dataset, "status": r.status,
        "epochs": r.summary.get("epochs", r.config.get("train", {}).get("epochs")),
        "test loss": r.summary.get("test_loss"),
        "created": datetime.fromtimestamp(r.created).replace(microsecond=0),  # server's time
    } for r in runs]
    columns = ["id", "owner", "model", "dataset", "status", "epochs", "test loss", "created"]
    return pd.DataFrame(rows, columns=columns)


def start_run(model: str, dataset: str, epochs: int, seed: int, batch_size: int, lr: float,
              model_settings: dict[str, Any], privacy: dict[str, Any] | None = None) -> str:
    """Validate the settings and queue a run on a background worker; returns its id.

    Args:
        privacy: the :class:`genlab.config.PrivacyConfig` fields for a DP run; None for no DP.

    Raises:
        ConfigError: a setting is invalid (the message names it).
    """
    overrides = {**model_settings, "batch_size": int(batch_size), "lr": float(lr)}
    cfg = make_run_config(model, dataset, epochs=int(epochs), seed=int(seed), overrides=overrides,
                          privacy=privacy)
    return jobs.submit(get_store(), cfg, owner=access.owner_name())


def _acting() -> Actor:
    who = access.actor()
    if who is None:  # the sign-in gate comes first, so only a stale session gets here
        raise OwnershipError("sign in with your name first")
    return who


def cancel_run(run_id: str) -> str:
    """Ask a queued or running run to stop; returns its status at the time of asking.

    Raises:
        OwnershipError: this session is neither the run's owner nor the teacher.
    """
    return jobs.cancel(get_store(), run_id, actor=_acting())


def delete_run(run_id: str) -> None:
    """Delete an ended run, its history and artifacts.

    Raises:
        OwnershipError: this session is neither the run's owner nor the teacher.
        StoreError: the run is still queued or running.
    """
    get_store().delete(run_id, actor=_acting())


def queue_position(run_id: str) -> int | None:
    """How many jobs start before this queued run on its device (owners take turns); None when
    it is not waiting in the device queue."""
    return fairqueue.position(get_store(), run_id)


NEAR_TURN = 2  # a queued run with at most this many jobs ahead refreshes at the near pace


def live_refresh_seconds(status: str, ahead: int | None) -> float | None:
    """Seconds between two refreshes of a run's live panel on Train; None: no refresh.

    A running run's panel refreshes every second. A queued run's every 5 s once at most
    ``NEAR_TURN`` jobs are ahead of it (``ahead``, from :func:`queue_position`), and every 20 s
    further back, where only its place in line changes: in a class of 20 most runs wait, and each
    refresh costs the server a script run and the browser about 0.1 s of CPU
    (bench/classroom_load.py). An ended run's panel does not refresh.
    """
    if status == "running":
        return 1.0
    if status == "queued":
        return 5.0 if ahead is None or ahead <= NEAR_TURN else 20.0
    return None


def run_history(run_id: str) -> pd.DataFrame:
    """Per-epoch history (epoch, step, train_loss, test_loss, seconds, ...) as a DataFrame."""
    rows = get_store().history(run_id)
    return pd.DataFrame(rows, columns=None if rows else ["epoch", "train_loss", "test_loss"])


def elapsed_seconds(info: RunInfo) -> float | None:
    """Seconds the run has trained so far (or in all, once it ended); None before it starts."""
    if info.started is None:
        return None
    return (info.finished or time.time()) - info.started


def loss_chart(history: pd.DataFrame, model: str) -> str:
    """Train and test loss per epoch (in the unit of ``model``'s family), as SVG for
    ``st.image``: the live panel redraws it every second, and Plotly cost each browser far more
    (``svg_chart``)."""
    series = {column: history[column].tolist() for column in ("train_loss", "test_loss")
              if column in history}
    return line_chart_svg(history["epoch"].tolist() if len(history) else [], series,
                          x_label="epoch", y_label=f"loss ({family(model).loss_unit})",
                          integer_x=True)


# ----------------------------------------------------------------------------- form metadata
DEFAULT_MODEL = "vae"  # the classroom default: fast on a CPU, with a latent to explore


def models() -> list[str]:
    return model_names()


def default_model() -> str:
    names = model_names()
    return DEFAULT_MODEL if DEFAULT_MODEL in names else names[0]


def datasets() -> list[str]:
    return list(gdata.DATASETS)


def loss_help(model: str) -> str:
    """What a run's train and test loss measure, in its family's words."""
    return family(model).loss_meaning


def model_fields(model: str) -> list[dict[str, Any]]:
    """The model's settable config fields: name, type, default, choices, help."""
    return config_fields(model)


def train_defaults(model: str, dataset: str, *, private: bool = False) -> dict[str, Any]:
    """Default epochs, batch_size and lr of ``model`` on ``dataset``; DP-SGD's if ``private``."""
    cls, _ = model_entry(model)
    return {"epochs": cls.default_epochs(dataset, private=private), **TRAIN_DEFAULTS,
            **cls.default_train_settings(dataset, private=private)}


# ----------------------------------------------------------------------------- models
@st.cache_resource(show_spinner="Loading the model…", max_entries=8)
def model_at(home: str, run_id: str):
    """``(model, config, data)`` of run ``run_id`` under ``home``, loaded once and shared."""
    return load_run_model(_store_at(home), run_id)


def load_model(run_id: str):
    """``(model, config, data)`` of a finished run, cached and shared: never modify the model."""
    return model_at(home_key(), get_store().get(run_id).id)

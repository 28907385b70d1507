"""The privacy axis for the Train and Privacy pages: DP settings, budget plans, audits, pictures.

Budget plans call Opacus's accountants (PRV takes seconds for a long curve), so they are cached
and drawn with few curve points. The full membership audit trains a reference model, so it runs
in a background worker (:func:`genlab.jobs.submit_audit`) and the page polls it; the quick audit
(scores only) runs here. Everything else only reads the run's record, its history and its
``audit_exposed.png``. The charts live in
:mod:`services.privacy_plots`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image, ImageDraw

from genlab import jobs
from genlab.config import ACCOUNTANTS, PrivacyConfig
from genlab.data import load_dataset
from genlab.evaluate import EXPOSED_GRID, audit_run
from genlab.privacy.accounting import plan_budget
from genlab.privacy.checks import check_privacy_settings
from genlab.runs import RunInfo

from .core import get_store, home_key
from .labels import _font

PLAN_CURVE_POINTS = 8  # ε-against-epochs points: each is one accountant call
DP_DEFAULTS = {"epsilon": 3.0, "noise_multiplier": 1.0,
               **{k: getattr(PrivacyConfig, k) for k in ("delta", "max_grad_norm")}}
EXPOSED_PX = 96  # exposed images are scaled up (nearest neighbour) to about this size
_GRID_SCALE, _GRID_PAD, _PAIRS_PER_ROW = 3, 1, 4  # how genlab.evaluate draws audit_exposed.png


def accountants() -> list[str]:
    return list(ACCOUNTANTS)


# ----------------------------------------------------------------------------- DP settings
@st.cache_data(show_spinner="Loading the dataset…", max_entries=16)
def train_size(dataset: str, seed: int = 0, holdout_fraction: float = 0.2,
               test_fraction: float = 0.2) -> int:
    """N, the number of training images (the members) of ``dataset`` split this way."""
    splits = load_dataset(dataset, seed=seed, holdout_fraction=holdout_fraction,
                          test_fraction=test_fraction)
    return len(splits.train)


def run_train_size(info: RunInfo) -> int:
    """N of a run, from its data config."""
    data = info.config["data"]
    return train_size(data["name"], data["seed"], data["holdout_fraction"],
                      data["test_fraction"])


def check_dp_settings(privacy: dict[str, Any], *, n: int, batch_size: int) -> None:
    """Raise a one-line ConfigError for DP settings genlab would refuse (ε ≤ 0, δ ≥ 1/N,
    max_grad_norm ≤ 0, a batch larger than the N training images, ...)."""
    check_privacy_settings(epsilon=privacy.get("epsilon"),
                           noise_multiplier=privacy.get("noise_multiplier"),
                           delta=privacy["delta"], max_grad_norm=privacy["max_grad_norm"],
                           n=n, batch_size=batch_size)


@st.cache_data(show_spinner="Asking the accountant…", max_entries=256)
def plan(n: int, batch_size: int, epochs: int, delta: float, *, sigma: float | None = None,
         epsilon: float | None = None, accountant: str = "prv",
         compare: bool = False) -> dict[str, Any]:
    """:func:`genlab.privacy.accounting.plan_budget` with a short curve; ConfigError if invalid."""
    return plan_budget(n=int(n), batch_size=int(batch_size), epochs=int(epochs),
                       delta=float(delta), sigma=sigma, epsilon=epsilon, accountant=accountant,
                       compare=compare, curve_points=PLAN_CURVE_POINTS)


# ----------------------------------------------------------------------------- a run's privacy
def privacy_block(info: RunInfo) -> dict[str, Any]:
    """The record's privacy block; a run trained without DP that was never audited gets
    ``{"epsilon": None}`` (no guarantee)."""
    return info.record.get("privacy") or {"epsilon": None}


def run_label(info: RunInfo) -> str:
    """A short name for charts: the run id and its ε (or "no DP")."""
    epsilon = privacy_block(info).get("epsilon")
    return f"{info.id} ({'no DP' if epsilon is None else f'DP, ε = {epsilon:.2g}'})"


def is_audited(block: dict[str, Any]) -> bool:
    return "mia_auc" in block


def run_audit(run_id: str, *, reference: bool) -> dict[str, Any] | None:
    """The quick audit (scores only, no training) runs here and returns the block; the full
    audit trains a reference model, so it goes to a background worker and this returns None
    (poll :func:`audit_state`)."""
    if reference:
        jobs.submit_audit(get_store(), run_id, reference=True)
        return None
    block = audit_run(get_store(), run_id, reference=False)
    _exposed_image.clear()
    return block


def audit_state(run_id: str) -> tuple[bool, str | None]:
    """``(running, error)`` of the run's background audit."""
    return jobs.audit_state(get_store(), run_id)


def epsilon_history(run_id: str) -> pd.DataFrame:
    """ε after each epoch of a DP run: columns epoch, step, epsilon (empty without DP)."""
    rows = [r for r in get_store().history(run_id) if r.get("epsilon") is not None]
    return pd.DataFrame(rows, columns=["epoch", "step", "epsilon"])


# ----------------------------------------------------------------------------- exposed images
def exposed_image(run_id: str, *, n: int | None = None,
                  per_row: int = _PAIRS_PER_ROW) -> np.ndarray | None:
    """The ``n`` most exposed members (default: all the audit kept) beside their nearest
    generated samples, ``per_row`` pairs a row, labelled; None when the run has no
    ``audit_exposed.png``."""
    info = get_store().get(run_id)
    path = get_store().artifacts_dir(info.id) / EXPOSED_GRID
    exposed = privacy_block(info).get("exposed") or []
    if not path.exists() or not exposed:
        return None
    return _exposed_image(home_key(), str(path), path.stat().st_mtime_ns,
                          tuple((e["train_index"], e["distance"]) for e in exposed), n, per_row)


@st.cache_data(show_spinner=False, max_entries=16)
def _exposed_image(home: str, path: str, mtime: int, exposed: tuple[tuple[int, float], ...],
                   n: int | None, per_row: int) -> np.ndarray:
    pairs = _cut_pairs(np.asarray(Image.open(Path(path)).convert("L")), len(exposed))
    return _lay_out_pairs(pairs[:n], exposed[:n], per_row)


def _cut_pairs(grid: np.ndarray, n_pairs: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Cut genlab's grid (member, generated, member, generated, ... padded and scaled) back
    into ``(member, generated)`` image pairs."""
    per_row = 2 * min(_PAIRS_PER_ROW, n_pairs)
    rows = math.ceil(2 * n_pairs / per_row)
    edge = _GRID_PAD * _GRID_SCALE
    cell_h, cell_w = (grid.shape[0] - edge) // rows, (grid.shape[1] - edge) // per_row
    h, w = cell_h - edge, cell_w - edge

    def cell(i: int) -> np.ndarray:
        r, c = divmod(i, per_row)
        top, left = edge + r * cell_h, edge + c * cell_w
        return grid[top:top + h, left:left + w]

    return [(cell(2 * k), cell(2 * k + 1)) for k in range(n_pairs)]


def _lay_out_pairs(pairs: list[tuple[np.ndarray, np.ndarray]],
                   exposed: tuple[tuple[int, float], ...], per_row: int) -> np.ndarray:
    """Pairs on a white page, ``per_row`` to a row, "member" and "generated" over each image
    and the train index and distance under each pair."""
    h, w = pairs[0][0].shape
    k = max(1, round(EXPOSED_PX / max(h, w)))
    h, w = h * k, w * k
    size = 14
    font = _font(size)
    inner, between, band = 4, 28, size + 8
    pair_w, row_h = 2 * w + inner, band + h + band + 12
    per_row = min(per_row, len(pairs))
    rows = math.ceil(len(pairs) / per_row)
    page = Image.new("L", (per_row * pair_w + (per_row - 1) * between + 16, rows * row_h), 255)
    draw = ImageDraw.Draw(page)

    def centred(text: str, centre: float, top: int) -> None:
        draw.text((centre - draw.textlength(text, font=font) / 2, top), text, fill=0, font=font)

    for i, ((member, generated), (index, distance)) in enumerate(zip(pairs, exposed)):
        r, c = divmod(i, per_row)
        left, top = 8 + c * (pair_w + between), r * row_h
        for j, (image, label) in enumerate(((member, "member"), (generated, "generated"))):
            x = left + j * (w + inner)
            centred(label, x + w / 2, top + 2)
            big = np.kron(image, np.ones((k, k), dtype=image.dtype))
            page.paste(Image.fromarray(big), (x, top + band))
            draw.rectangle((x - 1, top + band - 1, x + w, top + band + h), outline=160)
        centred(f"train #{index}, distance {distance:.2f}", left + pair_w / 2, top + band + h + 4)
    return np.asarray(page)

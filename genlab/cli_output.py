"""What the CLI prints: the DESIGN.md JSON shape of a run, and JSON without inf or NaN."""

from __future__ import annotations

import json
import math
from typing import Any

from genlab.runs import RunInfo


def run_json(info: RunInfo) -> dict[str, Any]:
    """The DESIGN.md JSON shape of one run; record blocks not computed yet are absent."""
    return {
        "run_id": info.id,
        "model": info.model,
        "dataset": info.dataset,
        "status": info.status,
        "config": info.config,
        "summary": info.summary,
        "record": info.record,
        **({"error": info.error} if info.error else {}),
    }


def loss_unit(info: RunInfo) -> str:
    """The unit printed beside a run's train or test loss, its family's (``nats/image`` for a
    family this install lacks). genlab.models, and so torch, is imported only when asked."""
    from genlab.models import family

    return family(info.model).loss_unit


def finite(obj: Any) -> Any:
    """JSON has no inf or NaN: a non-finite float becomes null (ε = ∞ means no guarantee)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    return obj


def print_json(obj: Any) -> None:
    print(json.dumps(finite(obj), indent=2, default=float, allow_nan=False))

"""The Trade-offs page's sweep launcher: check a grid, start its driver, follow it.

Nothing trains here. :func:`start_sweep` starts the sweep's driver as its own process
(:func:`genlab.sweep.launch_sweep`); its workers, local or Ray tasks (``executor="ray"``),
train and evaluate every run, so closing the tab stops nothing. The grid is checked by the
same :class:`~genlab.sweep.SweepSpec` the CLI uses, so the page refuses exactly what
``genlab sweep`` refuses, with the same message.
"""

from __future__ import annotations

from typing import Any

from genlab.errors import ConfigError
from genlab.sweep import SweepSpec, launch_sweep, parse_epsilons, parse_seeds, sweep_status

from .core import get_store

SWEEP_DEFAULTS = {"epsilons": "inf,8,3,1", "seeds": "0,1"}
EXECUTORS = {"local": "Local workers (this machine)", "ray": "Ray (a cluster, or a local Ray)"}


def sweep_spec(
    *, dataset: str, models: list[str], epsilons: str, seeds: str, epochs: int | None
) -> SweepSpec:
    """The grid from the form's values.

    Raises:
        ConfigError: an empty grid, an unknown model, ε ≤ 0, a repeated seed, too many runs...
    """
    return SweepSpec(
        dataset=dataset,
        models=tuple(models),
        epsilons=parse_epsilons(epsilons),
        seeds=parse_seeds(seeds),
        epochs=epochs or None,
    )


def start_sweep(spec: SweepSpec, *, executor: str = "local",
                ray_address: str | None = None) -> dict[str, Any]:
    """Start the grid's driver in the background (a running one is left alone); returns the
    spec as a dict, which the page keeps to follow it.

    Args:
        executor: ``local`` or ``ray`` (:mod:`genlab.ray_executor`).
        ray_address: the Ray cluster; empty or None starts a local Ray instance.

    Raises:
        ConfigError: an unknown executor, ``ray`` without Ray installed or with an address
            nothing answers at (checked here, so the page says so instead of a driver that
            dies in the background).
    """
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}; use local or ray")
    address = (ray_address or "").strip() or None
    if executor == "ray":
        from genlab.ray_executor import check_reachable, import_ray

        import_ray()
        if address:
            check_reachable(address, timeout=3.0)
    elif address:
        raise ConfigError("a Ray address only applies to the Ray executor")
    launch_sweep(get_store(), spec, executor=executor, ray_address=address)
    return spec.to_dict()


def sweep_progress(spec: dict[str, Any]) -> dict[str, Any]:
    """:func:`genlab.sweep.sweep_status` of a started grid, plus ``"finished"``: the driver has
    stopped and nothing is left to do or to wait for."""
    status = sweep_status(get_store(), SweepSpec.from_dict(spec))
    settled = status["done"] + status["failed"]
    return {**status, "finished": not status["running"] and settled == status["total"]}

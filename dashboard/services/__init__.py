"""The one door from the dashboard into genlab: every ``st.cache_*`` wrapper lives in this package.

Pages ``import services`` and call ``services.X``; they read their widgets, call these functions
and render what comes back. The modules behind this door:

- :mod:`services.core`: the run store, runs, training forms and the shared model loader;
- :mod:`services.explore`: the Explore page's grids (samples, reconstructions, traversals).
"""

from genlab.fidelity import FD_NOTE

from .core import (
    DEFAULT_MODEL,
    TRAIN_DEFAULTS,
    cancel_run,
    datasets,
    default_model,
    elapsed_seconds,
    get_store,
    list_runs,
    load_model,
    loss_figure,
    model_fields,
    models,
    run_history,
    run_info,
    runs_table,
    start_run,
    train_defaults,
)
from .explore import (
    TARGET_PX,
    capabilities,
    grid_scale,
    label_rows,
    reconstruction_grid,
    sample_grid,
    traversal_grid,
)

__all__ = [
    "DEFAULT_MODEL",
    "FD_NOTE",
    "TARGET_PX",
    "TRAIN_DEFAULTS",
    "cancel_run",
    "capabilities",
    "datasets",
    "default_model",
    "elapsed_seconds",
    "get_store",
    "grid_scale",
    "label_rows",
    "list_runs",
    "load_model",
    "loss_figure",
    "model_fields",
    "models",
    "reconstruction_grid",
    "run_history",
    "run_info",
    "runs_table",
    "sample_grid",
    "start_run",
    "train_defaults",
    "traversal_grid",
]

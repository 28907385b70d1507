"""The one door from the dashboard into genlab: every ``st.cache_*`` wrapper lives in this package.

Pages ``import services`` and call ``services.X``; they read their widgets, call these functions
and render what comes back. The modules behind this door:

- :mod:`services.core`: the run store, runs, training forms and the shared model loader;
- :mod:`services.explore`: the Explore page's pictures (samples, class rows, mixture components,
  reconstructions, traversals, interpolations) and what each model can show;
- :mod:`services.labels`: text labels drawn onto those grids.
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
    class_grid,
    class_labels,
    component_grid,
    component_weights,
    grid_scale,
    interpolation_grid,
    reconstruction_grid,
    sample_grid,
    traversal_grid,
    weights_figure,
)
from .labels import caption_cells, label_rows

__all__ = [
    "DEFAULT_MODEL",
    "FD_NOTE",
    "TARGET_PX",
    "TRAIN_DEFAULTS",
    "cancel_run",
    "capabilities",
    "caption_cells",
    "class_grid",
    "class_labels",
    "component_grid",
    "component_weights",
    "datasets",
    "default_model",
    "elapsed_seconds",
    "get_store",
    "grid_scale",
    "interpolation_grid",
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
    "weights_figure",
]

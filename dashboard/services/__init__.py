"""The one door from the dashboard into genlab: every ``st.cache_*`` wrapper lives in this package.

Pages ``import services`` and call ``services.X``; they read their widgets, call these functions
and render what comes back. The modules behind this door:

- :mod:`services.core`: the run store, runs, training forms and the shared model loader;
- :mod:`services.explore`: the Explore page's pictures (samples, class rows, mixture components,
  reconstructions, traversals, interpolations) and what each model can show;
- :mod:`services.labels`: text labels drawn onto those grids;
- :mod:`services.explain`: the Explain page's attributions, interpretability block, latent map and
  DP drift; :mod:`services.explain_plots`: its heatmaps and latent map chart;
- :mod:`services.privacy`: DP settings and budget plans, a run's privacy record and audit, the
  most exposed training images; :mod:`services.privacy_plots`: the privacy charts.
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
from .explain import (
    BLOCK_HELP,
    compute_interpretability,
    drift,
    drift_candidates,
    explain_targets,
    explanation,
    interpretability_record,
    is_private,
    methods,
    regions,
    run_latent_map,
    target_spec,
)
from .explain_plots import LATENT_WIDTH, attribution_figure, latent_map_figure
from .explore import (
    GUTTER,
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
from .privacy import (
    DP_DEFAULTS,
    accountants,
    audit_state,
    check_dp_settings,
    epsilon_history,
    exposed_image,
    is_audited,
    plan,
    privacy_block,
    run_audit,
    run_label,
    run_train_size,
    train_size,
)
from .privacy_plots import (
    epsilon_pair,
    epsilon_pair_figure,
    epsilon_steps_figure,
    plan_figure,
    roc_figure,
)

__all__ = [
    "BLOCK_HELP",
    "DEFAULT_MODEL",
    "DP_DEFAULTS",
    "FD_NOTE",
    "GUTTER",
    "LATENT_WIDTH",
    "TARGET_PX",
    "TRAIN_DEFAULTS",
    "accountants",
    "attribution_figure",
    "audit_state",
    "cancel_run",
    "capabilities",
    "caption_cells",
    "check_dp_settings",
    "class_grid",
    "class_labels",
    "component_grid",
    "component_weights",
    "compute_interpretability",
    "datasets",
    "default_model",
    "drift",
    "drift_candidates",
    "elapsed_seconds",
    "epsilon_history",
    "epsilon_pair",
    "epsilon_pair_figure",
    "epsilon_steps_figure",
    "explain_targets",
    "explanation",
    "exposed_image",
    "get_store",
    "grid_scale",
    "interpolation_grid",
    "interpretability_record",
    "is_audited",
    "is_private",
    "label_rows",
    "latent_map_figure",
    "list_runs",
    "load_model",
    "loss_figure",
    "methods",
    "model_fields",
    "models",
    "plan",
    "plan_figure",
    "privacy_block",
    "reconstruction_grid",
    "regions",
    "roc_figure",
    "run_audit",
    "run_history",
    "run_info",
    "run_label",
    "run_latent_map",
    "run_train_size",
    "runs_table",
    "sample_grid",
    "start_run",
    "target_spec",
    "train_defaults",
    "train_size",
    "traversal_grid",
    "weights_figure",
]

"""The grid of a sweep: :class:`SweepSpec` (models × ε × seeds on one dataset), validated with
one-line messages, and the parsers for the ``genlab sweep`` flags.

The spec builds every run's :class:`~genlab.config.RunConfig` through
:func:`~genlab.config.make_run_config`, so a sweep's run is the very run ``genlab train`` would
make with the same settings, down to its config hash. :mod:`genlab.sweep` plans and drives it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from genlab.config import RunConfig, make_run_config
from genlab.errors import ConfigError

DEFAULT_LIMIT = 200  # runs in one sweep unless --max-runs says otherwise
_NO_DP = ("inf", "+inf", "infinity", "∞", "none")


# ----------------------------------------------------------------------------- parsing
def _fmt(eps: float) -> str:
    return "inf" if math.isinf(eps) and eps > 0 else f"{eps:g}"


def _epsilon(value: float, shown: str) -> float:
    if math.isnan(value) or not value > 0:
        raise ConfigError(f"epsilon must be > 0 (got {shown}); use inf for a run without DP")
    return value


def _items(text: str, what: str, example: str) -> list[str]:
    parts = [part.strip() for part in str(text).split(",")]
    if not any(parts):
        raise ConfigError(f"give at least one {what}, e.g. {example}")
    if not all(parts):
        raise ConfigError(f"empty {what} in {text!r}; separate values with commas, e.g. {example}")
    return parts


def parse_epsilons(text: str) -> tuple[float, ...]:
    """``"inf,10,3,1"`` -> ``(inf, 10.0, 3.0, 1.0)``; ``inf``, ``∞`` or ``none`` mean no DP.

    Raises:
        ConfigError: a value that is not a number, or not above 0.
    """
    out = []
    for part in _items(text, "epsilon", "--epsilons inf,10,3,1"):
        if part.lower() in _NO_DP:
            out.append(math.inf)
            continue
        try:
            value = float(part)
        except ValueError:
            raise ConfigError(
                f"epsilon must be a number or inf (got {part!r}); e.g. --epsilons inf,10,3,1"
            ) from None
        out.append(_epsilon(value, part))
    return tuple(out)


def parse_models(text: str) -> tuple[str, ...]:
    """``"vae, mixture"`` -> ``("vae", "mixture")`` (names are checked by :class:`SweepSpec`)."""
    return tuple(_items(text, "model", "--models vae,mixture"))


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"0,1,2"`` -> ``(0, 1, 2)``."""
    out = []
    for part in _items(text, "seed", "--seeds 0,1,2"):
        try:
            out.append(int(part))
        except ValueError:
            raise ConfigError(
                f"seeds must be whole numbers (got {part!r}); e.g. --seeds 0,1,2"
            ) from None
    return tuple(out)


def _as_epsilon(value: Any) -> float:
    if isinstance(value, str):
        parsed = parse_epsilons(value)
        if len(parsed) != 1:
            raise ConfigError(f"one epsilon per entry (got {value!r})")
        return parsed[0]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"epsilon must be a number or inf (got {value!r})")
    return float(value)


def _duplicates(values: tuple, what: str, shown: Callable[[Any], str] = str) -> None:
    seen, dupes = set(), []
    for v in values:
        if v in seen and v not in dupes:
            dupes.append(v)
        seen.add(v)
    if dupes:
        names = ", ".join(shown(v) for v in dupes)
        raise ConfigError(f"duplicate {what}: {names}; list each one once")


# ----------------------------------------------------------------------------- the grid
@dataclass(frozen=True)
class SweepSpec:
    """A grid of runs on one dataset: every model × every ε × every seed.

    Args:
        dataset: a dataset name or path, as for ``genlab train``.
        models: registered model names.
        epsilons: DP budgets; ``math.inf`` is a run without DP.
        seeds: training seeds (each also fixes the data split, as in ``genlab train``).
        epochs: epochs of every run; ``None`` takes each model's default for the dataset.
        overrides: ``(key, value)`` settings applied to every run (``--set``).
        limit: the most runs the grid may have.

    Raises:
        ConfigError: an empty grid, an unknown model, a bad ε or setting, a value listed
            twice, or more runs than ``limit``.
    """

    dataset: str
    models: tuple[str, ...]
    epsilons: tuple[float, ...]
    seeds: tuple[int, ...]
    epochs: int | None = None
    overrides: tuple[tuple[str, object], ...] = ()
    limit: int = DEFAULT_LIMIT

    def __post_init__(self):
        from genlab.models import model_entry, model_names

        overrides = self.overrides.items() if isinstance(self.overrides, dict) else self.overrides
        for name, value in (
            ("models", tuple(self.models)),
            ("epsilons", tuple(_as_epsilon(e) for e in self.epsilons)),
            ("seeds", tuple(self.seeds)),
            ("overrides", tuple(sorted((str(k), v) for k, v in overrides))),
        ):
            object.__setattr__(self, name, value)
        if not self.dataset:
            raise ConfigError("a sweep needs a dataset, e.g. --dataset digits")
        if not self.models:
            raise ConfigError(
                f"a sweep needs at least one model; known models: {', '.join(model_names())}"
            )
        if not self.epsilons:
            raise ConfigError("a sweep needs at least one epsilon; use inf for runs without DP")
        if not self.seeds:
            raise ConfigError("a sweep needs at least one seed, e.g. --seeds 0")
        for model in self.models:
            model_entry(model)  # an unknown name lists the known ones
        for eps in self.epsilons:
            _epsilon(eps, _fmt(eps))
        for seed in self.seeds:
            if isinstance(seed, bool) or not isinstance(seed, int):
                raise ConfigError(f"seeds must be whole numbers (got {seed!r})")
        _duplicates(self.models, "models")
        _duplicates(self.epsilons, "epsilons", _fmt)
        _duplicates(self.seeds, "seeds")
        if self.epochs is not None and (isinstance(self.epochs, bool) or self.epochs < 1):
            raise ConfigError(f"epochs must be at least 1 (got {self.epochs})")
        if self.limit < 1:
            raise ConfigError(f"the run limit must be at least 1 (got {self.limit})")
        if self.size > self.limit:
            raise ConfigError(
                f"this sweep has {self.size} runs, more than the limit of {self.limit}; "
                "raise --max-runs or shrink the grid"
            )
        for model in self.models:  # a --set key no model has fails now, not mid-sweep
            make_run_config(model, self.dataset, epochs=self.epochs, seed=self.seeds[0],
                            overrides=dict(self.overrides))

    @property
    def size(self) -> int:
        """The number of runs: models × epsilons × seeds."""
        return len(self.models) * len(self.epsilons) * len(self.seeds)

    def configs(self) -> list[RunConfig]:
        """Every run's config, ordered by model, then ε (as given), then seed."""
        return [
            make_run_config(
                model,
                self.dataset,
                epochs=self.epochs,
                seed=seed,
                overrides=dict(self.overrides),
                privacy=None if math.isinf(eps) else {"epsilon": eps},
            )
            for model in self.models
            for eps in self.epsilons
            for seed in self.seeds
        ]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able; ε = ∞ is the string ``"inf"``."""
        return {
            "dataset": self.dataset,
            "models": list(self.models),
            "epsilons": [_fmt(e) if math.isinf(e) else e for e in self.epsilons],
            "seeds": list(self.seeds),
            "epochs": self.epochs,
            "overrides": dict(self.overrides),
            "limit": self.limit,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SweepSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown or not {"dataset", "models", "epsilons", "seeds"} <= set(d):
            raise ConfigError(f"not a sweep spec (keys: {', '.join(sorted(d))})")
        eps = d["epsilons"]
        eps = parse_epsilons(",".join(map(str, eps))) if eps else ()
        return cls(**{**d, "epsilons": eps, "overrides": tuple((d.get("overrides") or {}).items())})

    def sweep_id(self) -> str:
        """A short stable name of the grid, from its runs' config hashes: ``--set k=8`` and
        ``{"k": 8}`` give the same sweep, and the limit is not part of it."""
        text = ",".join(cfg.config_hash() for cfg in self.configs())
        return hashlib.sha256(text.encode()).hexdigest()[:12]

"""Configuration: frozen dataclasses for data, training and whole runs, with JSON round-trip.

Every value a user can set (CLI flags, ``--set key=value``, dashboard widgets, URL parameters)
passes through these classes, so validation and its messages live in one place. Messages are
written for students: they say what is wrong, what was given, and what would work.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from genlab.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda", "mps")
ACCOUNTANTS = ("prv", "rdp")


# ----------------------------------------------------------------------------- generic helpers
def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def parse_value(text: str, annotation: Any, *, key: str) -> Any:
    """Parse a ``--set`` string into the type a dataclass field declares."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if text.strip().lower() in ("none", "null", ""):
            return None
        return parse_value(text, args[0], key=key)
    if origin is typing.Literal:
        choices = typing.get_args(annotation)
        if text not in choices:
            raise ConfigError(f"{key} must be one of {', '.join(map(str, choices))} (got {text!r})")
        return text
    try:
        if annotation is bool:
            low = text.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if annotation is int:
            return int(text)
        if annotation is float:
            return float(text)
    except ValueError:
        raise ConfigError(f"{key} must be a {annotation.__name__} (got {text!r})") from None
    return text


def _coerce(value: Any, annotation: Any, *, key: str) -> Any:
    """Accept JSON values for a field: ints for floats, strings parsed like ``--set``; every
    float must be finite (NaN and ±inf are refused)."""
    if isinstance(value, str) and annotation is not str:
        value = parse_value(value, annotation, key=key)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):  # Optional[X]
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None and len(args) < len(typing.get_args(annotation)):
            return None
        annotation = args[0]
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number (got {value})")
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if annotation in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{key} must be a number (got {value!r})")
    if annotation in (int, float, bool, str) and not isinstance(value, annotation):
        raise ConfigError(f"{key} must be a {annotation.__name__} (got {value!r})")
    return value


def config_from_dict(cls: type, values: dict[str, Any], *, what: str = "config"):
    """Build dataclass ``cls`` from ``values``, rejecting keys it does not have.

    Raises:
        ConfigError: an unknown key (the message lists the known ones) or a badly typed value.
    """
    if not isinstance(values, dict):
        raise ConfigError(f"{what} must be a JSON object of settings (got {type(values).__name__})")
    hints = _field_types(cls)
    known = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(
            f"{what} has no setting {unknown[0]!r}; its settings are: {', '.join(known)}"
        )
    kwargs = {k: _coerce(v, hints[k], key=k) for k, v in values.items()}
    try:
        return cls(**kwargs)
    except TypeError as err:  # e.g. a nested dict where a value belongs
        raise ConfigError(f"{what}: {err}") from None


def apply_overrides(cfg, overrides: dict[str, Any], *, what: str = "config"):
    """Return a copy of dataclass ``cfg`` with ``overrides`` applied and validated."""
    return config_from_dict(type(cfg), {**to_dict(cfg), **overrides}, what=what)


def to_dict(cfg) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def parse_set_options(items: list[str] | None) -> dict[str, str]:
    """Parse ``["k=v", ...]`` from ``--set`` into a dict (values stay strings)."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value (got {item!r})")
        out[key.strip()] = value.strip()
    return out


def _check_seed(seed: int) -> None:
    if not 0 <= seed < 2**32:  # numpy's generators take seeds in [0, 2**32)
        raise ConfigError(f"seed must be between 0 and 2**32 - 1 (got {seed})")


# ----------------------------------------------------------------------------- config classes
@dataclass(frozen=True)
class DataConfig:
    """Which dataset, and how it is split into train (members), holdout and test.

    Args:
        name: ``digits``, ``mnist5k``, ``sprites``, or a path to a ``.npz`` / IDX folder.
        seed: fixes the stratified split.
        holdout_fraction: share of the data kept out as non-members for the privacy audit.
        test_fraction: share of the data used for test metrics.
    """

    name: str = "digits"
    seed: int = 0
    holdout_fraction: float = 0.2
    test_fraction: float = 0.2

    def __post_init__(self):
        if not self.name:
            raise ConfigError("dataset name must not be empty; try digits, mnist5k or sprites")
        _check_seed(self.seed)
        for key in ("holdout_fraction", "test_fraction"):
            v = getattr(self, key)
            if not 0 < v < 1:
                raise ConfigError(f"{key} must be between 0 and 1 (got {v})")
        if self.holdout_fraction + self.test_fraction >= 0.9:
            raise ConfigError(
                "holdout_fraction + test_fraction must leave at least 10% for training"
            )


@dataclass(frozen=True)
class TrainConfig:
    """How the one Trainer optimises any model.

    Args:
        epochs: passes over the train split; ``None`` takes the model's default for the dataset.
        batch_size: samples per optimiser step.
        lr: Adam learning rate.
        seed: seeds initialisation, shuffling and sampling, so a run is reproducible.
        device: ``auto`` picks cuda, then mps, then cpu.
        fast_path: fused optimizers, threads fitted to the free cores, CUDA graphs and the
            one-pass DP step (see ``genlab.fastpath``); ``False`` is the plain loop.
    """

    epochs: int | None = None
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    device: str = "auto"
    fast_path: bool = True

    def __post_init__(self):
        _check_seed(self.seed)
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError(f"epochs must be at least 1 (got {self.epochs})")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1 (got {self.batch_size})")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0 (got {self.lr})")
        if self.device not in DEVICES:
            raise ConfigError(f"device must be one of {', '.join(DEVICES)} (got {self.device!r})")


@dataclass(frozen=True)
class PrivacyConfig:
    """Differential privacy: DP-SGD through Opacus on the model's private modules.

    Give either a target ``epsilon`` (Opacus picks the noise so the run ends at that ε) or a
    ``noise_multiplier`` σ (the run reports the ε it bought), never both.

    Args:
        epsilon: the privacy budget ε the run must end at; smaller is more private.
        noise_multiplier: σ, the noise's standard deviation relative to ``max_grad_norm``.
        delta: δ, the chance the ε guarantee fails; it must be below 1/N for N training images.
        max_grad_norm: C, each image's gradient is clipped to this L2 norm before noise is added.
        accountant: ``prv`` (tight, the default) or ``rdp`` (the classic Rényi DP bound).
    """

    epsilon: float | None = None
    noise_multiplier: float | None = None
    delta: float = 1e-5
    max_grad_norm: float = 1.0
    accountant: str = field(default="prv", metadata={"choices": ACCOUNTANTS})

    def __post_init__(self):
        if self.epsilon is not None and self.noise_multiplier is not None:
            raise ConfigError(
                f"give either epsilon ({self.epsilon}) or noise_multiplier "
                f"({self.noise_multiplier}), not both: one determines the other"
            )
        if self.epsilon is None and self.noise_multiplier is None:
            raise ConfigError("DP needs a budget: give epsilon (e.g. 3) or noise_multiplier")
        if self.epsilon is not None and not self.epsilon > 0:
            raise ConfigError(
                f"epsilon must be > 0 (got {self.epsilon}); leave DP off for no privacy"
            )
        if self.noise_multiplier is not None and not self.noise_multiplier > 0:
            raise ConfigError(
                f"noise_multiplier must be > 0 (got {self.noise_multiplier}); "
                "leave DP off for no privacy"
            )
        if not 0 < self.delta < 1:
            raise ConfigError(f"delta must be between 0 and 1 (got {self.delta}); try 1e-5")
        if not self.max_grad_norm > 0:
            raise ConfigError(
                f"max_grad_norm must be > 0 (got {self.max_grad_norm}); it is the L2 norm each "
                "image's gradient is clipped to, try 1.0"
            )
        if self.accountant not in ACCOUNTANTS:
            raise ConfigError(
                f"accountant must be one of {', '.join(ACCOUNTANTS)} (got {self.accountant!r})"
            )


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run: the model and its settings, the data and the training.

    ``model_config`` holds the model family's own dataclass (see ``genlab.models``);
    ``privacy`` is ``None`` for a run without DP.
    """

    model: str
    model_config: Any
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    privacy: PrivacyConfig | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {
            "model": self.model,
            "model_config": to_dict(self.model_config),
            "data": to_dict(self.data),
            "train": to_dict(self.train),
        }
        if self.train.fast_path:  # absent when on (the default), so older configs keep their hash
            del out["train"]["fast_path"]
        if self.privacy is not None:  # absent, not null, so non-DP configs keep their hash
            out["privacy"] = to_dict(self.privacy)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        from genlab.models import model_config  # the registry imports this module

        if not isinstance(d, dict):
            raise ConfigError(f"a run config must be a JSON object (got {type(d).__name__})")
        unknown = sorted(set(d) - {"model", "model_config", "data", "train", "privacy"})
        if unknown or "model" not in d:
            raise ConfigError(f"not a run config (unexpected keys: {unknown or 'missing model'})")
        return cls(
            model=d["model"],
            model_config=model_config(d["model"], d.get("model_config") or {}),
            data=config_from_dict(DataConfig, d.get("data") or {}, what="data config"),
            train=config_from_dict(TrainConfig, d.get("train") or {}, what="train config"),
            privacy=(
                None
                if d.get("privacy") is None
                else config_from_dict(PrivacyConfig, d["privacy"], what="privacy config")
            ),
        )

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as err:
            raise ConfigError(f"run config is not valid JSON: {err}") from None

    def config_hash(self) -> str:
        """A stable hash of the full config: identical settings give the same hash."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]


def make_run_config(
    model: str,
    dataset: str = "digits",
    *,
    epochs: int | None = None,
    seed: int = 0,
    data_seed: int | None = None,
    device: str = "auto",
    overrides: dict[str, Any] | None = None,
    privacy: dict[str, Any] | PrivacyConfig | None = None,
    fast_path: bool = True,
) -> RunConfig:
    """Assemble a validated :class:`RunConfig` from CLI-style settings.

    ``overrides`` (from ``--set``) are routed to the model config first, then to the training
    config (``lr``, ``batch_size``) and the data config (``holdout_fraction``, ...); a key none
    of them has raises a ConfigError that lists every settable key. ``privacy`` (a
    :class:`PrivacyConfig` or its fields as a dict) turns DP-SGD on. ``data_seed`` fixes the
    split apart from ``seed`` (by default the split follows ``seed``); ``fast_path=False``
    trains with the plain loop (``--no-fast-path``).
    """
    from genlab.models import model_config, model_entry

    cls, config_cls = model_entry(model)
    # --set keys go to the model first, then to the few training and data settings that are
    # not already flags of their own (epochs, seed, device and dataset are).
    owners = {
        "model": [f.name for f in dataclasses.fields(config_cls) if f.init],
        "train": ["lr", "batch_size"],
        "data": ["holdout_fraction", "test_fraction"],
    }
    groups: dict[str, dict[str, Any]] = {g: {} for g in owners}
    for key, value in (overrides or {}).items():
        group = next((g for g, keys in owners.items() if key in keys), None)
        if group is None:
            settable = [k for keys in owners.values() for k in keys]
            raise ConfigError(
                f"model {model!r} has no setting {key!r}; settable keys: {', '.join(settable)}"
            )
        groups[group][key] = value
    mcfg = model_config(model, groups["model"])
    data = config_from_dict(
        DataConfig, {"name": dataset, "seed": seed if data_seed is None else data_seed,
                      **groups["data"]}, what="data config"
    )
    private = privacy is not None
    if epochs is None:
        epochs = cls.default_epochs(dataset, private=private)
    train = config_from_dict(
        TrainConfig,
        {
            "epochs": epochs,
            "seed": seed,
            "device": device,
            "fast_path": fast_path,
            **cls.default_train_settings(dataset, private=private),
            **groups["train"],
        },
        what="train config",
    )
    if isinstance(privacy, dict):
        privacy = config_from_dict(PrivacyConfig, privacy, what="privacy config")
    return RunConfig(model=model, model_config=mcfg, data=data, train=train, privacy=privacy)

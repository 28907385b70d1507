"""Config validation, --set parsing and the JSON round-trip."""

from __future__ import annotations

import dataclasses
import re

import pytest

from genlab.config import DataConfig, RunConfig, TrainConfig, make_run_config, parse_set_options
from genlab.errors import ConfigError
from genlab.models import MODELS, model_config, model_entry


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs": 0}, "epochs must be at least 1 (got 0)"),
        ({"batch_size": 0}, "batch_size must be at least 1"),
        ({"lr": 0.0}, "lr must be > 0"),
        ({"device": "tpu"}, "device must be one of auto, cpu, cuda, mps"),
    ],
)
def test_train_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        TrainConfig(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"holdout_fraction": 0.0}, "holdout_fraction must be between 0 and 1"),
        ({"test_fraction": 1.5}, "test_fraction must be between 0 and 1"),
        ({"holdout_fraction": 0.5, "test_fraction": 0.45}, "at least 10% for training"),
        ({"name": ""}, "dataset name must not be empty"),
    ],
)
def test_data_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        DataConfig(**kwargs)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"latent_dim": "0"}, "latent_dim must be at least 1 (got 0)"),
        ({"latent_dim": "-3"}, "latent_dim must be at least 1 (got -3)"),
        ({"latent_dim": "two"}, "latent_dim must be a int"),
        ({"beta": "-1"}, "beta must be >= 0"),
        ({"arch": "transformer"}, "arch must be one of conv, mlp"),
        ({"colour": "red"}, "model 'vae' has no setting 'colour'; settable keys: arch, latent_dim"),
    ],
)
def test_vae_settings_are_validated(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        make_run_config("vae", "digits", overrides=overrides)


def test_unknown_model_lists_known_models():
    with pytest.raises(ConfigError) as err:
        make_run_config("transformer", "digits")
    assert "unknown model 'transformer'" in str(err.value)
    for name in MODELS:
        assert name in str(err.value)


def test_set_values_are_parsed_to_field_types():
    cfg = make_run_config("vae", "digits", overrides={"latent_dim": "8", "beta": "4",
                                                      "lr": "3e-4", "batch_size": "32"})
    assert cfg.model_config.latent_dim == 8 and isinstance(cfg.model_config.latent_dim, int)
    assert cfg.model_config.beta == 4.0 and isinstance(cfg.model_config.beta, float)
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.train.batch_size == 32


def test_parse_set_options():
    assert parse_set_options(["a=1", " b = x "]) == {"a": "1", "b": "x"}
    with pytest.raises(ConfigError, match="--set expects key=value"):
        parse_set_options(["latent_dim"])


def test_default_epochs_come_from_the_model():
    cls, _ = MODELS["vae"]
    assert make_run_config("vae", "mnist5k").train.epochs == cls.default_epochs("mnist5k")
    assert make_run_config("vae", "digits", epochs=7).train.epochs == 7


@pytest.mark.parametrize("name", sorted(MODELS))
def test_run_config_json_round_trip(name):
    cfg = make_run_config(name, "digits", epochs=3, seed=5)
    again = RunConfig.from_json(cfg.to_json())
    assert again == cfg
    assert again.config_hash() == cfg.config_hash()
    other = make_run_config(name, "digits", epochs=3, seed=6)
    assert other.config_hash() != cfg.config_hash()
    assert dataclasses.is_dataclass(again.model_config)


def test_run_config_from_bad_json():
    with pytest.raises(ConfigError, match="not valid JSON"):
        RunConfig.from_json("{not json")
    with pytest.raises(ConfigError, match="has no setting 'wings'"):
        RunConfig.from_dict({"model": "vae", "model_config": {"wings": 2}})


def test_model_config_is_frozen():
    cfg = model_config("vae")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.latent_dim = 3


@pytest.mark.parametrize("name", ["vae", "pixelcnn", "mixture"])
def test_private_runs_take_the_family_dp_defaults_but_keep_the_network(name):
    plain = make_run_config(name, "mnist5k")
    private = make_run_config(name, "mnist5k", privacy={"epsilon": 3.0})
    assert private.model_config == plain.model_config  # a sweep over epsilon compares one network
    assert private.train.batch_size > plain.train.batch_size
    cls, _ = model_entry(name)
    assert private.train.batch_size == cls.default_train_settings("mnist5k", private=True)[
        "batch_size"]
    assert private.train.epochs == cls.default_epochs("mnist5k", private=True)
    explicit = make_run_config(name, "mnist5k", privacy={"epsilon": 3.0},
                               overrides={"batch_size": 32})
    assert explicit.train.batch_size == 32  # the user's setting wins

"""Config: typed, validated, round-trips through dicts."""

import dataclasses

import pytest
from hypothesis import given, strategies as st

from flaxae import config as config_lib
from flaxae.config import Config, ModelConfig, TrainConfig
from flaxae.errors import ConfigError


def test_round_trip_default():
  cfg = Config()
  assert config_lib.from_dict(config_lib.to_dict(cfg)) == cfg


@given(widths=st.lists(st.integers(1, 4096), min_size=1, max_size=5),
       epochs=st.integers(1, 1000), lr=st.floats(1e-6, 1.0),
       strategy=st.sampled_from(["jit", "shard_map"]))
def test_round_trip_any(widths, epochs, lr, strategy):
  cfg = Config(model=ModelConfig(widths=tuple(widths)),
               train=TrainConfig(epochs=epochs, learning_rate=lr, strategy=strategy))
  assert config_lib.from_dict(config_lib.to_dict(cfg)) == cfg


def test_unknown_key():
  d = config_lib.to_dict(Config())
  d["model"]["latent"] = 3
  with pytest.raises(ConfigError, match="unknown config key"):
    config_lib.from_dict(d)


def test_wrong_type():
  d = config_lib.to_dict(Config())
  d["train"]["epochs"] = "ten"
  with pytest.raises(ConfigError, match="TrainConfig.epochs must be of type int"):
    config_lib.from_dict(d)


def test_wrong_literal():
  d = config_lib.to_dict(Config())
  d["train"]["optimizer"] = "lion"
  with pytest.raises(ConfigError, match="must be one of adam, adamw, sgd, rmsprop"):
    config_lib.from_dict(d)


@pytest.mark.parametrize("section,field,value,message", [
    ("train", "epochs", 0, "train.epochs must be positive"),
    ("train", "batch_size", -1, "train.batch_size must be positive"),
    ("train", "learning_rate", -1.0, "train.learning_rate must not be negative"),
    ("model", "widths", (), "model.widths must be a non-empty list"),
    ("model", "widths", (64, 0), "model.widths must be a non-empty list of positive"),
    ("model", "kind", "nope", "unknown model.kind"),
    ("model", "activation", "nope", "unknown activation"),
    ("data", "test_fraction", 1.5, "data.test_fraction must be in"),
    ("train", "micro_batch_size", 48, "train.micro_batch_size=48 must divide"),
    ("train", "micro_batch_size", -2, "train.micro_batch_size must be -1"),
])
def test_validate(section, field, value, message):
  cfg = Config()
  part = dataclasses.replace(getattr(cfg, section), **{field: value})
  with pytest.raises(ConfigError, match=message):
    config_lib.validate(dataclasses.replace(cfg, **{section: part}))


def test_fingerprint_tracks_model_and_data_only():
  a = Config()
  b = dataclasses.replace(a, train=TrainConfig(epochs=99))
  c = dataclasses.replace(a, model=ModelConfig(widths=(64, 8)))
  assert config_lib.fingerprint(a) == config_lib.fingerprint(b)
  assert config_lib.fingerprint(a) != config_lib.fingerprint(c)


def test_micro_batches_refused_for_whole_batch_statistics():
  cfg = Config(model=ModelConfig(kind="sparse"), train=TrainConfig(micro_batch_size=32))
  with pytest.raises(ConfigError, match="statistics of the whole batch"):
    config_lib.validate(cfg)
  # The whole batch, or the automatic choice, is fine.
  config_lib.validate(dataclasses.replace(cfg, train=TrainConfig(micro_batch_size=128)))
  config_lib.validate(dataclasses.replace(cfg, train=TrainConfig(micro_batch_size=0)))


def test_validate_checks_choices_of_a_config_built_in_code():
  cfg = Config(train=TrainConfig(cpu_matmuls="openblas"))
  with pytest.raises(ConfigError, match="TrainConfig.cpu_matmuls must be one of xla, eigen, mkl"):
    config_lib.validate(cfg)

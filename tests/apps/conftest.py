"""A tiny trained run on the digits, shared by the apps' tests of one worker."""

from __future__ import annotations

import pytest

from flaxae import CheckpointConfig, Config, DataConfig, ModelConfig, TrainConfig
from flaxae.api import Run, fit, load
from flaxae.data import Dataset, load_dataset

TINY = Config(data=DataConfig(name="digits"), model=ModelConfig(widths=(32, 8)),
              train=TrainConfig(epochs=10, batch_size=64, learning_rate=3e-3))


@pytest.fixture(scope="session")
def digits() -> Dataset:
  return load_dataset(TINY.data)


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory) -> Run:
  """A 64-32-8 dense autoencoder trained for 10 epochs, loaded from its directory."""
  run_dir = tmp_path_factory.mktemp("apps") / "digits"
  cfg = Config(data=TINY.data, model=TINY.model, train=TINY.train,
               checkpoint=CheckpointConfig(every_steps=10**9), run_dir=str(run_dir))
  fit(cfg, progress=False)
  return load(run_dir)

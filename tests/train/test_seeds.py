"""Many seeds in one compiled program equal the same seeds trained one by one."""

import dataclasses

import numpy as np
import pytest

import flaxae
from flaxae.config import CheckpointConfig, Config, DataConfig, ModelConfig, TrainConfig
from flaxae.train.loop import train_and_evaluate

from tests.train.helpers import rel_diff

BASE = Config(data=DataConfig(), model=ModelConfig(widths=(16, 4)),
              train=TrainConfig(epochs=2, batch_size=64, num_devices=1),
              checkpoint=CheckpointConfig(keep=1))


@pytest.fixture(scope="module")
def together(tmp_path_factory):
  cfg = dataclasses.replace(BASE, train=dataclasses.replace(BASE.train, seed=5, num_seeds=3),
                            run_dir=str(tmp_path_factory.mktemp("seeds")))
  return train_and_evaluate(cfg, progress=False)


@pytest.mark.parametrize("index", [0, 1, 2])
def test_each_model_equals_its_own_run(together, tmp_path, index):
  cfg = dataclasses.replace(BASE, train=dataclasses.replace(BASE.train, seed=5 + index),
                            run_dir=str(tmp_path))
  alone = train_and_evaluate(cfg, progress=False)
  mine = flaxae.load(together.dir, seed_index=index)
  assert rel_diff(mine.variables["params"], alone.state.params) <= 1e-5


def test_models_differ_and_figures_have_mean_and_std(together):
  params = together.state.params["encoder"]["code"]["kernel"]
  assert params.shape[0] == 3
  assert not np.allclose(params[0], params[1])
  record = together.history[-1]
  per_seed = record["test/mse_per_seed"]
  assert len(per_seed) == 3
  np.testing.assert_allclose(record["test/mse"], np.mean(per_seed), rtol=1e-9)
  np.testing.assert_allclose(record["test/mse_std"], np.std(per_seed), rtol=1e-9)
  assert record["test/mse_std"] > 0


def test_resume_of_many_seeds_is_bit_identical(together, tmp_path):
  cfg = dataclasses.replace(together.config, run_dir=str(tmp_path))
  train_and_evaluate(cfg, progress=False, stop_after_steps=22)
  resumed = train_and_evaluate(cfg, progress=False)
  np.testing.assert_array_equal(resumed.state.params["encoder"]["code"]["kernel"],
                                together.state.params["encoder"]["code"]["kernel"])


def test_seed_index_out_of_range(together):
  with pytest.raises(flaxae.errors.ConfigError, match="seed_index 3 is out of range"):
    flaxae.load(together.dir, seed_index=3)

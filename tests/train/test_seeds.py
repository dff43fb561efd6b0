"""Many seeds in one compiled program equal the same seeds trained one by one."""

import dataclasses
import json

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import flaxae
from flaxae import cli
from flaxae.config import CheckpointConfig, Config, DataConfig, ModelConfig, TrainConfig
from flaxae.train.loop import train_and_evaluate
from flaxae.train.seeds import each_seed_variables, seed_variables

from tests.train.helpers import rel_diff, trained_state

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
  np.testing.assert_allclose(record["test/mse_std"], np.std(per_seed, ddof=1), rtol=1e-9)
  assert record["test/mse_std"] > 0


def test_resume_of_many_seeds_is_bit_identical(together, tmp_path):
  cfg = dataclasses.replace(together.config, run_dir=str(tmp_path))
  train_and_evaluate(cfg, progress=False, stop_after_steps=22)
  resumed = train_and_evaluate(cfg, progress=False)
  np.testing.assert_array_equal(resumed.state.params["encoder"]["code"]["kernel"],
                                together.state.params["encoder"]["code"]["kernel"])


def test_evaluate_each_reports_every_model(together, tmp_path, capsys):
  x = np.random.default_rng(0).random((20, 8, 8, 1)).astype(np.float32)
  figures = flaxae.load(together.dir).evaluate_each(x)
  alone = [flaxae.load(together.dir, seed_index=i).evaluate(x) for i in range(3)]
  per_seed = [f["mse"] for f in alone]
  np.testing.assert_allclose(figures["mse_per_seed"], per_seed, rtol=1e-6)
  np.testing.assert_allclose(figures["mse"], np.mean(per_seed), rtol=1e-6)
  np.testing.assert_allclose(figures["mse_std"], np.std(per_seed, ddof=1), rtol=1e-6)
  # The CLI evaluates every model unless told one; the JSON keeps each one's figure.
  assert cli.main(["eval", str(together.dir), f"--json_out={tmp_path / 'all.json'}"]) == 0
  assert "mse_std" in capsys.readouterr().out
  assert len(json.loads((tmp_path / "all.json").read_text())["mse_per_seed"]) == 3
  assert cli.main(["eval", str(together.dir), "--seed_index=1",
                   f"--json_out={tmp_path / 'one.json'}"]) == 0
  one = json.loads((tmp_path / "one.json").read_text())
  assert "mse_std" not in one and "mse" in one


def test_apps_take_a_seed_index(together, tmp_path, capsys):
  x = (np.random.default_rng(0).random((6, 8, 8)) * 255).astype(np.uint8)
  np.save(tmp_path / "x.npy", x)
  w = str(tmp_path)
  second = flaxae.load(together.dir, seed_index=1)
  assert cli.main(["embed", str(together.dir), f"{w}/x.npy", "-o", f"{w}/z.npy",
                   "--seed_index=1"]) == 0
  np.testing.assert_array_equal(np.load(tmp_path / "z.npy"), second.encode(x))
  # A file compressed with model 1 decompresses with model 1, and only with it.
  assert cli.main(["compress", str(together.dir), f"{w}/x.npy", "-o", f"{w}/c.fxae",
                   "--seed_index=1"]) == 0
  assert cli.main(["decompress", str(together.dir), f"{w}/c.fxae", "-o", f"{w}/y.npy",
                   "--seed_index=1"]) == 0
  assert np.load(tmp_path / "y.npy").shape == x.shape
  assert cli.main(["decompress", str(together.dir), f"{w}/c.fxae", "-o", f"{w}/y0.npy"]) == 2
  assert "other weights" in capsys.readouterr().err
  assert cli.main(["detect", str(together.dir), f"{w}/x.npy", "-o", f"{w}/d.npy",
                   "--seed_index=2", "--metric=mse"]) == 0
  scores = np.load(tmp_path / "d.npy")[:, 0]
  mine = flaxae.load(together.dir, seed_index=2).reconstruct(x)
  np.testing.assert_allclose(scores, ((mine - x[..., None] / 255.0) ** 2).mean(axis=(1, 2, 3)),
                             rtol=1e-5)
  assert cli.main(["embed", str(together.dir), f"{w}/x.npy", "-o", f"{w}/z3.npy",
                   "--seed_index=3"]) == 2
  assert "seed_index 3 is out of range" in capsys.readouterr().err


def test_eval_json_holds_every_model(together):
  # It once held model 0's figures alone, beside metrics.jsonl's means.
  from flaxae.data import load_dataset  # pylint: disable=import-outside-toplevel
  figures = json.loads((together.dir / "eval.json").read_text())
  test_x = load_dataset(together.config.data).test_x
  assert figures == flaxae.load(together.dir).evaluate_each(test_x)
  assert len(figures["bce_per_seed"]) == 3
  assert figures["bce"] == pytest.approx(together.history[-1]["test/bce"])


def test_seed_index_out_of_range(together):
  with pytest.raises(flaxae.errors.ConfigError, match="seed_index 3 is out of range"):
    flaxae.load(together.dir, seed_index=3)
  with pytest.raises(flaxae.errors.ConfigError, match="seed_index must be an integer"):
    flaxae.load(together.dir, seed_index=1.5)


def test_a_run_object_gives_the_model_asked_for(together):
  # The apps take a Run or a directory: a seed_index given with a Run picks
  # that model of it (it was once ignored, silently using the Run's own).
  from flaxae.apps import anomaly  # pylint: disable=import-outside-toplevel
  first = flaxae.load(together.dir)
  second = flaxae.load(together.dir, seed_index=2)
  assert (first.seed_index, second.seed_index) == (0, 2)
  x = np.random.default_rng(0).random((5, 8, 8, 1), np.float32)
  picked = flaxae.api.as_run(first, 2)
  assert picked.seed_index == 2 and flaxae.api.as_run(second) is second
  np.testing.assert_array_equal(picked.encode(x), second.encode(x))
  assert not np.array_equal(first.encode(x), second.encode(x))
  np.testing.assert_array_equal(anomaly.detect(first, x, seed_index=2).scores,
                                anomaly.detect(together.dir, x, seed_index=2).scores)
  lone = dataclasses.replace(second, state=None)  # A Run holding one model only.
  with pytest.raises(flaxae.errors.ConfigError, match="holds model 2 only"):
    lone.select(0)


DATA = np.random.default_rng(1).random((256, 8, 8, 1), dtype=np.float32)
STEPS = 12


def _train(**kw) -> TrainConfig:
  return TrainConfig(batch_size=32, epochs=STEPS, **kw)


@pytest.fixture(scope="module")
def alone():
  """Models 0-3 trained one by one, each on one device."""
  return [trained_state(DATA, steps=STEPS, train=_train(seed=i, num_devices=1)).params
          for i in range(4)]


@pytest.mark.parametrize("devices,seeds,strategy,vmapped,groups", [
    (4, 4, "jit", 0, 4),        # One model per device.
    (4, 2, "shard_map", 0, 2),  # Two groups, each model data-parallel over 2 devices.
    (4, 2, "jit", 2, 2),
    (2, 4, "jit", 2, 2),        # Two models per device, vmapped side by side.
    (2, 4, "shard_map", 0, 2),  # Two per device, one after the other (CPU's choice).
    (4, 3, "jit", 0, 1),        # 3 does not split over 4 devices: data-parallel models.
])
def test_seeds_split_over_devices_equal_one_by_one(alone, devices, seeds, strategy,
                                                   vmapped, groups):
  if jax.device_count() < devices:
    pytest.skip(f"needs {devices} devices, {jax.device_count()} available")
  state = trained_state(DATA, steps=STEPS, train=_train(
      num_devices=devices, num_seeds=seeds, strategy=strategy, seeds_vmapped=vmapped))
  kernel = state.params["encoder"]["code"]["kernel"]
  assert kernel.sharding.mesh.shape == {"seed": groups, "data": devices // groups}
  assert kernel.sharding.spec == P("seed")
  # Each device holds only its group's models.
  assert {s.data.shape[0] for s in kernel.addressable_shards} == {seeds // groups}
  for i in range(seeds):
    mine = jax.tree.map(lambda x, i=i: x[i], state.params)
    assert rel_diff(mine, alone[i]) <= 1e-5, i


def test_seeds_per_vmap_choice():
  from flaxae.train import parallel  # pylint: disable=import-outside-toplevel
  assert parallel.seeds_per_vmap(0, 4, num_groups=2) is None  # CPU, 2 groups: one by one.
  assert parallel.seeds_per_vmap(0, 4, num_groups=1) == 4  # One group: all vmapped.
  assert parallel.seeds_per_vmap(1, 4) is None
  assert parallel.seeds_per_vmap(2, 4) == 2
  assert parallel.seeds_per_vmap(8, 4) == 4


def test_each_seed_variables_are_the_models_one_by_one(together):
  state = together.state
  models = each_seed_variables(state)
  assert len(models) == 3
  for i, variables in enumerate(models):
    jax.tree.map(np.testing.assert_array_equal, variables, seed_variables(state, i))
  single = jax.tree.map(lambda x: x[0], state)
  assert len(each_seed_variables(single)) == 1

"""Data parallelism: 1 device equals 4 forced devices, for both strategies."""

import jax
import numpy as np
import pytest

from flaxae.config import ModelConfig
from flaxae.errors import ConfigError, ShapeError
from flaxae.train import parallel

from tests.train.helpers import rel_diff, trained_state

DATA = np.random.default_rng(0).random((320, 8, 8, 1), dtype=np.float32)


@pytest.mark.devices(4)
def test_four_devices_are_forced():
  assert jax.device_count() == 4


@pytest.fixture(scope="module")
def one_device():
  return trained_state(DATA, num_devices=1, steps=20)


@pytest.mark.devices(4)
@pytest.mark.parametrize("strategy", ["jit", "shard_map"])
def test_four_devices_equal_one(one_device, strategy):
  four = trained_state(DATA, strategy=strategy, num_devices=4, steps=20)
  assert int(four.step) == 20
  assert rel_diff(four.params, one_device.params) <= 1e-5
  assert rel_diff(four.opt_state, one_device.opt_state) <= 1e-5
  # And training did move the parameters.
  init = trained_state(DATA, num_devices=1, steps=0, chunks=[])
  assert rel_diff(one_device.params, init.params) > 1e-2


@pytest.mark.devices(4)
def test_conv_four_devices_equal_one():
  conv = ModelConfig(arch="conv", channels=(4, 8), latent_dim=8)
  one = trained_state(DATA, num_devices=1, steps=20, model=conv)
  for strategy in ("jit", "shard_map"):
    four = trained_state(DATA, strategy=strategy, num_devices=4, steps=20, model=conv)
    assert rel_diff(four.params, one.params) <= 1e-5


def test_chunking_does_not_change_the_result(one_device):
  split = trained_state(DATA, num_devices=1, steps=20, chunks=[3, 7, 10])
  jax.tree.map(np.testing.assert_array_equal, split.params, one_device.params)


@pytest.mark.devices(4)
def test_batch_not_divisible_by_devices_names_both_numbers():
  mesh = parallel.make_mesh(4)
  with pytest.raises(ConfigError, match="batch size 30 is not divisible by the number "
                     "of devices 4"):
    parallel.check_batch(30, mesh, 100)


def test_batch_larger_than_data():
  with pytest.raises(ShapeError, match="batch size 64 is larger than the training set "
                     r"\(10 examples\)"):
    parallel.check_batch(64, parallel.make_mesh(1), 10)


def test_too_many_devices():
  n = jax.device_count()
  with pytest.raises(ConfigError, match=f"train.num_devices={2 * n} but only {n}"):
    parallel.make_mesh(2 * n)


def test_epoch_order_is_a_permutation_that_changes_per_epoch():
  rng = jax.random.key_data(jax.random.key(3))
  a = np.asarray(parallel.epoch_order(rng, 0, 50))
  b = np.asarray(parallel.epoch_order(rng, 1, 50))
  assert sorted(a) == list(range(50)) and sorted(b) == list(range(50))
  assert not np.array_equal(a, b)
  np.testing.assert_array_equal(a, parallel.epoch_order(rng, 0, 50))


def test_epoch_order_differs_between_keys():
  a = parallel.epoch_order(jax.random.key_data(jax.random.key(3)), 0, 50)
  b = parallel.epoch_order(jax.random.key_data(jax.random.key(4)), 0, 50)
  assert a.dtype == np.int32 and not np.array_equal(a, b)


@pytest.mark.devices(4)
def test_epoch_orders_follow_the_step_and_each_models_key():
  keys = jax.vmap(lambda i: jax.random.key_data(jax.random.key(i)))(np.arange(4))
  spe = 5  # 50 examples, batch 10.
  orders = parallel.EpochOrders(keys, 50, 10, parallel.make_mesh(4, num_seeds=4), 4)
  first = orders(0)
  assert first.shape == (4, 50) and first.sharding.spec == parallel.seed_sharded(
      first.sharding.mesh).spec
  for s in range(4):  # Model s draws from its own key.
    np.testing.assert_array_equal(np.asarray(first[s]), parallel.epoch_order(keys[s], 0, 50))
  assert orders(spe - 1) is first  # Put on the devices once per epoch.
  np.testing.assert_array_equal(np.asarray(orders(spe)[2]),
                                parallel.epoch_order(keys[2], 1, 50))
  single = parallel.EpochOrders(keys[1], 50, 10, parallel.make_mesh(4))
  assert single(0).shape == (50,) and single(0).sharding.is_fully_replicated
  np.testing.assert_array_equal(np.asarray(single(12)), parallel.epoch_order(keys[1], 2, 50))


def test_eigen_matmuls_leave_out_ynnpack_and_train_the_same_model(one_device):
  from flaxae.config import Config, TrainConfig  # pylint: disable=import-outside-toplevel
  from flaxae.train.build import setup  # pylint: disable=import-outside-toplevel

  def hlo(cpu_matmuls):
    train = TrainConfig(num_devices=1, batch_size=32, cpu_matmuls=cpu_matmuls)
    built = setup(Config(model=ModelConfig(widths=(32, 8)), train=train), DATA.shape[1:],
                  len(DATA))
    state = jax.eval_shape(built.init)
    order = jax.ShapeDtypeStruct((len(DATA),), np.int32)
    return built.chunk.lower(state, DATA, order, 2).compile().as_text()

  assert "__ynn_fusion" in hlo("xla") and "__ynn_fusion" not in hlo("eigen")
  train = TrainConfig(num_devices=1, batch_size=32, epochs=20, cpu_matmuls="eigen")
  eigen = trained_state(DATA, steps=20, train=train)
  assert rel_diff(eigen.params, one_device.params) <= 1e-5


def test_bytes_on_the_devices_train_as_floats():
  raw = np.random.default_rng(1).integers(0, 256, (320, 8, 8, 1), dtype=np.uint8)
  floats = raw.astype(np.float32) / np.float32(255)
  from_floats = trained_state(floats, steps=12)
  from_bytes = trained_state(raw, steps=12)
  # The same examples; the compiled step's sums may round in another order.
  assert rel_diff(from_bytes.params, from_floats.params) <= 1e-6
  jax.tree.map(np.testing.assert_array_equal, trained_state(raw, steps=12).params,
               from_bytes.params)  # And bytes again give the same bits.
  init = trained_state(raw, steps=0, chunks=[])
  assert rel_diff(from_bytes.params, init.params) > 1e-2


"""Small builders shared by the training tests."""

from __future__ import annotations

import jax
import numpy as np

from flaxae.config import Config, ModelConfig, TrainConfig
from flaxae.train import parallel
from flaxae.train.build import setup


def rel_diff(a, b) -> float:
  """Largest relative L2 difference between matching leaves of two trees."""
  diffs = jax.tree.map(
      lambda x, y: float(np.linalg.norm(np.asarray(x, np.float64) - np.asarray(y, np.float64))
                         / max(np.linalg.norm(np.asarray(y, np.float64)), 1e-12)), a, b)
  return max(jax.tree.leaves(diffs))


def trained_state(data: np.ndarray, *, strategy="jit", num_devices=1, steps=20,
                  batch_size=32, model=ModelConfig(widths=(32, 8)), chunks=None,
                  train=None):
  """Trains ``steps`` steps on ``data`` through the compiled chunk; returns the state."""
  train = train or TrainConfig(strategy=strategy, num_devices=num_devices,
                               batch_size=batch_size, epochs=max(1, steps))
  cfg = Config(model=model, train=train)
  spe = len(data) // train.batch_size
  built = setup(cfg, data.shape[1:], len(data))
  state = jax.jit(built.init, out_shardings=built.state_sharding)()
  orders = parallel.EpochOrders(state.rng, len(data), train.batch_size, built.mesh,
                                train.num_seeds)
  on_device = jax.device_put(data, parallel.replicated(built.mesh))
  if chunks is None:  # A compiled chunk stays inside one epoch, as in the loop.
    chunks = [min(spe, steps - i) for i in range(0, steps, spe)]
  done = 0
  for n in chunks:
    state, _ = built.chunk(state, on_device, orders(done), n)
    done += n
  return state

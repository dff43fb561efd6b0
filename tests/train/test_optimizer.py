"""Optimizers and schedules from the config."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flaxae.config import TrainConfig
from flaxae.errors import ConfigError
from flaxae.train.optimizer import make_optimizer, make_schedule


def _minimise(tx, steps=50):
  """Runs ``tx`` on a quadratic bowl; returns the final distance to the minimum."""
  params = {"w": jnp.full((3,), 5.0)}
  state = tx.init(params)
  grad = jax.grad(lambda p: jnp.sum(jnp.square(p["w"] - 1.0)))
  for _ in range(steps):
    updates, state = tx.update(grad(params), state, params)
    params = optax.apply_updates(params, updates)
  return float(jnp.abs(params["w"] - 1.0).max())


@pytest.mark.parametrize("name,lr", [("adam", 0.3), ("adamw", 0.3), ("sgd", 0.05),
                                     ("rmsprop", 0.05)])
@pytest.mark.parametrize("schedule", ["constant", "cosine", "warmup_cosine"])
def test_every_optimizer_and_schedule_descends(name, lr, schedule):
  cfg = TrainConfig(optimizer=name, learning_rate=lr, schedule=schedule, warmup_steps=5)
  assert _minimise(make_optimizer(cfg, total_steps=100)) < 2.0


def test_schedules():
  cfg = TrainConfig(learning_rate=1.0, schedule="warmup_cosine", warmup_steps=10)
  s = make_schedule(cfg, 100)
  np.testing.assert_allclose([s(0), s(5), s(10), s(100)], [0.0, 0.5, 1.0, 0.0], atol=1e-6)
  c = make_schedule(TrainConfig(learning_rate=1.0, schedule="cosine"), 100)
  np.testing.assert_allclose([c(0), c(50), c(100)], [1.0, 0.5, 0.0], atol=1e-6)


def test_clipping_bounds_the_update():
  tx = make_optimizer(TrainConfig(optimizer="sgd", momentum=0.0, learning_rate=1.0,
                                  clip_norm=0.5), 10)
  params = {"w": jnp.zeros(4)}
  updates, _ = tx.update({"w": jnp.full((4,), 100.0)}, tx.init(params), params)
  np.testing.assert_allclose(optax.tree.norm(updates), 0.5, rtol=1e-5)


def test_weight_decay_shrinks_weights_without_gradient():
  for name in ("adamw", "sgd"):
    tx = make_optimizer(TrainConfig(optimizer=name, learning_rate=0.1, weight_decay=0.5,
                                    momentum=0.0), 10)
    params = {"w": jnp.ones(2)}
    updates, _ = tx.update({"w": jnp.zeros(2)}, tx.init(params), params)
    assert float(optax.apply_updates(params, updates)["w"][0]) < 1.0


def test_warmup_longer_than_training():
  with pytest.raises(ConfigError, match=r"train.warmup_steps \(500\) must be smaller"):
    make_optimizer(TrainConfig(schedule="warmup_cosine", warmup_steps=500), 100)

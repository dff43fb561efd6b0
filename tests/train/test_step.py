"""The pure train step: learns, skips non-finite steps, never retraces."""

import dataclasses
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flaxae import objectives
from flaxae.config import ModelConfig
from flaxae.errors import ConfigError
from flaxae.models import build_model
from flaxae.train.state import create_state
from flaxae.train.step import AUTO_MICRO_BATCH, eval_step, micro_batches, train_step
from tests.train.helpers import rel_diff

CFG = ModelConfig(widths=(16, 4))
X = jax.random.uniform(jax.random.key(0), (32, 8, 8, 1))


def _setup(lr=1e-2):
  model = build_model(CFG, (8, 8, 1))
  tx = optax.adam(lr)
  state = create_state(model, tx, X[:1], seed=0)
  step = jax.jit(functools.partial(train_step, model=model, objective=objectives.get("plain"),
                                   tx=tx, cfg=CFG))
  return model, state, step


def test_step_lowers_the_loss():
  _, state, step = _setup()
  _, first = step(state, X)
  for _ in range(30):
    state, metrics = step(state, X)
  assert float(metrics["loss"]) < float(first["loss"]) - 0.01
  assert int(state.step) == 30
  assert set(metrics) >= {"loss", "skipped", "grad_norm"}


def test_state_is_a_pytree_with_the_run_key():
  _, state, _ = _setup()
  chex.assert_tree_all_finite(state.params)
  assert state.rng.dtype == jnp.uint32
  assert jax.random.key_data(state.key).shape == state.rng.shape


def test_non_finite_batch_is_skipped_and_counted():
  _, state, step = _setup()
  state, _ = step(state, X)
  bad = X.at[0, 0, 0, 0].set(jnp.nan)
  after, metrics = step(state, bad)
  jax.tree.map(np.testing.assert_array_equal, after.params, state.params)
  jax.tree.map(np.testing.assert_array_equal, after.opt_state, state.opt_state)
  assert float(metrics["skipped"]) == 1.0
  assert int(after.skipped) == 1 and int(after.bad_streak) == 1
  after, _ = step(after, bad)
  assert int(after.bad_streak) == 2
  after, _ = step(after, X)  # A good step resets the streak, keeps the total.
  assert int(after.bad_streak) == 0 and int(after.skipped) == 2
  assert int(after.step) == 4


def test_diverging_learning_rate_is_caught():
  _, state, step = _setup(lr=1e30)
  for _ in range(5):
    state, _ = step(state, X * 1e20)
  chex.assert_tree_all_finite(state.params)
  assert int(state.skipped) >= 1


def test_step_compiles_once():
  model = build_model(CFG, (8, 8, 1))
  tx = optax.adam(1e-3)
  state = create_state(model, tx, X[:1], seed=0)

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(state, batch):
    return train_step(state, batch, model=model, objective=objectives.get("plain"),
                      tx=tx, cfg=CFG)

  for _ in range(3):
    state, _ = step(state, X)


def test_eval_step_per_example():
  model, state, _ = _setup()
  out = eval_step({"params": state.params}, X, model=model,
                  objective=objectives.get("plain"), cfg=CFG, rng=jax.random.key(0))
  for v in out.values():
    chex.assert_shape(v, (32,))


@pytest.mark.parametrize("model_cfg,shape", [
    # Dropout and input noise: each example's randomness follows its position.
    (ModelConfig(arch="conv", channels=(4, 8), latent_dim=0, dropout=0.2,
                 input_noise=0.1), (8, 8, 1)),
    (ModelConfig(arch="conv", channels=(4, 8), latent_dim=6, kind="vae"), (8, 8, 1)),
    (ModelConfig(widths=(16, 4), l1_weight_penalty=1e-3), (8, 8, 1)),
])
def test_micro_batches_make_the_same_step(model_cfg, shape):
  model = build_model(model_cfg, shape)
  tx = optax.adam(1e-2)
  state = create_state(model, tx, X[:1], seed=0)
  step = lambda micro: jax.jit(functools.partial(
      train_step, model=model, objective=objectives.get(model_cfg.kind), tx=tx,
      cfg=model_cfg, micro_batch_size=micro))
  whole, split = step(-1), step(8)
  a, b = state, state
  for _ in range(3):
    a, metrics_a = whole(a, X)
    b, metrics_b = split(b, X)
  assert rel_diff(b.params, a.params) <= 1e-5
  assert rel_diff(b.opt_state, a.opt_state) <= 1e-5
  assert rel_diff(metrics_b, metrics_a) <= 1e-5


def test_micro_batch_choice():
  conv = ModelConfig(arch="conv", latent_dim=0)
  auto = AUTO_MICRO_BATCH
  assert micro_batches(16 * auto, 0, conv) == 16  # Automatic for conv models.
  assert micro_batches(16 * auto + 2, 0, conv) == 1  # It must divide the batch.
  assert micro_batches(auto, 0, conv) == 1
  assert micro_batches(16 * auto, 0, CFG) == 1  # Dense: the whole batch.
  assert micro_batches(16 * auto, 0, dataclasses.replace(conv, kind="vq")) == 1
  assert micro_batches(256, -1, conv) == 1
  assert micro_batches(256, 32, CFG) == 8
  with pytest.raises(ConfigError, match="does not divide the per-device batch of 100"):
    micro_batches(100, 32, CFG)
  with pytest.raises(ConfigError, match="statistics of the whole batch"):
    micro_batches(64, 32, dataclasses.replace(CFG, kind="sparse"))

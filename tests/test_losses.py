"""Reconstruction losses: values, per-example shapes, stability."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxae import losses
from flaxae.errors import ConfigError


def test_bce_from_logits_matches_the_definition():
  logits = jnp.array([[-3.0, 0.0, 2.5, 7.0]])
  targets = jnp.array([[0.0, 0.3, 1.0, 0.9]])
  p = jax.nn.sigmoid(logits)
  expected = -(targets * jnp.log(p) + (1 - targets) * jnp.log1p(-p)).mean(-1)
  np.testing.assert_allclose(losses.bce_per_example(logits, targets), expected, rtol=1e-5)


def test_bce_is_finite_for_extreme_logits():
  logits = jnp.array([[-1e4, 1e4, -100.0, 100.0]])
  targets = jnp.array([[1.0, 0.0, 1.0, 0.0]])
  value = losses.bce_per_example(logits, targets)
  grad = jax.grad(lambda l: losses.bce_per_example(l, targets).sum())(logits)
  chex.assert_tree_all_finite((value, grad))
  np.testing.assert_allclose(value, [(1e4 + 1e4 + 100 + 100) / 4], rtol=1e-5)


def test_log1p_unit_is_within_two_ulps_on_the_unit_interval():
  e = np.linspace(0.0, 1.0, 100_001, dtype=np.float32)
  exact = np.log1p(e.astype(np.float64))
  got = np.asarray(jax.jit(losses.log1p_unit)(e), np.float64)
  ulps = np.abs(got - exact)[1:] / np.spacing(exact[1:].astype(np.float32))
  assert ulps.max() <= 2.0
  assert got[0] == 0.0
  tiny = np.float32(1e-30)  # Relative accuracy holds down to zero.
  np.testing.assert_allclose(losses.log1p_unit(tiny), tiny, rtol=1e-6)


def test_bce_value_matches_xla_softplus_over_logits():
  logits = jnp.linspace(-40.0, 40.0, 4001).reshape(1, -1)
  targets = jnp.full_like(logits, 0.25)
  want = np.mean(np.logaddexp(0.0, np.float64(logits)) - np.float64(logits) * 0.25)
  got = losses.bce_per_example(logits, targets)[0]
  np.testing.assert_allclose(got, want, rtol=2e-6)


def _bce_reference(logits, targets):
  """The autodiff form: the fused gradient must equal its derivatives."""
  return (jax.nn.softplus(logits) - logits * targets).reshape(logits.shape[0], -1).mean(-1)


@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_bce_fused_gradient_equals_autodiff(scale):
  logits = scale * jax.random.normal(jax.random.key(0), (6, 5, 5, 1))
  targets = jax.random.uniform(jax.random.key(1), (6, 5, 5, 1))
  weights = jnp.arange(1.0, 7.0)  # A cotangent that differs per example.
  f = lambda fn: lambda l, t: jnp.dot(fn(l, t), weights)
  got = jax.jit(jax.grad(f(losses.bce_per_example), argnums=(0, 1)))(logits, targets)
  want = jax.grad(f(_bce_reference), argnums=(0, 1))(logits, targets)
  chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(losses.bce_per_example(logits, targets),
                             _bce_reference(logits, targets), rtol=1e-6)


def test_bce_fused_gradient_under_vmap():
  logits = jax.random.normal(jax.random.key(2), (3, 4, 16))
  targets = jax.random.uniform(jax.random.key(3), (3, 4, 16))
  grad = lambda fn: jax.vmap(jax.grad(lambda l, t: fn(l, t).mean()))(logits, targets)
  chex.assert_trees_all_close(grad(losses.bce_per_example), grad(_bce_reference),
                              rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", ["bce", "mse", "l1", "huber"])
def test_per_example_shape_and_mean(name):
  logits = jax.random.normal(jax.random.key(0), (5, 4, 4, 1))
  x = jax.random.uniform(jax.random.key(1), (5, 4, 4, 1))
  per = losses.reconstruction_per_example(name, logits, x)
  chex.assert_shape(per, (5,))
  np.testing.assert_allclose(losses.reconstruction_loss(name, logits, x), per.mean(),
                             rtol=1e-6)
  # A perfect reconstruction is the minimum.
  perfect = losses.reconstruction_per_example(name, jnp.full_like(x, 8.0), jnp.ones_like(x))
  assert float(perfect.max()) <= float(per.min())


def test_distances():
  p, t = jnp.array([[0.2, 0.8]]), jnp.array([[0.0, 1.0]])
  np.testing.assert_allclose(losses.mse_per_example(p, t), [0.04], rtol=1e-6)
  np.testing.assert_allclose(losses.l1_per_example(p, t), [0.2], rtol=1e-6)
  np.testing.assert_allclose(losses.huber_per_example(p, t), [0.02], rtol=1e-6)


def test_psnr():
  np.testing.assert_allclose(losses.psnr(jnp.array(0.01)), 20.0, rtol=1e-6)


def test_unknown_loss():
  with pytest.raises(ConfigError, match="unknown loss 'kl'"):
    losses.reconstruction_loss("kl", jnp.zeros((1, 2)), jnp.zeros((1, 2)))

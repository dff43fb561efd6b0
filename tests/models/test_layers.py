"""Matmul convolutions compute exactly what Flax's convolutions compute."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxae.models import layers


@pytest.mark.parametrize("shape,k,s", [
    ((2, 8, 8, 3), 3, 2), ((1, 7, 9, 2), 3, 2), ((2, 28, 28, 1), 3, 2),
    ((1, 7, 9, 2), 3, 1), ((1, 7, 9, 2), 5, 2), ((2, 8, 8, 3), 4, 2), ((1, 5, 5, 2), 1, 1)])
def test_conv_matches_flax(shape, k, s):
  x = jax.random.normal(jax.random.key(0), shape)
  ours = layers.Conv(5, k, s)
  params = ours.init(jax.random.key(1), x)
  ref = nn.Conv(5, (k, k), strides=(s, s), padding="SAME")
  np.testing.assert_allclose(ours.apply(params, x), ref.apply(params, x),
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape,features,k,s", [
    ((2, 7, 9, 16), 1, 3, 1), ((1, 8, 8, 12), 2, 3, 2), ((1, 7, 9, 16), 3, 3, 2),
    ((2, 6, 5, 8), 1, 4, 1), ((1, 9, 7, 20), 2, 5, 3)])
def test_output_side_conv_matches_flax(shape, features, k, s):
  # F·s² < C: the layer takes the output-side form.
  x = jax.random.normal(jax.random.key(0), shape)
  ours = layers.Conv(features, k, s)
  params = ours.init(jax.random.key(1), x)
  ref = nn.Conv(features, (k, k), strides=(s, s), padding="SAME")
  np.testing.assert_allclose(ours.apply(params, x), ref.apply(params, x),
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape,k,s", [
    ((2, 4, 4, 3), 3, 2), ((1, 7, 5, 2), 3, 2), ((2, 2, 2, 8), 3, 2),
    ((1, 7, 5, 2), 4, 2), ((1, 7, 5, 2), 5, 2), ((2, 4, 4, 3), 3, 1),
    ((2, 4, 4, 3), 2, 2), ((1, 7, 5, 2), 3, 3),
    # Taps reaching past the whole grid (a 1×1 or 2×2 bottleneck, a large kernel).
    ((1, 1, 1, 3), 7, 2), ((1, 2, 2, 3), 11, 2), ((2, 1, 3, 1), 4, 1)])
def test_conv_transpose_matches_flax(shape, k, s):
  x = jax.random.normal(jax.random.key(0), shape)
  ours = layers.ConvTranspose(6, k, s)
  params = ours.init(jax.random.key(1), x)
  ref = nn.ConvTranspose(6, (k, k), strides=(s, s), padding="SAME")
  expected = ref.apply(params, x)
  got = ours.apply(params, x)
  assert got.shape == expected.shape
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_gradients_match_flax():
  x = jax.random.normal(jax.random.key(0), (2, 6, 6, 3))
  for ours, ref in ((layers.Conv(4, 3, 2), nn.Conv(4, (3, 3), strides=(2, 2))),
                    (layers.Conv(1, 3, 1), nn.Conv(1, (3, 3))),
                    (layers.ConvTranspose(4, 3, 2),
                     nn.ConvTranspose(4, (3, 3), strides=(2, 2)))):
    params = ours.init(jax.random.key(1), x)
    g1 = jax.grad(lambda p: jnp.sum(jnp.sin(ours.apply(p, x))))(params)
    g2 = jax.grad(lambda p: jnp.sum(jnp.sin(ref.apply(p, x))))(params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                 g1, g2)


@pytest.mark.parametrize("shape,features,k,s,transpose", [
    ((2, 7, 9, 16), 1, 3, 1, False), ((1, 8, 8, 12), 2, 3, 2, False),
    ((1, 7, 9, 16), 3, 3, 2, False), ((2, 6, 5, 8), 1, 4, 1, False),
    ((1, 9, 7, 20), 2, 5, 3, False), ((1, 7, 5, 2), 6, 3, 2, True),
    ((1, 7, 5, 2), 6, 4, 2, True), ((1, 7, 5, 2), 6, 5, 2, True),
    ((2, 4, 4, 3), 6, 3, 1, True), ((2, 4, 4, 3), 6, 2, 2, True),
    ((1, 7, 5, 2), 6, 3, 3, True), ((1, 3, 4, 2), 3, 1, 2, True),
    ((1, 1, 1, 3), 2, 7, 2, True), ((1, 2, 2, 3), 2, 11, 2, True)])
def test_hand_written_gradients_match_flax(shape, features, k, s, transpose):
  # The output-side forms have hand-written gradients (custom VJPs).
  x = jax.random.normal(jax.random.key(0), shape)
  if transpose:
    ours = layers.ConvTranspose(features, k, s)
    ref = nn.ConvTranspose(features, (k, k), strides=(s, s), padding="SAME")
  else:
    ours = layers.Conv(features, k, s)
    ref = nn.Conv(features, (k, k), strides=(s, s), padding="SAME")
  params = ours.init(jax.random.key(1), x)
  loss = lambda m: lambda p, x: jnp.sum(jnp.sin(m.apply(p, x)))
  g1 = jax.grad(loss(ours), argnums=(0, 1))(params, x)
  g2 = jax.grad(loss(ref), argnums=(0, 1))(params, x)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
               g1, g2)

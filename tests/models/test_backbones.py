"""Backbones: shapes, standalone encode/decode, widths as configs."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxae.config import ModelConfig
from flaxae.errors import ConfigError, ShapeError
from flaxae.models import build_model, encoder_widths


@pytest.mark.parametrize("widths,code", [((784, 256, 64), 64), ((784, 128, 64), 64),
                                         ((784, 32), 32), ((256, 64), 64)])
def test_dense_seed_architectures_are_configs(widths, code):
  model = build_model(ModelConfig(arch="dense", widths=widths), (28, 28, 1))
  x = jnp.zeros((3, 28, 28, 1))
  variables = model.init(jax.random.key(0), x)
  z = model.apply(variables, x, method="encode")
  chex.assert_shape(z, (3, code))
  chex.assert_shape(model.apply(variables, z, method="decode"), (3, 28, 28, 1))
  first = variables["params"]["encoder"]["hidden_0" if len(widths) > 2 or widths[0] != 784
                                         else "code"]["kernel"]
  assert first.shape[0] == 784  # The input width is the data's, not a hidden layer.


def test_encoder_widths_drops_only_a_leading_input_width():
  assert encoder_widths((784, 256, 64), 784) == (256, 64)
  assert encoder_widths((256, 64), 784) == (256, 64)
  assert encoder_widths((64,), 64) == (64,)


@pytest.mark.parametrize("shape,latent_dim", [((28, 28, 1), 16), ((8, 8, 1), 0),
                                              ((7, 9, 3), 16), ((7, 9, 3), 0)])
def test_conv_output_matches_any_input_shape(shape, latent_dim):
  model = build_model(ModelConfig(arch="conv", channels=(8, 16), latent_dim=latent_dim),
                      shape)
  x = jnp.ones((2, *shape))
  variables = model.init(jax.random.key(0), x)
  logits = model.apply(variables, x)
  chex.assert_shape(logits, (2, *shape))
  chex.assert_tree_all_finite(logits)
  z = model.apply(variables, x, method="encode")
  if latent_dim:
    chex.assert_shape(z, (2, latent_dim))
  else:
    assert z.ndim == 4 and z.shape[-1] == 16
  chex.assert_equal_shape([model.apply(variables, z, method="decode"), x])


def test_conv_needs_images():
  with pytest.raises(ShapeError, match="needs images"):
    build_model(ModelConfig(arch="conv"), (64,))


def test_unknown_activation():
  with pytest.raises(ConfigError, match="unknown activation 'swishy'"):
    build_model(ModelConfig(activation="swishy"), (64,))


def test_activation_is_used():
  x = jax.random.uniform(jax.random.key(1), (4, 64))
  outs = []
  for act in ("relu", "tanh"):
    model = build_model(ModelConfig(widths=(32, 8), activation=act), (64,))
    variables = model.init(jax.random.key(0), x)
    outs.append(np.asarray(model.apply(variables, x)))
  assert not np.allclose(outs[0], outs[1])

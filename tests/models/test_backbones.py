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


@pytest.mark.parametrize("kind,latent_dim", [("plain", 16), ("plain", 0), ("vae", 8),
                                             ("vq", 0)])
def test_conv_impls_share_parameters_and_compute_the_same_function(kind, latent_dim):
  cfg = ModelConfig(arch="conv", kind=kind, channels=(4, 8), latent_dim=latent_dim,
                    codebook_size=16)
  shape = (9, 7, 2)  # Odd sizes: the SAME pads differ on the two sides.
  matmul = build_model(cfg, shape, conv_impl="matmul")
  lax_convs = build_model(cfg, shape, conv_impl="xla")
  x = jax.random.uniform(jax.random.key(1), (3, *shape))
  variables = matmul.init(jax.random.key(0), x)
  chex.assert_trees_all_equal_shapes_and_dtypes(
      variables, lax_convs.init(jax.random.key(0), x))
  rngs = {"sample": jax.random.key(2)}  # The VAE's reparameterisation draw.

  def loss(model, params):
    out = model.apply({**variables, "params": params}, x, rngs=rngs)
    return sum(jnp.sum(jnp.sin(leaf)) for leaf in jax.tree.leaves(out))

  with jax.default_matmul_precision("highest"):
    values = [jax.value_and_grad(loss, argnums=1)(m, variables["params"])
              for m in (matmul, lax_convs)]
  (v_mm, g_mm), (v_xla, g_xla) = values
  np.testing.assert_allclose(v_xla, v_mm, rtol=1e-5)
  chex.assert_trees_all_close(g_xla, g_mm, rtol=1e-4, atol=1e-5)


def test_xla_convs_compute_in_the_compute_dtype():
  cfg = ModelConfig(arch="conv", channels=(4, 8), latent_dim=0)
  model = build_model(cfg, (8, 8, 1), dtype="bfloat16", conv_impl="xla")
  x = jnp.ones((2, 8, 8, 1))
  variables = model.init(jax.random.key(0), x)
  hlo = jax.jit(model.apply).lower(variables, x).as_text()
  convs = [line for line in hlo.splitlines() if "stablehlo.convolution" in line]
  assert len(convs) == 5  # 2 convolutions, 2 transposed, the logits.
  assert all("f32" not in line.split(":")[-1] for line in convs), convs
  assert jax.tree.leaves(variables)[0].dtype == jnp.float32

"""The family's modules: VAE and VQ heads on both backbones, dropout, code activations."""

import chex
import jax
import numpy as np
import pytest

from flaxae.config import ModelConfig
from flaxae.errors import ConfigError
from flaxae.models import (VariationalAutoencoder, VQAutoencoder, build_model,
                           code_activation, sample)

SHAPE = (8, 8, 1)
X = jax.random.uniform(jax.random.key(0), (3, *SHAPE))
BACKBONES = {
    "dense": dict(arch="dense", widths=(16, 6)),
    "conv": dict(arch="conv", channels=(4,), latent_dim=6),
    "conv_spatial": dict(arch="conv", channels=(4,), latent_dim=0),
}
CODES = {"dense": (6,), "conv": (6,), "conv_spatial": (4, 4, 4)}


def _init(**kw):
  model = build_model(ModelConfig(**kw), SHAPE)
  return model, model.init(jax.random.key(1), X)


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_vae_encodes_to_a_clamped_gaussian_and_decodes(backbone):
  model, variables = _init(kind="vae", logvar_min=-3.0, logvar_max=2.0,
                           **BACKBONES[backbone])
  assert isinstance(model, VariationalAutoencoder)
  assert model.code_shape == CODES[backbone]

  @jax.jit  # One compilation for every call below.
  def outputs(variables):
    mean, logvar = model.apply(variables, X, method="posterior")
    big = jax.tree.map(lambda p: p * 100.0, variables)  # Blown-up weights.
    return dict(mean=mean, logvar=logvar,
                encode=model.apply(variables, X, method="encode"),
                decoded=model.apply(variables, mean, method="decode"),
                reconstruction=model.apply(variables, X),
                big_logvar=model.apply(big, X * 0 + 1.0, method="posterior")[1])

  out = outputs(variables)
  chex.assert_shape([out["mean"], out["logvar"]], (3, *CODES[backbone]))
  np.testing.assert_array_equal(out["encode"], out["mean"])
  chex.assert_shape(out["decoded"], (3, *SHAPE))
  np.testing.assert_allclose(out["reconstruction"], out["decoded"], rtol=1e-5, atol=1e-6)
  assert float(out["big_logvar"].min()) >= -3.0 and float(out["big_logvar"].max()) <= 2.0


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_vq_quantises_on_every_backbone(backbone):
  model, variables = _init(kind="vq", codebook_size=5, codebook_dim=2,
                           **BACKBONES[backbone])
  assert isinstance(model, VQAutoencoder)

  @jax.jit
  def outputs(variables):
    z = model.apply(variables, X, method="encode")
    return z, model.apply(variables, X, method="indices"), model.apply(
        variables, z, method="decode")

  z, idx, decoded = outputs(variables)
  chex.assert_shape(z, (3, *CODES[backbone]))
  chex.assert_shape(idx, (3, *CODES[backbone][:-1], CODES[backbone][-1] // 2))
  assert int(idx.min()) >= 0 and int(idx.max()) < 5
  assert set(variables["vq"]["quantizer"]) == {"count", "sum"}
  chex.assert_shape(variables["vq"]["quantizer"]["sum"], (5, 2))
  chex.assert_shape(decoded, (3, *SHAPE))


def test_vq_codebook_dim_must_divide_the_code():
  with pytest.raises(ConfigError, match="codebook_dim=4 does not divide"):
    build_model(ModelConfig(kind="vq", widths=(16, 6), codebook_dim=4), SHAPE)


def test_sampling_from_the_prior():
  model, variables = _init(kind="vae", widths=(16, 6))
  images = sample(model, variables, jax.random.key(2), 5)
  chex.assert_shape(images, (5, *SHAPE))
  assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
  other = sample(model, variables, jax.random.key(3), 5)
  assert not np.allclose(images, other)


@pytest.mark.parametrize("backbone", ["dense", "conv"])
def test_dropout_only_in_training_and_from_its_own_key(backbone):
  model, variables = _init(dropout=0.5, **BACKBONES[backbone])
  plain, _ = _init(dropout=0.0, **BACKBONES[backbone])  # Dropout has no parameters.

  @jax.jit
  def outputs(variables):
    train = lambda k: model.apply(variables, X, train=True, rngs={"dropout": jax.random.key(k)})
    return (model.apply(variables, X), plain.apply(variables, X), train(0), train(0),
            train(1))

  test, without, a, again, b = outputs(variables)
  np.testing.assert_array_equal(test, without)
  np.testing.assert_array_equal(a, again)
  assert not np.allclose(a, b)


@pytest.mark.parametrize("kw,expected", [
    (dict(kind="plain"), ""),
    (dict(kind="sparse", sparsity="kl"), "sigmoid"),
    (dict(kind="sparse", sparsity="l1"), "relu"),
    (dict(kind="contractive"), "sigmoid"),
    (dict(kind="vae"), "linear"),
    (dict(kind="vq"), "linear"),
    (dict(kind="plain", code_activation="tanh"), "tanh"),
])
def test_code_activation_by_kind(kw, expected):
  assert code_activation(ModelConfig(**kw)) == expected


def test_code_activation_is_applied():
  model, variables = _init(kind="sparse", widths=(16, 6))
  h = model.apply(variables, X * 50.0, method="encode")
  assert float(h.min()) >= 0.0 and float(h.max()) <= 1.0
  model, variables = _init(kind="plain", code_activation="linear", **BACKBONES["conv_spatial"])
  assert float(model.apply(variables, X, method="encode").min()) < 0.0  # No relu.


@pytest.mark.parametrize("kw,message", [
    (dict(kind="sparse", sparsity="kl", code_activation="relu"), "needs a code in"),
    (dict(kind="vae", code_activation="sigmoid"), "Gaussian code"),
])
def test_code_activations_that_cannot_work(kw, message):
  with pytest.raises(ConfigError, match=message):
    build_model(ModelConfig(**kw), SHAPE)


def test_every_kind_keeps_the_plain_parameters_of_its_backbone():
  # A sparse, denoising or contractive model is the plain one with a code activation.
  _, plain = _init(kind="plain", widths=(16, 6))
  for kind in ("sparse", "denoising", "contractive"):
    _, other = _init(kind=kind, widths=(16, 6))
    assert jax.tree.structure(plain) == jax.tree.structure(other)
    chex.assert_trees_all_equal_shapes(plain, other)
  _, vae_vars = _init(kind="vae", widths=(16, 6))
  assert vae_vars["params"]["encoder"]["code"]["kernel"].shape == (16, 12)  # Mean and log-var.

"""Denoising: corruptions as specified; the trained model removes noise."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flaxae import config as config_lib
from flaxae.config import Config, ModelConfig
from flaxae.errors import ConfigError
from flaxae.objectives.noise import corrupt, parse_noise

from tests.objectives.conftest import EPOCHS, SIGMOID_32
from tests.objectives.helpers import Trainer, digits

X = jnp.full((64, 8, 8, 1), 0.5)
KEYS = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(0), i))(jnp.arange(64))


def test_gaussian_noise_is_clipped_to_the_unit_interval():
  y = np.asarray(corrupt(X, KEYS, "gaussian:0.5"))
  assert y.min() >= 0.0 and y.max() <= 1.0
  assert 0.3 < np.std(y) < 0.5  # σ = 0.5, shrunk by the clipping.


def test_masking_drops_a_fraction_p():
  y = np.asarray(corrupt(X, KEYS, "mask:0.3"))
  assert set(np.unique(y)) <= {0.0, 0.5}
  assert abs((y == 0).mean() - 0.3) < 0.03


def test_salt_and_pepper_sets_a_fraction_p_to_zero_or_one():
  y = np.asarray(corrupt(X, KEYS, "salt_pepper:0.2"))
  assert abs((y != 0.5).mean() - 0.2) < 0.03
  assert abs((y == 1.0).mean() - (y == 0.0).mean()) < 0.03


def test_each_example_gets_its_own_noise():
  y = np.asarray(corrupt(X, KEYS, "mask:0.5"))
  assert not np.array_equal(y[0], y[1])
  np.testing.assert_array_equal(y[:8], corrupt(X[:8], KEYS[:8], "mask:0.5"))


@pytest.mark.parametrize("spec", ["gauss:0.5", "gaussian", "mask:1.5", "mask:x",
                                  "salt_pepper:-0.1"])
def test_bad_noise_is_a_config_error(spec):
  with pytest.raises(ConfigError, match="noise"):
    parse_noise(spec)
  with pytest.raises(ConfigError, match="noise"):
    config_lib.validate(Config(model=ModelConfig(kind="denoising", noise=spec)))


def test_denoising_output_beats_the_noisy_input(plain_sigmoid):
  # (That it also beats a plain model on noisy input needs longer training than
  # a test has: experiments/family.py checks it on Fashion-MNIST.)
  model = ModelConfig(kind="denoising", noise="mask:0.5", **SIGMOID_32)
  trained = Trainer(model, digits()[0]).epochs(EPOCHS)
  test_x = digits()[1]
  mine = trained.figures(test_x, noise="mask:0.5")
  plain = plain_sigmoid.figures(test_x, noise="mask:0.5")
  assert mine["noisy_psnr"] == pytest.approx(plain["noisy_psnr"])  # The same noise.
  assert mine["denoised_psnr"] > mine["noisy_psnr"] + 2.0

"""VAE: the bound's pieces as written; training improves the ELBO; IWAE is tighter."""

import math

import jax
import jax.numpy as jnp
import numpy as np

from flaxae.config import ModelConfig
from flaxae.objectives import vae

from tests.objectives.helpers import Trainer, digits


def test_kl_warmup_is_linear_then_beta():
  cfg = ModelConfig(kind="vae", beta=2.0, kl_warmup_steps=4)
  weights = [float(vae.kl_weight(cfg, jnp.asarray(s))) for s in range(6)]
  np.testing.assert_allclose(weights, [0.5, 1.0, 1.5, 2.0, 2.0, 2.0])
  assert float(vae.kl_weight(ModelConfig(kind="vae", beta=0.5), jnp.asarray(0))) == 0.5


def test_kl_and_log_densities_agree():
  mean = jnp.array([[0.3, -1.0]])
  logvar = jnp.array([[-0.5, 0.4]])
  # KL(q‖p) = E_q[log q − log p], estimated with many samples.
  z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(jax.random.key(0), (20000, 2))
  mc = jnp.mean(vae.log_normal(z, mean, logvar) - vae.log_normal(z, 0 * z, 0 * z))
  np.testing.assert_allclose(vae.kl_standard_normal(mean, logvar)[0], mc, rtol=0.03)


def test_likelihoods_in_nats_per_image():
  x = jnp.array([[1.0, 0.0, 1.0]])
  logits = jnp.array([[2.0, -1.0, 0.0]])
  bern = ModelConfig(kind="vae", likelihood="bernoulli")
  p = jax.nn.sigmoid(logits)
  expected = -jnp.sum(x * jnp.log(p) + (1 - x) * jnp.log(1 - p))
  np.testing.assert_allclose(vae.neg_log_likelihood(bern, logits, x)[0], expected, rtol=1e-6)
  gauss = ModelConfig(kind="vae", likelihood="gaussian", likelihood_std=0.2)
  expected = -jnp.sum(-0.5 * ((x - p) / 0.2) ** 2 - math.log(0.2) - 0.5 * math.log(2 * math.pi))
  np.testing.assert_allclose(vae.neg_log_likelihood(gauss, logits, x)[0], expected, rtol=1e-6)


def test_elbo_improves_and_the_iwae_bound_is_tighter():
  model = ModelConfig(kind="vae", widths=(64, 8), iwae_samples=32)
  trainer = Trainer(model, digits()[0])
  test_x = digits()[1]
  elbos = []
  for epochs in (1, 2, 4):
    figures = trainer.epochs(epochs).figures(test_x)
    elbos.append(figures["elbo"])
    # −log p(x) ≤ IWAE NLL ≤ −ELBO: the importance-weighted bound is tighter.
    assert figures["iwae_nll"] < -figures["elbo"]
    assert figures["loss"] == -figures["elbo"]
    assert figures["kl"] > 0
  assert elbos[0] < elbos[1] < elbos[2]

"""The variational autoencoder's model: a Gaussian encoder and a decoder.

The loss (ELBO, β, warm-up, IWAE) lives in :mod:`flaxae.objectives.vae`; this
module only maps images to the posterior's mean and log-variance and codes to
logits, as big_vision's VAE does (``encode`` / ``reparametrize`` / ``decode``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from flaxae.models.autoencoder import Autoencoder


def reparametrize(mean: jnp.ndarray, logvar: jnp.ndarray,
                  eps: jnp.ndarray) -> jnp.ndarray:
  """``z = mean + exp(logvar / 2)·eps``, all of the code's shape."""
  return mean + jnp.exp(0.5 * logvar) * eps


class VariationalAutoencoder(Autoencoder):
  """A Gaussian posterior ``q(z|x) = N(mean, exp(logvar))`` and a decoder.

  The backbone's encoder produces a code twice as wide (twice the channels of
  a spatial code), split into the mean and the log-variance; the log-variance
  is clamped to ``[logvar_min, logvar_max]``. ``encode`` returns the mean and
  ``__call__`` decodes it (the deterministic reconstruction).

  Attributes:
    logvar_min: Lower clamp of the log-variance.
    logvar_max: Upper clamp of the log-variance.
  """

  logvar_min: float = -10.0
  logvar_max: float = 10.0

  def setup(self):
    self.encoder = self._encoder(code_factor=2)
    self.decoder = self._decoder()

  def posterior(self, x: jnp.ndarray,
                train: bool = False) -> tuple[jnp.ndarray, jnp.ndarray]:
    """``(B, *feature_shape)`` → mean and log-variance, each ``(B, *code_shape)``."""
    h = self._encoder_output(x, train)
    mean, logvar = jnp.split(h, 2, axis=-1)
    return mean, jnp.clip(logvar, self.logvar_min, self.logvar_max)

  def encode(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    """The posterior mean ``(B, *code_shape)``."""
    return self.posterior(x, train)[0]


def sample(model: VariationalAutoencoder, variables, key: jax.Array,
           n: int) -> jnp.ndarray:
  """``n`` images ``(n, *feature_shape)`` in [0, 1] decoded from ``z ~ N(0, I)``.

  The images are the likelihood's means (``sigmoid`` of the logits).
  """
  z = jax.random.normal(key, (n, *model.code_shape))
  return jax.nn.sigmoid(model.apply(variables, z, method="decode"))

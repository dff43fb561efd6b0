"""The plain autoencoder: reconstruct the input, nothing more."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from flaxae import losses
from flaxae.config import ModelConfig
from flaxae.objectives.base import ObjectiveOutput, reconstruction_metrics


def plain(model, variables, x: jnp.ndarray, rng: jax.Array,
          cfg: ModelConfig) -> ObjectiveOutput:
  """Mean reconstruction loss of ``x`` (``(B, ...)`` in [0, 1])."""
  del rng  # Deterministic.
  logits = model.apply(variables, x)
  per_example = losses.reconstruction_per_example(cfg.loss, logits, x)
  loss = per_example.mean()
  return ObjectiveOutput(loss, reconstruction_metrics(loss, logits, x), {})

"""The plain autoencoder: reconstruct the input, nothing more."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from flaxae import losses
from flaxae.config import ModelConfig
from flaxae.objectives.base import (BatchInfo, ObjectiveOutput, reconstruction_metrics,
                                    train_apply, with_input_noise)


def plain(model, variables, x: jnp.ndarray, rng: jax.Array, cfg: ModelConfig,
          info: BatchInfo | None = None) -> ObjectiveOutput:
  """Mean reconstruction loss of ``x`` (``(B, ...)`` in [0, 1])."""
  info = info or BatchInfo.whole(x.shape[0])
  logits = train_apply(model, variables, rng, cfg, info,
                       with_input_noise(x, rng, cfg, info))
  per_example = losses.reconstruction_per_example(cfg.loss, logits, x)
  loss = per_example.mean()
  return ObjectiveOutput(loss, reconstruction_metrics(loss, logits, x), {})

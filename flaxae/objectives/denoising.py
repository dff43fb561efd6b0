"""The denoising autoencoder: reconstruct the clean input from a corrupted one.

The corruption (``model.noise``, see :mod:`flaxae.objectives.noise`) is drawn
inside the compiled step, one key per example folded from the step key and the
example's global position, so it does not depend on the number of devices.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from flaxae import losses
from flaxae.config import ModelConfig
from flaxae.objectives.base import (CORRUPTION_TAG, BatchInfo, ObjectiveOutput,
                                    reconstruction_metrics, train_apply,
                                    with_input_noise)
from flaxae.objectives.noise import corrupt


def denoising(model, variables, x: jnp.ndarray, rng: jax.Array, cfg: ModelConfig,
              info: BatchInfo | None = None) -> ObjectiveOutput:
  """Reconstruction loss of the clean ``x`` ``(B, ...)`` from its corruption."""
  info = info or BatchInfo.whole(x.shape[0])
  noisy = corrupt(x, info.keys(rng, CORRUPTION_TAG), cfg.noise)
  logits = train_apply(model, variables, rng, cfg, info,
                       with_input_noise(noisy, rng, cfg, info))
  loss = losses.reconstruction_per_example(cfg.loss, logits, x).mean()
  return ObjectiveOutput(loss, reconstruction_metrics(loss, logits, x), {})

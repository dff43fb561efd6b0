"""The sparse autoencoder: reconstruction plus a sparsity penalty on the code.

``sparsity=kl``: β·Σⱼ KL(ρ‖ρ̂ⱼ), with ρ̂ⱼ the mean activation of the sigmoid
code unit j over the (global) batch. ``sparsity=l1``: λ·Σⱼ|hⱼ| per example.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from flaxae import losses
from flaxae.config import ModelConfig
from flaxae.objectives.base import (BatchInfo, ObjectiveOutput, flat_code, train_apply,
                                    with_input_noise)

NEAR_ZERO = 0.05  # |h| below this counts as a near-zero activation (ρ's default).
_EPS = 1e-6


def kl_bernoulli(rho: float, rho_hat: jnp.ndarray) -> jnp.ndarray:
  """``KL(ρ‖ρ̂)`` between Bernoulli means, elementwise; ``ρ̂`` is clipped into (0, 1)."""
  rho_hat = jnp.clip(rho_hat, _EPS, 1.0 - _EPS)
  return (rho * jnp.log(rho / rho_hat)
          + (1.0 - rho) * jnp.log((1.0 - rho) / (1.0 - rho_hat)))


def code_statistics(h: jnp.ndarray) -> dict[str, jnp.ndarray]:
  """Per-example ``mean_activation`` and ``near_zero`` fraction of codes ``(B, ...)``."""
  h = flat_code(h)
  return {"mean_activation": jnp.mean(h, axis=-1),
          "near_zero": jnp.mean((jnp.abs(h) < NEAR_ZERO).astype(jnp.float32), axis=-1)}


def sparse(model, variables, x: jnp.ndarray, rng: jax.Array, cfg: ModelConfig,
           info: BatchInfo | None = None) -> ObjectiveOutput:
  """Reconstruction loss of ``x`` ``(B, ...)`` plus the sparsity penalty."""
  info = info or BatchInfo.whole(x.shape[0])
  h = train_apply(model, variables, rng, cfg, info, with_input_noise(x, rng, cfg, info),
                  method="encode")
  logits = train_apply(model, variables, rng, cfg, info, h, method="decode")
  recon = losses.reconstruction_per_example(cfg.loss, logits, x).mean()
  code = flat_code(h)
  if cfg.sparsity == "kl":
    penalty = cfg.sparsity_weight * jnp.sum(
        kl_bernoulli(cfg.sparsity_target, info.mean(code)))
  else:
    penalty = cfg.sparse_l1 * jnp.mean(jnp.sum(jnp.abs(code), axis=-1))
  loss = recon + penalty
  stats = jax.tree.map(jnp.mean, code_statistics(h))
  return ObjectiveOutput(loss, {"loss": loss, "recon": recon, "sparsity": penalty,
                                **stats}, {})


def eval_figures(model, variables, x: jnp.ndarray, rng: jax.Array, cfg: ModelConfig,
                 info: BatchInfo | None = None) -> dict[str, jnp.ndarray]:
  """Per-example ``mean_activation`` and ``near_zero`` of the test codes."""
  del rng, cfg, info
  return code_statistics(model.apply(variables, x, method="encode"))

"""The variational autoencoder: the negative ELBO, in nats per image.

``loss = E_q[−log p(x|z)] + β_t·KL(q(z|x) ‖ N(0, I))`` with one reparametrised
sample per example and the KL in closed form; ``β_t`` rises linearly from 0 to
``beta`` over ``kl_warmup_steps``. Evaluation adds the importance-weighted
bound with K = ``iwae_samples``: ``log p(x) ≥ log (1/K) Σₖ p(x, zₖ)/q(zₖ|x)``,
which is never looser than the ELBO in expectation.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from flaxae import losses
from flaxae.config import ModelConfig
from flaxae.models.vae import reparametrize
from flaxae.objectives.base import (SAMPLE_TAG, BatchInfo, ObjectiveOutput, per_example,
                                    train_apply, with_input_noise)

_LOG_2PI = math.log(2.0 * math.pi)


def _sum_per_example(x: jnp.ndarray) -> jnp.ndarray:
  return x.reshape(x.shape[0], -1).sum(axis=-1)


def neg_log_likelihood(cfg: ModelConfig, logits: jnp.ndarray,
                       x: jnp.ndarray) -> jnp.ndarray:
  """``−log p(x|z)`` ``(B,)`` in nats, summed over pixels, from decoder logits.

  Bernoulli: binary cross-entropy from the logits. Gaussian: mean
  ``sigmoid(logits)``, std ``cfg.likelihood_std``.
  """
  if cfg.likelihood == "bernoulli":
    return _sum_per_example(losses.bce_with_logits(logits, x))
  std = cfg.likelihood_std
  z = (x - jax.nn.sigmoid(logits)) / std
  return _sum_per_example(0.5 * jnp.square(z) + math.log(std) + 0.5 * _LOG_2PI)


def kl_standard_normal(mean: jnp.ndarray, logvar: jnp.ndarray) -> jnp.ndarray:
  """``KL(N(mean, exp(logvar)) ‖ N(0, I))`` ``(B,)``, summed over the code."""
  return _sum_per_example(0.5 * (jnp.exp(logvar) + jnp.square(mean) - 1.0 - logvar))


def log_normal(z: jnp.ndarray, mean: jnp.ndarray, logvar: jnp.ndarray) -> jnp.ndarray:
  """``log N(z; mean, exp(logvar))`` ``(B,)``, summed over the code."""
  return _sum_per_example(
      -0.5 * (jnp.square(z - mean) * jnp.exp(-logvar) + logvar + _LOG_2PI))


def kl_weight(cfg: ModelConfig, step: jnp.ndarray) -> jnp.ndarray:
  """``β_t``: ``beta``, ramped up linearly over the first ``kl_warmup_steps``."""
  if not cfg.kl_warmup_steps:
    return jnp.asarray(cfg.beta, jnp.float32)
  ramp = jnp.minimum(1.0, (step.astype(jnp.float32) + 1.0) / cfg.kl_warmup_steps)
  return cfg.beta * ramp


def vae(model, variables, x: jnp.ndarray, rng: jax.Array, cfg: ModelConfig,
        info: BatchInfo | None = None) -> ObjectiveOutput:
  """The negative (β-weighted) ELBO of ``x`` ``(B, ...)``, nats per image."""
  info = info or BatchInfo.whole(x.shape[0])
  mean, logvar = train_apply(model, variables, rng, cfg, info,
                             with_input_noise(x, rng, cfg, info), method="posterior")
  eps = per_example(info.keys(rng, SAMPLE_TAG),
                    lambda k: jax.random.normal(k, mean.shape[1:], mean.dtype))
  logits = train_apply(model, variables, rng, cfg, info,
                       reparametrize(mean, logvar, eps), method="decode")
  nll = neg_log_likelihood(cfg, logits, x).mean()
  kl = kl_standard_normal(mean, logvar).mean()
  weight = kl_weight(cfg, info.step)
  loss = nll + weight * kl
  return ObjectiveOutput(loss, {"loss": loss, "elbo": -(nll + kl), "nll": nll, "kl": kl,
                                "kl_weight": weight}, {})


def eval_figures(model, variables, x: jnp.ndarray, rng: jax.Array, cfg: ModelConfig,
                 info: BatchInfo | None = None) -> dict[str, jnp.ndarray]:
  """Per-example bounds in nats per image, from K = ``iwae_samples`` samples.

  ``elbo``: ``E_q[log p(x|z)] − KL`` (the expectation over the K samples, the
  KL in closed form); ``loss``: ``−elbo``; ``iwae_nll``: the negative IWAE
  bound (an upper bound of ``−log p(x)``); ``kl``; ``recon_nll``. Each
  example's samples are keyed by its position in the evaluated set (``info``).
  """
  mean, logvar = model.apply(variables, x, method="posterior")
  info = info or BatchInfo.whole(x.shape[0])
  keys = info.keys(rng, SAMPLE_TAG)

  def one(k):
    eps = jax.vmap(lambda key: jax.random.normal(jax.random.fold_in(key, k),
                                                 mean.shape[1:], mean.dtype))(keys)
    z = reparametrize(mean, logvar, eps)
    nll = neg_log_likelihood(cfg, model.apply(variables, z, method="decode"), x)
    log_w = -nll + log_normal(z, jnp.zeros_like(z), jnp.zeros_like(z)) - log_normal(
        z, mean, logvar)
    return nll, log_w

  nll, log_w = lax.map(one, jnp.arange(cfg.iwae_samples))  # (K, B) each.
  kl = kl_standard_normal(mean, logvar)
  elbo = -nll.mean(axis=0) - kl
  iwae = jax.nn.logsumexp(log_w, axis=0) - math.log(cfg.iwae_samples)
  return {"loss": -elbo, "elbo": elbo, "iwae_nll": -iwae, "kl": kl,
          "recon_nll": nll.mean(axis=0)}

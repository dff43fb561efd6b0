"""The vector-quantised autoencoder (VQ-VAE).

``loss = recon + commitment·‖z_e − sg(z_q)‖²`` (+ the codebook loss
``‖sg(z_e) − z_q‖²`` when the codebook is learned by gradient). With
``vq_ema`` the codebook follows exponential moving averages of the usage and
of the sum of the encoder outputs assigned to each code (van den Oord et al.,
2017, appendix), kept in the ``"vq"`` collection of the train state's
``model_state``; codes whose average usage falls below ``dead_code_restart/K``
restart at an encoder output drawn from the global batch.

Every statistic is taken over the global batch (:class:`BatchInfo`), so the
updates are the same on one device as on many.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from flaxae import losses
from flaxae.config import ModelConfig
from flaxae.models.vq import VQ_COLLECTION
from flaxae.objectives.base import (RESTART_TAG, BatchInfo, ObjectiveOutput, train_apply,
                                    with_input_noise)


def _per_example_mean(x: jnp.ndarray) -> jnp.ndarray:
  return x.reshape(x.shape[0], -1).mean(axis=-1)


def perplexity(usage: jnp.ndarray) -> jnp.ndarray:
  """``exp(H(usage))`` of a distribution over the codes ``(K,)``: 1 to K."""
  usage = usage / jnp.maximum(jnp.sum(usage), 1e-12)
  return jnp.exp(-jnp.sum(jnp.where(usage > 0, usage * jnp.log(jnp.maximum(usage, 1e-30)),
                                    0.0)))


def code_usage(idx: jnp.ndarray, codebook_size: int) -> jnp.ndarray:
  """Per-example share of each code ``(B, K)`` from indices ``(B, ...)``."""
  onehot = jax.nn.one_hot(idx.reshape(idx.shape[0], -1), codebook_size)
  return onehot.mean(axis=1)


def ema_update(state: dict[str, jnp.ndarray], z_e: jnp.ndarray, idx: jnp.ndarray,
               rng: jax.Array, cfg: ModelConfig,
               info: BatchInfo) -> tuple[dict[str, jnp.ndarray], jnp.ndarray]:
  """The codebook's moving averages after one batch, and the number of restarts.

  Args:
    state: ``count`` ``(K,)`` and ``sum`` ``(K, D)``.
    z_e: ``(B, ..., D)`` encoder outputs.
    idx: ``(B, ...)`` their codes.
    rng: The step key.
    cfg: The model config.
    info: Where the batch sits in the global batch.
  """
  k, d = cfg.codebook_size, z_e.shape[-1]
  b = z_e.shape[0]
  flat = jax.lax.stop_gradient(z_e).reshape(b, -1, d)  # (B, P, D)
  positions = flat.shape[1]
  onehot = jax.nn.one_hot(idx.reshape(b, -1), k)  # (B, P, K)
  usage = info.average(onehot.mean(axis=(0, 1)))
  sums = info.average(jnp.einsum("bpk,bpd->kd", onehot, flat) / (b * positions))
  gamma = cfg.ema_decay
  count = gamma * state["count"] + (1.0 - gamma) * usage
  total = gamma * state["sum"] + (1.0 - gamma) * sums
  restarts = jnp.zeros((), jnp.float32)
  if cfg.dead_code_restart:
    dead = count < cfg.dead_code_restart / k
    example_key, position_key = jax.random.split(jax.random.fold_in(rng, RESTART_TAG))
    example = jax.random.randint(example_key, (k,), 0, info.global_size)
    position = jax.random.randint(position_key, (k,), 0, positions)
    mine = (info.index[None, :] == example[:, None]).astype(flat.dtype)  # (K, B)
    fresh = info.total(jnp.einsum("kb,bkd->kd", mine, flat[:, position, :]))
    count = jnp.where(dead, 1.0 / k, count)
    total = jnp.where(dead[:, None], fresh / k, total)
    restarts = jnp.sum(dead.astype(jnp.float32))
  return {"count": count, "sum": total}, restarts


def vq(model, variables, x: jnp.ndarray, rng: jax.Array, cfg: ModelConfig,
       info: BatchInfo | None = None) -> ObjectiveOutput:
  """Reconstruction, commitment (and codebook) losses of ``x`` ``(B, ...)``."""
  info = info or BatchInfo.whole(x.shape[0])
  out = train_apply(model, variables, rng, cfg, info, with_input_noise(x, rng, cfg, info),
                    method="forward")
  recon = losses.reconstruction_per_example(cfg.loss, out.logits, x).mean()
  commit = _per_example_mean(
      jnp.square(out.z_e - jax.lax.stop_gradient(out.z_q))).mean()
  loss = recon + cfg.commitment * commit
  metrics = {"recon": recon, "commitment": commit}
  if not cfg.vq_ema:
    codebook_loss = _per_example_mean(
        jnp.square(jax.lax.stop_gradient(out.z_e) - out.z_q)).mean()
    loss = loss + codebook_loss
    metrics["codebook_loss"] = codebook_loss
  usage = info.average(code_usage(out.idx, cfg.codebook_size).mean(axis=0))
  metrics.update(loss=loss, perplexity=perplexity(usage),
                 codes_used=jnp.mean((usage > 0).astype(jnp.float32)))
  model_state = {}
  if cfg.vq_ema:
    quantizer, restarts = ema_update(variables[VQ_COLLECTION]["quantizer"], out.z_e,
                                     out.idx, rng, cfg, info)
    model_state = {VQ_COLLECTION: {"quantizer": quantizer}}
    metrics["restarts"] = restarts
  return ObjectiveOutput(loss, metrics, model_state)


def eval_figures(model, variables, x: jnp.ndarray, rng: jax.Array, cfg: ModelConfig,
                 info: BatchInfo | None = None) -> dict[str, jnp.ndarray]:
  """Per-example ``code_usage`` ``(B, K)`` and ``commitment`` ``(B,)``."""
  del rng, info
  out = model.apply(variables, x, method="forward")
  return {"code_usage": code_usage(out.idx, cfg.codebook_size),
          "commitment": _per_example_mean(jnp.square(out.z_e - out.z_q))}


def summarize(means: dict[str, np.ndarray], cfg: ModelConfig) -> dict[str, float]:
  """Turns the test set's mean ``code_usage`` into ``perplexity`` and ``codes_used``."""
  usage = np.asarray(means.pop("code_usage"), np.float64)
  p = usage / max(usage.sum(), 1e-12)
  nz = p[p > 0]
  return {"perplexity": float(np.exp(-np.sum(nz * np.log(nz)))),
          "codes_used": float(np.mean(p > 0)),
          "bits_per_code": float(np.log2(cfg.codebook_size))}

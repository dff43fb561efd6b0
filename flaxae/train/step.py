"""The pure train and eval steps. Nothing here is jitted: see ``parallel``."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from flaxae import losses, objectives
from flaxae.config import ModelConfig
from flaxae.errors import ConfigError
from flaxae.objectives import BatchInfo, Objective
from flaxae.objectives.base import CORRUPTION_TAG
from flaxae.train.state import TrainState

AUTO_MICRO_BATCH = 16  # Micro-batch of conv models' automatic choice (see micro_batches).


def global_norm(tree: Any) -> jnp.ndarray:
  """``sqrt(Σ x²)`` over every leaf, as dot products.

  A dot product runs on the matmul kernels; ``optax.tree.norm``'s reductions
  (and an ``isfinite`` reduction per leaf) run as sequential loops on XLA's
  CPU backend, a measurable share of a small model's step. The norm also
  serves as the finite check of the whole tree: it is NaN or Inf exactly when
  some leaf is (or when the squares overflow float32, ~1e19 per element, a
  gradient no step should take either).
  """
  leaves = jax.tree.leaves(tree)
  return jnp.sqrt(sum(jnp.vdot(x.ravel(), x.ravel()) for x in leaves))


def micro_batches(batch_size: int, micro_batch_size: int, cfg: ModelConfig) -> int:
  """How many micro-batches a step splits its batch of ``batch_size`` into.

  ``micro_batch_size`` 0 is automatic: on CPU, conv models of per-example
  objectives run batches above :data:`AUTO_MICRO_BATCH` as micro-batches of
  that size when it divides the batch, so that a micro-batch's activations
  stay in the core's cache (the conv AE at batch 256 on 2 CPU cores: 1.1×
  faster than micro-batches of 64, 1.3× faster than none); every other model
  runs the whole batch at once, and so does every model on an accelerator
  (whose memory hierarchy wants the whole batch). Negative: never split.
  Positive: that size, which must divide the batch (1 micro-batch when it is
  the whole batch).
  """
  if micro_batch_size < 0:
    return 1
  if micro_batch_size == 0:
    auto = (jax.default_backend() == "cpu" and cfg.arch == "conv"
            and not objectives.kind(cfg.kind).batch_statistics
            and batch_size > AUTO_MICRO_BATCH and batch_size % AUTO_MICRO_BATCH == 0)
    return batch_size // AUTO_MICRO_BATCH if auto else 1
  if batch_size % micro_batch_size:
    raise ConfigError(
        f"train.micro_batch_size={micro_batch_size} does not divide the per-device "
        f"batch of {batch_size}")
  if micro_batch_size < batch_size and objectives.kind(cfg.kind).batch_statistics:
    raise ConfigError(
        f"model.kind={cfg.kind} takes statistics of the whole batch; it cannot be "
        "split into micro-batches (set train.micro_batch_size=-1)")
  return batch_size // micro_batch_size


def train_step(state: TrainState, batch: jnp.ndarray, *, model, objective: Objective,
               tx: optax.GradientTransformation, cfg: ModelConfig,
               axis_name: str | None = None,
               micro_batch_size: int = 0) -> tuple[TrainState, dict[str, jnp.ndarray]]:
  """One optimisation step on ``batch``: ``(state, batch) -> (state, metrics)``.

  The step's key is ``fold_in(state.key, state.step)``, so a resumed run draws
  the same randomness. With ``axis_name`` (inside ``shard_map``) ``batch`` is
  this device's shard and gradients and metrics are averaged over the axis.
  The objective gets a :class:`~flaxae.objectives.BatchInfo` with the step
  and each example's position in the global batch, from which it draws
  per-example randomness and takes batch statistics, so that one device and
  many compute the same step. ``cfg.l1_weight_penalty`` adds ``λ·Σ|w|`` for
  every kind.

  A non-finite loss or gradient leaves parameters, model state and optimizer
  state unchanged; the step is counted in ``skipped`` and ``bad_streak``.

  With ``micro_batch_size`` (see :func:`micro_batches`) the batch is cut into
  equal micro-batches run one after another (``lax.scan``), their gradients
  and metrics averaged: the same step as on the whole batch (each example
  keeps its position in the global batch, hence its randomness), with a
  working set that fits in cache.
  """
  key = jax.random.fold_in(state.key, state.step)
  if axis_name is None:
    info = BatchInfo.whole(batch.shape[0], state.step)
  else:
    info = BatchInfo.shard(batch.shape[0], state.step, axis_name)

  def loss_fn(params, batch, index):
    out = objective(model, {"params": params, **state.model_state}, batch, key, cfg,
                    info=dataclasses.replace(info, index=index))
    loss = out.loss
    if cfg.l1_weight_penalty:
      penalty = cfg.l1_weight_penalty * objectives.l1_weight_penalty(params)
      loss = loss + penalty
      out = out._replace(metrics={**out.metrics, "weight_l1": penalty})
    return loss, out

  grad_fn = jax.grad(loss_fn, has_aux=True)
  n = micro_batches(batch.shape[0], micro_batch_size, cfg)
  if n == 1:
    grads, out = grad_fn(state.params, batch, info.index)
  else:
    # Micro-batch j holds examples j, j + n, j + 2n, ...: under jit on a
    # sharded batch, every micro-batch is spread over all the devices.
    micro = jax.tree.map(
        lambda x: x.reshape(x.shape[0] // n, n, *x.shape[1:]).swapaxes(0, 1),
        (batch, info.index))
    accumulate = lambda total, m: (jax.tree.map(jnp.add, total, grad_fn(state.params, *m)),
                                   None)
    first = jax.tree.map(lambda x: x[0], micro)
    zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(grad_fn, state.params, *first))
    total, _ = lax.scan(accumulate, zeros, micro)
    grads, out = jax.tree.map(lambda x: x / n, total)
  loss, metrics, model_state = out.loss, out.metrics, out.model_state
  if axis_name is not None:
    # One all-reduce of one flat vector: every collective is a rendezvous of
    # all devices (on 2 CPU devices, one per leaf cost a fifth of the step).
    flat, unravel = jax.flatten_util.ravel_pytree((grads, loss, metrics, model_state))
    grads, loss, metrics, model_state = unravel(lax.pmean(flat, axis_name))
  model_state = {**state.model_state, **model_state}
  grad_norm = global_norm(grads)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

  def update(_):
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    return optax.apply_updates(state.params, updates), opt_state, model_state

  # The update runs only for a finite step (a select over every parameter and
  # moment instead cost 7 % of the dense AE's step on CPU).
  params, opt_state, model_state = lax.cond(
      finite, update, lambda _: (state.params, state.opt_state, state.model_state), None)
  bad = (~finite).astype(jnp.int32)
  new_state = state.replace(
      step=state.step + 1,
      params=params,
      model_state=model_state,
      opt_state=opt_state,
      skipped=state.skipped + bad,
      bad_streak=(state.bad_streak + 1) * bad,
  )
  metrics = {**metrics, "skipped": bad.astype(jnp.float32),
             "grad_norm": grad_norm}
  return new_state, metrics


def eval_step(variables, batch: jnp.ndarray, index: jnp.ndarray | None = None, *, model,
              objective: Objective, cfg: ModelConfig, rng: jax.Array,
              noise: str = "") -> dict[str, jnp.ndarray]:
  """Per-example test figures of ``batch`` ``(B, ...)``, each ``(B, ...)``.

  ``index`` ``(B,)``: each example's position in the evaluated set (default
  ``0..B-1``), which keys its random draws (corruption, the VAE's samples,
  Hutchinson's probes): the figures do not depend on the batch size or the
  number of devices.

  Every kind: ``loss`` (the configured reconstruction loss), ``bce`` and
  ``mse`` of the reconstruction; then the kind's own figures (its
  ``eval_figures``, which may replace ``loss``); with ``noise`` (say
  ``gaussian:0.5``) also ``noisy_mse`` (the corrupted input against the
  clean one) and ``denoised_mse`` (the reconstruction of the corrupted input
  against the clean one). :func:`summarize_eval` turns their means into the
  reported numbers.
  """
  del objective  # The kind's figures come from its registry entry.
  logits = model.apply(variables, batch)
  out = {
      "loss": losses.reconstruction_per_example(cfg.loss, logits, batch),
      "bce": losses.bce_per_example(logits, batch),
      "mse": losses.mse_per_example(jax.nn.sigmoid(logits), batch),
  }
  kind = objectives.kind(cfg.kind)
  info = BatchInfo.whole(batch.shape[0]) if index is None else BatchInfo(
      jnp.zeros((), jnp.int32), jnp.asarray(index, jnp.int32))
  if kind.eval_figures is not None:
    out.update(kind.eval_figures(model, variables, batch, rng, cfg, info))
  if noise:
    keys = info.keys(rng, CORRUPTION_TAG)
    noisy = objectives.corrupt(batch, keys, noise)
    out["noisy_mse"] = losses.mse_per_example(noisy, batch)
    out["denoised_mse"] = losses.mse_per_example(
        jax.nn.sigmoid(model.apply(variables, noisy)), batch)
  return out


def summarize_eval(means: dict[str, Any], cfg: ModelConfig) -> dict[str, float]:
  """The reported test figures from the test set's means of :func:`eval_step`'s.

  Adds ``psnr`` (from ``mse``), ``noisy_psnr`` and ``denoised_psnr`` (dB),
  then lets the kind turn its own figures into numbers (``summarize``).
  """
  means = dict(means)
  kind = objectives.kind(cfg.kind)
  extra = kind.summarize(means, cfg) if kind.summarize is not None else {}
  out = {k: float(v) for k, v in means.items()}
  for name in ("mse", "noisy_mse", "denoised_mse"):
    if name in out:
      out[name.replace("mse", "psnr")] = float(10.0 * np.log10(1.0 / max(out[name], 1e-12)))
  out.update(extra)
  return out

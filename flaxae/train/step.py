"""The pure train and eval steps. Nothing here is jitted: see ``parallel``."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from flaxae import losses, objectives
from flaxae.config import ModelConfig
from flaxae.objectives import BatchInfo, Objective
from flaxae.objectives.base import CORRUPTION_TAG
from flaxae.train.state import TrainState


def _all_finite(tree: Any) -> jnp.ndarray:
  leaves = jax.tree.leaves(tree)
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def train_step(state: TrainState, batch: jnp.ndarray, *, model, objective: Objective,
               tx: optax.GradientTransformation, cfg: ModelConfig,
               axis_name: str | None = None) -> tuple[TrainState, dict[str, jnp.ndarray]]:
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
  """
  key = jax.random.fold_in(state.key, state.step)
  if axis_name is None:
    info = BatchInfo.whole(batch.shape[0], state.step)
  else:
    info = BatchInfo.shard(batch.shape[0], state.step, axis_name)

  def loss_fn(params):
    out = objective(model, {"params": params, **state.model_state}, batch, key, cfg,
                    info=info)
    loss = out.loss
    if cfg.l1_weight_penalty:
      penalty = cfg.l1_weight_penalty * objectives.l1_weight_penalty(params)
      loss = loss + penalty
      out = out._replace(metrics={**out.metrics, "weight_l1": penalty})
    return loss, out

  grads, out = jax.grad(loss_fn, has_aux=True)(state.params)
  loss, metrics, model_state = out.loss, out.metrics, out.model_state
  if axis_name is not None:
    grads, loss, metrics, model_state = lax.pmean(
        (grads, loss, metrics, model_state), axis_name)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  model_state = {**state.model_state, **model_state}

  finite = _all_finite((loss, grads))
  keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
  bad = (~finite).astype(jnp.int32)
  new_state = state.replace(
      step=state.step + 1,
      params=keep(params, state.params),
      model_state=keep(model_state, state.model_state),
      opt_state=keep(opt_state, state.opt_state),
      skipped=state.skipped + bad,
      bad_streak=(state.bad_streak + 1) * bad,
  )
  metrics = {**metrics, "skipped": bad.astype(jnp.float32),
             "grad_norm": optax.tree.norm(grads)}
  return new_state, metrics


def eval_step(variables, batch: jnp.ndarray, *, model, objective: Objective,
              cfg: ModelConfig, rng: jax.Array, noise: str = "") -> dict[str, jnp.ndarray]:
  """Per-example test figures of ``batch`` ``(B, ...)``, each ``(B, ...)``.

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
  if kind.eval_figures is not None:
    out.update(kind.eval_figures(model, variables, batch, rng, cfg))
  if noise:
    keys = BatchInfo.whole(batch.shape[0]).keys(rng, CORRUPTION_TAG)
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

"""The pure train and eval steps. Nothing here is jitted: see ``parallel``."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax import lax

from flaxae import losses
from flaxae.config import ModelConfig
from flaxae.objectives import Objective
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

  A non-finite loss or gradient leaves parameters, model state and optimizer
  state unchanged; the step is counted in ``skipped`` and ``bad_streak``.
  """
  key = jax.random.fold_in(state.key, state.step)

  def loss_fn(params):
    out = objective(model, {"params": params, **state.model_state}, batch, key, cfg)
    return out.loss, out

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
              cfg: ModelConfig, rng: jax.Array) -> dict[str, jnp.ndarray]:
  """Per-example test figures: ``loss`` (the configured reconstruction loss),
  ``bce`` and ``mse`` of the reconstruction, each ``(B,)``."""
  del objective, rng  # The variants add their own figures.
  logits = model.apply(variables, batch)
  return {
      "loss": losses.reconstruction_per_example(cfg.loss, logits, batch),
      "bce": losses.bce_per_example(logits, batch),
      "mse": losses.mse_per_example(jax.nn.sigmoid(logits), batch),
  }

"""The train state: everything that changes from one step to the next."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from flaxae.train import parallel


@flax.struct.dataclass
class TrainState:
  """Parameters, optimizer state, step counter and the run's base key.

  Attributes:
    step: Number of steps taken; also the position in the data order.
    params: Model parameters.
    model_state: Non-parameter variables (for example EMA codebooks).
    opt_state: Optax state.
    rng: Raw key data of the run's base key; every step folds in ``step``.
    skipped: Steps skipped for a non-finite loss or gradient, in total.
    bad_streak: Consecutive skipped steps so far.
  """

  step: jnp.ndarray
  params: Any
  model_state: Any
  opt_state: optax.OptState
  rng: jnp.ndarray
  skipped: jnp.ndarray
  bad_streak: jnp.ndarray

  @property
  def key(self) -> jax.Array:
    return jax.random.wrap_key_data(self.rng)

  @property
  def steps_done(self) -> int:
    """The step counter as a Python int (every seed's is the same)."""
    return int(np.max(jax.device_get(parallel.fetch(self.step))))


def create_state(model, tx: optax.GradientTransformation, example: jnp.ndarray,
                 seed: int) -> TrainState:
  """Initialises a model on ``example`` (one batch) and its optimizer.

  Pure and jit-able: the caller jits it with the state's shardings so that
  parameters are born where they live.
  """
  root = jax.random.key(seed)
  init_key, run_key = jax.random.split(root)
  variables = model.init(init_key, example)
  params = variables["params"]
  model_state = {k: v for k, v in variables.items() if k != "params"}
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      model_state=model_state,
      opt_state=tx.init(params),
      rng=jax.random.key_data(run_key),
      skipped=jnp.zeros((), jnp.int32),
      bad_streak=jnp.zeros((), jnp.int32),
  )

"""The models of a run that trains several seeds at once (a state stacked on a
leading axis), one by one, and their figures summarised across seeds."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from flaxae.train import parallel
from flaxae.train.state import TrainState


def seed_variables(state: TrainState, index: int | None) -> dict[str, Any]:
  """``{"params": ..., **model_state}`` of one seed's model (None: unstacked).

  Every process must call it: the models of a multi-host run may be split
  over the processes, and are then gathered (:func:`parallel.fetch`).
  """
  models = each_seed_variables(state)
  return models[0] if index is None or len(models) == 1 else models[index]


def each_seed_variables(state: TrainState) -> list[dict[str, Any]]:
  """Every model's variables (a list of one for an unstacked state), gathered
  from the processes once for all of them; every process must call it."""
  variables = {"params": state.params, **state.model_state}
  if state.step.ndim == 0:
    return [variables]
  stacked = parallel.fetch(variables)
  return [jax.tree.map(lambda x, i=i: x[i], stacked) for i in range(state.step.shape[0])]


def across_seeds(figures: dict[str, Any]) -> dict[str, Any]:
  """Scalars stay; per-seed ``(S,)`` values become their mean, plus ``_std``
  (the sample standard deviation over the models, ``ddof=1``) and the
  ``_per_seed`` list."""
  out = {}
  for k, v in figures.items():
    v = np.asarray(v, np.float64)
    if v.ndim == 0:
      out[k] = float(v)
    else:
      out[k] = float(v.mean())
      out[f"{k}_std"] = float(v.std(ddof=1)) if v.size > 1 else 0.0
      out[f"{k}_per_seed"] = [float(x) for x in v]
  return out



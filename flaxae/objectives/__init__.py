"""Objectives: one pure loss function per autoencoder kind.

An objective is ``f(model, variables, x, rng, cfg) -> ObjectiveOutput``; the
train step is the same for all of them.
"""

from __future__ import annotations

from typing import Callable

from flaxae.errors import ConfigError
from flaxae.objectives.base import ObjectiveOutput, reconstruction_metrics
from flaxae.objectives.plain import plain

Objective = Callable[..., ObjectiveOutput]

OBJECTIVES: dict[str, Objective] = {
    "plain": plain,
}

__all__ = ["OBJECTIVES", "Objective", "ObjectiveOutput", "get",
           "reconstruction_metrics"]


def get(kind: str) -> Objective:
  """The objective registered as ``kind``."""
  if kind not in OBJECTIVES:
    raise ConfigError(
        f"unknown model.kind {kind!r}; known: {', '.join(sorted(OBJECTIVES))}")
  return OBJECTIVES[kind]

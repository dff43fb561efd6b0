"""Objectives: one pure loss function per autoencoder kind.

An objective is ``f(model, variables, x, rng, cfg, info=None) ->
ObjectiveOutput`` (see :mod:`flaxae.objectives.base`); the train step is the
same for all of them. A kind may also provide ``eval_figures(model,
variables, x, rng, cfg, info=None)`` (per-example test figures, each
``(B, ...)``; any random draw keyed by ``info``'s positions of the examples in
the evaluated set, so that the figures do not depend on the batching) and
``summarize(means, cfg)`` (turns the test set's means of those figures into
named numbers). A new kind is one new module and one entry in ``KINDS``.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

from flaxae.config import ModelConfig
from flaxae.errors import ConfigError
from flaxae.objectives import contractive, denoising, plain, sparse, vae, vq
from flaxae.objectives.base import (BatchInfo, ObjectiveOutput, l1_weight_penalty,
                                    reconstruction_metrics)
from flaxae.objectives.noise import corrupt, parse_noise

Objective = Callable[..., ObjectiveOutput]


class Kind(NamedTuple):
  """An autoencoder kind: its loss and, optionally, its own test figures.

  ``batch_statistics``: the loss or the model state depends on statistics of
  the whole batch (so the batch cannot be split into micro-batches).
  """

  objective: Objective
  eval_figures: Callable[..., dict] | None = None
  summarize: Callable[..., dict[str, float]] | None = None
  batch_statistics: bool = False


KINDS: dict[str, Kind] = {
    "plain": Kind(plain.plain),
    "sparse": Kind(sparse.sparse, sparse.eval_figures, batch_statistics=True),
    "denoising": Kind(denoising.denoising),
    "contractive": Kind(contractive.contractive, contractive.eval_figures),
    "vae": Kind(vae.vae, vae.eval_figures),
    "vq": Kind(vq.vq, vq.eval_figures, vq.summarize, batch_statistics=True),
}

OBJECTIVES: dict[str, Objective] = {name: k.objective for name, k in KINDS.items()}

__all__ = ["BatchInfo", "KINDS", "Kind", "OBJECTIVES", "Objective", "ObjectiveOutput",
           "corrupt", "eval_noise", "get", "kind", "l1_weight_penalty", "parse_noise",
           "reconstruction_metrics"]


def kind(name: str) -> Kind:
  """The kind registered as ``name``."""
  if name not in KINDS:
    raise ConfigError(
        f"unknown model.kind {name!r}; known: {', '.join(sorted(KINDS))}")
  return KINDS[name]


def get(name: str) -> Objective:
  """The objective registered as ``name``."""
  return kind(name).objective


def eval_noise(cfg: ModelConfig, noise: str | None = None) -> str:
  """The corruption to evaluate denoising with: ``noise`` if given, else the
  training corruption of a ``denoising`` model, else none (``""``)."""
  if noise is not None:
    return noise if parse_noise(noise) is not None else ""
  return cfg.noise if cfg.kind == "denoising" else ""

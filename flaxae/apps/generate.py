"""Generation and the latent space: grids, interpolation, traversals, samples.

Every function works on any trained run through ``encode`` / ``decode``;
``samples`` needs a VAE (its prior). Statistics of the code (mean, spread,
principal directions) come from the run's training set unless codes are given.

>>> run = flaxae.load("runs/digits-vae")
>>> images = latent_grid(run, n=12)              # (12, 12, H, W, C)
>>> path = interpolate(run, x[0], x[1], method="slerp")
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np

from flaxae.api import Run
from flaxae.errors import ConfigError, DataError, ShapeError


@dataclasses.dataclass(frozen=True)
class CodeStats:
  """Where a run's codes live.

  Attributes:
    mean: ``(D,)`` mean code.
    std: ``(D,)`` per-dimension standard deviation.
    axes: ``(D, D)`` principal directions (rows), by decreasing variance.
    axis_std: ``(D,)`` standard deviation along each principal direction.
  """

  mean: np.ndarray
  std: np.ndarray
  axes: np.ndarray
  axis_std: np.ndarray


def code_stats(run: Run, x: np.ndarray | None = None,
               codes: np.ndarray | None = None) -> CodeStats:
  """Statistics of the codes of ``x`` (or of ``codes``, or of the training set)."""
  if codes is None:
    if x is None:
      from flaxae.train.rundir import own_data  # pylint: disable=import-outside-toplevel
      x = own_data(run.dir, run.config, "its code statistics").train_x
    codes = run.encode(x)
  z = np.asarray(codes, np.float64)
  if z.ndim < 2 or not len(z):
    raise DataError(f"code statistics need a batch of codes (N, ...), got shape {z.shape}")
  if not np.isfinite(z).all():
    raise DataError("codes contain NaN or Inf values: no statistics of them")
  z = z.reshape(len(z), -1)
  mean = z.mean(axis=0)
  _, s, vt = np.linalg.svd(z - mean, full_matrices=False)
  axis_std = s / np.sqrt(max(len(z) - 1, 1))
  if len(axis_std) < z.shape[1]:  # Fewer codes than dimensions.
    pad = z.shape[1] - len(axis_std)
    axis_std = np.concatenate([axis_std, np.zeros(pad)])
    vt = np.concatenate([vt, np.zeros((pad, z.shape[1]))])
  return CodeStats(mean, z.std(axis=0), vt, axis_std)


def _check_count(n: int, message: str) -> None:
  if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
    raise ConfigError(f"{message}, got {n!r}")


def _code(run: Run, x: np.ndarray) -> np.ndarray:
  """The flat float64 code of one example, in any layout ``Run.encode`` takes
  one in (its own dtype: uint8 or float in [0, 1])."""
  return run.encode(np.asarray(x)[None]).reshape(-1).astype(np.float64)


def _decode(run: Run, z: np.ndarray) -> np.ndarray:
  z = np.asarray(z, np.float32)
  return run.decode(z.reshape(len(z), *run.model.code_shape))


def latent_grid(run: Run, n: int = 10, span: float = 2.0,
                stats: CodeStats | None = None) -> np.ndarray:
  """Decodes an ``n × n`` grid of a 2-D latent plane.

  A 2-D code is decoded directly over ``mean ± span·std`` of each dimension;
  a wider code over the plane through the mean code spanned by its two
  principal directions, ``± span`` standard deviations along each.

  Returns:
    Images ``(n, n, *feature_shape)``: rows go down the second direction,
    columns along the first.
  """
  _check_count(n, "a latent grid needs n ≥ 1 images a side")
  stats = stats or code_stats(run)
  if len(stats.mean) < 2:
    raise ShapeError("a latent grid needs a code of at least 2 dimensions")
  t = np.linspace(-span, span, n)
  u, v = np.meshgrid(t, t[::-1])  # v decreases down the rows, as on a plot.
  if len(stats.mean) == 2:
    z = stats.mean + np.stack([u.ravel() * stats.std[0], v.ravel() * stats.std[1]], 1)
  else:
    z = (stats.mean + np.outer(u.ravel() * stats.axis_std[0], stats.axes[0])
         + np.outer(v.ravel() * stats.axis_std[1], stats.axes[1]))
  return _decode(run, z).reshape(n, n, *run.feature_shape)


def slerp(z0: np.ndarray, z1: np.ndarray, t: np.ndarray) -> np.ndarray:
  """Spherical interpolation ``(len(t), D)`` between ``z0`` and ``z1`` (White, 2016);
  linear where the two are (nearly) parallel."""
  z0, z1 = np.asarray(z0, np.float64), np.asarray(z1, np.float64)
  t = np.asarray(t, np.float64)[:, None]
  n0, n1 = np.linalg.norm(z0), np.linalg.norm(z1)
  if n0 == 0 or n1 == 0:
    return (1 - t) * z0 + t * z1
  omega = np.arccos(np.clip(np.dot(z0 / n0, z1 / n1), -1.0, 1.0))
  if np.sin(omega) < 1e-6:
    return (1 - t) * z0 + t * z1
  return (np.sin((1 - t) * omega) * z0 + np.sin(t * omega) * z1) / np.sin(omega)


def interpolate(run: Run, x0: np.ndarray, x1: np.ndarray, n: int = 8,
                method: Literal["linear", "slerp"] = "linear") -> np.ndarray:
  """Decodes ``n`` codes on the path between the codes of two examples.

  Returns:
    Images ``(n, *feature_shape)``, from ``x0``'s reconstruction to ``x1``'s.
  """
  _check_count(n, "an interpolation needs n ≥ 1 images")
  z0, z1 = _code(run, x0), _code(run, x1)  # Each in its own layout and dtype.
  t = np.linspace(0.0, 1.0, n)
  if method == "linear":
    path = (1 - t)[:, None] * z0 + t[:, None] * z1
  elif method == "slerp":
    path = slerp(z0, z1, t)
  else:
    raise ConfigError(f"unknown interpolation {method!r}; known: linear, slerp")
  return _decode(run, path)


def traverse(run: Run, x: np.ndarray, dims: list[int] | None = None, n: int = 7,
             span: float = 2.5, stats: CodeStats | None = None) -> np.ndarray:
  """Moves one code dimension at a time: ``z[d] + s·std[d]`` for ``s`` in ``±span``.

  Args:
    run: The run.
    x: The example whose code is the starting point.
    dims: The dimensions to move (default: all, at most 16).
    n: Steps per dimension.
    span: How far, in standard deviations of the training codes.
    stats: Code statistics (default: of the training set).

  Returns:
    Images ``(len(dims), n, *feature_shape)``.
  """
  _check_count(n, "a traversal needs n ≥ 1 steps")
  stats = stats or code_stats(run)
  z = _code(run, x)
  dims = list(range(min(len(z), 16))) if dims is None else list(dims)
  if not dims:
    raise ConfigError("a traversal needs at least one code dimension to move")
  bad = [d for d in dims if isinstance(d, bool) or not isinstance(d, (int, np.integer))
         or not 0 <= d < len(z)]
  if bad:
    raise ShapeError(f"dimensions {bad} are outside the code's {len(z)} (indices are "
                     f"integers 0 to {len(z) - 1})")
  steps = np.linspace(-span, span, n)
  codes = np.repeat(z[None], len(dims) * n, axis=0).reshape(len(dims), n, -1)
  for i, d in enumerate(dims):
    codes[i, :, d] = z[d] + steps * max(stats.std[d], 1e-8)
  return _decode(run, codes.reshape(len(dims) * n, -1)).reshape(
      len(dims), n, *run.feature_shape)


def samples(run: Run, n: int = 16, seed: int = 0) -> np.ndarray:
  """``n`` images from the prior of a VAE run (``Run.sample``)."""
  sample = getattr(run, "sample", None)
  if sample is None:
    raise ConfigError("sampling from the prior needs a model.kind=vae run")
  return np.asarray(sample(n, seed=seed))

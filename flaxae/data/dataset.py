"""The :class:`Dataset` and :func:`load_dataset`: source → checks → split → limits.

Numpy only: the arrays reach the devices in :mod:`flaxae.train`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import numpy as np

from flaxae.config import DataConfig
from flaxae.data import sources
from flaxae.errors import DataError, ShapeError

_INT32 = np.iinfo(np.int32)


@dataclasses.dataclass(frozen=True, repr=False)
class Dataset:
  """Train and test examples, float32 in [0, 1].

  Attributes:
    name: The ``data.name`` it was loaded from.
    train_x: ``(N, H, W, C)`` images or ``(N, D)`` vectors.
    test_x: Test examples of the same feature shape.
    train_y: int32 labels of ``train_x``, or None.
    test_y: int32 labels of ``test_x``, or None.
  """

  name: str
  train_x: np.ndarray
  test_x: np.ndarray
  train_y: np.ndarray | None = None
  test_y: np.ndarray | None = None

  @property
  def feature_shape(self) -> tuple[int, ...]:
    """The shape of one example: ``(H, W, C)`` or ``(D,)``."""
    return tuple(self.train_x.shape[1:])

  @property
  def num_features(self) -> int:
    """Values per example (``H * W * C`` or ``D``)."""
    return math.prod(self.feature_shape)

  def __repr__(self) -> str:
    return (f"Dataset(name={self.name!r}, train={len(self.train_x)}, "
            f"test={len(self.test_x)}, feature_shape={self.feature_shape}, "
            f"labels={self.train_y is not None})")


def normalize(x: Any, what: str = "data") -> np.ndarray:
  """Checks an array of examples and returns it as C-contiguous float32 in [0, 1].

  uint8 is divided by 255, bool becomes 0/1, floats must already lie in [0, 1].
  Images ``(N, H, W)`` get a channel axis; ``(N, H, W, C)`` and vectors
  ``(N, D)`` keep their shape.

  Args:
    x: The examples.
    what: Names the array in error messages (e.g. ``"npy file x.npy"``).

  Raises:
    ShapeError: not 2, 3 or 4 dimensions.
    DataError: empty, a dtype other than uint8/bool/float, NaN or Inf, or
      float values outside [0, 1].
  """
  x = _as_array(x, what)
  if x.ndim not in (2, 3, 4):
    raise ShapeError(
        f"{what} has shape {x.shape}; expected N×D vectors or N×H×W[×C] images")
  if x.size == 0:
    raise DataError(f"{what} is empty (shape {x.shape})")
  if x.dtype == np.uint8:
    out = x.astype(np.float32)
    out /= np.float32(255.0)
  elif x.dtype == np.bool_:
    out = x.astype(np.float32)
  elif x.dtype.kind == "f":
    if not np.isfinite(x).all():
      raise DataError(f"{what} contains NaN or Inf values")
    lo, hi = x.min(), x.max()  # Printed in their own precision: the shortest exact digits.
    if lo < 0.0 or hi > 1.0:
      raise DataError(
          f"{what} has float values in [{lo!s}, {hi!s}]; floats must lie in "
          "[0, 1] (or pass uint8 0–255)")
    out = x.astype(np.float32)
  else:
    raise DataError(
        f"{what} has dtype {x.dtype}; expected uint8 (0–255), bool or float in [0, 1]")
  if out.ndim == 3:
    out = out[..., None]
  return np.ascontiguousarray(out)


def normalize_labels(y: Any, n: int, what: str = "labels") -> np.ndarray | None:
  """Checks labels for ``n`` examples; returns them as int32 ``(n,)`` (None stays).

  Raises:
    DataError: not integers, out of the int32 range, or not ``n`` of them.
    ShapeError: not one label per example (``(n,)`` or ``(n, 1)``).
  """
  if y is None:
    return None
  y = _as_array(y, what)
  if y.ndim == 2 and y.shape[1] == 1:
    y = y[:, 0]
  if y.ndim != 1:
    raise ShapeError(f"{what} have shape {y.shape}; expected one label per example")
  if len(y) != n:
    raise DataError(f"{what}: {len(y)} labels for {n} examples")
  if y.dtype.kind not in "iub":
    raise DataError(f"{what} have dtype {y.dtype}; expected integers")
  if len(y) and (int(y.min()) < _INT32.min or int(y.max()) > _INT32.max):
    raise DataError(f"{what} do not fit in int32 (range {y.min()}..{y.max()})")
  return np.ascontiguousarray(y, np.int32)


def _as_array(x: Any, what: str) -> np.ndarray:
  try:
    return np.asarray(x)
  except (ValueError, TypeError) as e:  # Ragged nested lists.
    raise DataError(f"{what} is not a regular array: {e}") from e


def split_indices(n: int, test_fraction: float,
                  seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Disjoint shuffled train and test indices that together cover ``range(n)``.

  The test part has ``round(n * test_fraction)`` indices; both depend only on
  ``n``, ``test_fraction`` and ``seed``.

  Raises:
    DataError: ``test_fraction`` is not in (0, 1), or one side would be empty.
  """
  if not 0.0 < test_fraction < 1.0:
    raise DataError(f"data.test_fraction must be in (0, 1), got {test_fraction}")
  n_test = int(round(n * test_fraction))
  if n_test == 0 or n_test == n:
    raise DataError(
        f"cannot split {n} examples with data.test_fraction={test_fraction}: "
        f"{'the test' if n_test == 0 else 'the training'} part would be empty")
  order = np.random.default_rng(seed).permutation(n)
  return order[n_test:], order[:n_test]


def load_dataset(cfg: DataConfig, seed: int | None = None) -> Dataset:
  """Loads, checks, splits, limits and optionally binarises a data set.

  Args:
    cfg: Which source, where, and how to split, limit and binarise.
    seed: Fixes the train/test split of sources without a test split
      (default ``cfg.split_seed``, independent of the training seed, so runs
      with different seeds are measured on the same test set).

  Returns:
    A :class:`Dataset` of float32 arrays in [0, 1] and int32 labels (or None).

  Raises:
    DataError: the set is unknown, missing, unreadable, empty, or has a wrong
      dtype, range or label count (:class:`ShapeError` for wrong shapes).
  """
  seed = cfg.split_seed if seed is None else seed
  if cfg.limit_train < 0 or cfg.limit_test < 0:
    raise DataError(
        f"data.limit_train and data.limit_test must not be negative, got "
        f"{cfg.limit_train} and {cfg.limit_test}")
  train_x, train_y, test_x, test_y = sources.get(cfg.name)(cfg)
  where = (cfg.path if cfg.name == "npy" else
           f"{cfg.name} ({cfg.dir})" if cfg.dir else cfg.name)
  train_x = normalize(train_x, f"{where} training data")
  train_y = normalize_labels(train_y, len(train_x), f"{where} training labels")
  if test_x is None:
    if test_y is not None:
      raise DataError(f"{where} has test labels but no test examples")
    train_idx, test_idx = split_indices(len(train_x), cfg.test_fraction, seed)
    test_x = train_x[test_idx]
    test_y = None if train_y is None else train_y[test_idx]
    train_x = train_x[train_idx]
    train_y = None if train_y is None else train_y[train_idx]
  else:
    test_x = normalize(test_x, f"{where} test data")
    test_y = normalize_labels(test_y, len(test_x), f"{where} test labels")
    if test_x.shape[1:] != train_x.shape[1:]:
      raise ShapeError(
          f"{where}: test examples have shape {test_x.shape[1:]} but training "
          f"examples {train_x.shape[1:]}")
    if (train_y is None) != (test_y is None):
      raise DataError(
          f"{where} has labels for its {'training' if test_y is None else 'test'} "
          "examples only")
  train_x, train_y = _limit(train_x, train_y, cfg.limit_train)
  test_x, test_y = _limit(test_x, test_y, cfg.limit_test)
  if cfg.binarize:
    train_x = binarize(train_x)
    test_x = binarize(test_x)
  return Dataset(cfg.name, np.ascontiguousarray(train_x), np.ascontiguousarray(test_x),
                 train_y, test_y)


def _limit(x: np.ndarray, y: np.ndarray | None,
           limit: int) -> tuple[np.ndarray, np.ndarray | None]:
  """The first ``limit`` examples (0: all), copied so the rest can be freed."""
  if not limit or limit >= len(x):
    return x, y
  return x[:limit].copy(), None if y is None else y[:limit].copy()


def binarize(x: np.ndarray, threshold: float = 0.5) -> np.ndarray:
  """``1.0`` where ``x >= threshold``, else ``0.0`` (float32)."""
  return (np.asarray(x) >= threshold).astype(np.float32)


def flatten(x: Any) -> np.ndarray:
  """``(N, ...)`` → ``(N, D)``, one row per example."""
  x = np.asarray(x)
  if x.ndim < 1:
    raise ShapeError(f"cannot flatten a scalar into examples (shape {x.shape})")
  return x.reshape(len(x), -1)


def as_images(x: Any, image_shape: Sequence[int] | None = None) -> np.ndarray:
  """Examples as ``(N, H, W, C)`` images.

  Args:
    x: ``(N, H, W, C)`` (returned as is), ``(N, H, W)`` (gets ``C = 1``) or
      ``(N, D)`` vectors.
    image_shape: ``(H, W)`` or ``(H, W, C)`` for vectors; without it ``D`` must
      be a square number (one channel).

  Raises:
    ShapeError: the vectors do not fit ``image_shape`` or are not square.
  """
  x = np.asarray(x)
  if x.ndim == 4:
    return x
  if x.ndim == 3:
    return x[..., None]
  if x.ndim != 2:
    raise ShapeError(f"expected (N, D), (N, H, W) or (N, H, W, C), got {x.shape}")
  if image_shape is None:
    side = math.isqrt(x.shape[1])
    if side * side != x.shape[1]:
      raise ShapeError(
          f"vectors of length {x.shape[1]} are not square images; pass image_shape")
    image_shape = (side, side)
  shape = tuple(int(s) for s in image_shape)
  if len(shape) == 2:
    shape += (1,)
  if len(shape) != 3 or math.prod(shape) != x.shape[1]:
    raise ShapeError(
        f"vectors of length {x.shape[1]} do not fit image shape {tuple(image_shape)}")
  return x.reshape(len(x), *shape)

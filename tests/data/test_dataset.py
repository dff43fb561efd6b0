"""load_dataset's checks, split, limits and binarisation; the array helpers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flaxae.config import DataConfig
from flaxae.data import (Dataset, as_images, binarize, flatten, known_names, load_dataset,
                         normalize, normalize_labels, split_indices)
from flaxae.errors import DataError, FlaxaeError, ShapeError

from tests.data.helpers import REPO_ROOT, make_images


def _npy(tmp_path: Path, array: np.ndarray, **kwargs) -> DataConfig:
  path = tmp_path / "data.npy"
  np.save(path, array, allow_pickle=array.dtype == object)
  return DataConfig(name="npy", path=str(path), **kwargs)


def _indexed(tmp_path: Path, n: int = 50, **kwargs) -> DataConfig:
  """An npz of ``n`` vectors whose first value and label is the example's index."""
  x = np.zeros((n, 3), np.uint8)
  x[:, 0] = np.arange(n)
  path = tmp_path / "indexed.npz"
  np.savez(path, x=x, y=np.arange(n))
  return DataConfig(name="npy", path=str(path), **kwargs)


def _ids(x: np.ndarray) -> np.ndarray:
  return np.round(x[:, 0] * 255).astype(int)


# --- Split ------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 500), fraction=st.floats(0.01, 0.99), seed=st.integers(0, 2**32))
def test_split_indices_partition(n: int, fraction: float, seed: int) -> None:
  n_test = round(n * fraction)
  if n_test in (0, n):
    with pytest.raises(DataError, match="would be empty"):
      split_indices(n, fraction, seed)
    return
  train, test = split_indices(n, fraction, seed)
  assert len(test) == n_test and len(train) == n - n_test
  assert not set(train) & set(test)
  np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(n))
  again = split_indices(n, fraction, seed)
  np.testing.assert_array_equal(again[0], train)
  np.testing.assert_array_equal(again[1], test)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_split_indices_bad_fraction(fraction: float) -> None:
  with pytest.raises(DataError, match="test_fraction must be in"):
    split_indices(10, fraction, 0)


def test_split_is_deterministic_and_disjoint(tmp_path: Path) -> None:
  cfg = _indexed(tmp_path, test_fraction=0.2)
  a, b, c = (load_dataset(cfg, seed=s) for s in (0, 0, 1))
  np.testing.assert_array_equal(a.train_x, b.train_x)
  np.testing.assert_array_equal(a.test_y, b.test_y)
  assert not np.array_equal(a.test_y, c.test_y)
  for ds in (a, c):
    train, test = _ids(ds.train_x), _ids(ds.test_x)
    assert len(test) == 10 and not set(train) & set(test)
    assert sorted([*train, *test]) == list(range(50))
    np.testing.assert_array_equal(train, ds.train_y)  # Labels follow examples.
    np.testing.assert_array_equal(test, ds.test_y)


def test_digits_split_is_deterministic() -> None:
  a, b = load_dataset(DataConfig(), seed=3), load_dataset(DataConfig(), seed=3)
  np.testing.assert_array_equal(a.test_x, b.test_x)
  np.testing.assert_array_equal(a.train_y, b.train_y)
  c = load_dataset(DataConfig(test_fraction=0.5), seed=3)
  assert len(c.train_x) == 899 and len(c.test_x) == 898  # round(898.5) == 898.


# --- Limits and binarisation ---------------------------------------------------


def test_limits(tmp_path: Path) -> None:
  full = load_dataset(_indexed(tmp_path))
  ds = load_dataset(_indexed(tmp_path, limit_train=7, limit_test=3))
  sizes = (len(ds.train_x), len(ds.train_y), len(ds.test_x), len(ds.test_y))
  assert sizes == (7, 7, 3, 3)
  np.testing.assert_array_equal(ds.train_x, full.train_x[:7])
  np.testing.assert_array_equal(ds.test_y, full.test_y[:3])
  big = load_dataset(_indexed(tmp_path, limit_train=10**6, limit_test=10**6))
  assert len(big.train_x) == 40 and len(big.test_x) == 10
  with pytest.raises(DataError, match="must not be negative"):
    load_dataset(_indexed(tmp_path, limit_train=-1))


def test_binarize() -> None:
  plain = load_dataset(DataConfig(limit_train=200))
  ds = load_dataset(DataConfig(limit_train=200, binarize=True))
  for got, ref in ((ds.train_x, plain.train_x), (ds.test_x, plain.test_x)):
    assert got.dtype == np.float32
    assert set(np.unique(got)) == {0.0, 1.0}
    np.testing.assert_array_equal(got, (ref >= 0.5).astype(np.float32))
  np.testing.assert_array_equal(binarize(np.array([0.2, 0.5, 0.9])), [0.0, 1.0, 1.0])


# --- Errors --------------------------------------------------------------------


@pytest.mark.parametrize("array, error, fragment", [
    (np.array([["a", "b"], ["c", "d"]]), DataError, "dtype <U1; expected uint8"),
    (np.zeros((4, 3), np.complex64), DataError, "dtype complex64"),
    (np.zeros((4, 3), np.int64), DataError, "dtype int64"),
    (np.array([[1, 2], [3, 4]], dtype=object), DataError,
     "Object arrays cannot be loaded"),
    (np.array([[0.5, np.nan]] * 5), DataError, "NaN or Inf"),
    (np.array([[0.5, np.inf]] * 5, np.float32), DataError, "NaN or Inf"),
    (np.full((5, 2), 1.5), DataError,
     r"float values in \[1.5, 1.5\]; floats must lie in \[0, 1\]"),
    (np.full((5, 2), -0.25), DataError, r"\[-0.25, -0.25\]"),
    (np.zeros((0, 3), np.uint8), DataError, "is empty"),
    (np.zeros((5, 0), np.uint8), DataError, "is empty"),
    (np.zeros(5, np.uint8), ShapeError, r"has shape \(5,\); expected N×D"),
    (np.zeros((2, 2, 2, 2, 2), np.uint8), ShapeError, r"shape \(2, 2, 2, 2, 2\)"),
])
def test_npy_bad_data(tmp_path: Path, array: np.ndarray, error: type,
                      fragment: str) -> None:
  cfg = _npy(tmp_path, array)
  with pytest.raises(error, match=fragment) as info:
    load_dataset(cfg)
  assert "\n" not in str(info.value)
  assert "data.npy" in str(info.value)


@pytest.mark.parametrize("arrays, error, fragment", [
    ({"x": make_images(10), "y": np.arange(9)}, DataError, "9 labels for 10 examples"),
    ({"x_train": make_images(4), "y_train": np.arange(4), "x_test": make_images(2),
      "y_test": np.arange(3)}, DataError, "test labels: 3 labels for 2 examples"),
    ({"x": make_images(10), "y": np.linspace(0, 1, 10)}, DataError,
     "dtype float64; expected int"),
    ({"x": make_images(10), "y": np.zeros((10, 2), int)}, ShapeError,
     "one label per example"),
    ({"x": make_images(4), "y": np.array([0, 1, 2, 2**40])}, DataError,
     "do not fit in int32"),
    ({"x_train": make_images(4), "x_test": make_images(2, 5, 4)}, ShapeError,
     r"test examples have shape \(5, 4, 1\) but training examples \(4, 5, 1\)"),
    ({"x_train": make_images(4), "x_test": make_images(2), "y_train": np.arange(4)},
     DataError, "labels for its training examples only"),
    ({"x_train": make_images(4), "y_test": np.arange(2)}, DataError,
     "y_test but no x_test"),
    ({"images": make_images(4)}, DataError, "has arrays images; expected x_train"),
    ({}, DataError, r"has arrays \(none\)"),
    ({"x": np.zeros((1, 3), np.uint8)}, DataError, "cannot split 1 examples"),
])
def test_npz_bad_data(tmp_path: Path, arrays: dict, error: type, fragment: str) -> None:
  path = tmp_path / "bad.npz"
  np.savez(path, **arrays)
  with pytest.raises(error, match=fragment):
    load_dataset(DataConfig(name="npy", path=str(path)))


def test_npy_unreadable(tmp_path: Path) -> None:
  with pytest.raises(DataError, match="needs --data.path"):
    load_dataset(DataConfig(name="npy"))
  with pytest.raises(DataError, match="missing.npy does not exist"):
    load_dataset(DataConfig(name="npy", path=str(tmp_path / "missing.npy")))
  with pytest.raises(DataError, match="is not a file"):
    load_dataset(DataConfig(name="npy", path=str(tmp_path)))
  (tmp_path / "text.npy").write_text("not numpy at all")
  with pytest.raises(DataError, match="text.npy is not a .npy or .npz file"):
    load_dataset(DataConfig(name="npy", path=str(tmp_path / "text.npy")))

  np.save(tmp_path / "ok.npy", make_images(20))
  (tmp_path / "short.npy").write_bytes((tmp_path / "ok.npy").read_bytes()[:200])
  with pytest.raises(DataError, match="cannot read .*short.npy"):
    load_dataset(DataConfig(name="npy", path=str(tmp_path / "short.npy")))

  np.savez_compressed(tmp_path / "ok.npz", x=make_images(200))
  blob = (tmp_path / "ok.npz").read_bytes()
  (tmp_path / "short.npz").write_bytes(blob[:len(blob) // 2])
  with pytest.raises(DataError, match="cannot read .*short.npz"):
    load_dataset(DataConfig(name="npy", path=str(tmp_path / "short.npz")))
  flipped = bytearray(blob)
  for i in range(100, 140):
    flipped[i] ^= 0xFF
  (tmp_path / "flipped.npz").write_bytes(bytes(flipped))
  with pytest.raises(DataError, match="cannot read .*flipped.npz"):
    load_dataset(DataConfig(name="npy", path=str(tmp_path / "flipped.npz")))


def test_unknown_name_lists_the_known_ones() -> None:
  with pytest.raises(DataError, match=r"unknown data set 'cifar'; known: digits, "
                     r"fashion_mnist, idx, mnist, npy, tfds:<name>"):
    load_dataset(DataConfig(name="cifar"))
  assert "digits" in known_names()


def test_errors_are_flaxae_errors_and_value_errors() -> None:
  with pytest.raises(FlaxaeError):
    load_dataset(DataConfig(name="nope"))
  assert issubclass(ShapeError, DataError) and issubclass(DataError, ValueError)


# --- normalize and the helpers ---------------------------------------------------


def test_normalize() -> None:
  x = normalize(np.array([[[0, 255], [51, 102]]], np.uint8))
  assert x.shape == (1, 2, 2, 1) and x.dtype == np.float32
  np.testing.assert_allclose(x[0, :, :, 0], [[0, 1], [0.2, 0.4]], rtol=1e-6)
  np.testing.assert_array_equal(normalize(np.eye(2, dtype=bool)), np.eye(2))
  vectors = np.random.default_rng(0).random((3, 7))
  np.testing.assert_allclose(normalize(vectors), vectors.astype(np.float32))
  with pytest.raises(DataError, match="not a regular array"):
    normalize([[1, 2], [3]])


def test_normalize_labels() -> None:
  y = normalize_labels(np.array([[1], [2]], np.int64), 2)
  assert y.dtype == np.int32 and y.shape == (2,)
  assert normalize_labels(None, 5) is None


def test_flatten_and_as_images() -> None:
  x = np.arange(2 * 4 * 4 * 3, dtype=np.float32).reshape(2, 4, 4, 3)
  flat = flatten(x)
  assert flat.shape == (2, 48)
  np.testing.assert_array_equal(as_images(flat, (4, 4, 3)), x)
  assert as_images(np.zeros((2, 16))).shape == (2, 4, 4, 1)
  assert as_images(np.zeros((2, 6)), (2, 3)).shape == (2, 2, 3, 1)
  assert as_images(np.zeros((2, 3, 3))).shape == (2, 3, 3, 1)
  assert as_images(x) is x
  with pytest.raises(ShapeError, match="not square"):
    as_images(np.zeros((2, 10)))
  with pytest.raises(ShapeError, match="do not fit image shape"):
    as_images(np.zeros((2, 10)), (3, 3))
  with pytest.raises(ShapeError, match="expected"):
    as_images(np.zeros(3))
  ds = Dataset("v", np.zeros((3, 6), np.float32), np.zeros((1, 6), np.float32))
  assert ds.feature_shape == (6,) and ds.num_features == 6 and ds.train_y is None


def test_import_needs_numpy_only() -> None:
  """flaxae.data (bypassing flaxae/__init__, which loads the whole API) imports no JAX."""
  code = (
      "import sys, types\n"
      "pkg = types.ModuleType('flaxae'); pkg.__path__ = [sys.argv[1]]\n"
      "sys.modules['flaxae'] = pkg\n"
      "import flaxae.data\n"
      "heavy = sorted(m for m in ('jax', 'flax', 'sklearn', 'tensorflow_datasets',"
      " 'tensorflow') if m in sys.modules)\n"
      "assert not heavy, heavy\n")
  subprocess.run([sys.executable, "-c", code, str(REPO_ROOT / "flaxae")], check=True,
                 cwd=REPO_ROOT, timeout=60)

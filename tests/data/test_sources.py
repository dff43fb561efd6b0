"""Each source loads with the right shapes, dtypes, ranges and splits."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flaxae.config import DataConfig
from flaxae.data import Dataset, load_dataset, write_idx
from flaxae.errors import DataError, ShapeError

from tests.data.helpers import MNIST_TEST_DIR, IdxFolderFactory, make_images


def _check(ds: Dataset, train: int, test: int, feature_shape: tuple[int, ...],
           labels: bool = True) -> None:
  assert ds.train_x.shape == (train, *feature_shape)
  assert ds.test_x.shape == (test, *feature_shape)
  assert ds.feature_shape == feature_shape
  assert ds.num_features == int(np.prod(feature_shape))
  for x in (ds.train_x, ds.test_x):
    assert x.dtype == np.float32 and x.flags.c_contiguous
    assert 0.0 <= x.min() and x.max() <= 1.0
  if labels:
    assert ds.train_y.shape == (train,) and ds.train_y.dtype == np.int32
    assert ds.test_y.shape == (test,) and ds.test_y.dtype == np.int32
  else:
    assert ds.train_y is None and ds.test_y is None


# --- digits -----------------------------------------------------------------


def test_digits_default() -> None:
  ds = load_dataset(DataConfig())
  _check(ds, 1438, 359, (8, 8, 1))
  assert ds.name == "digits"
  assert ds.train_x.max() == 1.0
  assert set(np.unique(ds.train_y)) == set(range(10))
  # Values were 0..16 in steps of one: now multiples of 1/16.
  np.testing.assert_array_equal(ds.train_x * 16, np.round(ds.train_x * 16))
  assert "train=1438" in repr(ds) and "(8, 8, 1)" in repr(ds)


# --- IDX folders ----------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_idx_folder_with_both_parts(idx_folder: IdxFolderFactory, gz: bool) -> None:
  folder = idx_folder(train=12, test=5, gz=gz)
  ds = load_dataset(DataConfig(name="idx", dir=str(folder)))
  _check(ds, 12, 5, (4, 5, 1))
  np.testing.assert_allclose(ds.train_x[..., 0] * 255, make_images(12, seed=1), atol=1e-4)
  np.testing.assert_array_equal(ds.test_y, np.arange(5) % 10)


@pytest.mark.parametrize("part", ["train", "test"])
def test_idx_folder_with_one_part_is_split(idx_folder: IdxFolderFactory,
                                           part: str) -> None:
  folder = idx_folder(train=20 * (part == "train"), test=20 * (part == "test"))
  ds = load_dataset(DataConfig(name="mnist", dir=str(folder), test_fraction=0.25))
  _check(ds, 15, 5, (4, 5, 1))


def test_idx_folder_without_labels(idx_folder: IdxFolderFactory) -> None:
  folder = idx_folder(train=10, test=4, labels=False)
  ds = load_dataset(DataConfig(name="idx", dir=str(folder)))
  _check(ds, 10, 4, (4, 5, 1), labels=False)


def test_idx_dotted_file_names(tmp_path: Path) -> None:
  write_idx(tmp_path / "t10k-images.idx3-ubyte", make_images(10))
  _check(load_dataset(DataConfig(name="idx", dir=str(tmp_path))), 8, 2, (4, 5, 1),
         labels=False)


def test_default_dirs_relative_to_cwd(tmp_path: Path, idx_folder: IdxFolderFactory,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
  idx_folder(train=0, test=10, folder=tmp_path / "shared" / "data" / "mnist_test")
  idx_folder(train=6, test=3, folder=tmp_path / "shared" / "data" / "fashion_mnist")
  (tmp_path / "work").mkdir()
  monkeypatch.chdir(tmp_path / "work")
  _check(load_dataset(DataConfig(name="mnist")), 8, 2, (4, 5, 1))
  _check(load_dataset(DataConfig(name="fashion_mnist")), 6, 3, (4, 5, 1))


def test_default_dir_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
  monkeypatch.chdir(tmp_path)
  with pytest.raises(DataError, match="fashion_mnist relative to the current"):
    load_dataset(DataConfig(name="fashion_mnist"))
  with pytest.raises(DataError, match=r"data.name=idx needs --data.dir"):
    load_dataset(DataConfig(name="idx"))


def test_idx_folder_errors(tmp_path: Path, idx_folder: IdxFolderFactory) -> None:
  with pytest.raises(DataError, match="does not exist"):
    load_dataset(DataConfig(name="idx", dir=str(tmp_path / "nope")))
  (tmp_path / "file").write_bytes(b"")
  with pytest.raises(DataError, match="is not a folder"):
    load_dataset(DataConfig(name="idx", dir=str(tmp_path / "file")))
  (tmp_path / "empty").mkdir()
  with pytest.raises(DataError, match="no IDX images in"):
    load_dataset(DataConfig(name="idx", dir=str(tmp_path / "empty")))

  folder = idx_folder(train=10, test=4)
  write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.zeros(3, np.uint8))
  with pytest.raises(DataError, match="has 3 labels for the 4 images"):
    load_dataset(DataConfig(name="idx", dir=str(folder)))
  write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.zeros((4, 2), np.uint8))
  with pytest.raises(ShapeError, match=r"shape \(4, 2\), not N labels"):
    load_dataset(DataConfig(name="idx", dir=str(folder)))
  (folder / "t10k-labels-idx1-ubyte.gz").unlink()
  with pytest.raises(DataError, match="labels for its training examples only"):
    load_dataset(DataConfig(name="idx", dir=str(folder)))

  write_idx(folder / "t10k-images-idx3-ubyte.gz", np.zeros((4, 6, 6), np.uint8))
  (folder / "train-labels-idx1-ubyte.gz").unlink()
  with pytest.raises(ShapeError, match=r"test examples have shape \(6, 6, 1\)"):
    load_dataset(DataConfig(name="idx", dir=str(folder)))
  write_idx(folder / "t10k-images-idx3-ubyte.gz", np.zeros(4, np.uint8))
  with pytest.raises(ShapeError, match=r"shape \(4,\), not N×H×W images"):
    load_dataset(DataConfig(name="idx", dir=str(folder)))

  raw = gzip.compress(b"\x00\x00\x08\x03" + bytes(12) + bytes(100))
  (folder / "t10k-images-idx3-ubyte.gz").write_bytes(raw[:20])
  with pytest.raises(DataError, match="truncated gzip"):
    load_dataset(DataConfig(name="idx", dir=str(folder)))

  (folder / "t10k-images-idx3-ubyte.gz").unlink()
  write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.zeros(4, np.uint8))
  with pytest.raises(DataError, match="but no t10k-images"):
    load_dataset(DataConfig(name="idx", dir=str(folder)))


def test_idx_empty_images(idx_folder: IdxFolderFactory) -> None:
  folder = idx_folder(train=0, test=0)
  write_idx(folder / "train-images-idx3-ubyte", np.zeros((0, 28, 28), np.uint8))
  with pytest.raises(DataError, match="is empty"):
    load_dataset(DataConfig(name="idx", dir=str(folder)))


# --- The real shared data sets ----------------------------------------------


def test_fashion_mnist(fashion: Dataset) -> None:
  _check(fashion, 60000, 10000, (28, 28, 1))
  assert fashion.train_x.max() == 1.0 and fashion.train_x.min() == 0.0
  np.testing.assert_array_equal(np.bincount(fashion.train_y), [6000] * 10)
  np.testing.assert_array_equal(np.bincount(fashion.test_y), [1000] * 10)
  # Exact multiples of 1/255.
  first = fashion.train_x[0] * 255
  np.testing.assert_allclose(first, np.round(first), atol=1e-4)


def test_mnist_test_split(mnist_test: Dataset) -> None:
  _check(mnist_test, 8000, 2000, (28, 28, 1))
  assert set(np.unique(mnist_test.train_y)) == set(range(10))
  # The split is fixed by the seed.
  again = load_dataset(DataConfig(name="mnist", dir=str(MNIST_TEST_DIR), limit_test=50),
                       seed=0)
  np.testing.assert_array_equal(again.test_x, mnist_test.test_x[:50])
  np.testing.assert_array_equal(again.train_y, mnist_test.train_y)


# --- .npy / .npz --------------------------------------------------------------


@pytest.mark.parametrize("array, shape", [
    (make_images(10), (4, 5, 1)),
    (make_images(10)[..., None].repeat(3, axis=-1), (4, 5, 3)),
    (make_images(10).reshape(10, 20), (20,)),
    (make_images(10).astype(np.float64) / 255, (4, 5, 1)),
    (make_images(10).astype(np.float16) / 255, (4, 5, 1)),
    (make_images(10) > 128, (4, 5, 1)),
])
def test_npy_file(tmp_path: Path, array: np.ndarray, shape: tuple[int, ...]) -> None:
  np.save(tmp_path / "a.npy", array)
  ds = load_dataset(DataConfig(name="npy", path=str(tmp_path / "a.npy")))
  _check(ds, 8, 2, shape, labels=False)
  scale = 255.0 if array.dtype == np.uint8 else 1.0
  flat = array.reshape(10, -1).astype(np.float64) / scale
  got = np.concatenate([ds.train_x, ds.test_x]).reshape(10, -1)
  np.testing.assert_allclose(np.sort(got, axis=0), np.sort(flat, axis=0), atol=1e-3)


def test_npz_with_own_test_split(tmp_path: Path) -> None:
  path = tmp_path / "d.npz"
  np.savez_compressed(path, x_train=make_images(7), y_train=np.arange(7),
                      x_test=make_images(3), y_test=np.arange(3, dtype=np.uint8))
  ds = load_dataset(DataConfig(name="npy", path=str(path)))
  _check(ds, 7, 3, (4, 5, 1))
  np.testing.assert_array_equal(ds.train_y, np.arange(7))


def test_npz_single_x_and_y_is_split(tmp_path: Path) -> None:
  path = tmp_path / "e.npz"
  np.savez(path, x=make_images(10).reshape(10, -1) / 255.0,
           y=np.arange(10).reshape(10, 1))
  ds = load_dataset(DataConfig(name="npy", path=str(path), test_fraction=0.3))
  _check(ds, 7, 3, (20,))
  # Labels follow their examples through the split (pixel 0 is the index).
  np.testing.assert_array_equal(np.round(ds.test_x[:, 0] * 255), ds.test_y)
  np.testing.assert_array_equal(np.round(ds.train_x[:, 0] * 255), ds.train_y)


def test_npz_train_only_is_split(tmp_path: Path) -> None:
  path = tmp_path / "f.npz"
  np.savez(path, x_train=make_images(10))
  ds = load_dataset(DataConfig(name="npy", path=str(path)))
  _check(ds, 8, 2, (4, 5, 1), labels=False)


# --- TensorFlow Datasets (mocked: nothing is downloaded) ----------------------


@pytest.fixture(name="tfds", scope="module")
def tfds_module() -> Any:
  """TensorFlow Datasets, imported only by the tests that use it."""
  return pytest.importorskip("tensorflow_datasets")


def test_tfds_without_known_splits_is_split(tfds: Any) -> None:
  with tfds.testing.mock_data(num_examples=10, policy=tfds.testing.MockPolicy.USE_CODE):
    ds = load_dataset(DataConfig(name="tfds:mnist"))
  _check(ds, 8, 2, (28, 28, 1))
  assert ds.name == "tfds:mnist"


def test_tfds_uses_its_test_split(tfds: Any, tmp_path: Path) -> None:
  # Metadata with train and test splits, as `tfds build` would leave it.
  builder = tfds.builder("mnist", data_dir=str(tmp_path), file_format="array_record")
  splits = tfds.core.SplitDict([
      tfds.core.SplitInfo(name=name, shard_lengths=[n], num_bytes=0)
      for name, n in (("train", 6), ("test", 6))])
  builder.info.set_splits(splits)
  Path(builder.data_dir).mkdir(parents=True)
  builder.info.write_to_directory(builder.data_dir)
  with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_FILES,
                              data_dir=str(tmp_path)):
    ds = load_dataset(DataConfig(name="tfds:mnist", dir=str(tmp_path)))
  _check(ds, 6, 6, (28, 28, 1))  # Not 5/1: the test split is the set's own.
  assert ds.train_y.max() < 10


def test_tfds_colour_images(tfds: Any) -> None:
  with tfds.testing.mock_data(num_examples=5, policy=tfds.testing.MockPolicy.USE_CODE):
    ds = load_dataset(DataConfig(name="tfds:cifar10", test_fraction=0.4))
  _check(ds, 3, 2, (32, 32, 3))


def test_tfds_errors(tfds: Any, tmp_path: Path) -> None:
  with tfds.testing.mock_data(num_examples=3, policy=tfds.testing.MockPolicy.USE_CODE):
    with pytest.raises(DataError, match="'no_such_set_xyz' is not available"):
      load_dataset(DataConfig(name="tfds:no_such_set_xyz"))
    with pytest.raises(DataError, match="has no image feature"):
      load_dataset(DataConfig(name="tfds:imdb_reviews"))
  with pytest.raises(DataError, match="needs a TFDS name"):
    load_dataset(DataConfig(name="tfds:"))
  # Real (unmocked) TFDS on an empty data dir: a clear error, no download.
  with pytest.raises(DataError, match="'mnist' is not prepared in .*never downloads"):
    load_dataset(DataConfig(name="tfds:mnist", dir=str(tmp_path)))
  assert not list(tmp_path.rglob("*.gz"))

"""Data sources: each reads raw arrays; :func:`flaxae.data.load_dataset` checks them.

Every source maps a :class:`~flaxae.config.DataConfig` to a :class:`Raw` tuple
``(train_x, train_y, test_x, test_y)``. ``test_x`` is None when the source has
no test split of its own; ``load_dataset`` then splits the training part by seed.
Heavy imports (scikit-learn, TensorFlow Datasets) happen inside the sources.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np

from flaxae.config import DataConfig
from flaxae.data.idx import read_idx
from flaxae.errors import DataError, ShapeError

Raw = tuple[Any, Any | None, Any | None, Any | None]

# Where the workplace keeps the real sets, relative to the working directory.
DEFAULT_DIRS = {
    "fashion_mnist": os.path.join("..", "shared", "data", "fashion_mnist"),
    "mnist": os.path.join("..", "shared", "data", "mnist_test"),
}
TFDS_PREFIX = "tfds:"


def digits(cfg: DataConfig) -> Raw:
  """scikit-learn's 1,797 8x8 digits (values 0–16, scaled by 1/16); no test split."""
  del cfg  # Nothing to configure.
  from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel
  bunch = load_digits()
  x = (bunch.images / 16.0).astype(np.float32)[..., None]
  return x, bunch.target, None, None


def _first_line(e: BaseException) -> str:
  """The first line of an exception's message (TFDS appends long lists)."""
  lines = str(e).strip().splitlines()
  return lines[0] if lines else type(e).__name__


# --- IDX folders ------------------------------------------------------------


def idx_dir(cfg: DataConfig) -> Path:
  """``cfg.dir``, or the workplace default for mnist / fashion_mnist."""
  if cfg.dir:
    folder = Path(cfg.dir)
  elif cfg.name in DEFAULT_DIRS:
    folder = Path(DEFAULT_DIRS[cfg.name])
    if not folder.is_dir():
      raise DataError(
          f"data.name={cfg.name} with no --data.dir looks for {folder} relative to "
          f"the current directory ({Path.cwd()}), which does not exist; set "
          "--data.dir to a folder of IDX files")
  else:
    raise DataError(f"data.name={cfg.name} needs --data.dir=FOLDER of IDX files")
  if not folder.exists():
    raise DataError(f"data folder {folder} (data.name={cfg.name}) does not exist")
  if not folder.is_dir():
    raise DataError(f"data.dir {folder} (data.name={cfg.name}) is not a folder")
  return folder


def find_idx(folder: Path, stem: str) -> Path | None:
  """``stem``, ``stem.gz`` or the dotted spelling (``train-images.idx3-ubyte``)."""
  dotted = stem.replace("-idx", ".idx")
  for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
    if (folder / name).is_file():
      return folder / name
  return None


def _read_idx_part(folder: Path,
                   part: str) -> tuple[np.ndarray, np.ndarray | None] | None:
  """The images (and labels, if there) of ``train`` or ``t10k``; None if absent."""
  images = find_idx(folder, f"{part}-images-idx3-ubyte")
  labels = find_idx(folder, f"{part}-labels-idx1-ubyte")
  if images is None:
    if labels is not None:
      raise DataError(f"{folder} has {labels.name} but no {part}-images-idx3-ubyte[.gz]")
    return None
  x = read_idx(images)
  if x.ndim not in (3, 4):
    raise ShapeError(f"{images} holds an array of shape {x.shape}, not N×H×W images")
  if labels is None:
    return x, None
  y = read_idx(labels)
  if y.ndim != 1:
    raise ShapeError(f"{labels} holds an array of shape {y.shape}, not N labels")
  if len(y) != len(x):
    raise DataError(
        f"{labels} has {len(y)} labels for the {len(x)} images in {images.name}")
  return x, y


def idx_folder(cfg: DataConfig) -> Raw:
  """A folder in the MNIST layout: ``train-*`` and/or ``t10k-*`` IDX files.

  With both parts, ``t10k`` is the test split. With only one (like
  ``mnist_test``, which has only ``t10k``), ``load_dataset`` splits it by seed.
  """
  folder = idx_dir(cfg)
  train = _read_idx_part(folder, "train")
  test = _read_idx_part(folder, "t10k")
  if train is None and test is None:
    raise DataError(
        f"no IDX images in {folder} (expected train-images-idx3-ubyte[.gz] "
        "and/or t10k-images-idx3-ubyte[.gz])")
  if train is None or test is None:
    x, y = train or test
    return x, y, None, None
  return train[0], train[1], test[0], test[1]


# --- .npy / .npz ------------------------------------------------------------

_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test", "x", "y")


def npy(cfg: DataConfig) -> Raw:
  """The user's ``.npy`` (one array) or ``.npz`` (``x_train``/``x_test``, or ``x``)."""
  if not cfg.path:
    raise DataError("data.name=npy needs --data.path=FILE.npy or FILE.npz")
  path = Path(cfg.path)
  if not path.exists():
    raise DataError(f"data file {path} does not exist")
  if not path.is_file():
    raise DataError(f"data.path {path} is not a file")
  try:
    with open(path, "rb") as f:  # Our own handle: np.load leaks it on bad zips.
      magic = f.read(6)
      if magic != b"\x93NUMPY" and magic[:2] != b"PK":  # .npz files are zip files.
        raise DataError(f"{path} is not a .npy or .npz file (unknown magic bytes)")
      f.seek(0)
      loaded = np.load(f, allow_pickle=False)
      if isinstance(loaded, np.ndarray):
        return loaded, None, None, None
      with loaded:
        arrays = {k: loaded[k] for k in loaded.files if k in _NPZ_KEYS}
        keys = sorted(loaded.files)
  except DataError:
    raise
  except ValueError as e:  # Object arrays, bad headers, truncated data.
    raise DataError(f"cannot read {path}: {_first_line(e)}") from e
  except (OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError) as e:
    raise DataError(
        f"cannot read {path} (truncated or corrupt?): {_first_line(e)}") from e
  if "x_train" in arrays:
    if "y_test" in arrays and "x_test" not in arrays:
      raise DataError(f"{path} has y_test but no x_test")
    return (arrays["x_train"], arrays.get("y_train"), arrays.get("x_test"),
            arrays.get("y_test"))
  if "x" in arrays:
    return arrays["x"], arrays.get("y"), None, None
  raise DataError(
      f"{path} has arrays {', '.join(keys) or '(none)'}; expected x_train "
      "(with optional x_test, y_train, y_test) or x (with optional y)")


# --- TensorFlow Datasets ----------------------------------------------------


def _is_int_scalar(feature: Any) -> bool:
  """Whether a TFDS feature is one integer per example (like ``ClassLabel``)."""
  try:
    return (feature is not None and tuple(feature.shape) == ()
            and np.issubdtype(np.dtype(feature.np_dtype), np.integer))
  except (AttributeError, TypeError):
    return False


def _is_prepared(builder: Any) -> bool:
  try:
    return bool(builder.is_prepared())
  except Exception:  # pylint: disable=broad-except
    return False


def tfds_source(cfg: DataConfig) -> Raw:
  """``tfds:<name>`` through ``tfds.data_source`` (needs no TensorFlow).

  The data must already be prepared (in the ArrayRecord format) under
  ``cfg.dir`` or TFDS's default data directory: nothing is downloaded.
  """
  name = cfg.name[len(TFDS_PREFIX):].strip()
  if not name:
    raise DataError(f"data.name={cfg.name!r} needs a TFDS name, e.g. tfds:mnist")
  try:
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise DataError(f"data.name={cfg.name} needs tensorflow-datasets: {e}") from e
  data_dir = cfg.dir or None
  try:
    builder = tfds.builder(name, data_dir=data_dir)
    info = builder.info
  except Exception as e:  # pylint: disable=broad-except  # TFDS raises many types.
    raise DataError(f"TFDS data set {name!r} is not available: {_first_line(e)}") from e

  features = info.features
  images = [k for k, f in features.items() if isinstance(f, tfds.features.Image)]
  if not images:
    raise DataError(
        f"TFDS data set {name!r} has no image feature (features: "
        f"{', '.join(features.keys())})")
  image_key = "image" if "image" in images else images[0]
  has_labels = "label" in features and _is_int_scalar(features["label"])
  label_key = "label" if has_labels else None
  splits = list(info.splits)  # Empty when TFDS does not know them (mocked).
  if splits and "train" not in splits:
    raise DataError(
        f"TFDS data set {name!r} has no train split (splits: {', '.join(splits)})")

  def read(split: str) -> tuple[np.ndarray, np.ndarray | None]:
    try:
      source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
      records = [source[i] for i in range(len(source))]
    except Exception as e:  # pylint: disable=broad-except
      hint = (f"prepare it first with `tfds build {name} --file_format=array_record"
              f"{' --data_dir=' + data_dir if data_dir else ''}`")
      if not _is_prepared(builder):
        raise DataError(
            f"TFDS data set {name!r} is not prepared in {builder.data_dir} (flaxae "
            f"never downloads; {hint})") from e
      raise DataError(
          f"cannot read TFDS {name}[{split}] from {builder.data_dir}: "
          f"{_first_line(e)} ({hint})") from e
    if not records:
      raise DataError(f"TFDS {name}[{split}] is empty")
    try:
      x = np.stack([np.asarray(r[image_key]) for r in records])
    except ValueError as e:
      raise DataError(
          f"TFDS {name}[{split}]: the {image_key!r} images differ in shape ({e})") from e
    y = None if label_key is None else np.asarray([r[label_key] for r in records])
    return x, y

  train_x, train_y = read("train")
  if "test" in splits:
    test_x, test_y = read("test")
    return train_x, train_y, test_x, test_y
  return train_x, train_y, None, None


SOURCES: dict[str, Callable[[DataConfig], Raw]] = {
    "digits": digits,
    "fashion_mnist": idx_folder,
    "idx": idx_folder,
    "mnist": idx_folder,
    "npy": npy,
}


def known_names() -> list[str]:
  """The accepted ``data.name`` values (``tfds:<name>`` stands for any TFDS set)."""
  return sorted(SOURCES) + [f"{TFDS_PREFIX}<name>"]


def get(name: str) -> Callable[[DataConfig], Raw]:
  """The source for ``data.name``.

  Raises:
    DataError: the name is unknown.
  """
  if name.startswith(TFDS_PREFIX):
    return tfds_source
  if name not in SOURCES:
    raise DataError(f"unknown data set {name!r}; known: {', '.join(known_names())}")
  return SOURCES[name]

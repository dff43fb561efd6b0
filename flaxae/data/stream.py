"""Training sets larger than memory: batches read from a memory-mapped file.

The training images stay in a ``.npy`` or uncompressed IDX file mapped into
memory; only the rows of the batches being trained on are read. The order is
the same permutation the resident path uses
(:func:`flaxae.train.parallel.epoch_order`), so for the same seed a streamed
run computes the same steps as an in-memory one. Each process reads only the
rows of its own devices' shards of every global batch, and a background
thread reads the next compiled chunk's batches while the current one trains.
"""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from flaxae.config import DataConfig
from flaxae.data.compact import decode
from flaxae.data.dataset import normalize, split_indices
from flaxae.data.idx import memmap_idx, read_idx
from flaxae.data.sources import find_idx, idx_dir
from flaxae.errors import ConfigError, DataError, ShapeError


class MappedSet:
  """Rows of a memory-mapped array, normalised to float32 in [0, 1] on read.

  Attributes:
    array: The mapped ``(N, ...)`` array (uint8, or float already in [0, 1]).
    indices: The rows that belong to this set (for example the training split).
    binarize: Threshold read rows at 0.5.
  """

  def __init__(self, array: np.ndarray, indices: np.ndarray, binarize: bool = False,
               name: str = "the streamed data"):
    if array.ndim not in (2, 3, 4):
      raise ShapeError(f"streamed data has shape {array.shape}; expected N×D or N×H×W[×C]")
    if array.dtype not in (np.uint8, np.bool_) and not np.issubdtype(array.dtype, np.floating):
      raise DataError(f"streamed data has dtype {array.dtype}; expected uint8, bool or float")
    self.array, self.indices, self.binarize = array, np.asarray(indices), binarize
    self.name = name

  def __len__(self) -> int:
    return len(self.indices)

  @property
  def feature_shape(self) -> tuple[int, ...]:
    shape = tuple(self.array.shape[1:])
    return shape + (1,) if len(shape) == 2 else shape

  def _read(self, positions: np.ndarray) -> np.ndarray:
    flat = np.asarray(positions).reshape(-1)
    rows = self.indices[flat]
    order = np.argsort(rows, kind="stable")  # Read the file front to back.
    x = np.empty((len(rows), *self.array.shape[1:]), self.array.dtype)
    x[order] = self.array[rows[order]]
    return x

  def rows(self, positions: np.ndarray) -> np.ndarray:
    """Examples at ``positions`` (into this set), float32 ``(n, *feature_shape)``."""
    x = self._read(positions)
    try:
      x = normalize(x, f"{self.name} (a streamed batch),")
    except DataError:
      # Bad values are found as read (a file larger than memory is not scanned
      # first); the error names the batch's rows in the file, looked up only now.
      rows = self.indices[np.asarray(positions).reshape(-1)]
      if rows.size:
        normalize(x, f"{self.name}, rows {rows.min()}-{rows.max()} (a streamed batch),")
      raise
    if self.binarize:
      x = (x >= 0.5).astype(np.float32)
    return x.reshape(*np.shape(positions), *self.feature_shape)

  def transfer_rows(self, positions: np.ndarray) -> np.ndarray:
    """The rows at ``positions`` as they go to the devices: uint8 bytes as
    stored (four times less to copy than float32; :meth:`on_device` turns
    them into the examples), anything else as :meth:`rows`."""
    if self.array.dtype != np.uint8:
      return self.rows(positions)
    return self._read(positions).reshape(*np.shape(positions), *self.feature_shape)

  def on_device(self, x: jnp.ndarray) -> jnp.ndarray:
    """Float32 examples from a batch of :meth:`transfer_rows`, bit for bit as
    :meth:`rows` computes them (:func:`flaxae.data.compact.decode`)."""
    if x.dtype != jnp.uint8:
      return x
    if self.binarize:  # Byte k's value is ≥ 0.5 exactly from k = 128.
      return (x >= 128).astype(jnp.float32)
    return decode(x)


def open_mapped(cfg: DataConfig, seed: int | None = None) -> tuple[MappedSet, np.ndarray]:
  """The training set as a :class:`MappedSet` and the (small) test set in memory.

  Supports ``data.name=npy`` with a ``.npy`` file and IDX folders of
  uncompressed files (``train-images-idx3-ubyte`` and/or ``t10k-...``).
  """
  seed = cfg.split_seed if seed is None else seed
  test = None
  if cfg.name == "npy":
    path = Path(cfg.path)
    if path.suffix != ".npy" or not path.is_file():
      raise DataError(f"data.stream needs an existing .npy file, got {cfg.path!r}")
    try:
      array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as e:
      raise DataError(f"cannot map {path}: {e}") from e
    name = str(path)
  elif cfg.name in ("idx", "mnist", "fashion_mnist"):
    # The files the in-memory path reads (the same names, the same default
    # folders); the one mapped must be uncompressed, the test set is read whole.
    folder = idx_dir(cfg)
    train = find_idx(folder, "train-images-idx3-ubyte")
    t10k = find_idx(folder, "t10k-images-idx3-ubyte")
    if train is None and t10k is None:
      raise DataError(f"no IDX images in {folder} (expected train-images-idx3-ubyte "
                      "and/or t10k-images-idx3-ubyte)")
    name = str(train if train is not None else t10k)
    array = memmap_idx(train if train is not None else t10k)
    if train is not None and t10k is not None:
      test = read_idx(t10k)
  else:
    raise ConfigError(f"data.stream supports npy and IDX folders, not {cfg.name!r}")
  if len(array) == 0:
    raise DataError("the streamed data set is empty")
  if test is None:
    train_idx, test_idx = split_indices(len(array), cfg.test_fraction, seed)
    test_rows = test_idx[:cfg.limit_test] if cfg.limit_test else test_idx
    test_x = MappedSet(array, test_rows, cfg.binarize, name).rows(np.arange(len(test_rows)))
  else:
    train_idx = np.arange(len(array))
    n_test = min(cfg.limit_test or len(test), len(test))
    test_x = MappedSet(test, np.arange(n_test), cfg.binarize, str(t10k)).rows(
        np.arange(n_test))
  if cfg.limit_train:
    train_idx = train_idx[:cfg.limit_train]
  return MappedSet(array, train_idx, cfg.binarize, name), test_x


class Feeder:
  """Builds each compiled chunk's batches ``(L, B, ...)`` as global arrays,
  one chunk ahead in a background thread.

  Args:
    data: The training set.
    order_fn: ``epoch -> permutation`` of ``range(len(data))``.
    batch_size: Global batch size.
    sharding: Sharding of a chunk of batches (batch axis on the devices).
  """

  def __init__(self, data: MappedSet, order_fn, batch_size: int, sharding):
    self.data, self.order_fn, self.batch_size = data, order_fn, batch_size
    self.sharding = sharding
    self.steps_per_epoch = len(data) // batch_size
    self._orders: dict[int, np.ndarray] = {}
    self._pool = concurrent.futures.ThreadPoolExecutor(1)
    self._pending: dict[tuple[int, int], concurrent.futures.Future] = {}

  def _order(self, epoch: int) -> np.ndarray:
    if epoch not in self._orders:
      self._orders = {epoch: np.asarray(self.order_fn(epoch))}
    return self._orders[epoch]

  def _positions(self, step: int, length: int) -> np.ndarray:
    epoch, start = divmod(step, self.steps_per_epoch)
    b = self.batch_size
    return self._order(epoch)[start * b:(start + length) * b].reshape(length, b)

  def _build(self, positions: np.ndarray):
    import jax  # pylint: disable=import-outside-toplevel
    shape = (*positions.shape, *self.data.feature_shape)
    # Each process reads only the rows of its own devices' shards.
    return jax.make_array_from_callback(
        shape, self.sharding, lambda index: self.data.transfer_rows(positions[index[:2]]))

  def prefetch(self, step: int, length: int) -> None:
    """Starts reading the chunk of ``length`` steps from ``step`` in the
    background (the epoch's order is drawn here, in the calling thread)."""
    if (step, length) not in self._pending and length > 0:
      self._pending[(step, length)] = self._pool.submit(
          self._build, self._positions(step, length))

  def get(self, step: int, length: int):
    """The chunk's batches (waits for the prefetch, or reads them now)."""
    self.prefetch(step, length)
    return self._pending.pop((step, length)).result()

  def close(self) -> None:
    self._pool.shutdown(wait=True, cancel_futures=True)

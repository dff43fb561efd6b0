"""Streaming from a memory-mapped file trains exactly like the in-memory path,
and trains on a file larger than the memory the process may use."""

import dataclasses
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from flaxae.config import CheckpointConfig, Config, DataConfig, ModelConfig, TrainConfig
from flaxae.data import stream, write_idx
from flaxae.errors import DataError
from flaxae.train.loop import train_and_evaluate


@pytest.fixture(scope="module")
def images(tmp_path_factory):
  folder = tmp_path_factory.mktemp("stream")
  x = np.random.default_rng(0).integers(0, 256, (700, 8, 8), dtype=np.uint8)
  np.save(folder / "x.npy", x)
  write_idx(folder / "t10k-images-idx3-ubyte", x)
  return folder


def _cfg(data: DataConfig, run_dir, num_devices=1, strategy="jit"):
  return Config(data=data, model=ModelConfig(widths=(16, 4)),
                train=TrainConfig(epochs=2, batch_size=64, num_devices=num_devices,
                                  strategy=strategy, steps_per_call=3),
                checkpoint=CheckpointConfig(keep=1), run_dir=str(run_dir))


@pytest.mark.parametrize("num_devices,strategy", [(1, "jit"), (4, "jit"), (4, "shard_map")])
def test_stream_equals_in_memory(images, tmp_path, num_devices, strategy):
  if jax.device_count() < num_devices:
    pytest.skip(f"needs {num_devices} devices, {jax.device_count()} available")
  data = DataConfig(name="npy", path=str(images / "x.npy"))
  memory = train_and_evaluate(_cfg(data, tmp_path / "m", num_devices, strategy),
                              progress=False)
  streamed = train_and_evaluate(
      _cfg(dataclasses.replace(data, stream=True), tmp_path / "s", num_devices, strategy),
      progress=False)
  assert streamed.state.steps_done == memory.state.steps_done == 16
  jax.tree.map(np.testing.assert_array_equal, streamed.state.params, memory.state.params)
  assert streamed.history[-1]["test/loss"] == memory.history[-1]["test/loss"]


def test_uncompressed_idx_streams_like_npy(images, tmp_path):
  a = train_and_evaluate(_cfg(DataConfig(name="idx", dir=str(images), stream=True),
                              tmp_path / "i"), progress=False)
  b = train_and_evaluate(_cfg(DataConfig(name="npy", path=str(images / "x.npy"),
                                         stream=True), tmp_path / "n"), progress=False)
  jax.tree.map(np.testing.assert_array_equal, a.state.params, b.state.params)


def test_mapped_rows_read_only_what_is_asked(images):
  mapped, test_x = stream.open_mapped(DataConfig(name="npy", path=str(images / "x.npy")))
  assert len(mapped) == 560 and test_x.shape == (140, 8, 8, 1)
  rows = mapped.rows(np.array([[3, 1], [0, 2]]))
  assert rows.shape == (2, 2, 8, 8, 1) and rows.dtype == np.float32
  full = np.load(images / "x.npy")
  np.testing.assert_array_equal(rows[0, 1, ..., 0],
                                full[mapped.indices[1]].astype(np.float32) / 255.0)


def test_gzip_cannot_stream(tmp_path):
  write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((10, 4, 4), np.uint8))
  os.rename(tmp_path / "t10k-images-idx3-ubyte", tmp_path / "x")
  write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((10, 4, 4), np.uint8))
  with pytest.raises(DataError, match="gzip-compressed and cannot be streamed; gunzip it"):
    stream.open_mapped(DataConfig(name="idx", dir=str(tmp_path), stream=True))


def test_streaming_reads_the_files_the_in_memory_path_reads(tmp_path):
  # A raw training file beside a gzip test file (only the big one gunzipped):
  # the training set is mapped, the test file read whole, as in memory (the
  # stream once split the training file and ignored the test file); a gzip
  # training file is refused, not replaced by a split of the test file.
  from flaxae.data import load_dataset  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  train, test = (rng.integers(0, 256, (n, 4, 4), np.uint8) for n in (50, 20))
  write_idx(tmp_path / "train-images-idx3-ubyte", train)
  write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", test)
  data = DataConfig(name="idx", dir=str(tmp_path))
  mapped, test_x = stream.open_mapped(dataclasses.replace(data, stream=True))
  memory = load_dataset(data)
  assert len(mapped) == len(memory.train_x) == 50
  np.testing.assert_array_equal(mapped.rows(np.arange(50)), memory.train_x)
  np.testing.assert_array_equal(test_x, memory.test_x)
  os.remove(tmp_path / "train-images-idx3-ubyte")
  write_idx(tmp_path / "train-images-idx3-ubyte.gz", train)
  write_idx(tmp_path / "t10k-images-idx3-ubyte", test)
  with pytest.raises(DataError, match="train-images-idx3-ubyte.gz is gzip-compressed"):
    stream.open_mapped(dataclasses.replace(data, stream=True))


def test_trains_on_data_larger_than_its_memory_limit(tmp_path):
  """A 1.2 GB uint8 file (4.8 GB as float32) under a 900 MB cap on the
  process's private memory (RLIMIT_DATA; the mapped file is not counted)."""
  n = 1_500_000
  x = np.lib.format.open_memmap(tmp_path / "big.npy", "w+", np.uint8, (n, 28, 28))
  x[::1000] = 255
  x.flush()
  del x
  script = textwrap.dedent(f"""
      import resource
      resource.setrlimit(resource.RLIMIT_DATA, (900 * 2**20, 900 * 2**20))
      from flaxae.config import *
      from flaxae.train.loop import train_and_evaluate
      cfg = Config(data=DataConfig(name="npy", path="{tmp_path / 'big.npy'}", stream=True,
                                   limit_test=500),
                   model=ModelConfig(widths=(32, 8)),
                   train=TrainConfig(epochs=1, batch_size=256, steps_per_call=20),
                   run_dir="{tmp_path / 'run'}")
      run = train_and_evaluate(cfg, progress=False, stop_after_steps=60)
      print("steps", run.state.steps_done)
  """)
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       env=env, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "steps 60" in out.stdout
  # The same data in memory would not fit under that cap.
  assert n * 28 * 28 * 4 > 900 * 2**20


@pytest.mark.parametrize("dtype,binarize", [(np.uint8, False), (np.uint8, True),
                                            (np.float32, False)])
def test_bytes_sent_to_the_device_make_the_same_examples(dtype, binarize):
  raw = np.random.default_rng(0).integers(0, 256, (50, 4, 4), np.uint8)
  array = raw if dtype == np.uint8 else raw.astype(np.float32) / 255
  data = stream.MappedSet(array, np.arange(10, 50), binarize)
  positions = np.array([[3, 0, 39], [7, 7, 12]])
  sent = data.transfer_rows(positions)
  assert sent.dtype == dtype and sent.shape == (2, 3, 4, 4, 1)
  np.testing.assert_array_equal(jax.jit(data.on_device)(sent), data.rows(positions))


def test_bad_values_in_a_streamed_batch_name_the_file_and_rows(tmp_path):
  # Was "a streamed batch contains NaN or Inf values": which file, where?
  x = np.random.default_rng(0).random((40, 4, 4)).astype(np.float32)
  x[17, 1, 1] = np.nan
  np.save(tmp_path / "x.npy", x)
  data = stream.MappedSet(np.load(tmp_path / "x.npy", mmap_mode="r"), np.arange(40),
                          name=str(tmp_path / "x.npy"))
  data.rows(np.arange(10))  # Rows 0-9 are fine.
  with pytest.raises(DataError, match=rf"{tmp_path / 'x.npy'}, rows 16-19 \(a streamed batch\)"
                                      r", contains NaN or Inf"):
    data.rows(np.arange(16, 20))

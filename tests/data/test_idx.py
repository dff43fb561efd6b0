"""IDX reading and writing: round trips, gzip detection, corrupt files."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from flaxae.data import read_idx, write_idx
from flaxae.errors import DataError, OutputError

_DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]
_SETTINGS = settings(max_examples=40, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])


def _header(code: int, shape: tuple[int, ...]) -> bytes:
  return bytes([0, 0, code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)


@_SETTINGS
@given(array=hnp.arrays(np.uint8, hnp.array_shapes(min_dims=1, max_dims=4, min_side=0,
                                                   max_side=6)),
       gz=st.booleans())
def test_round_trip_uint8(tmp_path: Path, array: np.ndarray, gz: bool) -> None:
  path = tmp_path / ("a.idx.gz" if gz else "a.idx")
  write_idx(path, array)
  back = read_idx(path)
  assert back.dtype == np.uint8
  assert back.shape == array.shape
  np.testing.assert_array_equal(back, array)
  assert (path.read_bytes()[:2] == b"\x1f\x8b") == gz


@_SETTINGS
@given(array=st.sampled_from(_DTYPES).flatmap(
    lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=1, max_dims=3, max_side=5))))
def test_round_trip_other_dtypes(tmp_path: Path, array: np.ndarray) -> None:
  path = tmp_path / "b-idx.gz"
  write_idx(path, array)
  back = read_idx(path)
  assert back.dtype == array.dtype and back.dtype.isnative
  np.testing.assert_array_equal(back, array)  # NaNs compare equal here.


def test_big_endian_input_and_writable_result(tmp_path: Path) -> None:
  array = np.arange(12, dtype=">i4").reshape(3, 4)
  write_idx(tmp_path / "c", array)
  back = read_idx(tmp_path / "c")
  np.testing.assert_array_equal(back, array)
  back[0, 0] = 7  # A copy, not a view of an immutable buffer.


def test_gzip_is_detected_by_content_not_name(tmp_path: Path) -> None:
  array = np.arange(6, dtype=np.uint8).reshape(2, 3)
  (tmp_path / "gz-without-suffix").write_bytes(
      gzip.compress(_header(0x08, (2, 3)) + array.tobytes()))
  (tmp_path / "raw.gz").write_bytes(_header(0x08, (2, 3)) + array.tobytes())
  np.testing.assert_array_equal(read_idx(tmp_path / "gz-without-suffix"), array)
  np.testing.assert_array_equal(read_idx(tmp_path / "raw.gz"), array)


def test_mnist_header_layout(tmp_path: Path) -> None:
  write_idx(tmp_path / "x", np.zeros((3, 28, 28), np.uint8))
  write_idx(tmp_path / "y", np.zeros(3, np.uint8))
  assert (tmp_path / "x").read_bytes()[:16] == struct.pack(">IIII", 2051, 3, 28, 28)
  assert (tmp_path / "y").read_bytes()[:8] == struct.pack(">II", 2049, 3)


def test_write_is_atomic_and_overwrites(tmp_path: Path) -> None:
  path = tmp_path / "d.gz"
  write_idx(path, np.zeros(5, np.uint8))
  write_idx(path, np.ones(3, np.uint8))
  np.testing.assert_array_equal(read_idx(path), np.ones(3, np.uint8))
  assert os.listdir(tmp_path) == ["d.gz"]  # No temporary file left behind.


@pytest.mark.parametrize("array, fragment", [
    (np.zeros(3, np.int64), "cannot store dtype int64"),
    (np.zeros(3, np.bool_), "cannot store dtype bool"),
    (np.zeros(3, np.complex64), "cannot store dtype complex64"),
    (np.array(["a"]), "cannot store dtype <U1"),
    (np.array(5, np.uint8), "1 to 255 dimensions"),
])
def test_write_refuses(tmp_path: Path, array: np.ndarray, fragment: str) -> None:
  with pytest.raises(DataError, match=fragment):
    write_idx(tmp_path / "e", array)
  assert not list(tmp_path.iterdir())


def test_write_to_missing_folder(tmp_path: Path) -> None:
  with pytest.raises(OutputError, match="does not exist"):
    write_idx(tmp_path / "nope" / "f", np.zeros(2, np.uint8))


def _corrupt_files() -> list[tuple[str, bytes, str]]:
  good = _header(0x08, (2, 3)) + bytes(range(6))
  gz = gzip.compress(good)
  return [
      ("empty", b"", "is empty"),
      ("bad-magic", b"\x01\x02\x08\x01" + bytes(8), "bad magic number 0x01020801"),
      ("bad-type", b"\x00\x00\x07\x01" + bytes(8), "bad magic number 0x00000701"),
      ("short-magic", b"\x00\x00", "bad magic number"),
      ("zero-dims", b"\x00\x00\x08\x00", "0 dimensions"),
      ("short-header", b"\x00\x00\x08\x03" + bytes(6), "truncated IDX header"),
      ("too-little-data", good[:-1], "holds 5 bytes of data but its IDX header says 2x3"),
      ("too-much-data", good + b"\x00", "holds 7 bytes of data"),
      ("truncated.gz", gz[:len(gz) // 2], "truncated gzip"),
      ("garbage.gz", b"\x1f\x8b" + b"\x00" * 30, "corrupt gzip"),
      ("text.gz", b"hello, world", "neither gzip nor IDX"),
  ]


@pytest.mark.parametrize("name, content, fragment", _corrupt_files(),
                         ids=[c[0] for c in _corrupt_files()])
def test_read_corrupt(tmp_path: Path, name: str, content: bytes, fragment: str) -> None:
  path = tmp_path / name
  path.write_bytes(content)
  with pytest.raises(DataError, match=fragment) as info:
    read_idx(path)
  assert str(path) in str(info.value)
  assert "\n" not in str(info.value)


def test_read_missing(tmp_path: Path) -> None:
  with pytest.raises(DataError, match="does not exist"):
    read_idx(tmp_path / "missing.gz")
  with pytest.raises(DataError, match="not a regular file"):
    read_idx(tmp_path)


@_SETTINGS
@given(content=st.binary(max_size=64), gz=st.booleans())
def test_read_arbitrary_bytes_raises_only_data_error(tmp_path: Path, content: bytes,
                                                     gz: bool) -> None:
  path = tmp_path / "fuzz"
  path.write_bytes(gzip.compress(content) if gz else content)
  try:
    read_idx(path)
  except DataError:
    pass
